//! The node agent's device plugins, as upstream's virt-handler runs them: the kubelet's device
//! plugin API (v1beta1, gRPC on unix sockets in `/var/lib/kubelet/device-plugins`) advertising
//! `devices.kubevirt.io/kvm`, `/tun` and `/vhost-net`, so that on a real cluster the scheduler
//! places launcher pods only on nodes that have them and the kubelet puts the device node into
//! the `compute` container (no `privileged`). On `kubevirt-local up` the local kubelet maps the
//! same resources itself and no plugin runs.
//!
//! - [`api`]: the generated messages and services (`proto/deviceplugin.proto`);
//! - [`service`]: one resource's `DevicePlugin` service (ListAndWatch with health, Allocate);
//! - [`register`]: serving it on its socket and registering with the kubelet, again whenever
//!   the kubelet restarts (it removes every plugin socket when it does).

pub mod register;
pub mod service;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The generated device plugin API (package `v1beta1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod api {
    tonic::include_proto!("v1beta1");
}

/// The API version a plugin registers with.
pub const API_VERSION: &str = "v1beta1";
/// The kubelet's directory of plugin sockets (and its own `kubelet.sock`).
pub const DEFAULT_DIR: &str = "/var/lib/kubelet/device-plugins";
/// The kubelet's registration socket, in that directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// How many devices each resource advertises: the launcher pods one node can run.
pub const DEFAULT_COUNT: usize = 1000;

/// A host device node advertised as an extended resource of `count` interchangeable devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// The extended resource, e.g. `devices.kubevirt.io/kvm`.
    pub resource: String,
    /// A short name: the devices' IDs (`kvm0`, `kvm1`, ...) and the socket (`kubevirt-kvm.sock`).
    pub short: String,
    /// The device node on the host.
    pub host_path: PathBuf,
    /// Where it appears in the container.
    pub container_path: PathBuf,
    /// cgroup device permissions (`rw`, `rwm`).
    pub permissions: String,
    /// How many devices the resource has.
    pub count: usize,
}

impl HostDevice {
    fn new(short: &str, path: &str, count: usize) -> HostDevice {
        HostDevice {
            resource: format!("devices.kubevirt.io/{short}"),
            short: short.into(),
            host_path: path.into(),
            container_path: path.into(),
            permissions: "rw".into(),
            count,
        }
    }

    /// The socket file name in the plugin directory.
    pub fn socket_name(&self) -> String {
        format!("kubevirt-{}.sock", self.short)
    }

    /// The ID of device `i`.
    pub fn id(&self, i: usize) -> String {
        format!("{}{i}", self.short)
    }

    /// Whether `id` names one of this resource's devices.
    pub fn owns(&self, id: &str) -> bool {
        id.strip_prefix(self.short.as_str())
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < self.count && id == self.id(n))
    }
}

/// The devices a launcher pod asks for: `/dev/kvm`, `/dev/net/tun` and `/dev/vhost-net`,
/// `count` of each.
pub fn kubevirt_devices(count: usize) -> Vec<HostDevice> {
    vec![
        HostDevice::new("kvm", "/dev/kvm", count),
        HostDevice::new("tun", "/dev/net/tun", count),
        HostDevice::new("vhost-net", "/dev/vhost-net", count),
    ]
}

/// How often each plugin checks its device node's presence.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Running plugins, one task each.
#[derive(Debug)]
pub struct Plugins {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), register::DevicePluginError>>>,
}

impl Plugins {
    /// Serves a plugin for each of `devices` in the kubelet's directory `dir`.
    pub fn start(dir: PathBuf, devices: Vec<HostDevice>) -> Plugins {
        let (stop, stopping) = watch::channel(false);
        let tasks = devices
            .into_iter()
            .map(|d| {
                let dir = dir.clone();
                let stopping = stopping.clone();
                tokio::spawn(async move {
                    let resource = d.resource.clone();
                    let done = register::run(dir, d, HEALTH_INTERVAL, stopping).await;
                    if let Err(e) = &done {
                        tracing::error!(resource = %resource, error = %e, "device plugin stopped");
                    }
                    done
                })
            })
            .collect();
        Plugins { stop, tasks }
    }

    /// Stops every plugin and removes its socket.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_the_short_name_and_an_index_below_the_count() {
        let kvm = &kubevirt_devices(3)[0];
        assert_eq!(kvm.resource, "devices.kubevirt.io/kvm");
        assert_eq!(kvm.socket_name(), "kubevirt-kvm.sock");
        assert!(kvm.owns("kvm0") && kvm.owns("kvm2"));
        for bad in ["kvm3", "kvm", "kvm-1", "kvm01", "tun0", "kvm0 ", ""] {
            assert!(!kvm.owns(bad), "{bad:?}");
        }
    }
}
