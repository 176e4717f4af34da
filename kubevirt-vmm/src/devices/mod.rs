//! Legacy devices: the 16550 serial port, the i8042 reset line, the CMOS RTC and the
//! debug-exit port. Each is a plain struct implementing [`crate::bus::BusDevice`], testable
//! without KVM.

pub mod cmos;
pub mod debug_exit;
pub mod i8042;
pub mod irq;
pub mod serial;
