//! A real API server for the controller tests: kubevirt-local in process, on SQLite in a
//! temporary directory, with every KubeVirt CRD installed.
#![allow(dead_code)]

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, PostParams};
use kubevirt_api::crd::CrdOptions;
use kubevirt_api::object::all_crds;
use kubevirt_local::server::{self, State};
use kubevirt_local::setup;
use kubevirt_local::storage::Store;

/// Polls an async probe until it yields a value (the workspace's one `eventually`).
pub use kubevirt_testsupport::eventually_async as eventually;

/// The server: a client for it and the kubeconfig kubectl and the binaries use.
pub struct Cluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// Starts a server on the current tokio runtime: HTTPS with a bearer token (as
    /// `kubevirt-local apiserver` serves) when `tls`, else plain HTTP.
    pub async fn start(tls: bool) -> Cluster {
        Self::start_with(tls, true).await
    }

    /// Like [`Cluster::start`], with no CRD installed (as a fresh cluster, for the operator's
    /// install manifests).
    pub async fn start_bare(tls: bool) -> Cluster {
        Self::start_with(tls, false).await
    }

    async fn start_with(tls: bool, install_crds: bool) -> Cluster {
        // Removed by `Drop for Cluster`.
        let dir = kubevirt_testsupport::tempdir("controller-test").keep();
        let store = Store::open(&dir.join("state.db")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (url, tls, token) = if tls {
            let t = setup::tls(&dir).unwrap();
            let token = setup::token(&dir).unwrap();
            (format!("https://{addr}"), Some(t), Some(token))
        } else {
            (format!("http://{addr}"), None, None)
        };
        let kubeconfig = setup::kubeconfig(
            &dir,
            &url,
            tls.as_ref().map(|t| t.ca_pem.as_str()),
            token.as_deref(),
        )
        .unwrap();
        let state = State::new(store, token, addr.to_string()).unwrap();
        tokio::spawn(server::serve(
            listener,
            state,
            tls.map(|t| t.config),
            std::future::pending(),
        ));
        let file = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .unwrap();
        let client = Client::try_from(config).unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        if install_crds {
            for crd in all_crds(&CrdOptions::default()) {
                crds.create(&PostParams::default(), &crd).await.unwrap();
            }
        }
        Cluster {
            client,
            kubeconfig,
            dir,
        }
    }

    /// Runs the real kubectl against the server (off the async runtime).
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        // The kubeconfig is in `dir`, so kubectl's cache is `dir/kubectl-cache`.
        let kubeconfig = self.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = kubevirt_testsupport::kubectl(&kubeconfig, &args, stdin.as_deref());
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    }
}

/// The VMI controller (a launcher pod per VMI) running on the test's runtime against a
/// [`Cluster`], with a launcher image no node pulls: the tests look at the pods it renders.
pub struct VmiController {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl VmiController {
    /// Starts it, its work directories under the cluster's.
    pub fn start(c: &Cluster) -> VmiController {
        let work = c.dir.join("work");
        let config = kubevirt_controller::vmi::PodConfig {
            launcher_image: "registry.test/kubevirt-rs/launcher:v1".into(),
            launcher_root: work.join("launchers"),
            image_cache: work.join("images"),
            registry_config_dir: None,
            plain_http_registries: vec![],
            working_dir: work,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kubevirt_controller::vmi::controller::run(
            c.client.clone(),
            config,
            async {
                let _ = stopped.await;
            },
            |r| {
                if let Err(e) = r {
                    eprintln!("vmi controller: {e}");
                }
            },
        ));
        VmiController { stop, task }
    }

    /// Stops it and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}
