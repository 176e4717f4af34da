#!/usr/bin/env python3
"""Generate kubevirt-api's typed Rust API from upstream's OpenAPI (swagger) documents.

Usage: scripts/gen-api.py [--fixtures DIR] [--out DIR] [--check]

Inputs are upstream KubeVirt's and CDI's swagger.json (read from ../shared/fixtures/upstream by default,
never copied into this repository). The output is one Rust file per API type under
kubevirt-api/src/generated/<group>/<version>/, plus the `mod.rs` files that re-export them, in the style of
k8s-openapi. Root kinds get `#[derive(CustomResource)]` on their spec struct so that kube generates the
root object, its `Resource` impl and its CRD.

Type mapping (chosen so that a document survives parse -> serialize with no field lost or invented):
- a property listed in `required` is a plain field (Go serialises it even when empty); any other is
  `Option<T>` and skipped when `None`;
- the closed sets listed in ENUMS become enums with an `Other(String)` fallback (upstream accepts values its
  Go constants do not list, and they must survive); every other string stays `String`;
- JSON schemas (`schemars::JsonSchema`, for CRDs) are derived behind kubevirt-api's `schemars` feature;
- Kubernetes types map to k8s-openapi's; CDI types referenced from KubeVirt map to the `cdi` module, with
  the union of both documents' fields (the two repos vendor slightly different CDI versions).

`--check` regenerates into a temporary directory and exits 1 if the committed output differs.
"""

import argparse
import filecmp
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (swagger, definition, rust module path, api group, version, kind, plural, namespaced, has status)
ROOTS = [
    ("kv", "v1.VirtualMachine", "core::v1", "kubevirt.io", "v1", "virtualmachines", True, True),
    ("kv", "v1.VirtualMachineInstance", "core::v1", "kubevirt.io", "v1", "virtualmachineinstances", True, True),
    ("kv", "v1.VirtualMachineInstanceReplicaSet", "core::v1", "kubevirt.io", "v1",
     "virtualmachineinstancereplicasets", True, True),
    ("kv", "v1.VirtualMachineInstanceMigration", "core::v1", "kubevirt.io", "v1",
     "virtualmachineinstancemigrations", True, True),
    ("kv", "v1.VirtualMachineInstancePreset", "core::v1", "kubevirt.io", "v1",
     "virtualmachineinstancepresets", True, False),
    ("kv", "v1.KubeVirt", "core::v1", "kubevirt.io", "v1", "kubevirts", True, True),
    ("kv", "v1.VirtualMachineExport", "export::v1", "export.kubevirt.io", "v1", "virtualmachineexports", True,
     True),
    ("kv", "v1beta1.VirtualMachineSnapshot", "snapshot::v1beta1", "snapshot.kubevirt.io", "v1beta1",
     "virtualmachinesnapshots", True, True),
    ("kv", "v1beta1.VirtualMachineSnapshotContent", "snapshot::v1beta1", "snapshot.kubevirt.io", "v1beta1",
     "virtualmachinesnapshotcontents", True, True),
    ("kv", "v1beta1.VirtualMachineRestore", "snapshot::v1beta1", "snapshot.kubevirt.io", "v1beta1",
     "virtualmachinerestores", True, True),
    ("kv", "v1beta1.VirtualMachineInstancetype", "instancetype::v1beta1", "instancetype.kubevirt.io", "v1beta1",
     "virtualmachineinstancetypes", True, False),
    ("kv", "v1beta1.VirtualMachineClusterInstancetype", "instancetype::v1beta1", "instancetype.kubevirt.io",
     "v1beta1", "virtualmachineclusterinstancetypes", False, False),
    ("kv", "v1beta1.VirtualMachinePreference", "instancetype::v1beta1", "instancetype.kubevirt.io", "v1beta1",
     "virtualmachinepreferences", True, False),
    ("kv", "v1beta1.VirtualMachineClusterPreference", "instancetype::v1beta1", "instancetype.kubevirt.io",
     "v1beta1", "virtualmachineclusterpreferences", False, False),
    ("kv", "v1beta1.VirtualMachinePool", "pool::v1beta1", "pool.kubevirt.io", "v1beta1", "virtualmachinepools",
     True, True),
    ("kv", "v1beta1.VirtualMachineClone", "clone::v1beta1", "clone.kubevirt.io", "v1beta1",
     "virtualmachineclones", True, True),
    ("kv", "v1alpha1.MigrationPolicy", "migrations::v1alpha1", "migrations.kubevirt.io", "v1alpha1",
     "migrationpolicies", False, True),
    ("cdi", "v1beta1.DataVolume", "cdi::v1beta1", "cdi.kubevirt.io", "v1beta1", "datavolumes", True, True),
    ("cdi", "v1beta1.DataSource", "cdi::v1beta1", "cdi.kubevirt.io", "v1beta1", "datasources", True, True),
    ("cdi", "v1beta1.DataImportCron", "cdi::v1beta1", "cdi.kubevirt.io", "v1beta1", "dataimportcrons", True,
     True),
]

