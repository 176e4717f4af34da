//! The CRD "envelope" of every kind: names, versions, subresources and printer columns, as upstream's
//! virt-operator (`crds.go`) and CDI's controller-gen output define them.

/// A printer column (`additionalPrinterColumns`).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Header shown by `kubectl get`.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `date`, `boolean`.
    pub type_: &'static str,
    /// JSONPath into the object.
    pub json_path: &'static str,
    /// 0 = always shown, 1 = only with `-o wide`.
    pub priority: i32,
}

/// The role of one served version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The storage version.
    Storage(&'static str),
    /// The deprecated storage version (upstream's presets).
    DeprecatedStorage(&'static str),
    /// Served, same schema.
    Served(&'static str),
    /// Served, same schema, deprecated.
    Deprecated(&'static str),
}

impl Version {
    /// The version's name.
    pub fn name(self) -> &'static str {
        match self {
            Version::Storage(v)
            | Version::DeprecatedStorage(v)
            | Version::Served(v)
            | Version::Deprecated(v) => v,
        }
    }
}

/// Everything about a kind's CRD that is not its schema.
#[derive(Debug, Clone, Copy)]
pub struct Envelope {
    /// `names.shortNames`.
    pub short_names: &'static [&'static str],
    /// `names.categories`.
    pub categories: &'static [&'static str],
    /// Served versions; exactly one is a storage version.
    pub versions: &'static [Version],
    /// Whether the status subresource is enabled.
    pub status: bool,
    /// Whether the scale subresource is enabled (`.spec.replicas`, `.status.replicas`,
    /// `.status.labelSelector`).
    pub scale: bool,
    /// Printer columns.
    pub columns: &'static [Column],
}

