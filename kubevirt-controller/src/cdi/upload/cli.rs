//! `kubevirt-controller cdi-uploadserver`: the `cdi-upload-<dv>` pod's command. It takes the
//! importer's environment for the disk (`IMPORTER_IMAGE_SIZE`, `FILESYSTEM_OVERHEAD`,
//! `IMPORTER_CONTENTTYPE`, `PREALLOCATION`), serves [`super::server`] until one upload
//! succeeds, then writes the termination message and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::sync::watch;

use super::server::{UploadSettings, router};
use crate::cdi::import::env::ImporterEnv;
use crate::cdi::import::progress::Progress;
use crate::cdi::import::target::Target;
use crate::cdi::import::termination;

/// Arguments of `kubevirt-controller cdi-uploadserver` (the rest comes from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct UploadServerArgs {
    /// A Filesystem claim's mount point; the disk is `<dir>/disk.img`.
    #[arg(long, default_value = "/data")]
    pub data_dir: PathBuf,
    /// A Block claim's device; when it exists the claim is Block.
    #[arg(long, default_value = "/dev/cdi-block-volume")]
    pub block_device: PathBuf,
    /// Where the result goes.
    #[arg(long, default_value = termination::DEFAULT_TERMINATION_LOG)]
    pub termination_log: PathBuf,
    /// Where to listen (plain HTTP; the upload proxy is the client).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
}

/// Runs the upload server with the process's environment.
pub fn run(args: &UploadServerArgs) -> ExitCode {
    let vars = std::env::vars()
        .filter(|(k, _)| k != "IMPORTER_SOURCE" && k != "IMPORTER_ENDPOINT")
        .chain([("IMPORTER_SOURCE".to_string(), "none".to_string())]);
    let env = match ImporterEnv::parse(vars) {
        Ok(env) => env,
        Err(e) => return finish(args, Err(e.to_string())),
    };
    let target = Target::of_pod(&args.block_device, &args.data_dir);
    let settings = UploadSettings {
        target,
        content_type: env.content_type,
        requested_size: env.image_size,
        filesystem_overhead: env.filesystem_overhead,
        preallocation: env.preallocation,
        progress: Progress::new(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return finish(args, Err(format!("starting the runtime: {e}"))),
    };
    let result = runtime.block_on(serve(args.listen, settings));
    finish(args, result)
}

/// Serves until an upload succeeds; its termination message.
pub async fn serve(listen: SocketAddr, settings: UploadSettings) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listening on {listen}: {e}"))?;
    tracing::info!(address = %listen, "waiting for the upload");
    let (done, finished) = watch::channel(None);
    let mut wait = finished.clone();
    axum::serve(listener, router(settings, done))
        .with_graceful_shutdown(async move {
            let _ = wait.wait_for(Option::is_some).await;
        })
        .await
        .map_err(|e| format!("serving the upload: {e}"))?;
    let message = finished.borrow().clone();
    message.ok_or_else(|| "the server stopped before an upload succeeded".into())
}

fn finish(args: &UploadServerArgs, result: Result<String, String>) -> ExitCode {
    let (text, code) = match result {
        Ok(text) => (text, ExitCode::SUCCESS),
        Err(text) => {
            tracing::error!("{text}");
            (termination::truncate(text), ExitCode::FAILURE)
        }
    };
    if let Err(e) = termination::write(&args.termination_log, &text) {
        tracing::error!(path = %args.termination_log.display(), "writing the termination message: {e}");
    }
    code
}
