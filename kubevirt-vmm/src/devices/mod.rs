//! Legacy devices: the 16550 serial port, the i8042 reset line, the CMOS RTC, the
//! debug-exit port, QEMU's firmware configuration device (`fw_cfg`) and debug console
//! (`debugcon`, where SeaBIOS and OVMF write their logs). Each is a plain struct implementing [`crate::bus::BusDevice`], testable
//! without KVM.

pub mod cmos;
pub mod debug_exit;
pub mod debugcon;
pub mod fw_cfg;
pub mod i8042;
pub mod irq;
pub mod serial;
