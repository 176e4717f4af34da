//! Interrupt lines from devices to the in-kernel irqchip.

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// An edge on an `EventFd` registered with KVM as an irqfd: writing it injects the GSI.
#[derive(Debug)]
pub struct IrqTrigger(EventFd);

impl IrqTrigger {
    /// A trigger for a fresh non-blocking eventfd.
    pub fn new() -> std::io::Result<Self> {
        Ok(IrqTrigger(EventFd::new(libc::EFD_NONBLOCK)?))
    }

    /// The eventfd, to register with `KVM_IRQFD` (or to watch in tests).
    pub fn eventfd(&self) -> &EventFd {
        &self.0
    }
}

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_signals_the_eventfd() {
        let t = IrqTrigger::new().unwrap();
        t.trigger().unwrap();
        t.trigger().unwrap();
        assert_eq!(t.eventfd().read().unwrap(), 2);
    }
}
