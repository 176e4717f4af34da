//! The receiving side: checks the source's shape, fills fresh guest RAM from the rounds,
//! builds the VM from the final state, acks, and hands the VM over on `Go`.

use std::io::{Read, Write};

use vm_memory::{Bytes, GuestAddress};

use super::MigrationError;
use super::disks;
use super::wire::{self, Message, PAGE_SIZE, Page, WireError};
use crate::memory::{self, GuestMemoryMmap};
use crate::snapshot::{MemoryLayout, SnapshotState, open_sealed};
use crate::virtio::block::{activate_all, inactivate_all};
use crate::vm::{Vm, VmBuilder};

/// Which pages of RAM the stream has written, so a zero page for a page never written (still
/// zero in fresh anonymous memory) costs nothing.
struct Received {
    regions: Vec<(u64, u64)>,
    /// Page index of each region's first page.
    firsts: Vec<u64>,
    written: Vec<u64>,
}

impl Received {
    fn new(regions: Vec<(u64, u64)>) -> Self {
        let mut firsts = Vec::with_capacity(regions.len());
        let mut total = 0;
        for (_, size) in &regions {
            firsts.push(total);
            total += size / PAGE_SIZE as u64;
        }
        Received {
            regions,
            firsts,
            written: vec![0; total.div_ceil(64) as usize],
        }
    }

    /// The page's index in RAM, if `gpa` is the start of a page of one of the regions.
    fn index(&self, gpa: u64) -> Option<u64> {
        if !gpa.is_multiple_of(PAGE_SIZE as u64) {
            return None;
        }
        self.regions
            .iter()
            .zip(&self.firsts)
            .find(|((start, size), _)| gpa >= *start && gpa - start < *size)
            .map(|((start, _), first)| first + (gpa - start) / PAGE_SIZE as u64)
    }

    /// Marks page `index` written; returns whether it was before.
    fn mark(&mut self, index: u64) -> bool {
        let (word, bit) = ((index / 64) as usize, index % 64);
        let was = self.written[word] & (1 << bit) != 0;
        self.written[word] |= 1 << bit;
        was
    }
}

fn apply(memory: &GuestMemoryMmap, got: &mut Received, page: &Page) -> Result<(), MigrationError> {
    let gpa = page.gpa();
    let index = got.index(gpa).ok_or(MigrationError::BadPage(gpa))?;
    let was_written = got.mark(index);
    let result = match page {
        Page::Zero(_) if !was_written => Ok(()),
        Page::Zero(_) => memory.write_slice(&[0u8; PAGE_SIZE], GuestAddress(gpa)),
        Page::Data(_, data) => memory.write_slice(&data[..], GuestAddress(gpa)),
    };
    result.map_err(|_| MigrationError::BadPage(gpa))
}

impl VmBuilder {
    /// Receives a VM live-migrated by [`Vm::migrate_to`] over `stream`, builds it with this
    /// builder's configuration and devices (which must be the source's), and returns it once
    /// the source has given it up: [`Vm::start`] it at once, the guest continues where it was.
    ///
    /// # Errors
    /// [`MigrationError`] naming what is wrong — the source's vCPUs or RAM layout differ from
    /// this configuration ([`MigrationError::Layout`]), a page lies outside RAM
    /// ([`MigrationError::BadPage`]), the stream is truncated or corrupt
    /// ([`MigrationError::Wire`]), the source aborted ([`MigrationError::Peer`]), the state
    /// does not fit the devices. The reason is sent to the source (best effort), nothing is
    /// started, and everything received is dropped.
    pub fn migrate_from<S: Read + Write>(self, stream: &mut S) -> Result<Vm, MigrationError> {
        let result = self.receive(stream);
        if let Err(e) = &result
            && !matches!(
                e,
                MigrationError::Peer { .. } | MigrationError::Wire(WireError::Io { .. })
            )
        {
            let _ = wire::write_message(stream, &Message::Error(e.to_string()));
            let _ = stream.flush();
        }
        result
    }

