//! The launcher's commands: each file one command's arguments and body; [`supervise`] is the
//! VM's life that `run` and `serve` share.

pub mod console_log;
pub mod pod_network;
pub mod probe;
pub mod run;
pub mod serve;
pub mod signals;
pub mod supervise;
pub mod writable;

use kubevirt_api::codec::documents_from_yaml;
use kubevirt_api::object::Object;
use std::io::Read;
use std::path::Path;

/// Whether the launcher confines itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeccompMode {
    /// No filters, capabilities kept.
    None,
    /// Per-thread filters, capabilities dropped after the launch.
    Default,
}

/// Names the VMI `object` is in every log line from now on (its namespace, name and uid as
/// the document gives them).
pub fn log_as(object: &Object) {
    let meta = object.metadata();
    kubevirt_launcher::logging::set_vmi(kubevirt_launcher::logging::VmiIdentity {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
    });
}

/// Reads the first document of a YAML/JSON file (`-`: stdin) as an object.
pub fn read_object(path: &Path) -> Result<Object, String> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(path)
    };
    let text = text.map_err(|e| format!("{}: {e}", path.display()))?;
    match documents_from_yaml(&text).map(|d| d.into_iter().next()) {
        Ok(Some(doc)) => Object::decode(&doc.value).map_err(|e| format!("{}: {e}", path.display())),
        Ok(None) => Err(format!("{}: no document", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
