//! `start`, `stop`, `restart`, `pause`, `unpause`, `soft-reboot`: one PUT each on the
//! subresource API, answered as upstream's virtctl answers.

use serde_json::{Value, json};

use super::connect::Connection;
use super::{Kind, VirtctlError};

fn dry_run(on: bool) -> Value {
    if on { json!(["All"]) } else { json!([]) }
}

fn failed(doing: &str, kind: &str, e: VirtctlError) -> VirtctlError {
    VirtctlError::Failed(format!("Error {doing} {kind} {e}"))
}

/// The grace period asked for: `--grace-period` needs `--force`; `--force` alone is 0.
fn grace(force: bool, grace_period: i64) -> Result<Option<i64>, VirtctlError> {
    match (force, grace_period) {
        (false, -1) => Ok(None),
        (false, _) => Err(VirtctlError::Usage(
            "Can not set gracePeriod without --force=true".into(),
        )),
        (true, -1) => Ok(Some(0)),
        (true, g) if g < 0 => Err(VirtctlError::Usage(format!(
            "--grace-period: must be 0 or more, not {g}"
        ))),
        (true, g) => Ok(Some(g)),
    }
}

fn done(kind: &str, name: &str, what: &str, dry: bool) {
    let suffix = if dry { " (dry run)" } else { "" };
    println!("{kind} {name} was scheduled to {what}{suffix}");
}

/// `virtctl start NAME [--paused] [--dry-run]`.
pub async fn start(
    c: &Connection,
    name: &str,
    paused: bool,
    dry: bool,
) -> Result<(), VirtctlError> {
    let mut body = json!({"dryRun": dry_run(dry)});
    if paused {
        body["paused"] = json!(true);
    }
    c.put(&c.path("virtualmachines", name, "start"), &body)
        .await
        .map_err(|e| failed("starting", "VirtualMachine", e))?;
    done("VM", name, "start", dry);
    Ok(())
}

/// `virtctl stop NAME [--force --grace-period N] [--dry-run]`.
pub async fn stop(
    c: &Connection,
    name: &str,
    force: bool,
    grace_period: i64,
    dry: bool,
) -> Result<(), VirtctlError> {
    let mut body = json!({"dryRun": dry_run(dry)});
    if let Some(g) = grace(force, grace_period)? {
        body["gracePeriod"] = json!(g);
    }
    c.put(&c.path("virtualmachines", name, "stop"), &body)
        .await
        .map_err(|e| failed("stopping", "VirtualMachine", e))?;
    done("VM", name, "stop", dry);
    Ok(())
}

/// `virtctl restart NAME [--force --grace-period N] [--dry-run]`.
pub async fn restart(
    c: &Connection,
    name: &str,
    force: bool,
    grace_period: i64,
    dry: bool,
) -> Result<(), VirtctlError> {
    let mut body = json!({"dryRun": dry_run(dry)});
    if let Some(g) = grace(force, grace_period)? {
        body["gracePeriodSeconds"] = json!(g);
    }
    c.put(&c.path("virtualmachines", name, "restart"), &body)
        .await
        .map_err(|e| failed("restarting", "VirtualMachine", e))?;
    done("VM", name, "restart", dry);
    Ok(())
}

/// `virtctl migrate NAME [--addedNodeSelector K=V]... [--dry-run]`.
pub async fn migrate(
    c: &Connection,
    name: &str,
    selector: Vec<(String, String)>,
    dry: bool,
) -> Result<(), VirtctlError> {
    let mut body = json!({"dryRun": dry_run(dry)});
    if !selector.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> =
            selector.into_iter().map(|(k, v)| (k, json!(v))).collect();
        body["addedNodeSelector"] = serde_json::Value::Object(map);
    }
    c.put(&c.path("virtualmachines", name, "migrate"), &body)
        .await
        .map_err(|e| failed("migrating", "VirtualMachine", e))?;
    done("VM", name, "migrate", dry);
    Ok(())
}

/// A `KEY=VALUE` flag value.
///
/// # Errors
/// No `=`, or an empty key.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `virtctl pause|unpause vm|vmi NAME [--dry-run]`: a VM's instance has the VM's name.
pub async fn pause(
    c: &Connection,
    kind: Kind,
    name: &str,
    pause: bool,
    dry: bool,
) -> Result<(), VirtctlError> {
    let action = if pause { "pause" } else { "unpause" };
    let body = json!({"dryRun": dry_run(dry)});
    let doing = if pause { "pausing" } else { "unpausing" };
    let shown = match kind {
        Kind::Vm => "VirtualMachine",
        Kind::Vmi => "VirtualMachineInstance",
    };
    c.put(&c.path("virtualmachineinstances", name, action), &body)
        .await
        .map_err(|e| failed(doing, shown, e))?;
    done("VMI", name, action, dry);
    Ok(())
}

/// `virtctl soft-reboot NAME`.
pub async fn soft_reboot(c: &Connection, name: &str) -> Result<(), VirtctlError> {
    c.put(
        &c.path("virtualmachineinstances", name, "softreboot"),
        &json!({}),
    )
    .await
    .map_err(|e| failed("soft rebooting", "VirtualMachineInstance", e))?;
    done("VMI", name, "soft reboot", false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_period_needs_force_as_upstream_says() {
        assert_eq!(grace(false, -1).unwrap(), None);
        assert!(
            grace(false, 5)
                .unwrap_err()
                .to_string()
                .contains("--force=true")
        );
        assert_eq!(grace(true, -1).unwrap(), Some(0));
        assert_eq!(grace(true, 7).unwrap(), Some(7));
    }
}
