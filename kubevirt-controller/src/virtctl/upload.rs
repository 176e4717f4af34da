//! `virtctl image-upload dv|pvc NAME --size SIZE --image-path FILE`, as upstream's: makes the
//! DataVolume (source `upload`) or the claim (annotated `cdi.kubevirt.io/storage.upload.target`)
//! unless `--no-create`, waits for its upload server, asks for an upload token
//! (`UploadTokenRequest`), streams the file to the upload proxy with a progress line, and waits
//! for the DataVolume (the claim's `cdi.kubevirt.io/storage.pod.phase`) to be populated.
//!
//! The proxy is `--uploadproxy-url`, else the CDIConfig's `status.uploadProxyURL`, else the
//! cluster's URL with `/cdi-upload-proxy` (where `kubevirt-local up` serves it). Its TLS trusts
//! the kubeconfig's cluster CA (`--insecure`: anything).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use kube::api::PostParams;
use kubevirt_api::cdi::v1beta1::DataVolume;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::VirtctlError;
use super::connect::Connection;
use crate::cdi::datavolume::POD_PHASE;
use crate::cdi::datavolume::sync::annotation;
use crate::cdi::upload::api::{GROUP, PROXY_PREFIX, VERSION};
use crate::cdi::upload::pvc::{POD_READY, UPLOAD_TARGET, is_upload_target};

/// What `image-upload` takes.
#[derive(Debug, Clone, clap::Args)]
pub struct UploadFlags {
    /// `dv` (a DataVolume) or `pvc` (a PersistentVolumeClaim).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The image to upload.
    #[arg(long)]
    pub image_path: PathBuf,
    /// The size of the DataVolume to create (e.g. 10Gi).
    #[arg(long)]
    pub size: Option<String>,
    /// The StorageClass of the DataVolume to create.
    #[arg(long)]
    pub storage_class: Option<String>,
    /// The access mode of the DataVolume to create.
    #[arg(long)]
    pub access_mode: Option<String>,
    /// The volume mode of the DataVolume to create (`block` or `filesystem`).
    #[arg(long)]
    pub volume_mode: Option<String>,
    /// The upload proxy's URL.
    #[arg(long)]
    pub uploadproxy_url: Option<String>,
    /// Do not verify the upload proxy's certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Do not create the DataVolume: it exists.
    #[arg(long)]
    pub no_create: bool,
    /// Seconds to wait for the upload server.
    #[arg(long, default_value_t = 300)]
    pub wait_secs: u64,
    /// Accepted for upstream's command lines (binding is the scheduler's).
    #[arg(long)]
    pub force_bind: bool,
}

/// The DataVolume `image-upload` creates.
pub fn data_volume(f: &UploadFlags, namespace: &str) -> Result<Value, VirtctlError> {
    let size = f.size.as_deref().ok_or_else(|| {
        VirtctlError::Usage(format!(
            "--size is required to create DataVolume {} (or give --no-create)",
            f.name
        ))
    })?;
    let mut storage = json!({"resources": {"requests": {"storage": size}}});
    if let Some(class) = &f.storage_class {
        storage["storageClassName"] = json!(class);
    }
    if let Some(mode) = &f.access_mode {
        storage["accessModes"] = json!([mode]);
    }
    match f.volume_mode.as_deref() {
        None => {}
        Some("block") => storage["volumeMode"] = json!("Block"),
        Some("filesystem") => storage["volumeMode"] = json!("Filesystem"),
        Some(other) => {
            return Err(VirtctlError::Usage(format!(
                "--volume-mode {other}: block or filesystem"
            )));
        }
    }
    Ok(json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": f.name, "namespace": namespace},
        "spec": {"source": {"upload": {}}, "storage": storage},
    }))
}

/// The claim `image-upload pvc` creates.
pub fn claim(f: &UploadFlags, namespace: &str) -> Result<Value, VirtctlError> {
    if f.size.is_none() {
        return Err(VirtctlError::Usage(format!(
            "--size is required to create PVC {} (or give --no-create)",
            f.name
        )));
    }
    let dv = data_volume(f, namespace)?;
    let storage = &dv["spec"]["storage"];
    let mut spec = json!({
        "accessModes": storage.get("accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
        "resources": storage["resources"],
    });
    for key in ["storageClassName", "volumeMode"] {
        if let Some(v) = storage.get(key) {
            spec[key] = v.clone();
        }
    }
    Ok(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": f.name, "namespace": namespace,
                     "annotations": {UPLOAD_TARGET: ""}},
        "spec": spec,
    }))
}

