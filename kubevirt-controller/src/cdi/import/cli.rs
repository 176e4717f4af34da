//! `kubevirt-controller cdi-importer`: the importer pod's command. It reads upstream's
//! environment ([`super::env`]), serves the progress ([`super::metrics`]), imports, and writes
//! the [`super::termination`] message: exit 0 on success, 1 with the error in the message.
//!
//! As upstream, the claim is a Block volume when the device path exists, else a Filesystem
//! volume mounted at the data directory; scratch space is used when its directory exists.
//! SIGTERM (the pod deleted) stops the import and removes what it had written.

use super::env::{ImporterEnv, SourceKind, read_secret_headers};
use super::metrics::MetricsServer;
use super::pipeline::{ImportError, ImportOutcome, ImportRequest, ImportSource, import};
use super::progress::Progress;
use super::source::Source;
use super::source::file::FileSource;
use super::source::http::{HttpOptions, HttpSource};
use super::source::registry::{RegistryOptions, RegistrySource};
use super::target::{self, Target};
use super::termination;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where upstream's importer pod mounts a Filesystem claim.
pub const DATA_DIR: &str = "/data";
/// Where upstream's importer pod puts a Block claim's device.
pub const BLOCK_DEVICE: &str = "/dev/cdi-block-volume";
/// Where upstream's importer pod mounts scratch space.
pub const SCRATCH_DIR: &str = "/scratch";
/// Where upstream mounts `secretExtraHeaders` secrets.
pub const SECRET_HEADERS_DIR: &str = "/extraheaders";
/// The progress endpoint's port.
pub const METRICS_PORT: u16 = 8443;

/// Arguments of `kubevirt-controller cdi-importer` (the rest comes from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct ImporterArgs {
    /// A Filesystem claim's mount point; the disk is `<dir>/disk.img`.
    #[arg(long, default_value = DATA_DIR)]
    pub data_dir: PathBuf,
    /// A Block claim's device; when it exists the claim is Block.
    #[arg(long, default_value = BLOCK_DEVICE)]
    pub block_device: PathBuf,
    /// Scratch space (used when the directory exists).
    #[arg(long, default_value = SCRATCH_DIR)]
    pub scratch_dir: PathBuf,
    /// Where the result goes.
    #[arg(long, default_value = termination::DEFAULT_TERMINATION_LOG)]
    pub termination_log: PathBuf,
    /// Serve the progress (plain HTTP, `GET /metrics`) here; `none` to not serve it.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub metrics_listen: String,
    /// Where `secretExtraHeaders` secrets are mounted.
    #[arg(long, default_value = SECRET_HEADERS_DIR)]
    pub secret_headers_dir: PathBuf,
}

/// Runs the importer with the process's environment.
pub fn run(args: &ImporterArgs) -> ExitCode {
    run_with(args, std::env::vars())
}

