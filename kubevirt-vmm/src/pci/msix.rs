//! MSI-X (PCI 3.0, 6.8.2): the capability, the vector table and the pending-bit array, as
//! registers. Delivering a message is someone else's job ([`MsiSink`]; under a VM, an irqfd
//! per vector routed by KVM's GSI routing table, see `crate::vm::msi`).

/// The MSI-X capability ID.
pub const PCI_CAP_ID_MSIX: u8 = 0x11;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
const VECTOR_MASKED: u32 = 1;

/// One MSI message: the address and data a table entry holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address (the LAPIC window on x86).
    pub address: u64,
    /// Message data (vector and delivery mode on x86).
    pub data: u32,
}

/// Sends MSI messages to the guest.
pub trait MsiSink: Send + Sync {
    /// Raises `vector`, whose table entry now holds `msg` (the vector is deliverable: MSI-X
    /// enabled, neither function nor vector masked).
    fn send(&self, vector: u16, msg: MsiMessage) -> std::io::Result<()>;

    /// `vector` is deliverable and its entry holds `msg`: the driver just unmasked or
    /// reprogrammed it. A sink that routes per vector (irqfd + GSI route) installs or
    /// updates the route here, so that [`MsiSink::send`] has nothing to set up. Called after
    /// every table or control write for each deliverable vector: must be cheap when nothing
    /// changed. Default: nothing.
    fn route(&self, vector: u16, msg: MsiMessage) -> std::io::Result<()> {
        let _ = (vector, msg);
        Ok(())
    }
}

/// A vector number and the message its entry holds.
pub type VectorMessage = (u16, MsiMessage);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    control: u32,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            // Vectors start masked.
            control: VECTOR_MASKED,
        }
    }
}

/// The capability body (after ID and next pointer) and its writable mask, for
/// [`super::PciConfiguration::add_capability`]: table at `table_offset` and PBA at
/// `pba_offset`, both in BAR `bar`.
pub fn capability(
    vectors: u16,
    bar: u8,
    table_offset: u32,
    pba_offset: u32,
) -> ([u8; 12], [u8; 12]) {
    let control = (vectors - 1) & 0x7ff;
    let mut body = [0u8; 12];
    body[0] = PCI_CAP_ID_MSIX;
    body[2..4].copy_from_slice(&control.to_le_bytes());
    body[4..8].copy_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
    body[8..12].copy_from_slice(&(pba_offset | u32::from(bar)).to_le_bytes());
    let mut writable = [0u8; 12];
    writable[3] = 0xc0; // enable, function mask
    (body, writable)
}

/// The table and PBA of one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsixTable {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    enabled: bool,
    function_masked: bool,
}

impl MsixTable {
    /// `vectors` vectors (1..=2048), all masked, MSI-X disabled.
    pub fn new(vectors: u16) -> Self {
        let n = usize::from(vectors.clamp(1, 2048));
        MsixTable {
            entries: vec![Entry::default(); n],
            pending: vec![false; n],
            enabled: false,
            function_masked: false,
        }
    }

    /// Appends the table, the pending bits and the control bits to a snapshot.
    pub(crate) fn save(&self, e: &mut crate::snapshot::codec::Encoder) {
        e.len(self.entries.len());
        for (entry, pending) in self.entries.iter().zip(&self.pending) {
            e.u32(entry.addr_lo);
            e.u32(entry.addr_hi);
            e.u32(entry.data);
            e.u32(entry.control);
            e.u8(u8::from(*pending));
        }
        e.u8(u8::from(self.enabled) | u8::from(self.function_masked) << 1);
    }

    /// Puts back what [`MsixTable::save`] wrote; the vector count must match.
    pub(crate) fn restore(
        &mut self,
        d: &mut crate::snapshot::codec::Decoder<'_>,
    ) -> Result<(), crate::snapshot::CodecError> {
        use crate::snapshot::codec::field;
        let n = d.len(self.entries.len(), &field("MSI-X vectors"))?;
        if n != self.entries.len() {
            return Err(crate::snapshot::CodecError::Inconsistent(format!(
                "the snapshot has {n} MSI-X vectors, the function {}",
                self.entries.len()
            )));
        }
        for v in 0..n {
            let what = || format!("MSI-X vector {v}");
            self.entries[v] = Entry {
                addr_lo: d.u32(&what)?,
                addr_hi: d.u32(&what)?,
                data: d.u32(&what)?,
                control: d.u32(&what)?,
            };
            self.pending[v] = d.u8(&what)? != 0;
        }
        let control = d.u8(&field("MSI-X control"))?;
        self.enabled = control & 1 != 0;
        self.function_masked = control & 2 != 0;
        Ok(())
    }

