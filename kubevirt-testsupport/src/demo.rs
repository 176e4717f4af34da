//! The demo guest's objects as YAML for kubectl: its VMI ([`demo_vmi`]) and its VM ([`DemoVm`]),
//! booted from [`crate::demo_image`]'s reference (kernel at `/boot/demo.elf`).

/// The demo guest as the VMI `name` (YAML): 64 MiB, booted from `image` ([`crate::demo_image`]'s
/// reference), cloud-init hostname `<name>-vm` (which its HTTP answers carry), on the pod
/// network (masquerade) when `network`.
pub fn demo_vmi(name: &str, image: &str, network: bool) -> String {
    let (interfaces, networks) = if network {
        (
            "interfaces: [{name: default, masquerade: {}}]",
            "\n  networks: [{name: default, pod: {}}]",
        )
    } else {
        ("autoattachPodInterface: false", "")
    };
    let domain = indent(&domain(image, interfaces, "cloudinit"), 2);
    let volume = indent(&cloud_init(name), 2);
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 10\n{domain}{networks}\n  volumes:\n{volume}\n"
    )
}

/// The demo guest as the VirtualMachine `name` (runStrategy Always, 64 MiB, grace 5 s, no pod
/// network, labelled `app: <name>`), booted from `image`. Its one disk is a cloud-init disk with
/// hostname `<name>-vm`, or with [`DemoVm::data_volume`] the DataVolume `<name>-root` its
/// `dataVolumeTemplates` make (vda, where the guest's `disktest` writes and `cat vda` reads).
#[derive(Debug, Clone)]
pub struct DemoVm {
    name: String,
    image: String,
    root: Option<(String, String)>,
}

impl DemoVm {
    /// The VM `name` booting `image`, with its cloud-init disk.
    pub fn new(name: &str, image: &str) -> DemoVm {
        DemoVm {
            name: name.into(),
            image: image.into(),
            root: None,
        }
    }

    /// Its disk the DataVolume `<name>-root` of `size` (`32Mi`) filled from `source`, CDI's
    /// source as flow YAML (`{blank: {}}`, `{http: {url: "…"}}`).
    pub fn data_volume(mut self, source: &str, size: &str) -> DemoVm {
        self.root = Some((source.into(), size.into()));
        self
    }

    /// The YAML for `kubectl apply -f -`.
    pub fn yaml(&self) -> String {
        let DemoVm { name, image, root } = self;
        let (templates, disk, volume) = match root {
            Some((source, size)) => (
                format!(
                    "\n  dataVolumeTemplates:\n  - metadata: {{name: {name}-root}}\n    spec:\n      source: {source}\n      storage: {{resources: {{requests: {{storage: {size}}}}}}}"
                ),
                "root",
                format!("- name: root\n  dataVolume: {{name: {name}-root}}"),
            ),
            None => (String::new(), "cloudinit", cloud_init(name)),
        };
        let domain = indent(&domain(image, "autoattachPodInterface: false", disk), 6);
        let volume = indent(&volume, 6);
        format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: {name}}}\nspec:\n  runStrategy: Always{templates}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      terminationGracePeriodSeconds: 5\n{domain}\n      volumes:\n{volume}\n"
        )
    }
}

/// The demo guest's `domain`: 64 MiB, kernel boot from `image`, `interfaces` (a `devices`
/// line) and the one virtio disk `disk`.
fn domain(image: &str, interfaces: &str, disk: &str) -> String {
    format!(
        r#"domain:
  memory: {{guest: 64Mi}}
  firmware:
    kernelBoot:
      container: {{image: "{image}", kernelPath: /boot/demo.elf}}
  devices:
    {interfaces}
    disks:
    - name: {disk}
      disk: {{bus: virtio}}"#
    )
}

/// The `cloudinit` volume giving the guest hostname `<name>-vm`.
fn cloud_init(name: &str) -> String {
    format!(
        "- name: cloudinit\n  cloudInitNoCloud:\n    userData: |\n      #cloud-config\n      hostname: {name}-vm"
    )
}

/// `text` with every line indented by `by` spaces.
fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_with_a_data_volume_names_its_template_as_its_disk() {
        let yaml = DemoVm::new("snapvm", "oci:/i:demo")
            .data_volume("{blank: {}}", "32Mi")
            .yaml();
        let expected = r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: snapvm}
spec:
  runStrategy: Always
  dataVolumeTemplates:
  - metadata: {name: snapvm-root}
    spec:
      source: {blank: {}}
      storage: {resources: {requests: {storage: 32Mi}}}
  template:
    metadata:
      labels: {app: snapvm}
    spec:
      terminationGracePeriodSeconds: 5
      domain:
        memory: {guest: 64Mi}
        firmware:
          kernelBoot:
            container: {image: "oci:/i:demo", kernelPath: /boot/demo.elf}
        devices:
          autoattachPodInterface: false
          disks:
          - name: root
            disk: {bus: virtio}
      volumes:
      - name: root
        dataVolume: {name: snapvm-root}
"#;
        assert_eq!(yaml, expected);
    }

    #[test]
    fn a_vmi_on_the_pod_network() {
        let yaml = demo_vmi("web", "oci:/i:demo", true);
        let expected = r#"apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 10
  domain:
    memory: {guest: 64Mi}
    firmware:
      kernelBoot:
        container: {image: "oci:/i:demo", kernelPath: /boot/demo.elf}
    devices:
      interfaces: [{name: default, masquerade: {}}]
      disks:
      - name: cloudinit
        disk: {bus: virtio}
  networks: [{name: default, pod: {}}]
  volumes:
  - name: cloudinit
    cloudInitNoCloud:
      userData: |
        #cloud-config
        hostname: web-vm
"#;
        assert_eq!(yaml, expected);
    }

    #[test]
    fn a_plain_vm_has_its_cloud_init_disk() {
        let yaml = DemoVm::new("demo", "oci:/i:demo").yaml();
        assert!(
            yaml.contains(
                "runStrategy: Always\n  template:\n    metadata:\n      labels: {app: demo}\n"
            ),
            "{yaml}"
        );
        assert!(yaml.contains("            hostname: demo-vm\n"), "{yaml}");
        assert!(!yaml.contains("dataVolume"), "{yaml}");
    }
}
