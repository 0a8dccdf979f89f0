//! The protobuf wire format, as much of it as Sparkplug B needs, by hand: a crate and a code
//! generator for one message type would cost more than these hundred lines.
//!
//! A message is a sequence of fields; each starts with a varint tag `field_number << 3 |
//! wire_type`. Wire types: 0 varint (LEB128, at most 10 bytes), 1 fixed 64-bit little-endian,
//! 2 length-delimited (varint length, then bytes: strings, bytes, nested messages), 5 fixed
//! 32-bit little-endian. Types 3 and 4 (groups) are obsolete and refused. Unknown fields are
//! skipped, as protobuf requires for forward compatibility.

/// Where and why the bytes are not valid protobuf; `offset` counts from the start of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoError {
    pub offset: usize,
    pub reason: &'static str,
}

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

/// A field read from a message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub number: u32,
    pub wire: Wire<'a>,
    /// Offset of the field's tag in the whole payload.
    pub at: usize,
    /// Offset of the field's data (for `Len`, the first byte after the length).
    pub data_at: usize,
}

/// Reads the fields of one message held in `buf`, which starts at `base` in the whole payload.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn err(&self, pos: usize, reason: &'static str) -> ProtoError {
        ProtoError {
            offset: self.base.saturating_add(pos),
            reason,
        }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let start = self.pos;
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err(start, "truncated varint"));
            };
            self.pos += 1;
            // The tenth byte holds bit 63 only.
            if i == 9 && b > 1 {
                return Err(self.err(start, "varint longer than 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(start, "varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let start = self.pos;
        let bytes = start
            .checked_add(n)
            .and_then(|end| self.buf.get(start..end))
            .ok_or_else(|| self.err(start, "field runs past the end of the message"))?;
        self.pos += n;
        Ok(bytes)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let start = self.pos;
        let b = self.take(N)?;
        <[u8; N]>::try_from(b).map_err(|_| self.err(start, "truncated fixed-width field"))
    }

    /// The next field, or `None` at the end of the message.
    pub fn field(&mut self) -> Result<Option<Field<'a>>, ProtoError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let at = self.pos;
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(self.err(at, "invalid field number"));
        }
        let number = number as u32;
        let (wire, data_at) = match tag & 7 {
            0 => (Wire::Varint(self.varint()?), at),
            1 => (Wire::Fixed64(u64::from_le_bytes(self.fixed()?)), at),
            2 => {
                let len_at = self.pos;
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| self.err(len_at, "length too large"))?;
                let data_at = self.pos;
                (Wire::Len(self.take(len)?), data_at)
            }
            5 => (Wire::Fixed32(u32::from_le_bytes(self.fixed()?)), at),
            3 | 4 => return Err(self.err(at, "protobuf groups are not supported")),
            _ => return Err(self.err(at, "invalid wire type")),
        };
        Ok(Some(Field {
            number,
            wire,
            at: self.base.saturating_add(at),
            data_at: self.base.saturating_add(data_at),
        }))
    }
}

/// Appends fields to a message; the inverse of [`Reader`], for fixtures, simulators and the
/// rebirth command.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, number: u32, wire_type: u8) {
        self.varint(u64::from(number) << 3 | u64::from(wire_type));
    }

    pub fn uint(&mut self, number: u32, v: u64) {
        self.tag(number, 0);
        self.varint(v);
    }

    pub fn bool(&mut self, number: u32, v: bool) {
        self.uint(number, u64::from(v));
    }

    pub fn bytes(&mut self, number: u32, b: &[u8]) {
        self.tag(number, 2);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub fn fixed32(&mut self, number: u32, v: u32) {
        self.tag(number, 5);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn fixed64(&mut self, number: u32, v: u64) {
        self.tag(number, 1);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn all_fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, ProtoError> {
        let mut r = Reader::new(buf, 0);
        let mut out = Vec::new();
        while let Some(f) = r.field()? {
            out.push((f.number, f.wire));
        }
        Ok(out)
    }

    #[test]
    fn known_encodings() {
        // 150 as field 1: the protobuf documentation's own example, 08 96 01.
        let mut w = Writer::default();
        w.uint(1, 150);
        assert_eq!(w.buf, [0x08, 0x96, 0x01]);
        assert_eq!(all_fields(&w.buf).unwrap(), [(1, Wire::Varint(150))]);
        // "testing" as field 2: 12 07 74 65 73 74 69 6e 67.
        let mut w = Writer::default();
        w.bytes(2, b"testing");
        assert_eq!(w.buf[..2], [0x12, 0x07]);
        let mut w = Writer::default();
        w.uint(1, u64::MAX);
        assert_eq!(w.buf.len(), 11);
        assert_eq!(all_fields(&w.buf).unwrap(), [(1, Wire::Varint(u64::MAX))]);
    }

    #[test]
    fn malformed_input_is_located() {
        let e = all_fields(&[0x08]).unwrap_err();
        assert_eq!((e.offset, e.reason), (1, "truncated varint"));
        let e = all_fields(&[0x08, 0x01, 0x12, 0x05, 0x61]).unwrap_err();
        assert_eq!(e.offset, 4);
        let e = all_fields(&[0x00]).unwrap_err();
        assert_eq!(e.reason, "invalid field number");
        let e = all_fields(&[0x0b]).unwrap_err();
        assert_eq!(e.reason, "protobuf groups are not supported");
        let e = all_fields(&[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ])
        .unwrap_err();
        assert_eq!(e.reason, "varint longer than 64 bits");
        let e = all_fields(&[0x0d, 1, 2]).unwrap_err();
        assert_eq!(e.offset, 1);
        // A length that would overflow the offset arithmetic.
        let mut w = Writer::default();
        w.tag(2, 2);
        w.varint(u64::MAX);
        assert!(all_fields(&w.buf).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = all_fields(&bytes);
        }

        #[test]
        fn fields_round_trip(fields in prop::collection::vec((1u32..(1 << 29), 0u8..4, any::<u64>(), prop::collection::vec(any::<u8>(), 0..40)), 0..20)) {
            let mut w = Writer::default();
            let mut expected = Vec::new();
            for (n, kind, v, b) in &fields {
                match kind {
                    0 => { w.uint(*n, *v); expected.push((*n, Wire::Varint(*v))); }
                    1 => { w.fixed64(*n, *v); expected.push((*n, Wire::Fixed64(*v))); }
                    2 => { w.fixed32(*n, *v as u32); expected.push((*n, Wire::Fixed32(*v as u32))); }
                    _ => { w.bytes(*n, b); expected.push((*n, Wire::Len(b))); }
                }
            }
            prop_assert_eq!(all_fields(&w.buf).unwrap(), expected);
        }
    }
}
