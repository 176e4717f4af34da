//! The local control plane's own controllers, the ones a real cluster runs in kube-scheduler
//! and kube-controller-manager: the [`scheduler`](crate::scheduler), the PV binder
//! ([`volumes`](crate::volumes)) and the snapshot controller
//! ([`volumes::snapshots`](crate::volumes::snapshots)), the workload controllers and the service account / root CA
//! publisher. `up` starts them beside KubeVirt's controllers; each talks to the API server
//! through kube-rs only, so they would work against any API server.

use std::future::Future;

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The running set, with one stop.
#[derive(Debug)]
pub struct LocalControllers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn report(what: &'static str) -> impl Fn(Result<String, String>) + Send + Sync + 'static {
    move |r| kubevirt_controller::logging::sync_outcome(what, r)
}

impl LocalControllers {
    /// Start the scheduler, the PV binder, the snapshot controller and the workload controllers on `client`, and,
    /// given what to publish, the service account and root CA publisher.
    pub fn start(client: Client, published: Option<crate::serviceaccounts::Published>) -> Self {
        let stop = watch::channel(false).0;
        let stopped = || {
            let mut rx = stop.subscribe();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        use crate::workloads::{run_daemonsets, run_deployments, run_jobs, run_replicasets};
        let client_for_publisher = client.clone();
        let mut tasks = vec![
            tokio::spawn(crate::scheduler::run(
                client.clone(),
                stopped(),
                report("scheduler"),
            )),
            tokio::spawn(run_replicasets(
                client.clone(),
                stopped(),
                report("replicaset controller"),
            )),
            tokio::spawn(run_deployments(
                client.clone(),
                stopped(),
                report("deployment controller"),
            )),
            tokio::spawn(run_jobs(
                client.clone(),
                stopped(),
                report("job controller"),
            )),
            tokio::spawn(crate::volumes::run(
                client.clone(),
                stopped(),
                report("persistentvolume binder"),
            )),
            tokio::spawn(crate::volumes::snapshots::run(
                client.clone(),
                stopped(),
                report("snapshot controller"),
            )),
            tokio::spawn(run_daemonsets(
                client,
                stopped(),
                report("daemonset controller"),
            )),
        ];
        if let Some(published) = published {
            tasks.push(tokio::spawn(crate::serviceaccounts::run(
                client_for_publisher.clone(),
                published,
                stopped(),
                report("service account publisher"),
            )));
        }
        Self { stop, tasks }
    }

    /// Stop them all and wait until each has finished.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Run until `shutdown` resolves, then [`stop`](Self::stop).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.stop().await;
    }
}
