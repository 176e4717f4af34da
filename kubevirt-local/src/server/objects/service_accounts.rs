//! The validating half of upstream's ServiceAccount admission plugin: a new pod (other than a
//! mirror pod) must name a service account that exists in its namespace, else
//! `pods "NAME" is forbidden: error looking up service account NS/SA: serviceaccount "SA" not found`.
//! (The mutating half, defaulting the name to `default` and mounting the token, is
//! `semantics::service_accounts`.)
//!
//! Upstream, kube-controller-manager creates each namespace's `default` account shortly after
//! the namespace, and the plugin retries `default` for a second or two to ride out that race.
//! Here the `default` account is written in the same transaction as its namespace (and made at
//! start-up for the standard namespaces and any namespace that lacks one), so a pod created
//! right after `kubectl create namespace` is never refused; the brief wait is kept for an account
//! someone deleted and a publisher is about to put back.

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::storage::{EventType, ObjectKey, StoreError, Txn};

/// The storage name of ServiceAccounts.
pub const SERVICE_ACCOUNTS: &str = "/serviceaccounts";
/// The annotation marking a mirror pod (the API copy of a kubelet's static pod).
const MIRROR: &str = "kubernetes.io/config.mirror";
/// The account every namespace gets.
const DEFAULT: &str = "default";
/// How often and how many times a missing `default` account is looked for again.
const RETRY: Duration = Duration::from_millis(150);
const ATTEMPTS: u32 = 10;

/// The service account new pod `pod` must find, unless it is a mirror pod (the mutating plugin
/// has already defaulted the name).
fn account_of(pod: &Value) -> Option<&str> {
    if pod["metadata"]["annotations"].get(MIRROR).is_some() {
        return None;
    }
    Some(
        pod["spec"]["serviceAccountName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT),
    )
}

/// The pod's name as upstream's error names it (before name generation: the prefix).
fn pod_name(pod: &Value) -> &str {
    pod["metadata"]["generateName"]
        .as_str()
        .filter(|g| !g.is_empty())
        .or(pod["metadata"]["name"].as_str())
        .unwrap_or_default()
}

/// Waits briefly, outside any transaction, for pod `pod`'s `default` account in `ns` to appear,
/// as upstream's plugin retries it; returns at once for any other account or when it exists.
pub(super) fn wait_for_default(
    store: &crate::storage::Store,
    ns: &str,
    pod: &Value,
) -> Result<(), ApiError> {
    if account_of(pod) != Some(DEFAULT) {
        return Ok(());
    }
    let key = ObjectKey::new(SERVICE_ACCOUNTS, ns, DEFAULT);
    for _ in 0..ATTEMPTS {
        if store.get(&key)?.is_some() {
            return Ok(());
        }
        std::thread::sleep(RETRY);
    }
    Ok(())
}

/// Refuses new pod `pod` of namespace `ns` unless its service account exists.
pub(super) fn require(tx: &Txn<'_>, ns: &str, pod: &Value) -> Result<(), ApiError> {
    let Some(account) = account_of(pod) else {
        return Ok(());
    };
    if tx
        .get(&ObjectKey::new(SERVICE_ACCOUNTS, ns, account))?
        .is_some()
    {
        return Ok(());
    }
    let name = pod_name(pod);
    let mut e = ApiError::forbidden(format!(
        "pods \"{name}\" is forbidden: error looking up service account {ns}/{account}: \
         serviceaccount \"{account}\" not found"
    ));
    e.details = Some(json!({"name": name, "kind": "pods"}));
    Err(e)
}

/// Writes namespace `ns`'s `default` account unless it has one.
pub fn ensure_default(tx: &mut Txn<'_>, ns: &str, now: &str) -> Result<(), StoreError> {
    let key = ObjectKey::new(SERVICE_ACCOUNTS, ns, DEFAULT);
    if tx.get(&key)?.is_some() {
        return Ok(());
    }
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
        "name": DEFAULT, "namespace": ns, "uid": uuid::Uuid::new_v4().to_string(),
        "creationTimestamp": now}});
    tx.put(&key, account, EventType::Added)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

    fn pod(extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        p
    }

    #[test]
    fn a_missing_account_is_refused_in_upstreams_words() {
        let store = Store::in_memory().unwrap();
        let named = pod(json!({"metadata": {"name": "p"}, "spec": {"serviceAccountName": "ops"}}));
        let e = store.write(|tx| require(tx, "a", &named)).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: error looking up service account a/ops: serviceaccount \"ops\" not found"
        );
        let generated = pod(json!({"metadata": {"name": "web-x1", "generateName": "web-"}}));
        let e = store.write(|tx| require(tx, "a", &generated)).unwrap_err();
        assert!(
            e.message.starts_with("pods \"web-\" is forbidden"),
            "{}",
            e.message
        );
        assert!(
            e.message.ends_with("serviceaccount \"default\" not found"),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_existing_account_or_a_mirror_pod_passes() {
        let store = Store::in_memory().unwrap();
        store
            .write(|tx| ensure_default(tx, "a", "2026-12-05T00:00:00Z"))
            .unwrap();
        // Twice: the second finds it and changes nothing.
        let rv = store.current_rv().unwrap();
        store
            .write(|tx| ensure_default(tx, "a", "2026-12-05T00:00:00Z"))
            .unwrap();
        assert_eq!(store.current_rv().unwrap(), rv);
        store.write(|tx| require(tx, "a", &pod(json!({})))).unwrap();
        let mirror = pod(json!({"metadata": {"name": "m",
            "annotations": {MIRROR: "x"}}, "spec": {"serviceAccountName": "nobody"}}));
        store.write(|tx| require(tx, "b", &mirror)).unwrap();
        // Another namespace has no account yet.
        assert!(store.write(|tx| require(tx, "b", &pod(json!({})))).is_err());
    }
}