MODULE_DOCS = {
    "core": ("core", "kubevirt.io: virtual machines, instances, replica sets, migrations and the KubeVirt CR."),
    "export": ("export", "export.kubevirt.io: exporting VM disks and manifests."),
    "snapshot": ("snapshot", "snapshot.kubevirt.io: VM snapshots, their contents and restores."),
    "instancetype": ("instancetype", "instancetype.kubevirt.io: instance types and preferences."),
    "pool": ("pool", "pool.kubevirt.io: pools of stateful virtual machines."),
    "clone": ("clone", "clone.kubevirt.io: cloning virtual machines."),
    "migrations": ("migrations", "migrations.kubevirt.io: cluster-wide live-migration policies."),
    "cdi": ("cdi", "cdi.kubevirt.io (Containerized Data Importer): DataVolumes, DataSources, import crons."),
}

# Kubernetes types: swagger name -> Rust path (k8s-openapi 0.29).
K8S_PREFIXES = {
    "k8s.io.api.core.v1.": "k8s_openapi::api::core::v1::",
    "k8s.io.apimachinery.pkg.apis.meta.v1.": "k8s_openapi::apimachinery::pkg::apis::meta::v1::",
    "k8s.io.apimachinery.pkg.api.resource.": "k8s_openapi::apimachinery::pkg::api::resource::",
    "k8s.io.apimachinery.pkg.runtime.": "k8s_openapi::apimachinery::pkg::runtime::",
    "k8s.io.apimachinery.pkg.util.intstr.": "k8s_openapi::apimachinery::pkg::util::intstr::",
}
# CDI's swagger names Kubernetes types by their short Go package name.
CDI_K8S_META = {"Condition", "DeleteOptions", "Duration", "FieldsV1", "LabelSelector", "LabelSelectorRequirement",
                "ListMeta", "ManagedFieldsEntry", "ObjectMeta", "OwnerReference", "Patch", "Preconditions", "Status",
                "StatusCause", "StatusDetails", "Time", "WatchEvent", "APIGroup", "APIGroupList", "APIResource",
                "APIResourceList", "GroupVersionForDiscovery", "RootPaths", "ServerAddressByClientCIDR"}
CDI_SPECIAL = {"resource.Quantity": "k8s_openapi::apimachinery::pkg::api::resource::Quantity",
               "runtime.RawExtension": "k8s_openapi::apimachinery::pkg::runtime::RawExtension"}
# CDI's NodePlacement lives in the shared "api" package; KubeVirt has an identical v1.ComponentConfig-based one.
CDI_API = {"api.NodePlacement": "NodePlacement"}

# Condition timestamps are metav1.Time in Go, but the swagger loses the $ref (type [string, null]).
TIME_PROPS = {"lastProbeTime", "lastTransitionTime"}
TIME = "k8s_openapi::apimachinery::pkg::apis::meta::v1::Time"

# Go unsigned integers. kube-openapi writes `uint` as int32 and `uint32` as int64, so the swagger cannot tell
# them from signed ones; upstream's round-trip fixtures fill them with values only an unsigned type holds.
# "{}" marks the values of a map.
UNSIGNED = {
    ("v1.CPU", "cores"): "u32",
    ("v1.CPU", "maxSockets"): "u32",
    ("v1.CPU", "sockets"): "u32",
    ("v1.CPU", "threads"): "u32",
    ("v1.CPUTopology", "cores"): "u32",
    ("v1.CPUTopology", "sockets"): "u32",
    ("v1.CPUTopology", "threads"): "u32",
    ("v1.ContainerDiskInfo", "checksum"): "u32",
    ("v1.CustomBlockSize", "discardGranularity"): "u64",
    ("v1.CustomBlockSize", "logical"): "u64",
    ("v1.CustomBlockSize", "physical"): "u64",
    ("v1.DeveloperConfiguration", "minimumReservePVCBytes"): "u64",
    ("v1.Disk", "bootOrder"): "u64",
    ("v1.DiskIOThreads", "supplementalPoolThreadCount"): "u32",
    ("v1.FeatureSpinlocks", "spinlocks"): "u32",
    ("v1.InitrdInfo", "checksum"): "u32",
    ("v1.Interface", "bootOrder"): "u64",
    ("v1.KernelInfo", "checksum"): "u32",
    ("v1.KubeVirtConfiguration", "memBalloonStatsPeriod"): "u32",
    ("v1.LiveUpdateConfiguration", "maxCpuSockets"): "u32",
    ("v1.LiveUpdateConfiguration", "maxHotplugRatio"): "u32",
    ("v1.LogVerbosity", "nodeVerbosity{}"): "u64",
    ("v1.LogVerbosity", "virtAPI"): "u64",
    ("v1.LogVerbosity", "virtController"): "u64",
    ("v1.LogVerbosity", "virtHandler"): "u64",
    ("v1.LogVerbosity", "virtLauncher"): "u64",
    ("v1.LogVerbosity", "virtOperator"): "u64",
    ("v1.LogVerbosity", "virtSynchronizationController"): "u64",
    ("v1.MigrationConfiguration", "maxDowntimeMs"): "u64",
    ("v1.MigrationConfiguration", "parallelMigrationsPerCluster"): "u32",
    ("v1.MigrationConfiguration", "parallelOutboundMigrationsPerNode"): "u32",
    ("v1.VMIMConfigurationOptions", "maxDowntimeMs"): "u64",
    ("v1.VMIMConfigurationOptions", "parallelMigrationsPerCluster"): "u32",
    ("v1.VMIMConfigurationOptions", "parallelOutboundMigrationsPerNode"): "u32",
    ("v1.VirtualMachineInstanceStatus", "VSOCKCID"): "u32",
    ("v1.VirtualMachineInstanceStatus", "runtimeUser"): "u64",
    ("v1beta1.CPUInstancetype", "guest"): "u32",
    ("v1beta1.CPUInstancetype", "maxSockets"): "u32",
    ("v1beta1.CPUPreferenceRequirement", "guest"): "u32",
}