/// Runs `image-upload`.
pub async fn run(c: &Connection, f: &UploadFlags) -> Result<(), VirtctlError> {
    if f.kind != "dv" && f.kind != "pvc" {
        return Err(VirtctlError::Usage(format!(
            "image-upload {}: the target is `dv` (a DataVolume) or `pvc` (a PersistentVolumeClaim)",
            f.kind
        )));
    }
    let file = tokio::fs::File::open(&f.image_path).await.map_err(|e| {
        VirtctlError::Usage(format!("--image-path {}: {e}", f.image_path.display()))
    })?;
    let length = file.metadata().await?.len();
    let target = if f.kind == "pvc" {
        Target::Claim(prepare_claim(c, f).await?)
    } else {
        Target::DataVolume(prepare_data_volume(c, f).await?)
    };
    println!("Waiting for PVC {} upload pod to be ready...", f.name);
    target.wait(&f.name, Stage::Ready, f.wait_secs).await?;
    println!("Pod now ready");
    let token = token(c, &f.name).await?;
    let url = proxy_url(c, f).await;
    println!("Uploading data to {url}");
    upload(c, f, &url, &token, file, length).await?;
    println!(
        "Uploading {} completed successfully",
        f.image_path.display()
    );
    target.wait(&f.name, Stage::Done, f.wait_secs).await?;
    println!("Processing completed successfully");
    Ok(())
}

/// What is uploaded into.
enum Target {
    DataVolume(Api<DataVolume>),
    Claim(Api<PersistentVolumeClaim>),
}

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Ready,
    Done,
}

impl Target {
    async fn wait(&self, name: &str, stage: Stage, secs: u64) -> Result<(), VirtctlError> {
        match self {
            Target::DataVolume(dvs) => {
                let phases: &[&str] = match stage {
                    Stage::Ready => &["UploadReady"],
                    Stage::Done => &["Succeeded"],
                };
                wait_phase(dvs, name, phases, secs).await
            }
            Target::Claim(claims) => wait_claim(claims, name, stage, secs).await,
        }
    }
}

/// The DataVolume to upload into, created unless `--no-create`.
async fn prepare_data_volume(
    c: &Connection,
    f: &UploadFlags,
) -> Result<Api<DataVolume>, VirtctlError> {
    let dvs: Api<DataVolume> = Api::namespaced(c.client.clone(), &c.namespace);
    match dvs
        .get_opt(&f.name)
        .await
        .map_err(VirtctlError::from_kube)?
    {
        Some(dv) => {
            let upload = dv.spec.source.as_ref().is_some_and(|s| s.upload.is_some());
            if !upload {
                return Err(VirtctlError::Failed(format!(
                    "DataVolume {} exists and does not upload (its source is not upload)",
                    f.name
                )));
            }
            if phase(&dv) == "Succeeded" {
                return Err(VirtctlError::Failed(format!(
                    "DataVolume {} already successfully imported/cloned/updated",
                    f.name
                )));
            }
        }
        None if f.no_create => {
            return Err(VirtctlError::Failed(format!(
                "DataVolume {} not found (--no-create)",
                f.name
            )));
        }
        None => {
            let dv: DataVolume = serde_json::from_value(data_volume(f, &c.namespace)?)
                .map_err(|e| VirtctlError::Failed(e.to_string()))?;
            dvs.create(&PostParams::default(), &dv)
                .await
                .map_err(VirtctlError::from_kube)?;
            println!("DataVolume {}/{} created", c.namespace, f.name);
        }
    }
    Ok(dvs)
}

/// The claim to upload into, created (annotated as an upload target) unless `--no-create`.
async fn prepare_claim(
    c: &Connection,
    f: &UploadFlags,
) -> Result<Api<PersistentVolumeClaim>, VirtctlError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.namespace);
    match claims
        .get_opt(&f.name)
        .await
        .map_err(VirtctlError::from_kube)?
    {
        Some(claim) => {
            if !is_upload_target(&claim) {
                return Err(VirtctlError::Failed(format!(
                    "PVC {} exists and is not an upload target (it lacks the annotation {UPLOAD_TARGET})",
                    f.name
                )));
            }
            if annotation(&claim, POD_PHASE) == Some("Succeeded") {
                return Err(VirtctlError::Failed(format!(
                    "PVC {} already successfully imported/cloned/updated",
                    f.name
                )));
            }
        }
        None if f.no_create => {
            return Err(VirtctlError::Failed(format!(
                "PVC {} not found (--no-create)",
                f.name
            )));
        }
        None => {
            let claim: PersistentVolumeClaim = serde_json::from_value(claim(f, &c.namespace)?)
                .map_err(|e| VirtctlError::Failed(e.to_string()))?;
            claims
                .create(&PostParams::default(), &claim)
                .await
                .map_err(VirtctlError::from_kube)?;
            println!("PVC {}/{} created", c.namespace, f.name);
        }
    }
    Ok(claims)
}

