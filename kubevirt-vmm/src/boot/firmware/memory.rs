//! The firmware's memory: its image as a read-only KVM memory slot ending at 4 GiB (writes
//! exit to the VMM and are dropped, like writes to a ROM), OVMF's variable store as a writable
//! slot below it backed by the VM's own file, and the image's top copied to the legacy BIOS
//! area under 1 MiB (plain writable RAM here).
//!
//! QEMU aliases the image's last 128 KiB at 0xE0000 and SeaBIOS, once it has unlocked the
//! shadow RAM through the i440FX/Q35 PAM registers, copies the rest of itself below that. This
//! VMM has neither chipset, so it does the shadowing up front: a BIOS image's last 256 KiB
//! (all of `bios-256k.bin`) land at 0xC0000-0xFFFFF, already writable, which is the state
//! SeaBIOS would have made (it logs "Unable to unlock ram - bridge not found" and carries on).
//! UEFI gets QEMU's 128 KiB alias.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use kvm_bindings::{KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use vm_memory::{Bytes, GuestAddress};
use crate::memory::GuestMemoryMmap;

use super::Firmware;
use crate::arch::layout::FIRST_ADDR_PAST_32BITS;
use crate::boot::BootError;

/// Most firmware (code and variables) mapped below 4 GiB: 16 MiB, which keeps it above the
/// local APIC at 0xFEE00000 and the KVM TSS pages.
pub const FIRMWARE_MAX_SIZE: u64 = 16 << 20;
/// Firmware sizes are multiples of this.
const FIRMWARE_GRANULE: u64 = 4096;
/// How much of a UEFI image appears at the end of the first MiB (QEMU's `isa-bios`).
pub const LEGACY_BIOS_ALIAS_SIZE: u64 = 128 << 10;
/// How much of a BIOS image is shadowed at the end of the first MiB (0xC0000-0xFFFFF).
pub const LEGACY_BIOS_SHADOW_SIZE: u64 = 256 << 10;
/// The end of the legacy BIOS area.
const LEGACY_BIOS_END: u64 = 1 << 20;

/// A host mapping backing one firmware memory slot.
#[derive(Debug)]
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this struct; KVM and the vCPUs access it only
// while the VM exists, and nothing else holds the pointer.
unsafe impl Send for Mapping {}
// SAFETY: as above; the struct itself is never mutated after creation.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once, after the VM fd
        // (and with it the memory slot) is gone: `Vm` drops this after its VM fd.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The firmware's host mappings; kept alive as long as the VM.
#[derive(Debug, Default)]
pub struct FirmwareMemory {
    mappings: Vec<Mapping>,
    /// The image's size and CRC-32 (a migration target checks it runs the same firmware).
    code: (u64, u32),
    /// Index in `mappings` of OVMF's variable store, the one slot the guest writes.
    vars: Option<usize>,
}

