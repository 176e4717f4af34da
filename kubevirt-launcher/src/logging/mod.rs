//! The launcher's own log: `tracing` events on stderr (the pod's `compute` log, the node
//! agent's `launcher.log`), filtered by `RUST_LOG` (default: this project's crates at `info`,
//! everything else at `warn`), as text or, with `--log-format json`, as upstream virt-launcher's
//! JSON lines (`level`, `timestamp`, `msg`, `component: virt-launcher`, and the VMI's `kind`,
//! `namespace`, `name` and `uid`), so tools that read upstream's logs read ours.
//!
//! Library code only emits events; the binary installs the output once with [`init`], before
//! any thread is confined. Writing an event needs only what every confined thread may do
//! (`confine::common::runtime`): memory, futexes, `clock_gettime` for the timestamp (UTC:
//! no time-zone file is read) and one `write` to fd 2.
//!
//! kubevirt-vmm's own records (through the `log` facade) join the same log, as events of
//! target `kubevirt_vmm`.
//!
//! The VMI a launcher runs is process-wide ([`set_vmi`]): every line names it, whichever thread
//! wrote it, without spans to carry across threads.

mod format;
mod vmm;

pub use self::format::LineFormat;

use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "warn,kubevirt_launcher=info,kubevirt_launcher_protocol=info,\
     kubevirt_vmm=info,kubevirt_oci=info";

/// The `component` of every JSON line, as upstream's launcher names itself.
pub const COMPONENT: &str = "virt-launcher";

/// How log events are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines: `TIMESTAMP LEVEL namespace/name: message field=value ...`.
    #[default]
    Text,
    /// One JSON object per event with upstream virt-launcher's keys.
    Json,
}

/// The VMI this launcher runs, as every log line names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmiIdentity {
    /// Its namespace (empty: not known, e.g. a standalone document without one).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid (empty: not known).
    pub uid: String,
}

static VMI: OnceLock<VmiIdentity> = OnceLock::new();

/// Names the VMI in every log line from now on. The first call wins: a launcher runs one VMI.
pub fn set_vmi(identity: VmiIdentity) {
    let _ = VMI.set(identity);
}

/// The VMI named by [`set_vmi`], if any.
pub fn vmi() -> Option<&'static VmiIdentity> {
    VMI.get()
}

/// Installs the process-wide subscriber, writing to stderr. A second call (a test harness, an
/// embedder that set its own) leaves the first in place.
pub fn init(format: LogFormat) {
    // set_global_default fails only when a subscriber is already set, which is fine.
    let _ = tracing::subscriber::set_global_default(subscriber(format, std::io::stderr));
    vmm::install();
}

/// The subscriber [`init`] installs, writing to `writer`.
pub fn subscriber<W>(format: LogFormat, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    Box::new(
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .event_format(LineFormat::new(format))
            .finish(),
    )
}
