//! The node agent's device plugin against a stand-in kubelet speaking the real device plugin
//! API over unix sockets: registration, ListAndWatch with health that follows the device node,
//! Allocate (and its refusals), re-registration after a kubelet restart, cleanup on stop.

use std::path::Path;
use std::time::Duration;

use kubevirt_controller::node::deviceplugin::api::device_plugin_client::DevicePluginClient;
use kubevirt_controller::node::deviceplugin::api::registration_server::{
    Registration, RegistrationServer,
};
use kubevirt_controller::node::deviceplugin::api::{
    AllocateRequest, ContainerAllocateRequest, Empty, RegisterRequest,
};
use kubevirt_controller::node::deviceplugin::register::{run, unix_channel};
use kubevirt_controller::node::deviceplugin::{HostDevice, KUBELET_SOCKET, kubevirt_devices};
use kubevirt_testsupport::tempdir;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// The kubelet's registration service: hands each request to the test.
struct Kubelet(mpsc::Sender<RegisterRequest>);

#[tonic::async_trait]
impl Registration for Kubelet {
    async fn register(&self, r: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let _ = self.0.send(r.into_inner()).await;
        Ok(Response::new(Empty {}))
    }
}

/// Serves the stand-in kubelet on `<dir>/kubelet.sock` until `stop`.
fn kubelet(dir: &Path, tx: mpsc::Sender<RegisterRequest>) -> watch::Sender<bool> {
    let socket = dir.join(KUBELET_SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(Kubelet(tx)))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = stopped.wait_for(|s| *s).await;
            }),
    );
    stop
}

async fn next<T>(rx: &mut mpsc::Receiver<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 10 s"))
        .unwrap()
}

fn allocate(ids: &[&str]) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| s.to_string()).collect(),
        }],
    }
}

#[tokio::test]
async fn the_kvm_plugin_registers_advertises_allocates_and_survives_a_kubelet_restart() {
    let dir = tempdir("device-plugin");
    let plugins = dir.join("device-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // The device node is a file the test removes and restores, so health can change.
    let node = dir.join("kvm");
    std::fs::write(&node, b"").unwrap();
    let device = HostDevice {
        host_path: node.clone(),
        count: 3,
        ..kubevirt_devices(3)[0].clone()
    };

    let (tx, mut registered) = mpsc::channel(4);
    let kubelet_stop = kubelet(&plugins, tx.clone());
    let (stop, stopping) = watch::channel(false);
    let plugin = tokio::spawn(run(
        plugins.clone(),
        device.clone(),
        Duration::from_millis(100),
        stopping,
    ));

    let r = next(&mut registered, "registration").await;
    assert_eq!(r.version, "v1beta1");
    assert_eq!(r.resource_name, "devices.kubevirt.io/kvm");
    assert_eq!(r.endpoint, "kubevirt-kvm.sock");

    let channel = unix_channel(&plugins.join(&r.endpoint)).await.unwrap();
    let mut client = DevicePluginClient::new(channel);
    let mut devices = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    let first = devices.message().await.unwrap().unwrap();
    let listed: Vec<_> = first
        .devices
        .iter()
        .map(|d| (d.id.as_str(), d.health.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            ("kvm0", "Healthy"),
            ("kvm1", "Healthy"),
            ("kvm2", "Healthy")
        ]
    );

    let given = client
        .allocate(allocate(&["kvm1"]))
        .await
        .unwrap()
        .into_inner();
    let spec = &given.container_responses[0].devices;
    assert_eq!(spec.len(), 1, "{spec:?}");
    assert_eq!(spec[0].host_path, node.to_string_lossy());
    assert_eq!(spec[0].container_path, "/dev/kvm");
    assert_eq!(spec[0].permissions, "rw");
    let refused = client
        .allocate(allocate(&["kvm1", "kvm9"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("\"kvm9\""),
        "{}",
        refused.message()
    );

    // The device node goes away: every device turns Unhealthy and none is allocated.
    std::fs::remove_file(&node).unwrap();
    let update = tokio::time::timeout(Duration::from_secs(5), devices.message())
        .await
        .expect("a health update")
        .unwrap()
        .unwrap();
    assert!(update.devices.iter().all(|d| d.health == "Unhealthy"));
    let missing = client.allocate(allocate(&["kvm0"])).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unavailable);
    std::fs::write(&node, b"").unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), devices.message())
        .await
        .expect("a health update")
        .unwrap()
        .unwrap();
    assert!(back.devices.iter().all(|d| d.health == "Healthy"));

    // The kubelet restarts: it removes the plugin sockets and serves a new kubelet.sock.
    let _ = kubelet_stop.send(true);
    std::fs::remove_file(plugins.join(KUBELET_SOCKET)).unwrap();
    std::fs::remove_file(plugins.join("kubevirt-kvm.sock")).unwrap();
    let _kubelet_again = kubelet(&plugins, tx);
    let again = next(&mut registered, "registration after the kubelet's restart").await;
    assert_eq!(again.resource_name, "devices.kubevirt.io/kvm");
    let channel = unix_channel(&plugins.join(&again.endpoint)).await.unwrap();
    let mut client = DevicePluginClient::new(channel);
    assert!(client.allocate(allocate(&["kvm2"])).await.is_ok());

    // Stopped: its socket is gone.
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), plugin)
        .await
        .expect("the plugin stops")
        .unwrap()
        .unwrap();
    assert!(!plugins.join("kubevirt-kvm.sock").exists());
}