    /// Whether the driver enabled MSI-X.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn deliverable(&self, v: usize) -> bool {
        self.enabled && !self.function_masked && self.entries[v].control & VECTOR_MASKED == 0
    }

    fn message(&self, v: usize) -> MsiMessage {
        let e = &self.entries[v];
        MsiMessage {
            address: u64::from(e.addr_hi) << 32 | u64::from(e.addr_lo),
            data: e.data,
        }
    }

    /// Messages pending on vectors that just became deliverable (their pending bits clear).
    fn flush_pending(&mut self) -> Vec<VectorMessage> {
        let mut out = Vec::new();
        for v in 0..self.entries.len() {
            if self.pending[v] && self.deliverable(v) {
                self.pending[v] = false;
                out.push((v as u16, self.message(v)));
            }
        }
        out
    }

    /// Every deliverable vector and its message (what a routing sink must have installed).
    pub fn deliverable_messages(&self) -> Vec<VectorMessage> {
        (0..self.entries.len())
            .filter(|&v| self.deliverable(v))
            .map(|v| (v as u16, self.message(v)))
            .collect()
    }

    /// Whether the pending bit of `vector` is set.
    pub fn is_pending(&self, vector: u16) -> bool {
        self.pending
            .get(usize::from(vector))
            .copied()
            .unwrap_or(false)
    }

    /// The driver wrote the capability's message control; returns messages now due.
    pub fn set_control(&mut self, control: u16) -> Vec<VectorMessage> {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        self.flush_pending()
    }

    /// The device signals `vector`: the message to send now, or `None` (vector out of range,
    /// MSI-X off, or masked, in which case the pending bit is set).
    pub fn signal(&mut self, vector: u16) -> Option<MsiMessage> {
        let v = usize::from(vector);
        if v >= self.entries.len() || !self.enabled {
            return None;
        }
        if self.deliverable(v) {
            Some(self.message(v))
        } else {
            self.pending[v] = true;
            None
        }
    }

    /// A driver read in the table; accesses must be 4 or 8 bytes, aligned.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let Some(word) = self.table_word(offset + 4 * i as u64) else {
                return;
            };
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
    }

    fn table_word(&self, offset: u64) -> Option<u32> {
        if !offset.is_multiple_of(4) {
            return None;
        }
        let e = self
            .entries
            .get(usize::try_from(offset / ENTRY_SIZE).ok()?)?;
        Some(match offset % ENTRY_SIZE {
            0 => e.addr_lo,
            4 => e.addr_hi,
            8 => e.data,
            _ => e.control,
        })
    }

    /// A driver write in the table; returns messages now due (a vector was unmasked).
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> Vec<VectorMessage> {
        if !matches!(data.len(), 4 | 8) || !offset.is_multiple_of(4) {
            return Vec::new();
        }
        for (i, chunk) in data.chunks(4).enumerate() {
            let at = offset + 4 * i as u64;
            let Some(e) = usize::try_from(at / ENTRY_SIZE)
                .ok()
                .and_then(|v| self.entries.get_mut(v))
            else {
                return Vec::new();
            };
            let word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            match at % ENTRY_SIZE {
                0 => e.addr_lo = word,
                4 => e.addr_hi = word,
                8 => e.data = word,
                _ => e.control = word & VECTOR_MASKED,
            }
        }
        self.flush_pending()
    }

    /// A driver read of the pending-bit array (read-only).
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let first = (offset as usize + i) * 8;
            *byte = (0..8)
                .filter(|b| self.pending.get(first + b).copied().unwrap_or(false))
                .fold(0u8, |acc, b| acc | 1 << b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(
        t: &mut MsixTable,
        v: u64,
        addr: u64,
        data: u32,
        masked: bool,
    ) -> Vec<VectorMessage> {
        let base = v * ENTRY_SIZE;
        t.write_table(base, &addr.to_le_bytes());
        t.write_table(base + 8, &data.to_le_bytes());
        t.write_table(base + 12, &u32::from(masked).to_le_bytes())
    }

    #[test]
    fn capability_reports_size_and_locations() {
        let (body, writable) = capability(3, 0, 0x4000, 0x6000);
        assert_eq!(body[0], 0x11);
        assert_eq!(u16::from_le_bytes([body[2], body[3]]), 2);
        assert_eq!(u32::from_le_bytes(body[4..8].try_into().unwrap()), 0x4000);
        assert_eq!(u32::from_le_bytes(body[8..12].try_into().unwrap()), 0x6000);
        assert_eq!(writable[3], 0xc0);
    }

    #[test]
    fn messages_flow_only_when_enabled_and_unmasked_and_pending_bits_replay() {
        let mut t = MsixTable::new(3);
        assert_eq!(t.signal(0), None, "MSI-X disabled");
        t.set_control(CONTROL_ENABLE);
        assert_eq!(t.signal(1), None, "vectors start masked");
        let mut pba = [0u8; 1];
        t.read_pba(0, &mut pba);
        assert_eq!(pba, [0b010]);
        let msg = MsiMessage {
            address: 0xfee0_0000,
            data: 0x41,
        };
        assert!(t.is_pending(1));
        assert_eq!(
            program(&mut t, 1, 0xfee0_0000, 0x41, false),
            vec![(1, msg)],
            "unmask replays"
        );
        assert!(!t.is_pending(1));
        assert_eq!(t.deliverable_messages(), vec![(1, msg)]);
        t.read_pba(0, &mut pba);
        assert_eq!(pba, [0]);
        assert_eq!(t.signal(1), Some(msg));
        t.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        assert_eq!(t.signal(1), None);
        assert!(t.deliverable_messages().is_empty(), "function masked");
        assert_eq!(t.set_control(CONTROL_ENABLE), vec![(1, msg)]);
        assert_eq!(t.signal(7), None, "out-of-range vector");
        let mut d = [0u8; 8];
        t.read_table(16, &mut d);
        assert_eq!(u64::from_le_bytes(d), 0xfee0_0000);
        t.read_table(12 + 16, &mut d[..4]);
        assert_eq!(d[..4], [0, 0, 0, 0]);
        // Out of the table or misaligned: ignored, reads 0.
        assert!(t.write_table(48, &[1, 2, 3, 4]).is_empty());
        assert!(t.write_table(1, &[1, 2, 3, 4]).is_empty());
        t.read_table(48, &mut d);
        assert_eq!(d, [0; 8]);
    }
}
