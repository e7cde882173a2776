//! [`Input`]: reads structured choices (numbers, lengths, byte strings) off the front of a
//! fuzzer's bytes. Past the end every read gives zeros or empty slices, so any input is a
//! complete script.

/// A cursor over fuzzer bytes.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let Some((first, rest)) = self.bytes.split_first() else { return 0 };
        self.bytes = rest;
        *first
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A number that is usually small but may be anything: one byte, whose values 250..=255
    /// mean a full eight-byte number follows or one of the extremes near `u64::MAX`.
    pub fn number(&mut self) -> u64 {
        match self.u8() {
            250 => u64::MAX,
            251 => u64::MAX - 1,
            252 => 1 << 32,
            253 => u64::from(u32::MAX),
            254 | 255 => u64::from_le_bytes(std::array::from_fn(|_| self.u8())),
            small => u64::from(small),
        }
    }

    /// The next `length` bytes, or fewer when the input ends first.
    pub fn take(&mut self, length: usize) -> &'a [u8] {
        let (taken, rest) = self.bytes.split_at(length.min(self.bytes.len()));
        self.bytes = rest;
        taken
    }

    /// A byte string of a length read first (one byte).
    pub fn short_bytes(&mut self) -> &'a [u8] {
        let length = usize::from(self.u8());
        self.take(length)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.bytes.len())
    }
}
