//! `registry` imports with `pullMethod: node`, as upstream's CDI does them: the node's container
//! runtime pulls the user's image (with the node's credentials, mirrors and cache) because the
//! importer pod runs that image itself as its `server` container.
//!
//! The image may be a bare `FROM scratch` image holding only `/disk/<file>`, so nothing of it is
//! run but the disk: the pod's `init` container (the importer image) copies this binary, its
//! dynamic loader and the libraries it maps into a shared `emptyDir` ([`bundle`]); the `server`
//! container starts the copy through the copied loader (`/shared/ld.so --library-path /shared
//! /shared/server cdi-containerimage-server ...`), which serves the one file under `/disk` on
//! `localhost:8100` ([`server`], upstream's `cdi-containerimage-server`) and creates the ready
//! file; the `importer` container waits for the ready file, imports
//! `http://localhost:8100/disk.img` through the ordinary http source, and creates the done file
//! on success, at which the server exits.

pub mod bundle;
pub mod server;

/// The server's port (upstream's `ImporterProxyPort`).
pub const SERVER_PORT: u16 = 8100;
/// The shared `emptyDir`'s mount path in all three containers.
pub const SHARED_DIR: &str = "/shared";
/// The copied dynamic loader, in [`SHARED_DIR`].
pub const LOADER: &str = "ld.so";
/// The copied binary, in [`SHARED_DIR`].
pub const SERVER: &str = "server";
/// Where the user's image holds its disk.
pub const IMAGE_DIR: &str = "/disk";
/// Created by the server once it listens.
pub const READY_FILE: &str = "/shared/ready";
/// Created by the importer once the import succeeded; the server exits when it appears.
pub const DONE_FILE: &str = "/shared/done";
/// The path the server serves the disk at.
pub const DISK_PATH: &str = "/disk.img";

/// The URL the importer reads the disk from.
pub fn endpoint() -> String {
    format!("http://localhost:{SERVER_PORT}{DISK_PATH}")
}
