//! Instance types and preferences (`spec.instancetype`, `spec.preference`): when the VM
//! controller makes a VMI, the named VirtualMachine(Cluster)Instancetype and
//! VirtualMachine(Cluster)Preference are applied to it, each pinned by a ControllerRevision as
//! upstream does: the first start copies the object into a revision owned by the VM
//! (`<vm>-<object>-<uid>-<generation>`) and records it in `status.instancetypeRef` /
//! `status.preferenceRef`; later starts use that revision, so editing the instancetype changes
//! no existing VM.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{ApiResource, DynamicObject, ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use kubevirt_api::core::v1::{
    ControllerRevisionRef, InstancetypeStatusRef, VirtualMachine, VirtualMachineInstance,
};
use serde_json::{Value, json};

/// The group and version of instance types and preferences.
const GROUP: &str = "instancetype.kubevirt.io";
const VERSION: &str = "v1beta1";

/// Why an instancetype or preference could not be applied (said on the VM as FailedCreate).
#[derive(Debug, thiserror::Error)]
pub enum InstancetypeError {
    /// The named object does not exist or could not be read.
    #[error("{field}: {kind} {name:?}: {source}")]
    Get {
        /// The VM field naming it.
        field: &'static str,
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The field names a kind that is not an instancetype (or preference) kind.
    #[error("{field}.kind: {kind:?} is not one of {allowed:?}")]
    Kind {
        /// The VM field.
        field: &'static str,
        /// What it says.
        kind: String,
        /// The kinds it may name.
        allowed: [&'static str; 2],
    },
    /// The field names nothing (inferFromVolume is not supported).
    #[error("{0}.name: required (inferFromVolume is not supported)")]
    NoName(&'static str),
    /// The pinned revision could not be read or written.
    #[error("controllerrevision {name}: {source}")]
    Revision {
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The revision's or the VMI's content is not what it must be.
    #[error("{0}")]
    Content(String),
}

/// The two things a VM may name.
#[derive(Clone, Copy)]
struct Which {
    field: &'static str,
    cluster_kind: &'static str,
    namespaced_kind: &'static str,
}

const INSTANCETYPE: Which = Which {
    field: "spec.instancetype",
    cluster_kind: "VirtualMachineClusterInstancetype",
    namespaced_kind: "VirtualMachineInstancetype",
};
const PREFERENCE: Which = Which {
    field: "spec.preference",
    cluster_kind: "VirtualMachineClusterPreference",
    namespaced_kind: "VirtualMachinePreference",
};

/// What was pinned, for the VM's status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pinned {
    /// `status.instancetypeRef`.
    pub instancetype: Option<InstancetypeStatusRef>,
    /// `status.preferenceRef`.
    pub preference: Option<InstancetypeStatusRef>,
}

/// Applies the VM's instancetype and preference to `vmi` (pinning them first if needed) and
/// says what is pinned.
pub async fn expand(
    client: &Client,
    vm: &VirtualMachine,
    vmi: &mut VirtualMachineInstance,
) -> Result<Pinned, InstancetypeError> {
    let it = vm
        .spec
        .instancetype
        .as_ref()
        .map(|m| (m.kind.clone(), m.name.clone(), m.revision_name.clone()));
    let pref = vm
        .spec
        .preference
        .as_ref()
        .map(|m| (m.kind.clone(), m.name.clone(), m.revision_name.clone()));
    let status = vm.status.clone().unwrap_or_default();
    let mut pinned = Pinned::default();
    let mut spec = serde_json::to_value(&vmi.spec)
        .map_err(|e| InstancetypeError::Content(format!("encoding the VMI spec: {e}")))?;
    let mut preference_spec = Value::Null;
    if let Some(m) = pref {
        let (r, data) = pin(client, vm, PREFERENCE, m, status.preference_ref.as_ref()).await?;
        preference_spec = data;
        pinned.preference = Some(r);
    }
    if let Some(m) = it {
        let (r, data) = pin(
            client,
            vm,
            INSTANCETYPE,
            m,
            status.instancetype_ref.as_ref(),
        )
        .await?;
        apply_instancetype(&mut spec, &data, &preference_spec);
        pinned.instancetype = Some(r);
    }
    if !preference_spec.is_null() {
        apply_preference(&mut spec, &preference_spec);
    }
    vmi.spec = serde_json::from_value(spec).map_err(|e| {
        InstancetypeError::Content(format!("the expanded VMI spec does not decode: {e}"))
    })?;
    Ok(pinned)
}

type Matcher = (Option<String>, Option<String>, Option<String>);

/// The object's spec from its pinned revision, pinning it now if it is not yet.
async fn pin(
    client: &Client,
    vm: &VirtualMachine,
    which: Which,
    (kind, name, revision_name): Matcher,
    recorded: Option<&InstancetypeStatusRef>,
) -> Result<(InstancetypeStatusRef, Value), InstancetypeError> {
    let ns = vm.namespace().unwrap_or_default();
    let kind = kind.unwrap_or_else(|| which.cluster_kind.to_lowercase());
    let canonical = [which.cluster_kind, which.namespaced_kind]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(&kind))
        .ok_or_else(|| InstancetypeError::Kind {
            field: which.field,
            kind: kind.clone(),
            allowed: [which.cluster_kind, which.namespaced_kind],
        })?;
    let name = name.ok_or(InstancetypeError::NoName(which.field))?;
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let recorded_name = recorded
        .filter(|r| r.name.as_deref() == Some(&name))
        .and_then(|r| r.controller_revision_ref.as_ref())
        .and_then(|r| r.name.clone())
        .or(revision_name);
    let revision = match recorded_name {
        Some(rev) => revisions
            .get(&rev)
            .await
            .map_err(|source| InstancetypeError::Revision { name: rev, source })?,
        None => create_revision(client, vm, which, canonical, &name).await?,
    };
    let data = revision.data.0.clone();
    if !data.is_object() {
        return Err(InstancetypeError::Content(format!(
            "controllerrevision {} holds no object",
            revision.name_any()
        )));
    }
    let reference = InstancetypeStatusRef {
        name: Some(name),
        kind: Some(kind),
        controller_revision_ref: Some(ControllerRevisionRef {
            name: Some(revision.name_any()),
        }),
        ..Default::default()
    };
    Ok((reference, data.get("spec").cloned().unwrap_or(Value::Null)))
}

async fn create_revision(
    client: &Client,
    vm: &VirtualMachine,
    which: Which,
    kind: &str,
    name: &str,
) -> Result<ControllerRevision, InstancetypeError> {
    let ns = vm.namespace().unwrap_or_default();
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind.into(),
        plural,
    };
    let api: Api<DynamicObject> = if kind == which.cluster_kind {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), &ns, &ar)
    };
    let object = api
        .get(name)
        .await
        .map_err(|source| InstancetypeError::Get {
            field: which.field,
            kind: kind.into(),
            name: name.into(),
            source,
        })?;
    let revision_name = format!(
        "{}-{}-{}-{}",
        vm.name_any(),
        name,
        object.uid().unwrap_or_default(),
        object.metadata.generation.unwrap_or(1)
    );
    let data = json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": kind,
        "metadata": {"name": name, "uid": object.uid(), "generation": object.metadata.generation},
        "spec": object.data.get("spec").cloned().unwrap_or(Value::Null)});
    let owner = OwnerReference {
        api_version: VirtualMachine::api_version(&()).into_owned(),
        kind: VirtualMachine::kind(&()).into_owned(),
        name: vm.name_any(),
        uid: vm.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name.clone()),
            namespace: Some(ns.clone()),
            owner_references: Some(vec![owner]),
            labels: Some(
                [(
                    "instancetype.kubevirt.io/object-kind".to_string(),
                    kind.to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        data: RawExtension(data),
        revision: Some(1),
    };
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    match revisions.create(&PostParams::default(), &revision).await {
        Ok(r) => Ok(r),
        // Made by an earlier sync whose status write was lost: the same content by name.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            revisions
                .get(&revision_name)
                .await
                .map_err(|source| InstancetypeError::Revision {
                    name: revision_name,
                    source,
                })
        }
        Err(source) => Err(InstancetypeError::Revision {
            name: revision_name,
            source,
        }),
    }
}