const fn col(name: &'static str, type_: &'static str, json_path: &'static str) -> Column {
    Column {
        name,
        type_,
        json_path,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str, json_path: &'static str) -> Column {
    Column {
        name,
        type_,
        json_path,
        priority: 1,
    }
}

const AGE: Column = col("Age", "date", ".metadata.creationTimestamp");
const ALL: &[&str] = &["all"];
const KUBEVIRT_V1: &[Version] = &[Version::Storage("v1"), Version::Deprecated("v1alpha3")];
const BETA_ALPHA: &[Version] = &[Version::Storage("v1beta1"), Version::Served("v1alpha1")];
const BETA: &[Version] = &[Version::Storage("v1beta1")];

const fn envelope(
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    versions: &'static [Version],
    status: bool,
    columns: &'static [Column],
) -> Envelope {
    Envelope {
        short_names,
        categories,
        versions,
        status,
        scale: false,
        columns,
    }
}

/// Every kind's envelope.
pub static ENVELOPES: &[(&str, Envelope)] = &[
    (
        "VirtualMachine",
        envelope(
            &["vm", "vms"],
            ALL,
            KUBEVIRT_V1,
            true,
            &[
                AGE,
                col("Status", "string", ".status.printableStatus"),
                col(
                    "Ready",
                    "string",
                    ".status.conditions[?(@.type=='Ready')].status",
                ),
            ],
        ),
    ),
    (
        "VirtualMachineInstance",
        envelope(
            &["vmi", "vmis"],
            ALL,
            KUBEVIRT_V1,
            false,
            &[
                AGE,
                col("Phase", "string", ".status.phase"),
                col("IP", "string", ".status.interfaces[0].ipAddress"),
                col("NodeName", "string", ".status.nodeName"),
                col(
                    "Ready",
                    "string",
                    ".status.conditions[?(@.type=='Ready')].status",
                ),
                wide(
                    "Live-Migratable",
                    "string",
                    ".status.conditions[?(@.type=='LiveMigratable')].status",
                ),
                wide(
                    "Paused",
                    "string",
                    ".status.conditions[?(@.type=='Paused')].status",
                ),
            ],
        ),
    ),
    (
        "VirtualMachineInstanceReplicaSet",
        Envelope {
            scale: true,
            ..envelope(
                &["vmirs", "vmirss"],
                ALL,
                KUBEVIRT_V1,
                true,
                &[
                    col("Desired", "integer", ".spec.replicas"),
                    col("Current", "integer", ".status.replicas"),
                    col("Ready", "integer", ".status.readyReplicas"),
                    AGE,
                ],
            )
        },
    ),
    (
        "VirtualMachineInstanceMigration",
        envelope(
            &["vmim", "vmims"],
            ALL,
            KUBEVIRT_V1,
            true,
            &[
                col("Phase", "string", ".status.phase"),
                col("VMI", "string", ".spec.vmiName"),
            ],
        ),
    ),
    (
        "VirtualMachineInstancePreset",
        envelope(
            &["vmipreset", "vmipresets"],
            ALL,
            &[
                Version::DeprecatedStorage("v1alpha3"),
                Version::Deprecated("v1"),
            ],
            false,
            &[],
        ),
    ),
    (
        "KubeVirt",
        envelope(
            &["kv", "kvs"],
            ALL,
            KUBEVIRT_V1,
            true,
            &[AGE, col("Phase", "string", ".status.phase")],
        ),
    ),
    (
        "VirtualMachineExport",
        envelope(
            &["vmexport", "vmexports"],
            ALL,
            &[Version::Storage("v1"), Version::Deprecated("v1beta1")],
            true,
            &[
                col("SourceKind", "string", ".spec.source.kind"),
                col("SourceName", "string", ".spec.source.name"),
                col("Phase", "string", ".status.phase"),
            ],
        ),
    ),
    (
        "VirtualMachineSnapshot",
        envelope(
            &["vmsnapshot", "vmsnapshots"],
            ALL,
            BETA_ALPHA,
            true,
            &[
                col("SourceKind", "string", ".spec.source.kind"),
                col("SourceName", "string", ".spec.source.name"),
                col("Phase", "string", ".status.phase"),
                col("ReadyToUse", "boolean", ".status.readyToUse"),
                col("CreationTime", "date", ".status.creationTime"),
                col("Error", "string", ".status.error.message"),
            ],
        ),
    ),
    (
        "VirtualMachineSnapshotContent",
        envelope(
            &["vmsnapshotcontent", "vmsnapshotcontents"],
            ALL,
            BETA_ALPHA,
            true,
            &[
                col("ReadyToUse", "boolean", ".status.readyToUse"),
                col("CreationTime", "date", ".status.creationTime"),
                col("Error", "string", ".status.error.message"),
            ],
        ),
    ),
    (
        "VirtualMachineRestore",
        envelope(
            &["vmrestore", "vmrestores"],
            ALL,
            BETA_ALPHA,
            true,
            &[
                col("TargetKind", "string", ".spec.target.kind"),
                col("TargetName", "string", ".spec.target.name"),
                col("Complete", "boolean", ".status.complete"),
                col("RestoreTime", "date", ".status.restoreTime"),
            ],
        ),
    ),
    (
        "VirtualMachineInstancetype",
        envelope(
            &["vminstancetype", "vminstancetypes", "vmf", "vmfs"],
            ALL,
            BETA,
            false,
            &[],
        ),
    ),
    (
        "VirtualMachineClusterInstancetype",
        envelope(
            &[
                "vmclusterinstancetype",
                "vmclusterinstancetypes",
                "vmcf",
                "vmcfs",
            ],
            &[],
            BETA,
            false,
            &[],
        ),
    ),
    (
        "VirtualMachinePreference",
        envelope(&["vmpref", "vmprefs", "vmp", "vmps"], ALL, BETA, false, &[]),
    ),
    (
        "VirtualMachineClusterPreference",
        envelope(&["vmcp", "vmcps"], &[], BETA, false, &[]),
    ),
    (
        "VirtualMachinePool",
        Envelope {
            scale: true,
            ..envelope(
                &["vmpool", "vmpools"],
                ALL,
                BETA_ALPHA,
                true,
                &[
                    col("Desired", "integer", ".spec.replicas"),
                    col("Current", "integer", ".status.replicas"),
                    col("Ready", "integer", ".status.readyReplicas"),
                    AGE,
                ],
            )
        },
    ),
    (
        "VirtualMachineClone",
        envelope(
            &["vmclone", "vmclones"],
            ALL,
            BETA_ALPHA,
            true,
            &[
                col("Phase", "string", ".status.phase"),
                col("SourceVirtualMachine", "string", ".spec.source.name"),
                col("TargetVirtualMachine", "string", ".spec.target.name"),
            ],
        ),
    ),
    (
        "MigrationPolicy",
        envelope(&[], &[], &[Version::Storage("v1alpha1")], true, &[]),
    ),
    (
        "DataVolume",
        envelope(
            &["dv", "dvs"],
            ALL,
            BETA,
            true,
            &[
                col("Phase", "string", ".status.phase"),
                col("Progress", "string", ".status.progress"),
                col("Restarts", "integer", ".status.restartCount"),
                AGE,
            ],
        ),
    ),
    ("DataSource", envelope(&["das"], ALL, BETA, false, &[])),
    (
        "DataImportCron",
        envelope(
            &["dic", "dics"],
            ALL,
            BETA,
            false,
            &[col("Format", "string", ".status.sourceFormat")],
        ),
    ),
];

/// The envelope of `kind`, or `None` for a kind this crate does not serve.
pub fn envelope_of(kind: &str) -> Option<Envelope> {
    ENVELOPES.iter().find(|(k, _)| *k == kind).map(|(_, e)| *e)
}
