//! `kubevirt-local`: the local control plane's binary.

use clap::{Parser, Subcommand};
use kubevirt_local::server::{self, State};
use kubevirt_local::setup;
use kubevirt_local::storage::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The kubevirt-rs local control plane.
#[derive(Debug, Parser)]
#[command(name = "kubevirt-local", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Kubernetes API on loopback, storing everything in DATA_DIR/state.db.
    Apiserver {
        /// Where the database, certificates, token and kubeconfig live.
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Serve plain HTTP without authentication (loopback debugging only).
        #[arg(long)]
        insecure_http: bool,
        /// How many changes the watch history keeps; older resourceVersions get 410 Expired.
        #[arg(long, default_value_t = kubevirt_local::storage::DEFAULT_HISTORY)]
        watch_history: u64,
    },
}

fn main() -> ExitCode {
    let Command::Apiserver {
        data_dir,
        listen,
        insecure_http,
        watch_history,
    } = Cli::parse().command;
    if insecure_http && !listen.ip().is_loopback() {
        eprintln!("error: --insecure-http is only allowed on a loopback address, not {listen}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(data_dir, listen, insecure_http, watch_history)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    dir: PathBuf,
    listen: SocketAddr,
    insecure: bool,
    history: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let store = Store::open(&dir.join("state.db"))?.with_history(history);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listening on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let (scheme, tls, token) = if insecure {
        ("http", None, None)
    } else {
        let tls = setup::tls(&dir)?;
        ("https", Some(tls), Some(setup::token(&dir)?))
    };
    let url = format!("{scheme}://{addr}");
    let kubeconfig = setup::kubeconfig(
        &dir,
        &url,
        tls.as_ref().map(|t| t.ca_pem.as_str()),
        token.as_deref(),
    )?;
    let state = State::new(store, token, addr.to_string())?;
    println!("kubevirt-local API server listening on {url}");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get namespaces");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server::serve(listener, state, tls.map(|t| t.config), shutdown).await?;
    Ok(())
}
