//! One resource's `DevicePlugin` service: `ListAndWatch` sends the devices (all healthy while
//! the device node exists, all unhealthy while it does not) and again whenever that changes;
//! `Allocate` puts the device node into the container with the resource's permissions.

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::HostDevice;
use super::api::device_plugin_server::DevicePlugin;
use super::api::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, Device, DevicePluginOptions, DeviceSpec, Empty,
    ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse,
};

/// The kubelet's health words.
pub const HEALTHY: &str = "Healthy";
/// See [`HEALTHY`].
pub const UNHEALTHY: &str = "Unhealthy";

/// The service of one [`HostDevice`].
#[derive(Debug, Clone)]
pub struct Service {
    device: HostDevice,
    /// How often the device node's presence is checked.
    interval: Duration,
    /// Ends every `ListAndWatch` stream when the plugin stops.
    stop: watch::Receiver<bool>,
}

impl Service {
    /// The service of `device`, checking its health every `interval` until `stop` says true.
    pub fn new(device: HostDevice, interval: Duration, stop: watch::Receiver<bool>) -> Self {
        Self {
            device,
            interval,
            stop,
        }
    }

    /// The device list for health `healthy`.
    fn devices(&self, healthy: bool) -> ListAndWatchResponse {
        let health = if healthy { HEALTHY } else { UNHEALTHY };
        ListAndWatchResponse {
            devices: (0..self.device.count)
                .map(|i| Device {
                    id: self.device.id(i),
                    health: health.into(),
                    topology: None,
                })
                .collect(),
        }
    }
}

fn present(path: &Path) -> bool {
    path.exists()
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Service {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: false,
        }))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let me = self.clone();
        tokio::spawn(async move {
            let mut stop = me.stop.clone();
            let mut last = None;
            loop {
                let healthy = present(&me.device.host_path);
                if last != Some(healthy) {
                    if !healthy {
                        tracing::warn!(device = %me.device.host_path.display(),
                            resource = %me.device.resource, "device node missing: unhealthy");
                    }
                    if tx.send(Ok(me.devices(healthy))).await.is_err() {
                        return; // the kubelet went away
                    }
                    last = Some(healthy);
                }
                tokio::select! {
                    _ = tokio::time::sleep(me.interval) => {}
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        // Every device is the same node: any choice will do; must-includes first.
        let container_responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|r| {
                let size = usize::try_from(r.allocation_size).unwrap_or(0);
                let mut ids = r.must_include_device_i_ds;
                for id in r.available_device_i_ds {
                    if ids.len() >= size {
                        break;
                    }
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                ContainerPreferredAllocationResponse { device_i_ds: ids }
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let mut container_responses = Vec::new();
        for container in request.into_inner().container_requests {
            if let Some(bad) = container
                .devices_ids
                .iter()
                .find(|id| !self.device.owns(id))
            {
                return Err(Status::invalid_argument(format!(
                    "device {bad:?} is not one of {} ({}0 to {}{})",
                    self.device.resource,
                    self.device.short,
                    self.device.short,
                    self.device.count.saturating_sub(1)
                )));
            }
            if !present(&self.device.host_path) {
                return Err(Status::unavailable(format!(
                    "{} is missing on this node: {} cannot be allocated",
                    self.device.host_path.display(),
                    self.device.resource
                )));
            }
            // However many IDs a container gets, they are all the same device node.
            container_responses.push(ContainerAllocateResponse {
                devices: vec![DeviceSpec {
                    container_path: self.device.container_path.to_string_lossy().into_owned(),
                    host_path: self.device.host_path.to_string_lossy().into_owned(),
                    permissions: self.device.permissions.clone(),
                }],
                ..Default::default()
            });
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
