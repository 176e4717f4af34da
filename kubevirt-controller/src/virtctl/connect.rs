//! The connection, as kubectl makes it: `--kubeconfig`, else `KUBECONFIG`, else
//! `~/.kube/config` (else in-cluster); `--context`, else the current context; `-n`, else the
//! context's namespace, else `default`. Requests to the subresource API go through it.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::VirtctlError;
use crate::api::console::PLAIN_PROTOCOL;
use crate::api::discovery::GROUP;

/// What kubectl's connection flags say.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// `-n/--namespace`.
    pub namespace: Option<String>,
}

/// A client and the namespace commands act in.
#[derive(Clone)]
pub struct Connection {
    /// The client.
    pub client: Client,
    /// What it was made of (the cluster's URL and CA, for connections of our own).
    pub config: kube::Config,
    /// The namespace.
    pub namespace: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The console's websocket.
pub type Stream = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

impl Connection {
    /// Connects as kubectl would with `opts`.
    pub async fn open(opts: &ConnectOptions) -> Result<Self, VirtctlError> {
        let options = KubeConfigOptions {
            context: opts.context.clone(),
            ..Default::default()
        };
        let config = match &opts.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| VirtctlError::Config(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(file, &options).await
            }
            None if opts.context.is_some() => kube::Config::from_kubeconfig(&options).await,
            None => kube::Config::infer().await.map_err(|e| {
                kube::config::KubeconfigError::ReadConfig(
                    std::io::Error::other(e.to_string()),
                    PathBuf::from("~/.kube/config"),
                )
            }),
        }
        .map_err(|e| VirtctlError::Config(e.to_string()))?;
        let namespace = opts
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client =
            Client::try_from(config.clone()).map_err(|e| VirtctlError::Config(e.to_string()))?;
        Ok(Self {
            client,
            config,
            namespace,
        })
    }

    /// `/apis/subresources.kubevirt.io/v1/namespaces/{ns}/{resource}/{name}/{action}`.
    pub fn path(&self, resource: &str, name: &str, action: &str) -> String {
        format!(
            "/apis/{GROUP}/v1/namespaces/{}/{resource}/{name}/{action}",
            self.namespace
        )
    }

    /// PUT `path` with a JSON `body`; an error answer is the server's Status message.
    pub async fn put(&self, path: &str, body: &serde_json::Value) -> Result<(), VirtctlError> {
        let req = http::Request::put(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string().into_bytes())
            .map_err(|e| VirtctlError::Request(e.to_string()))?;
        self.client
            .request_text(req)
            .await
            .map(|_| ())
            .map_err(VirtctlError::from_kube)
    }

    /// GET `path` as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, VirtctlError> {
        let req = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| VirtctlError::Request(e.to_string()))?;
        self.client
            .request::<serde_json::Value>(req)
            .await
            .map_err(VirtctlError::from_kube)
    }

    /// Opens the websocket at `path` (subprotocol `plain.kubevirt.io`); a refusal is the
    /// server's Status message.
    pub async fn websocket(&self, path: &str) -> Result<Stream, VirtctlError> {
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let req = http::Request::get(path)
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::SEC_WEBSOCKET_VERSION, "13")
            .header(http::header::SEC_WEBSOCKET_KEY, key)
            .header(http::header::SEC_WEBSOCKET_PROTOCOL, PLAIN_PROTOCOL)
            .body(kube::client::Body::empty())
            .map_err(|e| VirtctlError::Request(e.to_string()))?;
        let res = self
            .client
            .send(req)
            .await
            .map_err(VirtctlError::from_kube)?;
        if res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            let code = res.status().as_u16();
            let body = res.into_body().collect_bytes().await.unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(VirtctlError::Server { code, message });
        }
        let upgraded = hyper::upgrade::on(res)
            .await
            .map_err(|e| VirtctlError::Request(format!("upgrading to a websocket: {e}")))?;
        Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: t}
contexts:
- name: first
  context: {cluster: c, user: u, namespace: team-a}
- name: second
  context: {cluster: c, user: u}
current-context: first
"#;

    #[tokio::test]
    async fn namespace_and_context_are_kubectls() {
        let dir = std::env::temp_dir().join(format!("virtctl-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let open = |context: Option<&str>, namespace: Option<&str>| ConnectOptions {
            kubeconfig: Some(path.clone()),
            context: context.map(String::from),
            namespace: namespace.map(String::from),
        };
        // The current context's namespace, unless -n says otherwise.
        let c = Connection::open(&open(None, None)).await.unwrap();
        assert_eq!(c.namespace, "team-a");
        let c = Connection::open(&open(None, Some("other"))).await.unwrap();
        assert_eq!(c.namespace, "other");
        // --context picks another; with no namespace there, `default`.
        let c = Connection::open(&open(Some("second"), None)).await.unwrap();
        assert_eq!(c.namespace, "default");
        let e = Connection::open(&open(Some("nosuch"), None))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("nosuch"), "{e}");
        assert_eq!(
            c.path("virtualmachines", "vm1", "start"),
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/start"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
