//! The node's registry as `kubevirt-local up` runs it: the node's own images (the pause image
//! from the static busybox, the virt-launcher image from the installed launcher binary) written
//! as OCI layouts under one directory, any layouts the user names (`--image NAME:TAG=DIR`), all
//! served by the embedded read-only [`registry`](super::registry) on loopback. containerd pulls
//! them like any image (a `hosts.toml` says plain HTTP), so a fresh machine runs pods and VMIs
//! with no registry process and no network.
//!
//! References are `HOST:PORT/NAME:TAG`; the launcher's also carries its manifest digest
//! (`HOST:PORT/kubevirt-rs/virt-launcher:VERSION@sha256:…`), so a rebuilt launcher binary is a
//! new image to containerd even under the same version. The port the last run used is
//! remembered (`<dir>/address`) and taken again when free: image references in pods and in an
//! adopted containerd's configuration stay valid across restarts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use super::local::{BuiltImage, LocalImage, LocalImageError};
use super::node::{
    IMPORTER_NAME, LAUNCHER_NAME, PAUSE_NAME, PAUSE_TAG, importer_image, launcher_image,
    pause_image,
};
use super::registry::{self, RegistryServer};
use super::served::{Catalog, ServedError, ServedImage};

/// What the node's registry serves and where.
#[derive(Debug, Clone)]
pub struct NodeRegistryConfig {
    /// Where to listen; `None`: 127.0.0.1 on the port the last run used if it is free, else on
    /// any free port.
    pub listen: Option<SocketAddr>,
    /// Where the node's images are written (`pause/`, `virt-launcher/`) and the address is
    /// remembered.
    pub dir: PathBuf,
    /// The static busybox the pause image is made of (Debian's `busybox-static`).
    pub busybox: PathBuf,
    /// The `kubevirt-launcher` binary the launcher image is made of; `None`: no launcher image.
    pub launcher: Option<PathBuf>,
    /// The launcher image's tag (the release version; the importer image's too).
    pub launcher_tag: String,
    /// The `kubevirt-controller` and `qemu-img` binaries the CDI importer image is made of;
    /// `None`: no importer image.
    pub importer: Option<(PathBuf, PathBuf)>,
    /// More images to serve (`--image NAME:TAG=DIR`).
    pub images: Vec<ServedImage>,
}