# Types upstream's CRDs mark x-kubernetes-preserve-unknown-fields (the swagger does not say so).
PRESERVE_UNKNOWN = {"v1.Clock"}

# Closed sets upstream documents (in a field's description or its Go constants) become enums with an
# `Other(String)` fallback (kubevirt-api/src/string_enum.rs): typed for Rust callers, and a value
# upstream does not list still survives a round trip. name -> (doc, [(variant, wire, doc)], fields).
ENUMS = {
    "RunStrategy": (
        "The requested running state of a VirtualMachine (`spec.runStrategy`).",
        [("Always", "Always", "The VMI should always be running."),
         ("RerunOnFailure", "RerunOnFailure",
          "The VMI runs and is restarted after a failure, not after a successful completion."),
         ("Manual", "Manual", "The VMI is started and stopped through the API's start/stop endpoints."),
         ("Halted", "Halted", "The VMI should never be running."),
         ("Once", "Once", "The VMI runs once and is not restarted, whatever its completion."),
         ("WaitAsReceiver", "WaitAsReceiver", "The VM waits as the target of a cross-cluster migration.")],
        [("v1.VirtualMachineSpec", "runStrategy"), ("v1.VirtualMachineStatus", "runStrategy")]),
    "VirtualMachineInstancePhase": (
        "The phase of a VirtualMachineInstance (`status.phase`).",
        [("Pending", "Pending", "The VMI was accepted; its pod does not exist yet."),
         ("Scheduling", "Scheduling", "The VMI's pod is being scheduled."),
         ("Scheduled", "Scheduled", "A node was picked; the VMI is starting there."),
         ("Running", "Running", "The guest runs."),
         ("Succeeded", "Succeeded", "The guest shut down and the VMI ended without error."),
         ("Failed", "Failed", "The VMI ended with an error."),
         ("WaitingForSync", "WaitingForSync", "The VMI waits as the target of a migration."),
         ("Unknown", "Unknown", "The state could not be read.")],
        [("v1.VirtualMachineInstanceStatus", "phase"),
         ("v1.VirtualMachineInstancePhaseTransitionTimestamp", "phase")]),
    "VirtualMachinePrintableStatus": (
        "The one-word status `kubectl get vm` prints (`status.printableStatus`).",
        [("Stopped", "Stopped", "No VMI exists, as requested."),
         ("Provisioning", "Provisioning", "Volumes the VM needs are being prepared."),
         ("Starting", "Starting", "The VMI is being created or boots."),
         ("Running", "Running", "The VMI runs."),
         ("Paused", "Paused", "The VMI is paused."),
         ("Stopping", "Stopping", "The VMI is shutting down."),
         ("Terminating", "Terminating", "The VM is being deleted."),
         ("CrashLoopBackOff", "CrashLoopBackOff", "The VMI keeps failing; restarts are backed off."),
         ("Migrating", "Migrating", "The VMI is being live-migrated."),
         ("WaitingForReceiver", "WaitingForReceiver", "The VM waits for a migration source."),
         ("Unknown", "Unknown", "The state could not be read."),
         ("ErrorUnschedulable", "ErrorUnschedulable", "No node fits the VMI."),
         ("ErrImagePull", "ErrImagePull", "An image could not be pulled."),
         ("ImagePullBackOff", "ImagePullBackOff", "Image pulls keep failing; they are backed off."),
         ("ErrorPvcNotFound", "ErrorPvcNotFound", "A PersistentVolumeClaim the VM uses does not exist."),
         ("DataVolumeError", "DataVolumeError", "A DataVolume the VM uses failed."),
         ("WaitingForVolumeBinding", "WaitingForVolumeBinding", "A volume waits to be bound.")],
        [("v1.VirtualMachineStatus", "printableStatus")]),
    "DiskBus": (
        "The bus a disk, CD-ROM or LUN is attached to (`bus`).",
        [("Virtio", "virtio", "virtio-blk (or virtio-scsi for LUNs): the fast paravirtual bus."),
         ("Sata", "sata", "An emulated SATA controller."),
         ("Scsi", "scsi", "An emulated SCSI controller."),
         ("Usb", "usb", "An emulated USB mass-storage device (disks only).")],
        [("v1.DiskTarget", "bus"), ("v1.CDRomTarget", "bus"), ("v1.LunTarget", "bus"),
         ("v1beta1.DevicePreferences", "preferredDiskBus"), ("v1beta1.DevicePreferences", "preferredCdromBus"),
         ("v1beta1.DevicePreferences", "preferredLunBus")]),
    "DiskCache": (
        "The host cache mode of a disk (`cache`).",
        [("NoCache", "none", "Guest I/O is not cached on the host."),
         ("WriteThrough", "writethrough", "Guest I/O is cached on the host and written through."),
         ("WriteBack", "writeback", "Guest I/O is cached on the host.")],
        [("v1.Disk", "cache")]),
    "DiskIo": (
        "The I/O mode of a disk (`io`).",
        [("Native", "native", "Linux native AIO."),
         ("Threads", "threads", "A pool of I/O threads."),
         ("Default", "default", "The hypervisor's default.")],
        [("v1.Disk", "io")]),
    "InterfaceModel": (
        "The emulated network card of an interface (`model`).",
        [("E1000", "e1000", "Intel e1000."),
         ("E1000e", "e1000e", "Intel e1000e."),
         ("Igb", "igb", "Intel igb."),
         ("Ne2kPci", "ne2k_pci", "NE2000 on PCI."),
         ("Pcnet", "pcnet", "AMD PCnet."),
         ("Rtl8139", "rtl8139", "Realtek RTL8139."),
         ("Virtio", "virtio", "virtio-net, the paravirtual NIC (the default).")],
        [("v1.Interface", "model"), ("v1beta1.DevicePreferences", "preferredInterfaceModel")]),
    "InterfaceState": (
        "The requested link state of an interface (`state`); empty means up.",
        [("Up", "up", "The link is up."),
         ("Down", "down", "The link is down."),
         ("Absent", "absent", "The interface is to be removed (hot-unplug).")],
        [("v1.Interface", "state")]),
    "EvictionStrategy": (
        "What happens to a VMI when its node is drained (`evictionStrategy`).",
        [("None", "None", "Nothing: the VM is restarted or stopped according to its run strategy."),
         ("LiveMigrate", "LiveMigrate", "The VMI is live-migrated instead of shut down."),
         ("LiveMigrateIfPossible", "LiveMigrateIfPossible",
          "Live-migrated if it can be, otherwise as `None`."),
         ("External", "External", "The VMI is protected; an external controller handles the eviction.")],
        [("v1.VirtualMachineInstanceSpec", "evictionStrategy"), ("v1.KubeVirtConfiguration", "evictionStrategy")]),
    "CpuFeaturePolicy": (
        "How a CPU feature is requested (`policy`).",
        [("Force", "force", "The vCPU claims the feature whatever the host supports."),
         ("Require", "require", "Creation fails unless the host or hypervisor provides the feature."),
         ("Optional", "optional", "The feature is present if the host supports it."),
         ("Disable", "disable", "The feature is not offered."),
         ("Forbid", "forbid", "Creation fails if the host supports the feature.")],
        [("v1.CPUFeature", "policy")]),
}
ENUM_FIELDS = {f: name for name, (_, _, fields) in ENUMS.items() for f in fields}
ENUM_MODULE = "core::v1"

