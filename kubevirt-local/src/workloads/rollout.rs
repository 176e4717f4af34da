//! The arithmetic of a Deployment's rolling update (upstream `deploymentutil`): how far the new
//! ReplicaSet may grow and how far the old ones may shrink under maxSurge and maxUnavailable.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A bad maxSurge/maxUnavailable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?}: must be an integer or a percentage (e.g. 25%)")]
pub struct BadIntOrPercent {
    /// What was given.
    pub value: String,
}

/// Resolve an int-or-percent against `total`, rounding percentages up or down.
pub fn scaled(
    v: Option<&IntOrString>,
    default: &str,
    total: i32,
    round_up: bool,
) -> Result<i32, BadIntOrPercent> {
    let text = match v {
        Some(IntOrString::Int(i)) => return Ok((*i).max(0)),
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let bad = || BadIntOrPercent {
        value: text.to_string(),
    };
    let pct: i64 = text
        .strip_suffix('%')
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    if pct < 0 {
        return Err(bad());
    }
    let num = pct * i64::from(total.max(0));
    let v = if round_up {
        (num + 99) / 100
    } else {
        num / 100
    };
    i32::try_from(v).map_err(|_| bad())
}

/// (maxSurge, maxUnavailable) for `replicas`; both zero would stall, so unavailable becomes 1
/// (upstream `ResolveFenceposts`).
pub fn fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> Result<(i32, i32), BadIntOrPercent> {
    let s = scaled(surge, "25%", replicas, true)?;
    let u = scaled(unavailable, "25%", replicas, false)?;
    Ok(if s == 0 && u == 0 { (0, 1) } else { (s, u) })
}

/// How many replicas the new ReplicaSet should have now (upstream `NewRSNewReplicas`).
/// `total` is the sum of every ReplicaSet's `spec.replicas`.
pub fn new_rs_replicas(replicas: i32, surge: i32, new_current: i32, total: i32) -> i32 {
    if new_current >= replicas {
        return replicas;
    }
    let room = (replicas + surge - total).max(0);
    (new_current + room).min(replicas)
}

/// How many old replicas may go now (upstream `reconcileOldReplicaSets`): keep at least
/// `replicas - unavailable` available, counting the new ReplicaSet's unavailable pods.
pub fn old_scale_down_budget(
    replicas: i32,
    unavailable: i32,
    total: i32,
    new_spec: i32,
    new_available: i32,
) -> i32 {
    let min_available = replicas - unavailable;
    let new_unavailable = (new_spec - new_available).max(0);
    (total - min_available - new_unavailable).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn percentages_round_like_upstream() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(None, None, 4).unwrap(), (1, 1));
        assert_eq!(fenceposts(None, None, 3).unwrap(), (1, 0));
        assert_eq!(
            fenceposts(Some(&p("0%")), Some(&IntOrString::Int(0)), 3).unwrap(),
            (0, 1)
        );
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(2)), Some(&p("50%")), 5).unwrap(),
            (2, 2)
        );
        assert_eq!(
            scaled(Some(&p("ten")), "25%", 4, true),
            Err(BadIntOrPercent {
                value: "ten".into()
            })
        );
    }

    #[test]
    fn a_rolling_update_step() {
        // 3 replicas, surge 1, unavailable 0: the new RS grows to 1, old ones wait for it.
        assert_eq!(new_rs_replicas(3, 1, 0, 3), 1);
        assert_eq!(old_scale_down_budget(3, 0, 4, 1, 0), 0);
        assert_eq!(old_scale_down_budget(3, 0, 4, 1, 1), 1);
    }

    proptest! {
        /// Whatever the user writes, resolving never panics, and the new RS never exceeds
        /// replicas nor makes the total exceed replicas + surge.
        #[test]
        fn bounds_hold(s in "[0-9]{0,4}%?", replicas in 0i32..1000, new_current in 0i32..1000, old in 0i32..1000) {
            if let Ok((surge, _)) = fenceposts(Some(&IntOrString::String(s.clone())), None, replicas) {
                let total = new_current + old;
                let n = new_rs_replicas(replicas, surge, new_current, total);
                prop_assert!(n <= replicas);
                if n > new_current {
                    prop_assert!(total - new_current + n <= replicas + surge);
                }
            }
        }
    }
}
