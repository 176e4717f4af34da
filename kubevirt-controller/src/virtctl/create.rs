//! `virtctl create vm`: a VirtualMachine manifest from upstream's flags, printed as YAML for
//! `kubectl apply -f -`. Nothing is sent to the cluster.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::VirtctlError;

/// What `create` makes.
#[derive(Debug, Subcommand)]
pub enum Create {
    /// Create a VirtualMachine manifest.
    Vm(VmFlags),
}

/// `create vm`'s flags, as upstream spells them.
#[derive(Debug, Args)]
pub struct VmFlags {
    /// Specify the name of the VM (default: a random vm-XXXXX).
    #[arg(long)]
    pub name: Option<String>,
    /// Specify the RunStrategy of the VM.
    #[arg(long, default_value = "Always")]
    pub run_strategy: String,
    /// Specify the Termination Grace Period of the VM.
    #[arg(long, default_value_t = 180)]
    pub termination_grace_period: i64,
    /// The instancetype ([kind/]name; kind virtualmachineclusterinstancetype by default).
    #[arg(long)]
    pub instancetype: Option<String>,
    /// The preference ([kind/]name; kind virtualmachineclusterpreference by default).
    #[arg(long)]
    pub preference: Option<String>,
    /// The guest's memory when no instancetype is given.
    #[arg(long)]
    pub memory: Option<String>,
    /// A containerdisk volume: `src:IMAGE[,name:NAME][,bootorder:N]` (or just the image).
    #[arg(long = "volume-containerdisk", value_name = "src:IMAGE,...")]
    pub volume_containerdisk: Vec<String>,
    /// A PersistentVolumeClaim volume: `src:CLAIM[,name:NAME][,bootorder:N]`.
    #[arg(long = "volume-pvc", value_name = "src:CLAIM,...")]
    pub volume_pvc: Vec<String>,
    /// Cloud-init user data, base64 encoded (upstream's flag takes base64 too).
    #[arg(long = "cloud-init-user-data")]
    pub cloud_init_user_data: Option<String>,
}

/// One `key:value,...` volume flag.
fn params(flag: &str, s: &str) -> Result<Map<String, Value>, VirtctlError> {
    let mut out = Map::new();
    for (i, part) in s.split(',').enumerate() {
        let (k, v) = match part.split_once(':') {
            Some((k, v)) if ["src", "name", "bootorder"].contains(&k) => (k, v),
            // A bare first part is the source (images have colons in tags: keep them).
            _ if i == 0 => ("src", part),
            _ => {
                return Err(VirtctlError::Usage(format!(
                    "--{flag}: unknown parameter {part:?} (src, name, bootorder)"
                )));
            }
        };
        if v.is_empty() {
            return Err(VirtctlError::Usage(format!("--{flag}: {k} is empty")));
        }
        out.insert(k.to_string(), json!(v));
    }
    if !out.contains_key("src") {
        return Err(VirtctlError::Usage(format!(
            "--{flag}: src must be specified"
        )));
    }
    Ok(out)
}

/// `[kind/]name` into a matcher.
fn matcher(flag: &str, s: &str, default_kind: &str, kinds: &[&str]) -> Result<Value, VirtctlError> {
    match s.split_once('/') {
        None if !s.is_empty() => Ok(json!({"name": s})),
        Some((kind, name)) if kinds.contains(&kind) && !name.is_empty() => {
            let kind = if kind == default_kind {
                None
            } else {
                Some(kind)
            };
            Ok(match kind {
                Some(k) => json!({"kind": k, "name": name}),
                None => json!({"name": name}),
            })
        }
        _ => Err(VirtctlError::Usage(format!(
            "--{flag}: {s:?} is not [kind/]name with kind one of {kinds:?}"
        ))),
    }
}

fn random_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("vm-{}", &id[..5])
}

/// The manifest `create` prints.
pub fn render(what: &Create, namespace: Option<&str>) -> Result<String, VirtctlError> {
    let Create::Vm(f) = what;
    let vm = vm(f, namespace)?;
    serde_saphyr::to_string(&vm).map_err(|e| VirtctlError::Failed(e.to_string()))
}

