//! Unit tests for Linux boot: what lands in guest memory.

use super::*;
use vm_memory::{Bytes, GuestAddress};

use crate::memory::{MemoryOptions, create_guest_memory};

/// A minimal bzImage: one setup sector plus the boot sector, then `payload` as the
/// protected-mode kernel. Enough for linux-loader's header checks.
pub(crate) fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
    let mut img = vec![0u8; 2 * 512];
    img[0x1f1] = 1; // setup_sects
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // protocol 2.15
    img[0x211] = 0x01; // loadflags: LOADED_HIGH
    img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    img.extend_from_slice(payload);
    img
}

fn mem() -> GuestMemoryMmap {
    create_guest_memory(64 << 20, MemoryOptions::default()).unwrap()
}

#[test]
fn memory_map_reserves_the_legacy_hole() {
    let map = memory_map(&mem());
    assert_eq!(
        map,
        vec![
            (0, EBDA_START, E820_RAM),
            (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
            (HIMEM_START, (64 << 20) - HIMEM_START, E820_RAM)
        ]
    );
}

#[test]
fn bzimage_gets_a_zero_page() {
    let mem = mem();
    let boot = LinuxBoot {
        kernel: KernelImage::Bytes(fake_bzimage(&[0xf4; 0x1000])),
        initrd: Some(KernelImage::Bytes(vec![0x5a; 0x2345])),
        cmdline: "console=ttyS0 reboot=k".into(),
    };
    let plan = load(&mem, &boot, 2, Some(0xe_0000)).unwrap();
    let entry = plan.entries[0].unwrap();
    assert_eq!(entry.mode, EntryMode::Long64(Privilege::Kernel));
    assert_eq!(entry.rip, HIMEM_START + 0x200);
    assert_eq!(entry.rsi, ZERO_PAGE_START);
    assert!(plan.entries[1].is_none(), "APs wait for INIT/SIPI");
    assert_eq!(plan.page_access, PageAccess::Supervisor);

    let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
    let hdr = params.hdr;
    assert_eq!(hdr.type_of_loader, KERNEL_LOADER_OTHER);
    assert_eq!({ hdr.header }, KERNEL_HDR_MAGIC);
    assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
    assert_eq!(
        { hdr.cmdline_size },
        "console=ttyS0 reboot=k".len() as u32 + 1
    );
    let (rd_addr, rd_size) = ({ hdr.ramdisk_image }, { hdr.ramdisk_size });
    assert_eq!(rd_size, 0x2345);
    assert_eq!(rd_addr % 4096, 0);
    assert!(u64::from(rd_addr) + 0x2345 <= 64 << 20);
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(u64::from(rd_addr)))
            .unwrap(),
        0x5a
    );
    assert_eq!({ params.acpi_rsdp_addr }, 0xe_0000);
    assert_eq!(params.e820_entries, 3);
    let e = params.e820_table[2];
    assert_eq!(
        ({ e.addr }, { e.size }, { e.r#type }),
        (HIMEM_START, (64 << 20) - HIMEM_START, E820_RAM)
    );

    let mut cmdline = vec![0u8; 23];
    mem.read_slice(&mut cmdline, GuestAddress(CMDLINE_START))
        .unwrap();
    assert_eq!(&cmdline, b"console=ttyS0 reboot=k\0");
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(HIMEM_START)).unwrap(),
        0xf4,
        "kernel loaded at 1 MiB"
    );
}

#[test]
fn garbage_kernel_names_both_formats() {
    let boot = LinuxBoot {
        kernel: KernelImage::Bytes(vec![0; 4096]),
        initrd: None,
        cmdline: String::new(),
    };
    let err = load(&mem(), &boot, 1, None).unwrap_err();
    assert!(matches!(err, BootError::UnknownKernelFormat { .. }));
    assert!(err.to_string().contains("bzImage"));
}

#[test]
fn missing_kernel_file_names_the_path() {
    let boot = LinuxBoot {
        kernel: KernelImage::Path("/no/such/vmlinuz".into()),
        initrd: None,
        cmdline: String::new(),
    };
    let err = load(&mem(), &boot, 1, None).unwrap_err();
    assert!(err.to_string().contains("/no/such/vmlinuz"), "{err}");
}

#[test]
fn initrd_larger_than_ram_is_refused() {
    let boot = LinuxBoot {
        kernel: KernelImage::Bytes(fake_bzimage(&[0; 16])),
        initrd: Some(KernelImage::Bytes(vec![0; 63 << 20])),
        cmdline: String::new(),
    };
    assert!(matches!(
        load(&mem(), &boot, 1, None),
        Err(BootError::InitrdTooLarge { .. })
    ));
}