# Every type's JSON schema (for CRDs) is behind kubevirt-api's `schemars` feature.
SCHEMA_DERIVE = '#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]'

RUST_RESERVED = set(keyword.kwlist) | {"type", "ref", "match", "mod", "use", "fn", "impl", "trait", "crate", "self",
                                       "super", "struct", "enum", "where", "loop", "move", "mut", "pub", "static",
                                       "unsafe", "extern", "dyn", "box", "abstract", "final", "override", "priv",
                                       "typeof", "unsized", "virtual", "macro", "async", "await", "try", "gen"}


def snake(name):
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = s.replace("-", "_").lower()
    return s


def serde_camel(snake_name):
    parts = snake_name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def rust_field(json_name):
    f = snake(json_name)
    if f in RUST_RESERVED:
        f += "_"
    return f


URL = re.compile(r"(https?://[^\s\\]+?)([.,;:)]*(?:\s|$))")


def doc_lines(text, indent):
    if not text:
        return []
    text = text.replace("\r", "").strip()
    out = []
    for para in text.split("\n"):
        para = para.rstrip()
        if not para:
            out.append(indent + "///")
            continue
        # Keep rustdoc from reading bracketed words as links or angle brackets as HTML.
        para = para.replace("[", "\\[").replace("]", "\\]").replace("<", "\\<").replace(">", "\\>")
        # Bare URLs become autolinks (rustdoc warns about bare ones).
        para = URL.sub(lambda m: "<%s>%s" % (m.group(1), m.group(2)), para)
        for line in textwrap.wrap(para, 100, break_long_words=False, break_on_hyphens=False) or [""]:
            out.append(indent + "/// " + line)
    return out


