//! `kubevirt-controller run`: the controllers against a cluster until a signal.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::CliError;
use crate::vm;

pub(super) fn run(kubeconfig: Option<PathBuf>, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = match kubeconfig {
            Some(path) => {
                let connect = |e: kube::config::KubeconfigError| {
                    CliError::Connect(format!("{}: {e}", path.display()))
                };
                let file = Kubeconfig::read_from(&path).map_err(connect)?;
                kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(connect)?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| CliError::Connect(e.to_string()))?,
        };
        let server = config.cluster_url.to_string();
        let client =
            kube::Client::try_from(config).map_err(|e| CliError::Connect(e.to_string()))?;
        writeln!(
            out,
            "kubevirt-controller: VirtualMachine controller on {server}"
        )?;
        out.flush()?;
        vm::controller::run(client, shutdown_signal(), |r| {
            if let Err(e) = r {
                eprintln!("kubevirt-controller: {e}");
            }
        })
        .await;
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
