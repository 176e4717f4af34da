//! What the virtctl tests and the console benchmark share: `kubevirt-local up` in process with
//! its node agent.

use std::path::Path;
use std::time::Duration;

use kubevirt_local::up::{NodeOptions, Started, UpOptions, run};
use kubevirt_testsupport::{Profile, launcher_binary};

/// `up` on its own runtime thread; stopped (launchers and all) on drop.
pub struct Plane {
    /// Where it serves.
    pub started: Started,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Plane {
    /// Starts `up` with its data below `dir` (launchers built with `profile`).
    pub fn start(dir: &Path, profile: Profile) -> Plane {
        let launcher = launcher_binary(profile);
        let opts = UpOptions {
            data_dir: dir.join("data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            watch_history: 10_000,
            node: Some(NodeOptions::new("local", launcher)),
            ready_file: None,
            // VMIs only: no containerd.
            kubelet: None,
            inflight: Default::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let shutdown = async move {
                    let _ = stopped.await;
                };
                run(opts, shutdown, move |s| ready_tx.send(s.clone()).unwrap())
                    .await
                    .unwrap();
            });
        });
        let started = ready
            .recv_timeout(Duration::from_secs(60))
            .expect("up is ready");
        Plane {
            started,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Its kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.started.kubeconfig
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The demo VM (`demo`, runStrategy Always, labelled `app: demo`) booting `image`.
pub fn demo_vm(image: &str) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {{name: demo}}
spec:
  runStrategy: Always
  template:
    metadata:
      labels: {{app: demo}}
    spec:
      terminationGracePeriodSeconds: 10
      domain:
        memory: {{guest: 64Mi}}
        firmware:
          kernelBoot:
            container: {{image: "{image}", kernelPath: /boot/demo.elf}}
        devices:
          autoattachPodInterface: false
          disks:
          - name: cloudinit
            disk: {{bus: virtio}}
      volumes:
      - name: cloudinit
        cloudInitNoCloud:
          userData: |
            #cloud-config
            hostname: demo-vm
"#
    )
}