    fn receive<S: Read + Write>(self, stream: &mut S) -> Result<Vm, MigrationError> {
        let config = self.config();
        let disks = self.migration_disks();
        wire::read_preamble(stream)?;
        let hello = match wire::read_message(stream)? {
            Message::Hello(h) => h,
            m => return Err(unexpected("Hello", &m)),
        };
        let ranges: Vec<(u64, u64)> = memory::ram_ranges(config.memory_size)
            .into_iter()
            .map(|(a, s)| (a.0, s))
            .collect();
        if hello.vcpus != u32::from(config.vcpus)
            || hello.memory_size != config.memory_size
            || hello.regions != ranges
        {
            return Err(MigrationError::Layout {
                source_vm: describe(hello.vcpus, hello.memory_size, &hello.regions),
                target: describe(u32::from(config.vcpus), config.memory_size, &ranges),
            });
        }
        disks::check_disks(&hello.disks, &disks)?;
        let memory = memory::create_guest_memory(config.memory_size, config.memory)
            .map_err(|e| MigrationError::Vm(e.to_string()))?;
        send(stream, &Message::Ready)?;

        let mut got = Received::new(ranges);
        let mut buf = Vec::new();
        let mut firmware = None;
        let sealed = loop {
            match wire::read_message_with(stream, &mut buf)? {
                Message::Pages { pages, .. } => {
                    for page in &pages {
                        apply(&memory, &mut got, page)?;
                    }
                }
                Message::Disk { chunks, .. } => {
                    for chunk in &chunks {
                        disks::apply(&disks, chunk)?;
                    }
                }
                Message::Firmware(f) => firmware = Some(f),
                Message::State(s) => break s,
                m => return Err(unexpected("Pages, Disk or State", &m)),
            }
        };
        let payload =
            open_sealed(&sealed).map_err(|e| WireError::Malformed(format!("the VM state: {e}")))?;
        let state = SnapshotState::decode(payload)
            .map_err(|e| WireError::Malformed(format!("the VM state: {e}")))?;
        let layout = MemoryLayout::of_memory(&memory);
        if state.vcpus != hello.vcpus || state.layout != layout {
            return Err(MigrationError::Layout {
                source_vm: format!("a state of {} vCPUs and RAM {}", state.vcpus, state.layout),
                target: format!("{} vCPUs and RAM {layout}", hello.vcpus),
            });
        }
        disks::flush_copied(&disks)?;
        let vm = self
            .build_restored(state, memory)
            .map_err(|e| MigrationError::Vm(format!("building the VM from its state: {e}")))?;
        vm.load_firmware_state(firmware.as_ref())
            .map_err(MigrationError::Vm)?;
        // The source gave its disks' write locks up before it sent the state: take them
        // (a disk another VM holds is refused, and the source keeps the guest).
        activate_all(&disks)
            .map_err(|(index, source)| MigrationError::DiskLock { index, source })?;
        let go = send(stream, &Message::Ack).and_then(|()| match wire::read_message(stream)? {
            Message::Go => Ok(()),
            m => Err(unexpected("Go", &m)),
        });
        if go.is_err() {
            // This side does not run the guest: it writes nothing, and holds no lock.
            let _ = inactivate_all(&disks);
        }
        go.map(|()| vm)
    }
}

fn send<S: Write>(stream: &mut S, msg: &Message) -> Result<(), MigrationError> {
    wire::write_message(stream, msg)?;
    stream.flush().map_err(|source| WireError::Io {
        op: "flush",
        source,
    })?;
    Ok(())
}

fn unexpected(expected: &'static str, got: &Message) -> MigrationError {
    match got {
        Message::Abort(reason) => MigrationError::Peer {
            side: "source",
            reason: reason.clone(),
        },
        m => WireError::Unexpected {
            expected,
            got: m.name(),
        }
        .into(),
    }
}

fn describe(vcpus: u32, size: u64, regions: &[(u64, u64)]) -> String {
    let parts: Vec<String> = regions
        .iter()
        .map(|(a, s)| format!("{s:#x} bytes at {a:#x}"))
        .collect();
    format!(
        "{vcpus} vCPUs and {size:#x} bytes of RAM ({})",
        parts.join(" + ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_outside_ram_or_unaligned_are_refused() {
        let got = Received::new(vec![(0, 0x10_0000), (1 << 32, 0x2000)]);
        assert_eq!(got.index(0), Some(0));
        assert_eq!(got.index(0xf_f000), Some(255));
        assert_eq!(got.index(1 << 32), Some(256));
        assert_eq!(got.index((1 << 32) + 0x1000), Some(257));
        assert_eq!(got.index(0x10_0000), None);
        assert_eq!(got.index((1 << 32) + 0x2000), None);
        assert_eq!(got.index(0x800), None);
        assert_eq!(got.index(!0xfff), None);
    }
}
