//! The importer pod's part for `registry` with `pullMethod: node` (upstream's node import): the
//! user's image runs as the `server` container, started through the loader and libraries the
//! `init` container copied into the shared `emptyDir`; the `importer` container reads the disk
//! over HTTP from it (see [`crate::cdi::import::node_pull`]).

use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, EnvVar, Volume, VolumeMount};

use super::IMPORTER_BINARY;
use crate::cdi::import::env::vars;
use crate::cdi::import::node_pull::{
    self, DONE_FILE, IMAGE_DIR, LOADER, READY_FILE, SERVER, SERVER_PORT, SHARED_DIR,
};
use kubevirt_api::cdi::v1beta1::DataVolumeSourceRegistry;

/// The shared `emptyDir` volume's name (upstream's).
pub const SHARED_VOLUME: &str = "shared-volume";
/// The container running the user's image.
pub const SERVER_CONTAINER: &str = "server";
/// The init container copying the server.
pub const INIT_CONTAINER: &str = "init";

/// A registry source the node's runtime pulls.
pub fn is_node_pull(r: &DataVolumeSourceRegistry) -> bool {
    r.pull_method.as_deref() == Some("node")
}

/// The image the node pulls: the URL without `docker://`.
pub fn image(r: &DataVolumeSourceRegistry) -> String {
    let url = r.url.as_deref().unwrap_or_default();
    url.strip_prefix("docker://").unwrap_or(url).to_string()
}

/// The importer container's source variables: the server's URL over plain HTTP, and the ready
/// and done files.
pub fn importer_env() -> Vec<EnvVar> {
    [
        (vars::SOURCE, "http".to_string()),
        (vars::ENDPOINT, node_pull::endpoint()),
        (vars::READY_FILE, READY_FILE.to_string()),
        (vars::DONE_FILE, DONE_FILE.to_string()),
    ]
    .into_iter()
    .map(|(name, value)| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    })
    .collect()
}

/// The shared volume.
pub fn volume() -> Volume {
    Volume {
        name: SHARED_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// The shared volume's mount.
pub fn mount() -> VolumeMount {
    VolumeMount {
        name: SHARED_VOLUME.into(),
        mount_path: SHARED_DIR.into(),
        ..Default::default()
    }
}

/// The init container: the importer image copies the server into the shared volume.
pub fn init_container(importer_image: &str, pull_policy: &str) -> Container {
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(importer_image.into()),
        image_pull_policy: Some(pull_policy.into()),
        command: Some(vec![
            IMPORTER_BINARY.into(),
            "cdi-containerimage-server".into(),
            "--install-to".into(),
            SHARED_DIR.into(),
        ]),
        volume_mounts: Some(vec![mount()]),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// The `server` container: the user's image, running the copied server through the copied
/// loader (the image needs no libc).
pub fn server_container(r: &DataVolumeSourceRegistry, pull_policy: &str) -> Container {
    let shared = |name: &str| format!("{SHARED_DIR}/{name}");
    Container {
        name: SERVER_CONTAINER.into(),
        image: Some(image(r)),
        image_pull_policy: Some(pull_policy.into()),
        command: Some(vec![
            shared(LOADER),
            "--library-path".into(),
            SHARED_DIR.into(),
            shared(SERVER),
            "cdi-containerimage-server".into(),
            "--port".into(),
            SERVER_PORT.to_string(),
            "--image-dir".into(),
            IMAGE_DIR.into(),
            "--ready-file".into(),
            READY_FILE.into(),
            "--done-file".into(),
            DONE_FILE.into(),
        ]),
        volume_mounts: Some(vec![mount()]),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}