/// Errors starting the node's registry.
#[derive(Debug, thiserror::Error)]
pub enum NodeRegistryError {
    /// A node image could not be built.
    #[error("building the node's images: {0}")]
    Build(#[from] LocalImageError),
    /// An image to serve is not a usable OCI layout.
    #[error(transparent)]
    Served(#[from] ServedError),
    /// The listen address could not be bound.
    #[error("the node's registry listening on {address} (--registry-listen): {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pause image's busybox is missing.
    #[error("{0}: no static busybox for the pause image (install Debian's busybox-static)")]
    Busybox(PathBuf),
    /// The image directory could not be made.
    #[error("{path}: {source}")]
    Io {
        /// Which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The running node registry.
#[derive(Debug)]
pub struct NodeRegistry {
    /// Where it listens.
    pub address: SocketAddr,
    /// `host:port` as image references name it (loopback when it listens on every address).
    pub host: String,
    /// The sandbox image (`HOST:PORT/kubevirt-rs/pause:1`).
    pub pause_image: String,
    /// The launcher image (`HOST:PORT/kubevirt-rs/virt-launcher:VERSION@sha256:…`), if built.
    pub launcher_image: Option<String>,
    /// The CDI importer image (`HOST:PORT/kubevirt-rs/cdi-importer:VERSION@sha256:…`), if built.
    pub importer_image: Option<String>,
    /// Every served `HOST:PORT/NAME:TAG`, the node's own first.
    pub images: Vec<String>,
    stop: watch::Sender<bool>,
    server: RegistryServer,
}

/// The `host:port` clients reach `address` at: loopback for an unspecified address.
pub fn reference_host(address: &SocketAddr) -> String {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port()).to_string()
}

/// `host/name:tag`, with `@digest` when given.
pub fn image_reference(host: &str, name: &str, tag: &str, digest: Option<&str>) -> String {
    match digest {
        Some(d) => format!("{host}/{name}:{tag}@{d}"),
        None => format!("{host}/{name}:{tag}"),
    }
}

async fn bind(cfg: &NodeRegistryConfig) -> Result<tokio::net::TcpListener, NodeRegistryError> {
    let remembered = cfg.dir.join("address");
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let listen_err = |address| move |source| NodeRegistryError::Listen { address, source };
    match cfg.listen {
        Some(address) => tokio::net::TcpListener::bind(address)
            .await
            .map_err(listen_err(address)),
        None => {
            let last = std::fs::read_to_string(&remembered)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
                .filter(|a| a.ip().is_loopback());
            if let Some(last) = last
                && let Ok(l) = tokio::net::TcpListener::bind(last).await
            {
                return Ok(l);
            }
            tokio::net::TcpListener::bind(any)
                .await
                .map_err(listen_err(any))
        }
    }
}

/// Names a directory where the node's images (pause, launcher, importer) are written once per
/// set of inputs and shared by every node (`scripts/test.sh` sets it: the suites start dozens
/// of nodes from the same binaries). Unset: each node writes them in its own data directory.
pub const SHARED_IMAGES_ENV: &str = "KUBEVIRT_LOCAL_SHARED_IMAGES";

fn build(image: LocalImage, dir: &Path) -> Result<BuiltImage, LocalImageError> {
    match std::env::var_os(SHARED_IMAGES_ENV) {
        Some(shared) if !shared.is_empty() => {
            super::cache::write_layout_shared(&image, Path::new(&shared))
        }
        _ => super::cache::write_layout_cached(&image, dir),
    }
}

impl NodeRegistry {
    /// Builds the node's images, adds the named ones and serves them all.
    pub async fn start(cfg: NodeRegistryConfig) -> Result<Self, NodeRegistryError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| NodeRegistryError::Io {
            path: cfg.dir.clone(),
            source,
        })?;
        if !cfg.busybox.is_file() {
            return Err(NodeRegistryError::Busybox(cfg.busybox.clone()));
        }
        let listener = bind(&cfg).await?;
        let address = listener
            .local_addr()
            .map_err(|source| NodeRegistryError::Listen {
                address: cfg
                    .listen
                    .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
                source,
            })?;
        let _ = std::fs::write(cfg.dir.join("address"), address.to_string());
        let host = reference_host(&address);

        // Layers are hashed as they are written: off the async workers.
        let c = cfg.clone();
        let built = tokio::task::spawn_blocking(move || {
            let pause = build(pause_image(&c.busybox)?, &c.dir.join("pause"))?;
            let launcher = match &c.launcher {
                Some(binary) => Some(build(
                    launcher_image(binary, &c.launcher_tag)?,
                    &c.dir.join("virt-launcher"),
                )?),
                None => None,
            };
            let importer = match &c.importer {
                Some((controller, qemu_img)) => Some(build(
                    importer_image(controller, qemu_img, &c.launcher_tag)?,
                    &c.dir.join("cdi-importer"),
                )?),
                None => None,
            };
            Ok::<_, LocalImageError>((pause, launcher, importer))
        })
        .await
        .map_err(|e| NodeRegistryError::Io {
            path: cfg.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
        let (pause, launcher, importer) = built;

        let mut catalog = Catalog::new();
        let mut images = Vec::new();
        let node_images = std::iter::once(&pause)
            .chain(launcher.as_ref())
            .chain(importer.as_ref());
        for image in node_images.map(ServedImage::from).chain(cfg.images.clone()) {
            catalog.add(&image)?;
            images.push(image_reference(&host, &image.name, &image.tag, None));
        }
        let (stop, stopped) = watch::channel(false);
        let server = registry::serve(listener, Arc::new(catalog), stopped)
            .map_err(|source| NodeRegistryError::Listen { address, source })?;
        tracing::info!(%address, images = ?images, "the node's registry serves");
        Ok(Self {
            address,
            pause_image: image_reference(&host, PAUSE_NAME, PAUSE_TAG, None),
            launcher_image: launcher
                .map(|l| image_reference(&host, LAUNCHER_NAME, &l.tag, Some(&l.digest))),
            importer_image: importer
                .map(|i| image_reference(&host, IMPORTER_NAME, &i.tag, Some(&i.digest))),
            host,
            images,
            stop,
            server,
        })
    }

    /// Stops serving.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_reachable_host() {
        assert_eq!(
            reference_host(&"0.0.0.0:5000".parse().unwrap()),
            "127.0.0.1:5000"
        );
        assert_eq!(reference_host(&"[::]:5000".parse().unwrap()), "[::1]:5000");
        assert_eq!(
            reference_host(&"10.0.0.1:80".parse().unwrap()),
            "10.0.0.1:80"
        );
        assert_eq!(
            image_reference("h:1", "a/b", "2", Some("sha256:00")),
            "h:1/a/b:2@sha256:00"
        );
    }
}