class Gen:
    def __init__(self, kv, cdi):
        self.src = {"kv": kv["definitions"], "cdi": cdi["definitions"]}
        self.owner = {}  # (src, def) -> module path
        self.roots = {}  # (src, def) -> root tuple
        self.emitted = {}  # module -> {type name: (src, def)}
        self.enums_used = set()

    # ----- name resolution -------------------------------------------------
    def canonical(self, src, name):
        """Map a definition to the (src, def) that owns it, or a Rust path string for external types."""
        if name.endswith(".Duration") and ("meta.v1" in name or name == "v1.Duration"):
            return "String"  # metav1.Duration is a Go duration string ("5m0s"); k8s-openapi has no type for it
        if src == "kv":
            for pre, path in K8S_PREFIXES.items():
                if name.startswith(pre):
                    return path + name[len(pre):]
            if name.startswith("v1beta1.") and name in self.src["cdi"] and self.is_cdi_in_kv(name):
                return ("cdi", name)
            return ("kv", name)
        if name in CDI_SPECIAL:
            return CDI_SPECIAL[name]
        if name.startswith("v1."):
            short = name[3:]
            if short in CDI_K8S_META:
                return "k8s_openapi::apimachinery::pkg::apis::meta::v1::" + short
            return "k8s_openapi::api::core::v1::" + short
        if name in CDI_API:
            return ("cdi", name)
        return ("cdi", name)

    def is_cdi_in_kv(self, name):
        return name.startswith("v1beta1.DataVolume") or name in ("v1beta1.StorageSpec", "v1beta1.PlatformOptions")

    def definition(self, key):
        src, name = key
        d = json.loads(json.dumps(self.src[src][name]))
        if src == "cdi" and name in self.src["kv"]:
            # Union with KubeVirt's vendored copy so that no field either side knows is lost.
            other = self.src["kv"][name].get("properties", {})
            props = d.setdefault("properties", {})
            for p, v in other.items():
                if p not in props:
                    props[p] = v
        return d

    def type_name(self, key):
        src, name = key
        if name in CDI_API:
            return CDI_API[name]
        return name.split(".", 1)[1]

    def rust_ref(self, src, ref):
        name = ref.split("/")[-1]
        c = self.canonical(src, name)
        if isinstance(c, str):
            return c
        self.require(c)
        return "crate::%s::%s" % (self.owner[c], self.type_name(c))

    # ----- ownership ---------------------------------------------------------
    def assign(self):
        pending = []
        for r in ROOTS:
            key = (r[0], r[1])
            self.roots[key] = r
            self.owner[key] = r[2]
        for r in ROOTS:
            pending.append(((r[0], r[1]), r[2]))
        # Breadth-first from each root in order: a shared type belongs to the first group that reaches it.
        for key, module in pending:
            queue = [key]
            while queue:
                k = queue.pop(0)
                for ref in self.refs(k):
                    c = self.canonical(k[0], ref)
                    if isinstance(c, str) or c in self.owner:
                        continue
                    self.owner[c] = "cdi::v1beta1" if c[0] == "cdi" else module
                    queue.append(c)

    def refs(self, key):
        out = []

        def walk(node):
            if isinstance(node, dict):
                if "$ref" in node:
                    out.append(node["$ref"].split("/")[-1])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(self.definition(key).get("properties", {}))
        return out

    def require(self, key):
        if key not in self.owner:
            raise SystemExit("definition %s is reachable but was not assigned" % (key,))

    # ----- types -------------------------------------------------------------
    def rust_type(self, src, prop, prop_name, defname=None):
        enum = ENUM_FIELDS.get((defname, prop_name))
        if enum and prop.get("type") == "string":
            self.enums_used.add(enum)
            return "crate::%s::%s" % (ENUM_MODULE, enum)
        unsigned = UNSIGNED.get((defname, prop_name))
        if unsigned and prop.get("type") == "integer":
            return unsigned
        if "$ref" in prop:
            return self.rust_ref(src, prop["$ref"])
        t = prop.get("type")
        if isinstance(t, list):
            if prop_name in TIME_PROPS:
                return TIME
            non_null = [x for x in t if x != "null"]
            if non_null == ["string"]:
                return "String"
            raise SystemExit("unsupported union type %s for %s" % (t, prop_name))
        if t == "string":
            if prop.get("format") == "byte":
                return "k8s_openapi::ByteString"
            if prop.get("format") == "date-time":
                return TIME
            return "String"
        if t == "integer":
            fmt = prop.get("format")
            return {"int32": "i32", "int64": "i64", "byte": "u8", None: "i64"}[fmt]
        if t == "number":
            return "f64"
        if t == "boolean":
            return "bool"
        if t == "array":
            return "Vec<%s>" % self.rust_type(src, prop["items"], prop_name, defname)
        if t == "object":
            ap = prop.get("additionalProperties")
            if ap is None:
                return "serde_json::Map<String, serde_json::Value>"
            return "std::collections::BTreeMap<String, %s>" % self.rust_type(src, ap, prop_name + "{}", defname)
        raise SystemExit("unsupported property %s: %s" % (prop_name, prop))

    def schema_extends(self, prop):
        ext = []
        for k in ("x-kubernetes-list-type", "x-kubernetes-map-type"):
            if k in prop:
                ext.append('"%s" = "%s"' % (k, prop[k]))
        if "x-kubernetes-list-map-keys" in prop:
            ext.append('"x-kubernetes-list-map-keys" = %s' % json.dumps(prop["x-kubernetes-list-map-keys"]))
        return ext

    def gen_struct(self, key, derive_root=None):
        d = self.definition(key)
        src = key[0]
        name = self.type_name(key)
        required = set(d.get("required", []))
        props = d.get("properties", {})
        lines = []
        desc = d.get("description") or "%s is part of upstream's `%s` API." % (name, key[1])
        lines += doc_lines(desc, "")
        derives = ["Clone", "Debug", "Default", "PartialEq", "serde::Serialize", "serde::Deserialize"]
        if derive_root:
            derives.insert(0, "kube::CustomResource")
        lines.append("#[derive(%s)]" % ", ".join(derives))
        lines.append(SCHEMA_DERIVE)
        if derive_root:
            lines += derive_root
        ext = self.schema_extends(d)
        if key[1] in PRESERVE_UNKNOWN:
            ext.append('"x-kubernetes-preserve-unknown-fields" = true')
        if ext:
            lines.append('#[cfg_attr(feature = "schemars", schemars(extend(%s)))]' % ", ".join(ext))
        if not props:
            lines.append("pub struct %s {}" % name)
            return lines
        lines.append('#[serde(rename_all = "camelCase")]')
        lines.append("pub struct %s {" % name)
        for pname in sorted(props):
            p = props[pname]
            if derive_root is None and key in self.roots:
                pass
            rt = self.rust_type(src, p, pname, key[1])
            fname = rust_field(pname)
            pdesc = p.get("description") or "`%s` of upstream's `%s`." % (pname, key[1])
            lines += doc_lines(pdesc, "    ")
            attrs = []
            if serde_camel(fname.rstrip("_")) != pname:
                attrs.append('rename = "%s"' % pname)
            if pname in required:
                ty = rt
            else:
                ty = "Option<%s>" % rt
                attrs.append('default, skip_serializing_if = "Option::is_none"')
            if attrs:
                lines.append("    #[serde(%s)]" % ", ".join(attrs))
            ext = self.schema_extends(p)
            if ext:
                lines.append('    #[cfg_attr(feature = "schemars", schemars(extend(%s)))]' % ", ".join(ext))
            lines.append("    pub %s: %s," % (fname, ty))
        lines.append("}")
        return lines

    def gen_root(self, key):
        r = self.roots[key]
        src, defname, module, group, version, plural, namespaced, has_status = r
        d = self.definition(key)
        kind = defname.split(".", 1)[1]
        props = d["properties"]
        extra = set(props) - {"apiVersion", "kind", "metadata", "spec", "status"}
        if extra:
            raise SystemExit("root %s has fields the CustomResource derive cannot model: %s" % (defname, extra))
        spec_ref = props["spec"]["$ref"].split("/")[-1]
        spec_key = self.canonical(src, spec_ref)
        attrs = ['#[kube(group = "%s", version = "%s", kind = "%s", plural = "%s")]' % (group, version, kind, plural)]
        flags = []
        if namespaced:
            flags.append("namespaced")
        if has_status:
            status_ref = props["status"]["$ref"].split("/")[-1]
            status_key = self.canonical(src, status_ref)
            status_path = "crate::%s::%s" % (self.owner[status_key], self.type_name(status_key))
            flags.append('status = "%s"' % status_path)
        flags.append('derive = "PartialEq"')
        flags.append('derive = "Default"')
        attrs.append("#[kube(%s)]" % ", ".join(flags))
        # Without the `schemars` feature the derive writes no schema (and needs no JsonSchema impl).
        attrs.append('#[cfg_attr(not(feature = "schemars"), kube(schema = "disabled"))]')
        doc = d.get("description") or "%s (%s/%s)." % (kind, group, version)
        attrs.append('#[kube(doc = %s)]' % json.dumps(doc.replace("\n", " ")))
        return spec_key, attrs

    def gen_alias_root(self, key, spec_key, sibling):
        r = self.roots[key]
        _, defname, module, group, version, plural, namespaced, has_status = r
        if has_status:
            raise SystemExit("alias root %s with a status is not supported" % defname)
        kind = self.type_name(key)
        spec = "crate::%s::%s" % (self.owner[spec_key], self.type_name(spec_key))
        sib = "crate::%s::%s" % (self.owner[sibling], self.type_name(sibling))
        scope = "NamespaceResourceScope" if namespaced else "ClusterResourceScope"
        desc = self.definition(key).get("description") or "%s (%s/%s)." % (kind, group, version)
        lines = doc_lines(desc, "")
        lines += [
            "///",
            "/// It shares its spec with [`%s`](%s); this root is written out because the" % (
                sib.split("::")[-1], sib),
            "/// `CustomResource` derive owns one root per spec type.",
            "#[derive(Clone, Debug, Default, PartialEq)]",
            '#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(rename = "%s"))]' % kind,
            "pub struct %s {" % kind,
            "    /// Standard object metadata.",
            "    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,",
            "    /// The shared instancetype/preference spec.",
            "    pub spec: %s," % spec,
            "}",
            "",
            "impl %s {" % kind,
            "    /// A new object with the given name and spec.",
            "    pub fn new(name: &str, spec: %s) -> Self {" % spec,
            "        Self {",
            "            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {",
            "                name: Some(name.to_string()),",
            "                ..Default::default()",
            "            },",
            "            spec,",
            "        }",
            "    }",
            "}",
            "",
            "impl kube::core::Resource for %s {" % kind,
            "    type DynamicType = ();",
            "    type Scope = kube::core::%s;" % scope,
            "",
            "    fn kind(_: &()) -> std::borrow::Cow<'_, str> {",
            '        "%s".into()' % kind,
            "    }",
            "    fn group(_: &()) -> std::borrow::Cow<'_, str> {",
            '        "%s".into()' % group,
            "    }",
            "    fn version(_: &()) -> std::borrow::Cow<'_, str> {",
            '        "%s".into()' % version,
            "    }",
            "    fn plural(_: &()) -> std::borrow::Cow<'_, str> {",
            '        "%s".into()' % plural,
            "    }",
            "    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {",
            "        &self.metadata",
            "    }",
            "    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {",
            "        &mut self.metadata",
            "    }",
            "}",
            "",
            "impl kube::core::crd::CustomResourceExt for %s {" % kind,
            "    fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {",
            "        let mut crd = <%s as kube::core::crd::CustomResourceExt>::crd();" % sib,
            '        let singular = "%s".to_lowercase();' % kind,
            '        crd.metadata.name = Some("%s.%s".to_string());' % (plural, group),
            '        crd.spec.names.kind = "%s".to_string();' % kind,
            '        crd.spec.names.list_kind = Some("%sList".to_string());' % kind,
            '        crd.spec.names.plural = "%s".to_string();' % plural,
            "        crd.spec.names.singular = Some(singular);",
            '        crd.spec.scope = "%s".to_string();' % ("Namespaced" if namespaced else "Cluster"),
            "        crd",
            "    }",
            "    fn crd_name() -> &'static str {",
            '        "%s.%s"' % (plural, group),
            "    }",
            "    fn api_resource() -> kube::core::ApiResource {",
            "        kube::core::ApiResource::erase::<Self>(&())",
            "    }",
            "    fn shortnames() -> &'static [&'static str] {",
            "        &[]",
            "    }",
            "}",
            "",
            "impl serde::Serialize for %s {" % kind,
            "    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {",
            "        use serde::ser::SerializeStruct;",
            '        let mut s = serializer.serialize_struct("%s", 4)?;' % kind,
            '        s.serialize_field("apiVersion", "%s/%s")?;' % (group, version),
            '        s.serialize_field("kind", "%s")?;' % kind,
            '        s.serialize_field("metadata", &self.metadata)?;',
            '        s.serialize_field("spec", &self.spec)?;',
            "        s.end()",
            "    }",
            "}",
            "",
            "impl<'de> serde::Deserialize<'de> for %s {" % kind,
            "    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {",
            "        #[derive(serde::Deserialize)]",
            '        #[serde(rename_all = "camelCase")]',
            "        struct Wire {",
            "            #[serde(default, rename = \"apiVersion\")]",
            "            _api_version: Option<String>,",
            "            #[serde(default, rename = \"kind\")]",
            "            _kind: Option<String>,",
            "            #[serde(default)]",
            "            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,",
            "            spec: %s," % spec,
            "        }",
            "        let wire = Wire::deserialize(deserializer)?;",
            "        Ok(Self {",
            "            metadata: wire.metadata,",
            "            spec: wire.spec,",
            "        })",
            "    }",
            "}",
        ]
        return lines

    # ----- output ------------------------------------------------------------
    def run(self, out_dir):
        self.assign()
        root_specs = {}
        aliases = []
        for key in self.roots:
            spec_key, attrs = self.gen_root(key)
            if spec_key in root_specs:
                # A second kind with the same spec (the cluster-scoped instancetype and preference): the derive
                # owns one root per spec struct, so this root is written out in full.
                aliases.append((key, spec_key, root_specs[spec_key][0]))
                continue
            root_specs[spec_key] = (key, attrs)
            if self.owner.get(spec_key) != self.owner[key]:
                self.owner[spec_key] = self.owner[key]
        files = {}  # module -> [(file stem, type name, lines, root kind or None)]
        for key, spec_key, sibling in aliases:
            name = self.type_name(key)
            files.setdefault(self.owner[key], []).append(
                (snake(name), name, self.gen_alias_root(key, spec_key, sibling), None))
        for key, module in sorted(self.owner.items(), key=lambda kv: (kv[1], self.type_name(kv[0]))):
            if key in self.roots:
                continue  # generated by the CustomResource derive on its spec
            name = self.type_name(key)
            if name.endswith("List") and (key[0], key[1][:-4]) in self.roots:
                continue
            root = root_specs.get(key)
            body = self.gen_struct(key, root[1] if root else None)
            kind = self.type_name(root[0]) if root else None
            files.setdefault(module, []).append((snake(name), name, body, kind))
        missing = set(ENUM_FIELDS) - {(k[1], p) for k in self.owner for p in self.definition(k).get("properties", {})}
        if missing or self.enums_used != set(ENUMS):
            raise SystemExit("ENUMS names fields upstream's swagger lacks: %s" % sorted(missing))
        for name in sorted(ENUMS):
            files.setdefault(ENUM_MODULE, []).append((snake(name), name, self.gen_enum(name), None))
        self.write(out_dir, files)

    def gen_enum(self, name):
        doc, variants, fields = ENUMS[name]
        lines = ["crate::string_enum::string_enum! {"]
        lines += doc_lines(doc, "    ")
        lines.append("    ///")
        lines += doc_lines("Used by: %s." % ", ".join("`%s.%s`" % f for f in fields), "    ")
        lines.append("    %s {" % name)
        for variant, wire, vdoc in variants:
            lines += doc_lines("`%s`: %s" % (wire, vdoc), "        ")
            lines.append('        %s = "%s",' % (variant, wire))
        lines += ["    }", "}"]
        return lines

    def write(self, out_dir, files):
        header = ("// Generated by scripts/gen-api.py from upstream's swagger documents. Do not edit by hand:\n"
                  "// change the generator and run it again.\n")
        groups = {}
        for module, entries in files.items():
            group, version = module.split("::")
            groups.setdefault(group, []).append(version)
            vdir = os.path.join(out_dir, group, version)
            os.makedirs(vdir, exist_ok=True)
            mod_lines = [header, "//! %s/%s types." % (MODULE_DOCS[group][1].split(":")[0], version), ""]
            for stem, name, body, kind in sorted(entries):
                with open(os.path.join(vdir, stem + ".rs"), "w") as f:
                    f.write(header + "\n" + "\n".join(body) + "\n")
                mod_lines.append("mod %s;" % stem)
                exports = [name] + ([kind] if kind else [])
                mod_lines.append("pub use self::%s::{%s};" % (stem, ", ".join(exports)) if kind else
                                 "pub use self::%s::%s;" % (stem, name))
            with open(os.path.join(vdir, "mod.rs"), "w") as f:
                f.write("\n".join(mod_lines) + "\n")
        for group, versions in groups.items():
            lines = [header, "//! %s" % MODULE_DOCS[group][1], ""]
            for v in sorted(versions):
                lines.append("pub mod %s;" % v)
            with open(os.path.join(out_dir, group, "mod.rs"), "w") as f:
                f.write("\n".join(lines) + "\n")
        lines = [header, "//! Every generated API group, one module per group and version.", ""]
        for group in sorted(groups):
            lines.append("pub mod %s;" % group)
        with open(os.path.join(out_dir, "mod.rs"), "w") as f:
            f.write("\n".join(lines) + "\n")


