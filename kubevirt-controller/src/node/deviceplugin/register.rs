//! Serving one resource's plugin on its socket in the kubelet's plugin directory and
//! registering it with the kubelet: `Register(version, endpoint, resource)` on `kubelet.sock`.
//! A restarting kubelet removes every plugin socket and makes a new `kubelet.sock`; the plugin
//! sees either, serves anew and registers again, as the kubelet expects of its plugins.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Server, Uri};

use super::api::device_plugin_server::DevicePluginServer;
use super::api::registration_client::RegistrationClient;
use super::api::{DevicePluginOptions, RegisterRequest};
use super::service::Service;
use super::{API_VERSION, HostDevice, KUBELET_SOCKET};

/// Why a plugin could not serve.
#[derive(Debug, thiserror::Error)]
pub enum DevicePluginError {
    /// Its socket could not be made.
    #[error("serving the {resource} device plugin on {path}: {source}")]
    Bind {
        /// The resource.
        resource: String,
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How often the plugin looks at its socket and the kubelet's.
const CHECK: Duration = Duration::from_secs(1);
/// How long it waits between registration attempts while the kubelet does not answer.
const RETRY: Duration = Duration::from_secs(2);

/// The identity of the kubelet's socket (its inode), if it is there.
fn kubelet_identity(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// A gRPC channel to the server on unix socket `path` (the kubelet's, or a plugin's).
pub async fn unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is a placeholder: the connector dials the socket.
    Endpoint::from_static("http://[::1]:0")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// Registers `device` (served on its socket in the kubelet's directory) with the kubelet at
/// `kubelet`.
pub async fn register(kubelet: &Path, device: &HostDevice) -> Result<(), String> {
    let channel = unix_channel(kubelet)
        .await
        .map_err(|e| format!("dialing {}: {e}", kubelet.display()))?;
    RegistrationClient::new(channel)
        .register(RegisterRequest {
            version: API_VERSION.into(),
            endpoint: device.socket_name(),
            resource_name: device.resource.clone(),
            options: Some(DevicePluginOptions::default()),
        })
        .await
        .map_err(|s| format!("the kubelet refused the registration: {}", s.message()))?;
    Ok(())
}

/// Serves `device`'s plugin in `dir` and keeps it registered with the kubelet there until
/// `stop` says true; removes its socket then. Its devices' health is checked every `health`.
pub async fn run(
    dir: PathBuf,
    device: HostDevice,
    health: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DevicePluginError> {
    let socket = dir.join(device.socket_name());
    let kubelet = dir.join(KUBELET_SOCKET);
    loop {
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|source| DevicePluginError::Bind {
            resource: device.resource.clone(),
            path: socket.clone(),
            source,
        })?;
        let (end_round, round) = watch::channel(false);
        let service = Service::new(device.clone(), health, round.clone());
        let mut shutdown = round.clone();
        let server = tokio::spawn(
            Server::builder()
                .add_service(DevicePluginServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                }),
        );

        // Register (waiting for a kubelet that is not there yet), then watch both sockets.
        let mut registered_with = None;
        let mut said = false;
        let stopped = loop {
            if registered_with.is_none() {
                match register(&kubelet, &device).await {
                    Ok(()) => {
                        registered_with = kubelet_identity(&kubelet);
                        tracing::info!(resource = %device.resource, socket = %socket.display(),
                            "device plugin registered with the kubelet");
                    }
                    Err(e) if !said => {
                        tracing::warn!(resource = %device.resource, error = %e,
                            "device plugin not registered yet; retrying");
                        said = true;
                    }
                    Err(_) => {}
                }
            }
            let wait = if registered_with.is_some() {
                CHECK
            } else {
                RETRY
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break true,
            }
            if registered_with.is_some()
                && (!socket.exists() || kubelet_identity(&kubelet) != registered_with)
            {
                tracing::info!(resource = %device.resource,
                    "the kubelet restarted: serving and registering the device plugin again");
                break false;
            }
        };
        let _ = end_round.send(true);
        let _ = server.await;
        if stopped {
            let _ = std::fs::remove_file(&socket);
            return Ok(());
        }
    }
}