/// The VirtualMachine for `f`.
pub fn vm(f: &VmFlags, namespace: Option<&str>) -> Result<Value, VirtctlError> {
    let name = f.name.clone().unwrap_or_else(random_name);
    crate::vm::strategy::RunStrategy::parse(&f.run_strategy)
        .map_err(|e| VirtctlError::Usage(format!("--run-strategy: {e}")))?;
    let mut volumes = Vec::new();
    let mut disks = Vec::new();
    for (flag, list, source) in [
        (
            "volume-containerdisk",
            &f.volume_containerdisk,
            "containerdisk",
        ),
        ("volume-pvc", &f.volume_pvc, "pvc"),
    ] {
        for (i, s) in list.iter().enumerate() {
            let p = params(flag, s)?;
            let src = p["src"].as_str().unwrap_or_default().to_string();
            let vol_name = p
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{name}-{source}-{i}"));
            let volume = match source {
                "containerdisk" => json!({"name": vol_name, "containerDisk": {"image": src}}),
                _ => json!({"name": vol_name, "persistentVolumeClaim": {"claimName": src}}),
            };
            volumes.push(volume);
            let mut disk = json!({"name": vol_name});
            if let Some(b) = p.get("bootorder").and_then(Value::as_str) {
                let order: u32 = b.parse().map_err(|_| {
                    VirtctlError::Usage(format!("--{flag}: bootorder {b:?} is not a number"))
                })?;
                disk["bootOrder"] = json!(order);
            }
            disks.push(disk);
        }
    }
    if let Some(data) = &f.cloud_init_user_data {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| VirtctlError::Usage(format!("--cloud-init-user-data: not base64: {e}")))?;
        volumes
            .push(json!({"name": "cloudinitdisk", "cloudInitNoCloud": {"userDataBase64": data}}));
    }
    let mut domain = json!({"devices": {}, "resources": {}});
    if !disks.is_empty() {
        domain["devices"]["disks"] = json!(disks);
    }
    if f.instancetype.is_none() {
        domain["memory"] = json!({"guest": f.memory.clone().unwrap_or_else(|| "512Mi".into())});
    }
    let mut template_spec =
        json!({"domain": domain, "terminationGracePeriodSeconds": f.termination_grace_period});
    if !volumes.is_empty() {
        template_spec["volumes"] = json!(volumes);
    }
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    let mut spec = json!({"runStrategy": f.run_strategy, "template": {"spec": template_spec}});
    if let Some(it) = &f.instancetype {
        spec["instancetype"] = matcher(
            "instancetype",
            it,
            "virtualmachineclusterinstancetype",
            &[
                "virtualmachineclusterinstancetype",
                "virtualmachineinstancetype",
            ],
        )?;
    }
    if let Some(p) = &f.preference {
        spec["preference"] = matcher(
            "preference",
            p,
            "virtualmachineclusterpreference",
            &[
                "virtualmachineclusterpreference",
                "virtualmachinepreference",
            ],
        )?;
    }
    Ok(
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": metadata, "spec": spec}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: Create,
    }

    fn create(args: &[&str]) -> Result<Value, VirtctlError> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
        let Create::Vm(f) = &t.c;
        vm(f, None)
    }

    #[test]
    fn flags_make_upstreams_manifest() {
        let v = create(&[
            "vm",
            "--name=my-vm",
            "--instancetype=u1.small",
            "--preference=virtualmachinepreference/fedora",
            "--volume-containerdisk=src:quay.io/containerdisks/fedora:41,name:root",
            "--cloud-init-user-data=I2Nsb3VkLWNvbmZpZw==",
            "--run-strategy=Manual",
        ])
        .unwrap();
        assert_eq!(v["metadata"]["name"], "my-vm");
        assert_eq!(v["spec"]["runStrategy"], "Manual");
        assert_eq!(v["spec"]["instancetype"], json!({"name": "u1.small"}));
        assert_eq!(
            v["spec"]["preference"],
            json!({"kind": "virtualmachinepreference", "name": "fedora"})
        );
        let t = &v["spec"]["template"]["spec"];
        assert_eq!(
            t["volumes"][0]["containerDisk"]["image"],
            "quay.io/containerdisks/fedora:41"
        );
        assert_eq!(t["domain"]["devices"]["disks"][0]["name"], "root");
        assert_eq!(t["volumes"][1]["name"], "cloudinitdisk");
        assert!(
            t["domain"].get("memory").is_none(),
            "the instancetype sizes it"
        );
    }

    proptest::proptest! {
        /// Any volume flag value parses or is refused with the flag's name; never a panic.
        #[test]
        fn volume_flags_never_panic(s in ".{0,60}") {
            if let Err(e) = params("volume-pvc", &s) {
                proptest::prop_assert!(e.to_string().starts_with("--volume-pvc"), "{}", e);
            }
        }

        /// A well-formed value keeps its source and name (images may carry colons in tags).
        #[test]
        fn well_formed_volume_flags_round_trip(
            src in "[a-z0-9./-]{1,20}(:[a-z0-9.]{1,8})?",
            name in "[a-z0-9-]{1,20}",
        ) {
            let p = params("volume-containerdisk", &format!("src:{src},name:{name}")).unwrap();
            proptest::prop_assert_eq!(p["src"].as_str(), Some(src.as_str()));
            proptest::prop_assert_eq!(p["name"].as_str(), Some(name.as_str()));
        }
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let e = create(&["vm", "--run-strategy=Sometimes"]).unwrap_err();
        assert!(e.to_string().contains("--run-strategy"), "{e}");
        let e = create(&["vm", "--volume-pvc=name:x"]).unwrap_err();
        assert!(e.to_string().contains("src must be specified"), "{e}");
        let e = create(&["vm", "--instancetype=pods/x"]).unwrap_err();
        assert!(e.to_string().contains("--instancetype"), "{e}");
    }
}
