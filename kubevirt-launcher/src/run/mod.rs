//! Launching a VMI on kubevirt-vmm: plan it, fetch the kernel from its container image (direct
//! kernel boot) or pick the firmware (SeaBIOS, OVMF) that boots the disks, prepare and attach the
//! disks (virtio-blk), then start the VM with its console and control sockets.

pub mod device_stats;
mod image;
pub mod incoming;
pub mod machine;
pub mod network;

pub use self::image::image_source;
use self::machine::{DiskBacking, DiskSpec, FirstVm, Machine, MachineSpec, SharedImage};
use self::network::{PodNetwork, PodNetworkError, PodNetworkOptions};

use crate::cloudinit::{self, NoSecrets};
use crate::console::ConsoleHub;
use crate::control::{ControlServer, Migrator, Shutdowns, Snapshotter, Target};
use crate::disks::{self, PreparedDisk};
use crate::oci::{Store, fetch_disk};
use crate::plan::{BootPlan, DiskSource, LaunchPlan, PlanErrors, from_vmi, vmi_of};
use kubevirt_api::object::Object;
use kubevirt_launcher_protocol::{CONSOLE_SOCKET, CONTROL_SOCKET, GuestInfo, GuestInterface};
use kubevirt_vmm::SmbiosInfo;
use kubevirt_vmm::virtio::block::{DiskMigration, RawFile, open_image};
use kubevirt_vmm::{
    BootSource, CpuFeatureMask, FirmwareBoot, KernelImage, LinuxBoot, OVMF_VARS_PATH, VmConfig,
};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Where a launch keeps its things.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Per-VMI directory: sockets, ephemeral disks, cloud-init images.
    pub run_dir: PathBuf,
    /// containerDisk / kernel image cache.
    pub cache_dir: PathBuf,
    /// Where the node prepares claims (`<dir>/<volume>/disk.img`).
    pub volumes_dir: PathBuf,
    /// Registries spoken to over plain HTTP (loopback registries).
    pub plain_http: Vec<String>,
    /// containerd's registry host configuration directory (`<dir>/<registry>/hosts.toml`):
    /// the registry mirrors to pull from first.
    pub registry_config_dir: Option<PathBuf>,
    /// Copy the console to this process's stdout (standalone mode).
    pub echo_console: bool,
    /// The launcher runs in the pod's (or a scratch) network namespace and may build the
    /// masquerade binding there.
    pub pod_network: bool,
    /// The pod's interface (`eth0`).
    pub pod_iface: String,
    /// The node agent built the pod network's binding (`kubevirt-launcher pod-network`): only
    /// open the existing tap `tap0` and serve DHCP, change nothing in the network namespace.
    pub network_prepared: bool,
    /// Write the console to `<run-dir>/console.log` whatever the VMI's `logSerialConsole`
    /// (`serve`: the pod's `guest-console-log` container follows it).
    pub always_log_console: bool,
    /// The control socket already open (`serve`): it answers for the VM once it is built,
    /// instead of a new socket at the same path.
    pub control: Option<ControlServer>,
    /// Resume the guest from this memory-state snapshot (written by the `snapshot` op of a
    /// launcher of the same VMI) instead of booting it.
    pub restore_from: Option<PathBuf>,
    /// Receive the guest from a live migration at this address (`unix:PATH`, `tcp:IP:PORT`)
    /// instead of booting it (see [`incoming`]).
    pub incoming: Option<String>,
}