/// Runs the importer with `vars` as its environment.
pub fn run_with(args: &ImporterArgs, vars: impl IntoIterator<Item = (String, String)>) -> ExitCode {
    let finish = |result: Result<String, String>| {
        let (text, code) = match result {
            Ok(text) => (text, ExitCode::SUCCESS),
            Err(text) => {
                tracing::error!("{text}");
                (text, ExitCode::FAILURE)
            }
        };
        if let Err(e) = termination::write(&args.termination_log, &text) {
            tracing::error!(path = %args.termination_log.display(), "writing the termination message: {e}");
        }
        code
    };
    let env = match ImporterEnv::parse(vars) {
        Ok(env) => env,
        Err(e) => return finish(Err(termination::truncate(e.to_string()))),
    };
    let progress = Progress::new();
    let _metrics = match args.metrics_listen.as_str() {
        "none" => None,
        listen => match listen.parse::<SocketAddr>() {
            Ok(addr) => match MetricsServer::start(addr, env.owner_uid.clone(), progress.clone()) {
                Ok(server) => {
                    tracing::info!(address = %server.local_addr(), "serving the progress at /metrics");
                    Some(server)
                }
                Err(e) => {
                    tracing::warn!("not serving the progress on {addr}: {e}");
                    None
                }
            },
            Err(e) => return finish(Err(format!("--metrics-listen {listen:?}: {e}"))),
        },
    };
    if let Some(ready) = &env.ready_file {
        wait_for_ready_file(ready);
    }
    let source = match open_source(&env, args) {
        Ok(source) => source,
        Err(message) => return finish(Err(termination::truncate(message))),
    };
    let target = Target::of_pod(&args.block_device, &args.data_dir);
    let request = ImportRequest {
        source,
        content_type: env.content_type,
        target,
        requested_size: env.image_size,
        filesystem_overhead: env.filesystem_overhead,
        preallocation: env.preallocation,
        scratch_dir: args.scratch_dir.is_dir().then(|| args.scratch_dir.clone()),
        checksum: env.checksum.clone(),
        progress,
    };
    // Where an interrupted import may have written (a Block import's scratch: the temp dir).
    let mut dirs = vec![args.data_dir.clone(), std::env::temp_dir()];
    dirs.extend(request.scratch_dir.clone());
    match import_until_terminated(request) {
        None => {
            // The import's thread dies with the process; what it wrote goes first.
            for dir in &dirs {
                target::remove_leftovers(dir);
            }
            finish(Err(
                "Import terminated by a signal before it completed".to_string()
            ))
        }
        Some(Ok(outcome)) => {
            tracing::info!(?outcome, "import complete");
            if let Some(done) = &env.done_file
                && let Err(e) = std::fs::File::create(done)
            {
                tracing::warn!(path = %done.display(), "creating the done file: {e}");
            }
            finish(Ok(termination::success(outcome.preallocation_applied)))
        }
        Some(Err(e)) => finish(Err(termination::failure(&e))),
    }
}

/// Waits until `ready` exists (a node-pull import: the image's server listens). Without
/// limit, as upstream: the pod's deletion (SIGTERM) ends the wait.
fn wait_for_ready_file(ready: &std::path::Path) {
    let mut told = false;
    while !ready.exists() {
        if !told {
            tracing::info!(path = %ready.display(), "waiting for the ready file");
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Runs the import on its own thread; `None` if SIGTERM or SIGINT came first.
fn import_until_terminated(request: ImportRequest) -> Option<Result<ImportOutcome, ImportError>> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("no signal handling ({e}): importing without");
            return Some(import(request));
        }
    };
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(import(request));
    });
    rt.block_on(async {
        tokio::select! {
            result = result => result.ok(),
            _ = crate::signal::terminated() => {
                tracing::warn!("terminated: stopping the import");
                None
            }
        }
    })
}

fn open_source(env: &ImporterEnv, args: &ImporterArgs) -> Result<ImportSource, String> {
    Ok(match env.source {
        SourceKind::Blank => ImportSource::Blank,
        SourceKind::File => ImportSource::Data(Box::new(FileSource::new(&env.endpoint))),
        SourceKind::Http => {
            let mut extra_headers = env.extra_headers.clone();
            extra_headers
                .extend(read_secret_headers(&args.secret_headers_dir).map_err(|e| e.to_string())?);
            let options = HttpOptions {
                basic_auth: env.basic_auth.clone(),
                cert_dirs: env.cert_dirs.clone(),
                extra_headers,
                insecure_skip_verify: env.insecure_tls,
                proxy: env.proxy.clone(),
                ..HttpOptions::default()
            };
            let source: Box<dyn Source> = Box::new(
                HttpSource::new(&env.endpoint, options)
                    .map_err(|e| format!("Unable to connect to http data source: {e}"))?,
            );
            ImportSource::Data(source)
        }
        SourceKind::Registry => {
            // The disk is copied out of the layers to scratch space, else beside the disk.
            let scratch_dir = if args.scratch_dir.is_dir() {
                args.scratch_dir.clone()
            } else {
                match Target::of_pod(&args.block_device, &args.data_dir) {
                    Target::Filesystem { dir } => dir,
                    Target::Block { .. } => std::env::temp_dir(),
                }
            };
            let options = RegistryOptions {
                credentials: env.basic_auth.clone(),
                cert_dirs: env.cert_dirs.clone(),
                insecure: env.insecure_tls,
                proxy: env.proxy.clone(),
                scratch_dir,
            };
            let source: Box<dyn Source> = Box::new(
                RegistrySource::new(&env.endpoint, options)
                    .map_err(|e| format!("Unable to connect to registry data source: {e}"))?,
            );
            ImportSource::Data(source)
        }
    })
}
