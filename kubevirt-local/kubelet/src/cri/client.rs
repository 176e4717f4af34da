//! A CRI v1 connection to containerd over its unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Errors talking CRI.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket could not be reached.
    #[error("connecting to the CRI socket {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A call failed.
    #[error("CRI {call}: {message} ({code:?})")]
    Call {
        /// Which call (`RunPodSandbox`, ...).
        call: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The runtime's message.
        message: String,
    },
}

impl CriError {
    /// Whether the runtime said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            CriError::Call {
                code: tonic::Code::NotFound,
                ..
            }
        ) || matches!(self, CriError::Call { message, .. } if message.contains("not found"))
    }
}

/// Maps a tonic status to a [`CriError::Call`].
pub(crate) fn call(name: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |s| CriError::Call {
        call: name,
        code: s.code(),
        message: s.message().to_string(),
    }
}

/// The runtime and image services of one CRI endpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cri {
    /// RuntimeService (sandboxes, containers, exec).
    pub runtime: RuntimeServiceClient<Channel>,
    /// ImageService (pulls, image status).
    pub images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to the CRI server on the unix socket `socket`.
    pub async fn connect(socket: &Path) -> Result<Self, CriError> {
        let path = socket.to_path_buf();
        // The URI is a placeholder: the connector dials the socket.
        let channel = Endpoint::from_static("http://[::1]:0")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|source| CriError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// The runtime's name and version, e.g. `containerd://1.6.20`.
    pub async fn runtime_version(&self) -> Result<String, CriError> {
        let v = self
            .runtime
            .clone()
            .version(k8s_cri::v1::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(call("Version"))?
            .into_inner();
        Ok(format!("{}://{}", v.runtime_name, v.runtime_version))
    }
}