fn set_if_absent(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, key) in path.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let last = i + 1 == path.len();
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        if last {
            map.entry(key.to_string()).or_insert(value);
            return;
        }
        cur = map.entry(key.to_string()).or_insert_with(|| json!({}));
    }
}

/// vCPUs as the preference's topology spreads them (upstream's default: all sockets).
fn topology(guest: u64, preference: &Value) -> Value {
    let t = preference
        .pointer("/cpu/preferredCPUTopology")
        .and_then(Value::as_str)
        .unwrap_or("preferSockets");
    match t {
        "preferCores" | "cores" => json!({"sockets": 1, "cores": guest, "threads": 1}),
        "preferThreads" | "threads" => json!({"sockets": 1, "cores": 1, "threads": guest}),
        "preferSpread" | "spread" if guest.is_multiple_of(2) => {
            json!({"sockets": guest / 2, "cores": 2, "threads": 1})
        }
        _ => json!({"sockets": guest, "cores": 1, "threads": 1}),
    }
}

/// Upstream's instancetype application: its fields are the VMI's (the VM's template may not set
/// them, which validation checks).
pub fn apply_instancetype(spec: &mut Value, it: &Value, preference: &Value) {
    if let Some(guest) = it.pointer("/cpu/guest").and_then(Value::as_u64) {
        let mut cpu = topology(guest, preference);
        for (from, to) in [
            ("model", "model"),
            ("dedicatedCPUPlacement", "dedicatedCpuPlacement"),
            ("isolateEmulatorThread", "isolateEmulatorThread"),
            ("numa", "numa"),
            ("realtime", "realtime"),
            ("maxSockets", "maxSockets"),
        ] {
            if let Some(v) = it.pointer(&format!("/cpu/{from}")) {
                cpu[to] = v.clone();
            }
        }
        spec["domain"]["cpu"] = cpu;
    }
    if let Some(guest) = it.pointer("/memory/guest") {
        set_if_absent(spec, &["domain", "memory"], json!({}));
        spec["domain"]["memory"]["guest"] = guest.clone();
        if let Some(h) = it.pointer("/memory/hugepages") {
            spec["domain"]["memory"]["hugepages"] = h.clone();
        }
        if let Some(m) = it.pointer("/memory/maxGuest") {
            spec["domain"]["memory"]["maxGuest"] = m.clone();
        }
    }
    for (from, to) in [
        ("/ioThreadsPolicy", &["domain", "ioThreadsPolicy"][..]),
        ("/launchSecurity", &["domain", "launchSecurity"][..]),
        ("/gpus", &["domain", "devices", "gpus"][..]),
        ("/hostDevices", &["domain", "devices", "hostDevices"][..]),
        ("/nodeSelector", &["nodeSelector"][..]),
        ("/schedulerName", &["schedulerName"][..]),
    ] {
        if let Some(v) = it.pointer(from) {
            set_if_absent(spec, to, v.clone());
        }
    }
}