impl Mapping {
    /// The mapped bytes.
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` are a live mapping this struct owns (unmapped only on drop).
        // Callers read it while the vCPUs are paused, so nothing writes it meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }

    /// Overwrites the mapped bytes with `bytes` (as long as the mapping).
    fn fill(&self, bytes: &[u8]) {
        let n = bytes.len().min(self.len);
        // SAFETY: at most `len` bytes into the live writable mapping this struct owns; the
        // VM's vCPUs have not run since it was built (a migration target fills it first).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.cast::<u8>(), n) };
    }
}

/// What live migration carries of the firmware's memory (its code is read-only and comes from
/// the target's own file; its RAM-resident parts travel with RAM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareState {
    /// The firmware image's size in bytes.
    pub code_size: u64,
    /// Its CRC-32: both sides must run the same firmware.
    pub code_crc: u32,
    /// OVMF's variable store as the guest left it (empty for SeaBIOS: it has none).
    pub vars: Vec<u8>,
}

fn map_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BootError + 'a {
    move |source| BootError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    }
}

fn check_size(what: &'static str, path: &Path, len: u64) -> Result<(), BootError> {
    if len == 0 || !len.is_multiple_of(FIRMWARE_GRANULE) || len > FIRMWARE_MAX_SIZE {
        return Err(BootError::FirmwareSize {
            what,
            path: path.to_owned(),
            size: len,
        });
    }
    Ok(())
}

/// An anonymous mapping holding `bytes`.
fn anonymous_copy(bytes: &[u8]) -> Result<Mapping, std::io::Error> {
    // SAFETY: a fresh private anonymous mapping; the result is checked before use.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `ptr` is a fresh writable mapping of `bytes.len()` bytes that overlaps nothing.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.cast::<u8>(), bytes.len()) };
    Ok(Mapping {
        ptr,
        len: bytes.len(),
    })
}

/// A shared, writable mapping of the whole file at `path`.
fn shared_file(path: &Path) -> Result<Mapping, BootError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(map_err("UEFI variable store", path))?;
    let len = file
        .metadata()
        .map_err(map_err("UEFI variable store", path))?
        .len();
    check_size("UEFI variable store", path, len)?;
    // SAFETY: maps a file we opened read-write, for its whole length; checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(map_err("UEFI variable store", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Mapping {
        ptr,
        len: len as usize,
    })
}

fn register(
    vm: &VmFd,
    slot: u32,
    addr: u64,
    m: &Mapping,
    read_only: bool,
) -> Result<(), BootError> {
    let region = kvm_userspace_memory_region {
        slot,
        guest_phys_addr: addr,
        memory_size: m.len as u64,
        userspace_addr: m.ptr as u64,
        flags: if read_only { KVM_MEM_READONLY } else { 0 },
    };
    // SAFETY: the host range is a live mapping owned by the `FirmwareMemory` the VM keeps
    // until after its VM fd is closed; the guest range lies in [4 GiB - 16 MiB, 4 GiB), where
    // no RAM slot is (RAM stops at the 32-bit hole).
    unsafe { vm.set_user_memory_region(region) }.map_err(|source| BootError::FirmwareSlot {
        addr,
        size: m.len as u64,
        source,
    })
}

impl FirmwareMemory {
    /// Reads `firmware`'s files and maps them into the VM from memory slot `first_slot` on;
    /// with `fresh_ram`, copies the top of the image into the legacy BIOS area of `ram` (a
    /// restored VM's RAM already holds that area as the firmware left it: its runtime data
    /// lives there).
    ///
    /// # Errors
    /// [`BootError`] naming the file that cannot be read or has an unusable size, or the
    /// memory slot KVM refused.
    pub fn map(
        vm: &VmFd,
        ram: &GuestMemoryMmap,
        firmware: &Firmware,
        first_slot: u32,
        fresh_ram: bool,
    ) -> Result<FirmwareMemory, BootError> {
        let (code_path, vars) = match firmware {
            Firmware::Bios { image } => (image, None),
            Firmware::Uefi { code, vars } => (code, Some(vars)),
        };
        let what = if vars.is_some() { "UEFI code" } else { "BIOS image" };
        let code = std::fs::read(code_path).map_err(map_err(what, code_path))?;
        check_size(what, code_path, code.len() as u64)?;
        let mut mem = FirmwareMemory {
            code: (code.len() as u64, crc32fast::hash(&code)),
            ..FirmwareMemory::default()
        };
        let code_addr = FIRST_ADDR_PAST_32BITS - code.len() as u64;
        let rom = anonymous_copy(&code).map_err(map_err(what, code_path))?;
        register(vm, first_slot, code_addr, &rom, true)?;
        mem.mappings.push(rom);
        if let Some(vars_path) = vars {
            let flash = shared_file(vars_path)?;
            let total = code.len() as u64 + flash.len as u64;
            if total > FIRMWARE_MAX_SIZE {
                return Err(BootError::FirmwareSize {
                    what: "UEFI code and variable store together",
                    path: vars_path.clone(),
                    size: total,
                });
            }
            register(vm, first_slot + 1, code_addr - flash.len as u64, &flash, false)?;
            mem.vars = Some(mem.mappings.len());
            mem.mappings.push(flash);
        }
        if !fresh_ram {
            return Ok(mem);
        }
        let alias = if vars.is_some() {
            LEGACY_BIOS_ALIAS_SIZE
        } else {
            LEGACY_BIOS_SHADOW_SIZE
        }
        .min(code.len() as u64);
        let at = LEGACY_BIOS_END - alias;
        ram.write_slice(&code[code.len() - alias as usize..], GuestAddress(at))
            .map_err(|source| BootError::WriteImage {
                what: "legacy BIOS area copy of the firmware",
                addr: at,
                source,
            })?;
        Ok(mem)
    }
}

impl FirmwareState {
    /// `code_size` u64 LE, `code_crc` u32 LE, then the variable store: the payload of a
    /// migration's `Firmware` frame and of a snapshot's firmware file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.vars.len());
        out.extend_from_slice(&self.code_size.to_le_bytes());
        out.extend_from_slice(&self.code_crc.to_le_bytes());
        out.extend_from_slice(&self.vars);
        out
    }

    /// Parses [`FirmwareState::encode`]'s bytes.
    ///
    /// # Errors
    /// When they are shorter than the 12-byte head.
    pub fn decode(bytes: &[u8]) -> Result<FirmwareState, String> {
        if bytes.len() < 12 {
            return Err(format!(
                "the firmware state is {} bytes, shorter than its 12-byte head",
                bytes.len()
            ));
        }
        let (size, rest) = bytes.split_at(8);
        let (crc, vars) = rest.split_at(4);
        Ok(FirmwareState {
            code_size: u64::from_le_bytes(size.try_into().unwrap_or_default()),
            code_crc: u32::from_le_bytes(crc.try_into().unwrap_or_default()),
            vars: vars.to_vec(),
        })
    }
}

impl FirmwareMemory {
    /// The firmware's state to migrate or snapshot: its image's identity and the variable
    /// store's bytes (the vCPUs must be paused: the guest writes the store directly, unlogged).
    pub(crate) fn save(&self) -> FirmwareState {
        FirmwareState {
            code_size: self.code.0,
            code_crc: self.code.1,
            vars: self
                .vars
                .map(|i| self.mappings[i].bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// Puts a migrated or snapshotted `state` in place before the VM first runs: checks the
    /// firmware is the same and writes the variable store.
    ///
    /// # Errors
    /// A message saying what differs.
    pub(crate) fn load(&self, state: &FirmwareState) -> Result<(), String> {
        if (state.code_size, state.code_crc) != self.code {
            return Err(format!(
                "the source runs a firmware image of {} bytes (CRC-32 {:#010x}), this target one of {} bytes ({:#010x}): give the target the source's firmware",
                state.code_size, state.code_crc, self.code.0, self.code.1
            ));
        }
        let own = self.vars.map_or(0, |i| self.mappings[i].len);
        if state.vars.len() != own {
            return Err(format!(
                "the source's UEFI variable store is {} bytes, this target's {own}: give the target a copy of the same store",
                state.vars.len()
            ));
        }
        if let Some(i) = self.vars {
            self.mappings[i].fill(&state.vars);
        }
        Ok(())
    }
}
