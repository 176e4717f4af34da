//! The operator's metrics (upstream's virt-operator): whether this replica leads (it holds
//! Lease `virt-operator`, unexpired) and whether it is ready to (it can read the lease).
//! Read from the Lease at scrape time, so the operator's loop needs no hook.

use super::exposition::{Family, Kind};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;

/// The Lease the operator replicas compete for.
const LEASE: &str = "virt-operator";

/// The two status families: `leading` and `ready` as 1 or 0.
pub fn status(leading: bool, ready: bool) -> Vec<Family> {
    let bit = |b: bool| if b { 1.0 } else { 0.0 };
    vec![
        Family::new(
            "kubevirt_virt_operator_leading_status",
            "Indication for an operating virt-operator.",
            Kind::Gauge,
        )
        .with(&[], bit(leading)),
        Family::new(
            "kubevirt_virt_operator_ready_status",
            "Indication for a virt-operator that is ready to take the lead.",
            Kind::Gauge,
        )
        .with(&[], bit(ready)),
    ]
}

/// Reads Lease `virt-operator` in `namespace`: this replica (`identity`) leads while it is
/// the unexpired holder; it is ready while the lease can be read (a missing lease too: the
/// first replica creates it).
pub async fn collect(client: Client, namespace: String, identity: String) -> Vec<Family> {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    match api.get_opt(LEASE).await {
        Ok(lease) => {
            let leading = lease.and_then(|l| l.spec).is_some_and(|spec| {
                spec.holder_identity.as_deref() == Some(identity.as_str())
                    && !crate::operator::lease::expired(&spec, jiff::Timestamp::now())
            });
            status(leading, true)
        }
        Err(error) => {
            tracing::warn!(error = %error, "metrics: reading Lease virt-operator failed");
            status(false, false)
        }
    }
}
