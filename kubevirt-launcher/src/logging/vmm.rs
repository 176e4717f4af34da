//! kubevirt-vmm's records: it logs through the `log` facade (a device's corrupt queue, a
//! qcow2 image's failed close), which nothing would print. This bridge turns each record into
//! an event of target `kubevirt_vmm` (so `RUST_LOG=kubevirt_vmm=debug` shows its debug
//! records), with the record's own target as the `module` field.

use tracing::Level;

/// The bridge [`install`] sets as the `log` facade's logger.
struct Bridge;

/// The target of the bridged events.
pub const TARGET: &str = "kubevirt_vmm";

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        match metadata.level() {
            log::Level::Error => tracing::enabled!(target: TARGET, Level::ERROR),
            log::Level::Warn => tracing::enabled!(target: TARGET, Level::WARN),
            log::Level::Info => tracing::enabled!(target: TARGET, Level::INFO),
            log::Level::Debug => tracing::enabled!(target: TARGET, Level::DEBUG),
            log::Level::Trace => tracing::enabled!(target: TARGET, Level::TRACE),
        }
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let module = record.target();
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, module, "{message}"),
            log::Level::Warn => tracing::warn!(target: TARGET, module, "{message}"),
            log::Level::Info => tracing::info!(target: TARGET, module, "{message}"),
            log::Level::Debug => tracing::debug!(target: TARGET, module, "{message}"),
            log::Level::Trace => tracing::trace!(target: TARGET, module, "{message}"),
        }
    }

    fn flush(&self) {}
}

/// Sends the `log` facade's records into the launcher's log from now on, at the levels the
/// installed subscriber lets through. A logger set before (by an embedder) stays.
pub fn install() {
    static BRIDGE: Bridge = Bridge;
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(match tracing::level_filters::LevelFilter::current() {
            f if f >= tracing::level_filters::LevelFilter::TRACE => log::LevelFilter::Trace,
            f if f >= tracing::level_filters::LevelFilter::DEBUG => log::LevelFilter::Debug,
            f if f >= tracing::level_filters::LevelFilter::INFO => log::LevelFilter::Info,
            f if f >= tracing::level_filters::LevelFilter::WARN => log::LevelFilter::Warn,
            f if f >= tracing::level_filters::LevelFilter::ERROR => log::LevelFilter::Error,
            _ => log::LevelFilter::Off,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LogFormat, subscriber};
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_vmms_warnings_reach_the_log_and_its_debug_records_do_not() {
        let _ = log::set_logger(&Bridge);
        log::set_max_level(log::LevelFilter::Trace);
        let buffer = Buffer::default();
        let out = buffer.clone();
        let sub = subscriber(LogFormat::Json, move || out.clone());
        tracing::subscriber::with_default(sub, || {
            log::warn!(target: "kubevirt_vmm::virtio::block", "virtio-blk: corrupt queue");
            log::debug!(target: "kubevirt_vmm::virtio::block", "a request failed");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "debug is below the default filter: {text}");
        assert_eq!(lines[0]["level"], "warning");
        assert_eq!(lines[0]["msg"], "virtio-blk: corrupt queue");
        assert_eq!(lines[0]["module"], "kubevirt_vmm::virtio::block");
        assert_eq!(lines[0]["component"], "virt-launcher");
    }
}