/// Upstream's preference application: each preferred value fills only what the VMI leaves unset.
pub fn apply_preference(spec: &mut Value, p: &Value) {
    let s = |path: &str| p.pointer(path).cloned();
    if let Some(bus) = s("/devices/preferredDiskBus")
        && let Some(disks) = spec
            .pointer_mut("/domain/devices/disks")
            .and_then(Value::as_array_mut)
    {
        for d in disks {
            let plain_disk = d.get("cdrom").is_none() && d.get("lun").is_none();
            if plain_disk {
                set_if_absent(d, &["disk", "bus"], bus.clone());
            }
        }
    }
    if let Some(model) = s("/devices/preferredInterfaceModel")
        && let Some(ifaces) = spec
            .pointer_mut("/domain/devices/interfaces")
            .and_then(Value::as_array_mut)
    {
        for i in ifaces {
            set_if_absent(i, &["model"], model.clone());
        }
    }
    for (from, to) in [
        (
            "/devices/preferredAutoattachGraphicsDevice",
            &["domain", "devices", "autoattachGraphicsDevice"][..],
        ),
        (
            "/devices/preferredAutoattachMemBalloon",
            &["domain", "devices", "autoattachMemBalloon"][..],
        ),
        (
            "/devices/preferredAutoattachSerialConsole",
            &["domain", "devices", "autoattachSerialConsole"][..],
        ),
        ("/devices/preferredRng", &["domain", "devices", "rng"][..]),
        (
            "/devices/preferredNetworkInterfaceMultiQueue",
            &["domain", "devices", "networkInterfaceMultiqueue"][..],
        ),
        (
            "/machine/preferredMachineType",
            &["domain", "machine", "type"][..],
        ),
        ("/clock/preferredClockOffset", &["domain", "clock"][..]),
        (
            "/preferredTerminationGracePeriodSeconds",
            &["terminationGracePeriodSeconds"][..],
        ),
        ("/preferredSubdomain", &["subdomain"][..]),
    ] {
        if let Some(v) = s(from) {
            set_if_absent(spec, to, v);
        }
    }
    if spec.pointer("/domain/firmware/bootloader").is_none() {
        if s("/firmware/preferredUseEfi") == Some(Value::Bool(true)) {
            let secure = s("/firmware/preferredUseSecureBoot").unwrap_or(Value::Bool(false));
            set_if_absent(
                spec,
                &["domain", "firmware", "bootloader"],
                json!({"efi": {"secureBoot": secure}}),
            );
        } else if s("/firmware/preferredUseBios") == Some(Value::Bool(true)) {
            set_if_absent(
                spec,
                &["domain", "firmware", "bootloader"],
                json!({"bios": {}}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instancetype_sizes_the_vmi_and_a_preference_fills_only_gaps() {
        let mut spec = json!({"domain": {"devices": {"disks": [
            {"name": "root", "disk": {}}, {"name": "data", "disk": {"bus": "sata"}}]}}});
        let it = json!({"cpu": {"guest": 2}, "memory": {"guest": "2Gi"}});
        let pref = json!({"cpu": {"preferredCPUTopology": "preferCores"},
            "devices": {"preferredDiskBus": "virtio", "preferredRng": {}},
            "preferredTerminationGracePeriodSeconds": 60});
        apply_instancetype(&mut spec, &it, &pref);
        apply_preference(&mut spec, &pref);
        assert_eq!(
            spec["domain"]["cpu"],
            json!({"sockets": 1, "cores": 2, "threads": 1})
        );
        assert_eq!(spec["domain"]["memory"]["guest"], "2Gi");
        assert_eq!(
            spec["domain"]["devices"]["disks"][0]["disk"]["bus"],
            "virtio"
        );
        assert_eq!(spec["domain"]["devices"]["disks"][1]["disk"]["bus"], "sata");
        assert_eq!(spec["domain"]["devices"]["rng"], json!({}));
        assert_eq!(spec["terminationGracePeriodSeconds"], 60);
    }

    #[test]
    fn the_default_topology_is_all_sockets() {
        assert_eq!(
            topology(4, &Value::Null),
            json!({"sockets": 4, "cores": 1, "threads": 1})
        );
    }
}