/// Where the `snapshot` op writes, under the run directory.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// Why a VMI could not be launched.
#[derive(Debug, Error)]
pub enum RunError {
    /// The spec cannot be planned.
    #[error("{0}")]
    Plan(#[from] PlanErrors),
    /// A planned part is not available on this VMM yet.
    #[error("{path}: {message}")]
    Unsupported {
        /// Field path.
        path: String,
        /// Why, and what to do.
        message: String,
    },
    /// Fetching the kernel or a disk image failed.
    #[error("{0}")]
    Image(#[from] crate::oci::OciError),
    /// Preparing a disk failed.
    #[error("{0}")]
    Disk(#[from] disks::PrepareError),
    /// The cloud-init disk could not be built.
    #[error("{0}")]
    CloudInit(#[from] cloudinit::CloudInitError),
    /// Host I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The pod network could not be attached.
    #[error("{0}")]
    Network(#[from] PodNetworkError),
    /// Listening for the migration source failed.
    #[error("listening for the migration source at {addr}: {source}")]
    Incoming {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Receiving the VM from its migration source failed.
    #[error("receiving the VM from its migration source: {0}")]
    Migration(#[from] kubevirt_vmm::MigrationError),
    /// The VMM refused the configuration, or could not start or reach the VM.
    #[error("starting the VM: {0}")]
    Vm(#[from] kubevirt_vmm::VmError),
    /// The pod network's tap could not be attached to the VM.
    #[error("attaching the tap: {0}")]
    Tap(#[from] kubevirt_vmm::virtio::net::TapError),
    /// The cloud-init data does not fit an ISO image.
    #[error("disk {disk}: building the cloud-init image: {source}")]
    CloudInitIso {
        /// The disk.
        disk: String,
        /// Why.
        #[source]
        source: crate::cloudinit::iso9660::IsoError,
    },
    /// A CPU feature the plan hides is unknown to the VMM.
    #[error("spec.domain.cpu.features: {0}")]
    CpuFeatures(#[from] kubevirt_vmm::CpuidError),
    /// A prepared disk could not be opened for the VM.
    #[error("disk {disk}: {source}")]
    DiskOpen {
        /// The disk.
        disk: String,
        /// Why.
        #[source]
        source: kubevirt_vmm::virtio::block::BackendError,
    },
    /// A containerDisk's overlay could not be opened over its base.
    #[error("disk {disk}: {source}")]
    ImageOpen {
        /// The disk.
        disk: String,
        /// Why.
        #[source]
        source: kubevirt_vmm::virtio::block::ImageError,
    },
    /// A console or tap descriptor could not be duplicated for the VM.
    #[error("duplicating a console or tap descriptor: {0}")]
    Descriptor(#[source] std::io::Error),
}

impl RunError {
    /// The document is at fault (invalid, or asks for what this launcher cannot do): launching
    /// it again will not help.
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            RunError::Plan(_)
                | RunError::Unsupported { .. }
                | RunError::Network(PodNetworkError::NotAllowed { .. })
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A launched VM with its sockets.
#[derive(Debug)]
pub struct Launched {
    /// The machine: the running VM, rebuilt across guest reboots.
    pub machine: Arc<Machine>,
    /// The plan it was built from.
    pub plan: LaunchPlan,
    /// The serial console socket.
    pub console: ConsoleHub,
    /// The control socket.
    pub control: ControlServer,
    /// Graceful shutdowns (power button, then a stop after the grace period).
    pub shutdowns: Shutdowns,
    /// The pod network, if attached.
    pub network: Option<PodNetwork>,
    /// Live migrations of the VM (the `migrate` op).
    pub migrations: Migrator,
    layout: disks::Layout,
}

impl Launched {
    /// Remove what only lived for this VMI (ephemeral disks, overlays).
    pub fn cleanup(&self) -> std::io::Result<()> {
        disks::cleanup(&self.layout)
    }
}

/// What the control API's `status` tells about the guest: its size, disks and interfaces (for
/// the masquerade binding, the guest's fixed address and MAC, as upstream's VMI status shows).
fn guest_info(plan: &LaunchPlan, network: Option<&PodNetwork>) -> GuestInfo {
    let interfaces = network
        .map(|n| GuestInterface {
            name: plan
                .network
                .as_ref()
                .map_or_else(|| "default".into(), |p| p.name.clone()),
            mac: kubevirt_vmm::virtio::net::device::format_mac(&n.mac),
            guest_ip: Some(n.guest_ip.to_string()),
            binding: n.binding.name().into(),
        })
        .into_iter()
        .collect();
    GuestInfo {
        vcpus: u32::from(plan.cpu.vcpus()),
        memory_bytes: plan.memory_bytes,
        disks: plan.disks.iter().map(|d| d.name.clone()).collect(),
        interfaces,
    }
}

/// The serial console's log in the run directory (rotated to `console.log.1` past 4 MiB).
pub const CONSOLE_LOG: &str = "console.log";

/// Where the firmware's debug log (SeaBIOS prints its progress there) goes in the run dir.
pub const FIRMWARE_LOG: &str = "firmware.log";

/// The firmware for a plan without direct kernel boot: SeaBIOS, or OVMF with a copy of the
/// empty variable store in the VMI's ephemeral directory (gone with the VMI, as upstream's
/// non-persistent NVRAM); the disks with a `bootOrder` become its boot order.
fn firmware_boot(
    plan: &LaunchPlan,
    run_dir: &Path,
    layout: &disks::Layout,
) -> Result<FirmwareBoot, RunError> {
    let boot = match plan.boot {
        BootPlan::Efi => {
            let dir = layout.ephemeral_dir.join("efi");
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let vars = dir.join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS_PATH, &vars).map_err(io(Path::new(OVMF_VARS_PATH)))?;
            FirmwareBoot::ovmf(vars)
        }
        BootPlan::Bios | BootPlan::Kernel(_) => FirmwareBoot::seabios(),
    };
    Ok(boot
        .with_boot_order(plan.boot_disks())
        .with_debug_log(run_dir.join(FIRMWARE_LOG)))
}

/// Launch `object` (a VMI, or a VM's template).
pub fn launch(object: &Object, opts: &RunOptions) -> Result<Launched, RunError> {
    let (vmi, base) = vmi_of(object)?;
    let plan = from_vmi(&vmi, &base)?;
    if plan.network.is_some() && !opts.pod_network && !opts.network_prepared {
        return Err(PodNetworkError::NotAllowed {
            bridge: "k6t-eth0".into(),
        }
        .into());
    }
    std::fs::create_dir_all(&opts.run_dir).map_err(io(&opts.run_dir))?;
    let store = Store::new(&opts.cache_dir);
    // Disks other than containerDisks fetch nothing: their image source is never asked.
    let no_images: Box<dyn crate::oci::ImageSource> =
        Box::new(crate::oci::Registry::new(opts.plain_http.clone()));
    let kernel = match plan.kernel_boot() {
        Some(kb) => {
            let (source, image) = image_source(
                &kb.image,
                &opts.plain_http,
                opts.registry_config_dir.as_deref(),
            )?;
            let kernel = fetch_disk(source.as_ref(), &store, &image, kb.kernel_path.as_deref())?;
            let initrd = kb
                .initrd_path
                .as_deref()
                .map(|p| fetch_disk(source.as_ref(), &store, &image, Some(p)))
                .transpose()?;
            Some((kernel, initrd, kb.cmdline.clone()))
        }
        None => None,
    };

    let layout = disks::Layout {
        ephemeral_dir: opts.run_dir.join("ephemeral"),
        volumes_dir: opts.volumes_dir.clone(),
        images: store.clone(),
    };
    let mut devices = Vec::new();
    for disk in &plan.disks {
        let prepared = match &disk.source {
            DiskSource::CloudInitNoCloud(_) | DiskSource::CloudInitConfigDrive(_) => {
                let volume = cloudinit::from_vmi(&vmi, &NoSecrets)?.ok_or_else(|| {
                    RunError::Unsupported {
                        path: "spec.volumes".into(),
                        message: format!(
                            "disk {} names a cloud-init volume that produced no data",
                            disk.name
                        ),
                    }
                })?;
                let iso = volume
                    .disk
                    .to_iso()
                    .map_err(|source| RunError::CloudInitIso {
                        disk: disk.name.clone(),
                        source,
                    })?;
                let path = layout
                    .ephemeral_dir
                    .join("cloudinit")
                    .join(format!("{}.iso", disk.name));
                std::fs::create_dir_all(path.parent().unwrap_or(&layout.ephemeral_dir))
                    .map_err(io(&layout.ephemeral_dir))?;
                std::fs::write(&path, iso).map_err(io(&path))?;
                PreparedDisk {
                    name: disk.name.clone(),
                    path,
                    readonly: true,
                    base: None,
                    ephemeral: true,
                }
            }
            DiskSource::ContainerDisk { image, .. } => {
                let (src, _) =
                    image_source(image, &opts.plain_http, opts.registry_config_dir.as_deref())?;
                disks::prepare(disk, &layout, src.as_ref())?
            }
            _ => disks::prepare(disk, &layout, no_images.as_ref())?,
        };
        // A containerDisk is its qcow2 overlay over the cached base, the one backing file
        // the overlay may name.
        let cache = disk.cache;
        let backing = match &prepared.base {
            Some(base) => DiskBacking::Image(SharedImage::new(
                open_image(&prepared.path, prepared.readonly, cache, &[base.as_path()]).map_err(
                    |source| RunError::ImageOpen {
                        disk: disk.name.clone(),
                        source,
                    },
                )?,
            )),
            // A migration target opens a persistent disk without its write lock: the source
            // still writes it, and hands the lock over when it sends the guest's last state.
            None if opts.incoming.is_some() && !prepared.ephemeral => DiskBacking::File(Arc::new(
                RawFile::open_inactive(&prepared.path, prepared.readonly, cache).map_err(
                    |source| RunError::DiskOpen {
                        disk: disk.name.clone(),
                        source,
                    },
                )?,
            )),
            None => DiskBacking::File(Arc::new(
                RawFile::open_with_cache(&prepared.path, prepared.readonly, cache).map_err(
                    |source| RunError::DiskOpen {
                        disk: disk.name.clone(),
                        source,
                    },
                )?,
            )),
        };
        devices.push(DiskSpec {
            name: disk.name.clone(),
            backing,
            serial: disk.serial.clone().unwrap_or_default(),
            error_policy: disk.error_policy,
            migration: if prepared.ephemeral && !prepared.readonly {
                DiskMigration::Copy
            } else {
                DiskMigration::Shared
            },
        });
    }

    let memory = plan.memory_bytes.div_ceil(2 << 20) * (2 << 20);
    let topology = plan.cpu;
    let (console_read, console_write) = std::io::pipe().map_err(io(&opts.run_dir))?;
    let boot = match kernel {
        Some((kernel, initrd, cmdline)) => BootSource::Linux(LinuxBoot {
            kernel: KernelImage::Path(kernel),
            initrd: initrd.map(KernelImage::Path),
            cmdline,
        }),
        None => BootSource::Firmware(firmware_boot(&plan, &opts.run_dir, &layout)?),
    };
    let mut config = VmConfig::new(topology.vcpus(), memory, boot).with_topology(topology);
    let mut smbios = SmbiosInfo::default();
    if let Some(uuid) = plan.firmware_uuid {
        smbios = smbios.with_uuid(uuid);
    }
    if let Some(serial) = &plan.firmware_serial {
        smbios = smbios.with_serial(serial.clone());
    }
    config.smbios = Some(smbios);
    if !plan.disabled_cpu_features.is_empty() {
        config.cpu_features =
            CpuFeatureMask::disable(plan.disabled_cpu_features.iter().map(String::as_str))?;
    }
    let (network, net) = match &plan.network {
        Some(net) => {
            let (mac, tap, attached) = network::attach(
                net,
                &PodNetworkOptions {
                    pod_iface: opts.pod_iface.clone(),
                    hostname: cloudinit::VmiIdentity::from_vmi(&vmi).hostname(),
                    vmi: (plan.namespace.clone(), plan.name.clone()),
                    prepared: opts.network_prepared,
                },
            )?;
            (Some(attached), Some((mac, tap)))
        }
        None => (None, None),
    };
    // Started before the main thread confines itself, so it inherits no other filter.
    let snapshots =
        Snapshotter::start(&opts.run_dir.join(SNAPSHOTS_DIR)).map_err(io(&opts.run_dir))?;
    // Started here for the same reason: it inherits no other kind's filter.
    let migrations = Migrator::start().map_err(io(&opts.run_dir))?;
    let first = match (&opts.incoming, &opts.restore_from) {
        (Some(addr), _) => FirstVm::Incoming(addr),
        (None, Some(dir)) => FirstVm::Restore(dir),
        (None, None) => FirstVm::Boot,
    };
    let machine = Machine::start_from(
        MachineSpec {
            config,
            console: plan.serial_console.then(|| OwnedFd::from(console_write)),
            disks: devices,
            rng: plan.rng,
            net,
            stats: Default::default(),
        },
        first,
    )?;
    let log = (plan.log_serial_console || opts.always_log_console)
        .then(|| opts.run_dir.join(CONSOLE_LOG));
    let input = machine.clone();
    let console = ConsoleHub::start_with_echo(
        console_read,
        &opts.run_dir.join(CONSOLE_SOCKET),
        Arc::new(move |b: &[u8]| {
            input.vm().serial_input(b);
        }),
        log.as_deref(),
        opts.echo_console,
    )
    .map_err(io(&opts.run_dir))?;
    let shutdowns = Shutdowns::new(machine.clone());
    let info = guest_info(&plan, network.as_ref());
    let target = Target {
        machine: machine.clone(),
        shutdowns: shutdowns.clone(),
        grace: plan.grace_period,
        info,
        vmi: (
            plan.namespace.clone(),
            plan.name.clone(),
            vmi.metadata.uid.clone().unwrap_or_default(),
        ),
        snapshots: Some(snapshots),
        migrations: Some(migrations.clone()),
    };
    let control = match &opts.control {
        Some(control) => {
            control.serve_target(target);
            control.clone()
        }
        None => ControlServer::start(&opts.run_dir.join(CONTROL_SOCKET), target)
            .map_err(io(&opts.run_dir))?,
    };
    Ok(Launched {
        machine,
        plan,
        console,
        control,
        shutdowns,
        network,
        migrations,
        layout,
    })
}
