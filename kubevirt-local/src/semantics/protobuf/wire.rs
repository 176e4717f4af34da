//! The protobuf wire format: varints, length-delimited fields and fixed-width fields.

/// One field's payload.
pub(super) enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
    /// A 32-bit field (no Kubernetes type uses one; it is skipped).
    Fixed32,
}

/// A cursor over an encoded message.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn new(b: &'a [u8]) -> Self {
        Self(b)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("field runs past the end of its message");
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(b)
    }

    /// The next field: its number and payload.
    pub(super) fn field(&mut self) -> Result<(u64, Wire<'a>), &'static str> {
        let tag = self.varint()?;
        let wire = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Wire::Fixed64(u64::from_le_bytes(b.try_into().map_err(|_| "fixed64")?))
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            _ => return Err("unsupported wire type (groups are not used by Kubernetes)"),
        };
        if tag >> 3 == 0 {
            return Err("field number 0");
        }
        Ok((tag >> 3, wire))
    }
}

/// Encoding, for tests: the inverse of [`Reader`].
#[cfg(test)]
pub(super) mod encode {
    pub(crate) fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub(crate) fn bytes(num: u32, payload: &[u8], out: &mut Vec<u8>) {
        varint((u64::from(num) << 3) | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    pub(crate) fn int(num: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(num) << 3, out);
        varint(v, out);
    }

    pub(crate) fn fixed64(num: u32, v: u64, out: &mut Vec<u8>) {
        varint((u64::from(num) << 3) | 1, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}