async fn wait_claim(
    claims: &Api<PersistentVolumeClaim>,
    name: &str,
    stage: Stage,
    secs: u64,
) -> Result<(), VirtctlError> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(claim) = claims
            .get_opt(name)
            .await
            .map_err(VirtctlError::from_kube)?
        {
            let phase = annotation(&claim, POD_PHASE);
            let reached = match stage {
                Stage::Ready => annotation(&claim, POD_READY) == Some("true"),
                Stage::Done => phase == Some("Succeeded"),
            };
            if reached {
                return Ok(());
            }
            if phase == Some("Failed") {
                return Err(VirtctlError::Failed(format!(
                    "the upload server of PVC {name} failed"
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(VirtctlError::Failed(format!(
                "timed out after {secs} s waiting for PVC {name}'s upload {}",
                if stage == Stage::Ready {
                    "server"
                } else {
                    "to be processed"
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn phase(dv: &DataVolume) -> &str {
    dv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn wait_phase(
    dvs: &Api<DataVolume>,
    name: &str,
    phases: &[&str],
    secs: u64,
) -> Result<(), VirtctlError> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(dv) = dvs.get_opt(name).await.map_err(VirtctlError::from_kube)? {
            if phases.contains(&phase(&dv)) {
                return Ok(());
            }
            if phase(&dv) == "Failed" {
                return Err(VirtctlError::Failed(format!("DataVolume {name} failed")));
            }
        }
        if Instant::now() > deadline {
            return Err(VirtctlError::Failed(format!(
                "timed out after {secs} s waiting for DataVolume {name} to be {}",
                phases.join(" or ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn token(c: &Connection, pvc: &str) -> Result<String, VirtctlError> {
    let path = format!(
        "/apis/{GROUP}/{VERSION}/namespaces/{}/uploadtokenrequests",
        c.namespace
    );
    let body = json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": "UploadTokenRequest",
        "metadata": {"name": "token-for-virtctl", "namespace": c.namespace},
        "spec": {"pvcName": pvc}});
    let req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string().into_bytes())
        .map_err(|e| VirtctlError::Request(e.to_string()))?;
    let answer: Value = c
        .client
        .request(req)
        .await
        .map_err(VirtctlError::from_kube)?;
    answer["status"]["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            VirtctlError::Failed("the UploadTokenRequest came back without a token".into())
        })
}

/// `--uploadproxy-url`, else the CDIConfig's, else the cluster's URL with [`PROXY_PREFIX`].
async fn proxy_url(c: &Connection, f: &UploadFlags) -> String {
    if let Some(url) = &f.uploadproxy_url {
        return url.trim_end_matches('/').to_string();
    }
    let from_config = async {
        let req = http::Request::get("/apis/cdi.kubevirt.io/v1beta1/cdiconfigs/config")
            .body(Vec::new())
            .ok()?;
        let config: Value = c.client.request(req).await.ok()?;
        config["status"]["uploadProxyURL"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(|u| {
                if u.contains("://") {
                    u.to_string()
                } else {
                    format!("https://{u}")
                }
            })
    };
    match from_config.await {
        Some(url) => url,
        None => format!(
            "{}{PROXY_PREFIX}",
            c.config.cluster_url.to_string().trim_end_matches('/')
        ),
    }
}

/// Streams the file to `<url>/v1beta1/upload` with a progress line on stderr.
async fn upload(
    c: &Connection,
    f: &UploadFlags,
    url: &str,
    token: &str,
    mut file: tokio::fs::File,
    length: u64,
) -> Result<(), VirtctlError> {
    let uri: http::Uri = format!("{url}/v1beta1/upload")
        .parse()
        .map_err(|e| VirtctlError::Usage(format!("upload proxy URL {url}: {e}")))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or_else(|| VirtctlError::Usage(format!("upload proxy URL {url} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| VirtctlError::Request(format!("connecting to {url}: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let started = Instant::now();
    tokio::spawn(async move {
        let mut sent = 0u64;
        let mut shown = Instant::now() - Duration::from_secs(1);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    sent += n as u64;
                    if shown.elapsed() > Duration::from_millis(200) || sent == length {
                        progress_line(sent, length, started.elapsed());
                        shown = Instant::now();
                    }
                    if tx
                        .send(Ok(Frame::data(Bytes::copy_from_slice(&buf[..n]))))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
        eprintln!();
    });
    let body = StreamBody::new(tokio_stream_of(rx));
    let request = http::Request::post(uri.path())
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_LENGTH, length)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .map_err(|e| VirtctlError::Request(e.to_string()))?;
    let answer = if https {
        let roots = c.config.root_cert.clone().unwrap_or_default();
        let insecure = f.insecure || c.config.accept_invalid_certs;
        let tls = crate::cdi::import::source::tls::roots_config(&roots, insecure)
            .map_err(|e| VirtctlError::Request(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| VirtctlError::Usage(format!("upload proxy host {host}: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
            .connect(name, tcp)
            .await
            .map_err(|e| VirtctlError::Request(format!("TLS with {url}: {e}")))?;
        send(stream, request).await?
    } else {
        send(tcp, request).await?
    };
    let status = answer.status();
    let text = answer
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default();
    if !status.is_success() {
        return Err(VirtctlError::Server {
            code: status.as_u16(),
            message: format!("the upload proxy answered {status}: {text}"),
        });
    }
    Ok(())
}

type UploadBody =
    StreamBody<futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>> {
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

async fn send<S>(
    io: S,
    request: http::Request<UploadBody>,
) -> Result<http::Response<hyper::body::Incoming>, VirtctlError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| VirtctlError::Request(e.to_string()))?;
    tokio::spawn(conn);
    sender
        .send_request(request)
        .await
        .map_err(|e| VirtctlError::Request(format!("uploading: {e}")))
}

fn progress_line(sent: u64, total: u64, elapsed: Duration) {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let percent = if total == 0 {
        100.0
    } else {
        sent as f64 * 100.0 / total as f64
    };
    let rate = mib(sent) / elapsed.as_secs_f64().max(0.001);
    let filled = (percent / 5.0) as usize;
    let bar = format!("{}{}", "=".repeat(filled), " ".repeat(20 - filled.min(20)));
    eprint!(
        "\r [{bar}] {:.1} MiB / {:.1} MiB {percent:5.1}% {rate:.1} MiB/s",
        mib(sent),
        mib(total)
    );
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> UploadFlags {
        UploadFlags {
            kind: "dv".into(),
            name: "up".into(),
            image_path: "/tmp/x".into(),
            size: Some("1Gi".into()),
            storage_class: Some("fast".into()),
            access_mode: None,
            volume_mode: Some("block".into()),
            uploadproxy_url: None,
            insecure: false,
            no_create: false,
            wait_secs: 1,
            force_bind: false,
        }
    }

    #[test]
    fn the_data_volume_uploads_with_the_flags_storage() {
        let dv = data_volume(&flags(), "ns").unwrap();
        assert_eq!(dv["spec"]["source"], json!({"upload": {}}));
        let storage = &dv["spec"]["storage"];
        assert_eq!(storage["resources"]["requests"]["storage"], "1Gi");
        assert_eq!(storage["storageClassName"], "fast");
        assert_eq!(storage["volumeMode"], "Block");
        let no_size = UploadFlags {
            size: None,
            ..flags()
        };
        assert!(
            data_volume(&no_size, "ns")
                .unwrap_err()
                .to_string()
                .contains("--size is required")
        );
        let bad_mode = UploadFlags {
            volume_mode: Some("tape".into()),
            ..flags()
        };
        assert!(data_volume(&bad_mode, "ns").is_err());
    }

    #[test]
    fn the_claim_is_an_upload_target_with_the_flags_storage() {
        let c = claim(&flags(), "ns").unwrap();
        assert_eq!(c["metadata"]["annotations"][UPLOAD_TARGET], "");
        assert_eq!(c["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert_eq!(c["spec"]["storageClassName"], "fast");
        assert_eq!(c["spec"]["volumeMode"], "Block");
        assert_eq!(c["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        let no_size = UploadFlags {
            size: None,
            ..flags()
        };
        let e = claim(&no_size, "ns").unwrap_err().to_string();
        assert!(e.contains("--size is required to create PVC"), "{e}");
    }
}
