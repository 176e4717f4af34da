//! The Ready / Progressing / Failure conditions of snapshots and restores, upstream's way: the
//! reason and the message are the same text, and a condition keeps its transition time while
//! its status stays.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubevirt_api::snapshot::v1beta1::Condition;

/// Condition type: the object is usable.
pub const READY: &str = "Ready";
/// Condition type: work is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: the operation failed.
pub const FAILURE: &str = "Failure";

/// Sets condition `type_` in `conditions` to `status` with `reason` (also its message). The
/// probe time is now; the transition time moves only when the status changes.
pub fn set(
    conditions: &mut Option<Vec<Condition>>,
    type_: &str,
    status: bool,
    reason: &str,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let list = conditions.get_or_insert_with(Vec::new);
    let since = list
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let c = Condition {
        type_: type_.into(),
        status,
        reason: Some(reason.into()),
        message: Some(reason.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(since),
    };
    match list.iter_mut().find(|c| c.type_ == type_) {
        Some(old) => {
            // An unchanged condition is not rewritten (a new probe time alone would make every
            // sync a write).
            if old.status != c.status || old.reason != c.reason {
                *old = c;
            }
        }
        None => list.push(c),
    }
}

/// The status (`True`/`False`) and reason of condition `type_`.
pub fn get<'a>(conditions: &'a Option<Vec<Condition>>, type_: &str) -> Option<(&'a str, &'a str)> {
    conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_deref().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let t0 = Timestamp::from_second(1_000).expect("a time");
        let t1 = Timestamp::from_second(2_000).expect("a time");
        let mut c = None;
        set(&mut c, READY, false, "Not ready", t0);
        set(&mut c, READY, false, "Not ready", t1);
        let list = c.clone().expect("set");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, Some(Time(t0)));
        assert_eq!(
            list[0].last_probe_time,
            Some(Time(t0)),
            "unchanged: not rewritten"
        );
        set(&mut c, READY, true, "Ready", t1);
        let list = c.clone().expect("set");
        assert_eq!(list[0].last_transition_time, Some(Time(t1)));
        assert_eq!(get(&c, READY), Some(("True", "Ready")));
        assert_eq!(list[0].message.as_deref(), Some("Ready"));
    }
}