def rustfmt(out_dir):
    """Format the output as `cargo fmt` would, so that formatting the workspace changes nothing."""
    files = []
    for base, _, names in os.walk(out_dir):
        files.extend(os.path.join(base, n) for n in names if n.endswith(".rs"))
    cfg = os.path.join(ROOT, "rustfmt.toml")
    args = ["rustfmt", "--edition", "2024"] + (["--config-path", cfg] if os.path.exists(cfg) else [])
    for i in range(0, len(files), 200):
        subprocess.run(args + sorted(files)[i:i + 200], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.path.join(ROOT, "..", "shared", "fixtures", "upstream"))
    ap.add_argument("--out", default=os.path.join(ROOT, "kubevirt-api", "src", "generated"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    with open(os.path.join(args.fixtures, "kubevirt-swagger.json")) as f:
        kv = json.load(f)
    with open(os.path.join(args.fixtures, "cdi-swagger.json")) as f:
        cdi = json.load(f)
    if args.check:
        tmp = tempfile.mkdtemp()
        try:
            Gen(kv, cdi).run(tmp)
            rustfmt(tmp)
            cmp = filecmp.dircmp(tmp, args.out)
            diffs = []

            def collect(c, prefix):
                diffs.extend(prefix + x for x in c.left_only + c.right_only + c.diff_files)
                for sub, sc in c.subdirs.items():
                    collect(sc, prefix + sub + "/")

            collect(cmp, "")
            if diffs:
                print("generated API is out of date; run scripts/gen-api.py:", *diffs, sep="\n  ")
                return 1
            print("generated API is up to date")
            return 0
        finally:
            shutil.rmtree(tmp)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    Gen(kv, cdi).run(args.out)
    rustfmt(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
