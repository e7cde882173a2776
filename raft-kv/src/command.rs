//! [`Request`], [`Command`] and [`Response`]: what clients ask of the store and what it
//! answers, with their explicit little-endian encoding (version byte first). Decoding checks
//! every length against the bytes present and never panics.
//!
//! ```text
//! request:  version u8 (1) | has session u8 | client id u64 | sequence u64 | command
//! command:  kind u8 | key length u32 | key | then by kind:
//!           1 get, 3 delete: nothing; 2 put: value length u32 | value;
//!           4 compare-and-swap: has expected u8 | expected length u32 | expected
//!                               | new length u32 | new
//! response: kind u8, then 1 value: has value u8 | length u32 | value;
//!           2 written: index u64; 3 deleted: existed u8 | index u64;
//!           4 swapped: index u64; 5 not swapped: has value u8 | length u32 | current;
//!           6 stale request: last sequence u64; 7 session conflict: nothing;
//!           8 not kept: applied at u64
//! ```
//!
//! A session remembers a [`Command::digest`] of the request it applied: FNV-1a (64 bits) over
//! the command's encoding above (from its kind byte on), so the same command gives the same
//! digest on every node, platform and build that writes this command format.

/// The encoding version this build writes and reads.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// Bytes of a request's encoding before its command: version, session flag, client id and
/// sequence number.
pub const REQUEST_HEADER_BYTES: usize = 1 + 1 + 8 + 8;

/// Bytes of the largest command's encoding besides its key and values: a compare-and-swap's
/// kind, key length, expected flag, expected length and new length.
pub const MAX_COMMAND_OVERHEAD_BYTES: usize = 1 + 4 + 1 + 4 + 4;

/// Bytes of a request's encoding besides its key and (at most two) values: the largest
/// request with keys up to `K` bytes and values up to `V` bytes encodes to at most
/// `K + 2 * V + MAX_REQUEST_OVERHEAD_BYTES` (a compare-and-swap carries two values).
pub const MAX_REQUEST_OVERHEAD_BYTES: usize = REQUEST_HEADER_BYTES + MAX_COMMAND_OVERHEAD_BYTES;

/// One operation on the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Read a key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Write a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Write `new` only if the key's value is `expected` (`None`: only if the key is absent).
    CompareAndSwap {
        /// The key.
        key: Vec<u8>,
        /// The value the key must hold.
        expected: Option<Vec<u8>>,
        /// The value to write.
        new: Vec<u8>,
    },
}

/// A command with the client session that deduplicates retries: a client numbers its
/// requests 1, 2, 3, ... and a request whose number was already applied is answered from the
/// stored response instead of being applied again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `(client id, sequence number)`, when the client wants exactly-once retries.
    pub session: Option<(u64, u64)>,
    /// The operation.
    pub command: Command,
}

/// What the store answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The value of a key (`None`: absent).
    Value(Option<Vec<u8>>),
    /// A put was applied at this log index.
    Written {
        /// The entry's log index.
        index: u64,
    },
    /// A delete was applied; whether the key existed.
    Deleted {
        /// Whether the key existed.
        existed: bool,
        /// The entry's log index.
        index: u64,
    },
    /// A compare-and-swap wrote its value.
    Swapped {
        /// The entry's log index.
        index: u64,
    },
    /// A compare-and-swap found another value (`None`: the key is absent).
    NotSwapped {
        /// The key's current value.
        current: Option<Vec<u8>>,
    },
    /// The request's sequence number is older than the client's last applied one: it was
    /// applied long ago and its response is no longer kept.
    StaleRequest {
        /// The client's last applied sequence number.
        last_sequence: u64,
    },
    /// The request reuses the client id and sequence number of the client's last applied
    /// request, but with another command (its digest differs): it is not a retry, and it is
    /// neither applied nor answered as if it were.
    SessionConflict,
    /// A retry of a request that was applied at log index `applied_at`, whose response was too
    /// large to keep in the session (only a [`Response::Value`] or [`Response::NotSwapped`]
    /// can be: see `state_machine::MAX_KEPT_RESPONSE_BYTES`).
    NotKept {
        /// The log index at which the request was applied.
        applied_at: u64,
    },
}

/// Bytes that are not a valid request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError(pub String);

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed key-value command: {}", self.0)
    }
}

impl std::error::Error for CommandError {}

/// A [`Request`] decoded in place: its keys and values borrowed from the encoded bytes, so
/// that applying it copies each of them once, into the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestView<'a> {
    /// As [`Request::session`].
    pub(crate) session: Option<(u64, u64)>,
    /// The operation.
    pub(crate) command: CommandView<'a>,
}

/// A [`Command`] whose keys and values are borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommandView<'a> {
    Get { key: &'a [u8] },
    Put { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
    CompareAndSwap { key: &'a [u8], expected: Option<&'a [u8]>, new: &'a [u8] },
}

impl<'a> RequestView<'a> {
    /// Decodes a request that fills `bytes` exactly, borrowing its keys and values.
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<RequestView<'a>, CommandError> {
        let mut reader = Reader { bytes, offset: 0 };
        let version = reader.u8()?;
        if version != COMMAND_FORMAT_VERSION {
            return Err(CommandError(format!("unknown format version {version}")));
        }
        let has_session = reader.flag()?;
        let client = reader.u64()?;
        let sequence = reader.u64()?;
        let kind = reader.u8()?;
        let key = reader.slice()?;
        let command = match kind {
            1 => CommandView::Get { key },
            2 => CommandView::Put { key, value: reader.slice()? },
            3 => CommandView::Delete { key },
            4 => {
                let has_expected = reader.flag()?;
                let expected = reader.slice()?;
                let new = reader.slice()?;
                CommandView::CompareAndSwap { key, expected: has_expected.then_some(expected), new }
            }
            other => return Err(CommandError(format!("unknown command kind {other}"))),
        };
        reader.finish()?;
        Ok(RequestView { session: has_session.then_some((client, sequence)), command })
    }

    /// The request, owning its bytes.
    fn to_request(self) -> Request {
        let command = match self.command {
            CommandView::Get { key } => Command::Get { key: key.to_vec() },
            CommandView::Put { key, value } => {
                Command::Put { key: key.to_vec(), value: value.to_vec() }
            }
            CommandView::Delete { key } => Command::Delete { key: key.to_vec() },
            CommandView::CompareAndSwap { key, expected, new } => Command::CompareAndSwap {
                key: key.to_vec(),
                expected: expected.map(<[u8]>::to_vec),
                new: new.to_vec(),
            },
        };
        Request { session: self.session, command }
    }
}

impl CommandView<'_> {
    /// Appends the command's encoding (from its kind byte on) to `bytes`.
    fn encode_into(self, bytes: &mut impl ByteSink) {
        match self {
            CommandView::Get { key } => put_kind_and_key(bytes, 1, key),
            CommandView::Put { key, value } => {
                put_kind_and_key(bytes, 2, key);
                put_bytes(bytes, value);
            }
            CommandView::Delete { key } => put_kind_and_key(bytes, 3, key),
            CommandView::CompareAndSwap { key, expected, new } => {
                put_kind_and_key(bytes, 4, key);
                bytes.put_byte(u8::from(expected.is_some()));
                put_bytes(bytes, expected.unwrap_or_default());
                put_bytes(bytes, new);
            }
        }
    }

    /// The length of the command's encoding.
    fn encoded_len(self) -> usize {
        let field = |bytes: &[u8]| 4 + bytes.len();
        1 + match self {
            CommandView::Get { key } | CommandView::Delete { key } => field(key),
            CommandView::Put { key, value } => field(key) + field(value),
            CommandView::CompareAndSwap { key, expected, new } => {
                field(key) + 1 + field(expected.unwrap_or_default()) + field(new)
            }
        }
    }

    /// As [`Command::digest`].
    pub(crate) fn digest(self) -> u64 {
        // Hashed as it is encoded, without holding the encoding.
        let mut hash = Fnv1a64::new();
        self.encode_into(&mut hash);
        hash.0
    }
}

impl Command {
    /// The command with its keys and values borrowed.
    pub(crate) fn view(&self) -> CommandView<'_> {
        match self {
            Command::Get { key } => CommandView::Get { key },
            Command::Put { key, value } => CommandView::Put { key, value },
            Command::Delete { key } => CommandView::Delete { key },
            Command::CompareAndSwap { key, expected, new } => {
                CommandView::CompareAndSwap { key, expected: expected.as_deref(), new }
            }
        }
    }

    /// The command's digest: FNV-1a (64 bits) over its encoding. Two commands that differ in
    /// kind, key, value or compare-and-swap arguments have different encodings, so their
    /// digests differ but for a 2^-64 chance (FNV is not collision-resistant against someone
    /// who crafts both commands; a client can only confuse its own session with that).
    pub fn digest(&self) -> u64 {
        self.view().digest()
    }
}

/// Where an encoding goes: a buffer, or a hash of it.
trait ByteSink {
    fn put_byte(&mut self, byte: u8);
    fn put_slice(&mut self, bytes: &[u8]);
}

impl ByteSink for Vec<u8> {
    fn put_byte(&mut self, byte: u8) {
        self.push(byte);
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// FNV-1a (64 bits) of the bytes put so far.
struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv1a64(Self::OFFSET_BASIS)
    }
}

impl ByteSink for Fnv1a64 {
    fn put_byte(&mut self, byte: u8) {
        self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.put_byte(*byte);
        }
    }
}

/// FNV-1a, 64 bits (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`): a fixed,
/// unkeyed hash, the same on every platform and build.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash = Fnv1a64::new();
    hash.put_slice(bytes);
    hash.0
}

impl Request {
    /// The request's encoding.
    pub fn encode(&self) -> Vec<u8> {
        let command = self.command.view();
        let mut bytes = Vec::with_capacity(REQUEST_HEADER_BYTES + command.encoded_len());
        put_request_header(&mut bytes, self.session);
        command.encode_into(&mut bytes);
        bytes
    }

    /// The encoding of `Request { session, command: Command::Put { key, value } }`, written
    /// straight from borrowed bytes into one buffer of the exact size: the HTTP write path's
    /// encoding, which copies the value once.
    pub fn encode_put(session: Option<(u64, u64)>, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut bytes =
            Vec::with_capacity(REQUEST_HEADER_BYTES + 1 + 4 + key.len() + 4 + value.len());
        put_request_header(&mut bytes, session);
        put_kind_and_key(&mut bytes, 2, key);
        put_bytes(&mut bytes, value);
        bytes
    }

    /// Decodes a request that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<Request, CommandError> {
        RequestView::decode(bytes).map(RequestView::to_request)
    }

    /// The request with its keys and values borrowed.
    pub(crate) fn view(&self) -> RequestView<'_> {
        RequestView { session: self.session, command: self.command.view() }
    }
}

impl Response {
    /// The length of [`encode`](Self::encode)'s result, without encoding.
    pub fn encoded_len(&self) -> usize {
        let optional = |value: &Option<Vec<u8>>| 1 + 4 + value.as_ref().map_or(0, Vec::len);
        1 + match self {
            Response::Value(value) | Response::NotSwapped { current: value } => optional(value),
            Response::Written { .. }
            | Response::Swapped { .. }
            | Response::StaleRequest { .. }
            | Response::NotKept { .. } => 8,
            Response::Deleted { .. } => 1 + 8,
            Response::SessionConflict => 0,
        }
    }

    /// The response's encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        match self {
            Response::Value(value) => {
                bytes.push(1);
                put_optional(&mut bytes, value.as_deref());
            }
            Response::Written { index } => {
                bytes.push(2);
                bytes.extend_from_slice(&index.to_le_bytes());
            }
            Response::Deleted { existed, index } => {
                bytes.push(3);
                bytes.push(u8::from(*existed));
                bytes.extend_from_slice(&index.to_le_bytes());
            }
            Response::Swapped { index } => {
                bytes.push(4);
                bytes.extend_from_slice(&index.to_le_bytes());
            }
            Response::NotSwapped { current } => {
                bytes.push(5);
                put_optional(&mut bytes, current.as_deref());
            }
            Response::StaleRequest { last_sequence } => {
                bytes.push(6);
                bytes.extend_from_slice(&last_sequence.to_le_bytes());
            }
            Response::SessionConflict => bytes.push(7),
            Response::NotKept { applied_at } => {
                bytes.push(8);
                bytes.extend_from_slice(&applied_at.to_le_bytes());
            }
        }
        bytes
    }

    /// Decodes a response that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<Response, CommandError> {
        let mut reader = Reader { bytes, offset: 0 };
        let response = match reader.u8()? {
            1 => Response::Value(reader.optional()?),
            2 => Response::Written { index: reader.u64()? },
            3 => Response::Deleted { existed: reader.flag()?, index: reader.u64()? },
            4 => Response::Swapped { index: reader.u64()? },
            5 => Response::NotSwapped { current: reader.optional()? },
            6 => Response::StaleRequest { last_sequence: reader.u64()? },
            7 => Response::SessionConflict,
            8 => Response::NotKept { applied_at: reader.u64()? },
            other => return Err(CommandError(format!("unknown response kind {other}"))),
        };
        reader.finish()?;
        Ok(response)
    }
}

fn put_request_header(bytes: &mut Vec<u8>, session: Option<(u64, u64)>) {
    let (client, sequence) = session.unwrap_or((0, 0));
    bytes.push(COMMAND_FORMAT_VERSION);
    bytes.push(u8::from(session.is_some()));
    bytes.extend_from_slice(&client.to_le_bytes());
    bytes.extend_from_slice(&sequence.to_le_bytes());
}

fn put_kind_and_key(bytes: &mut impl ByteSink, kind: u8, key: &[u8]) {
    bytes.put_byte(kind);
    put_bytes(bytes, key);
}

fn put_bytes(bytes: &mut impl ByteSink, value: &[u8]) {
    let length = u32::try_from(value.len()).unwrap_or(u32::MAX);
    bytes.put_slice(&length.to_le_bytes());
    bytes.put_slice(&value[..length as usize]);
}

fn put_optional(bytes: &mut Vec<u8>, value: Option<&[u8]>) {
    bytes.push(u8::from(value.is_some()));
    put_bytes(bytes, value.unwrap_or_default());
}

/// A cursor that checks every read against the bytes left.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, length: usize) -> Result<&'a [u8], CommandError> {
        let end = self.offset.checked_add(length).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(CommandError(format!(
                "needs {length} bytes at offset {}, {} remain",
                self.offset,
                self.bytes.len() - self.offset
            )));
        };
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CommandError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CommandError> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }

    pub(crate) fn flag(&mut self) -> Result<bool, CommandError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(CommandError(format!("invalid flag byte {other}"))),
        }
    }

    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, CommandError> {
        self.slice().map(<[u8]>::to_vec)
    }

    /// A length-prefixed field, borrowed.
    pub(crate) fn slice(&mut self) -> Result<&'a [u8], CommandError> {
        let mut word = [0u8; 4];
        word.copy_from_slice(self.take(4)?);
        let length = u32::from_le_bytes(word) as usize;
        self.take(length)
    }

    fn optional(&mut self) -> Result<Option<Vec<u8>>, CommandError> {
        let present = self.flag()?;
        let value = self.bytes()?;
        Ok(present.then_some(value))
    }

    pub(crate) fn finish(&self) -> Result<(), CommandError> {
        if self.offset != self.bytes.len() {
            return Err(CommandError(format!("{} trailing bytes", self.bytes.len() - self.offset)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip_and_truncations_fail() {
        let requests = [
            Request { session: None, command: Command::Get { key: b"k".to_vec() } },
            Request {
                session: Some((7, 3)),
                command: Command::Put { key: b"k".to_vec(), value: vec![0, 1, 2] },
            },
            Request { session: Some((7, 4)), command: Command::Delete { key: Vec::new() } },
            Request {
                session: None,
                command: Command::CompareAndSwap {
                    key: b"k".to_vec(),
                    expected: None,
                    new: b"v".to_vec(),
                },
            },
            Request {
                session: None,
                command: Command::CompareAndSwap {
                    key: b"k".to_vec(),
                    expected: Some(Vec::new()),
                    new: b"v".to_vec(),
                },
            },
        ];
        for request in requests {
            let bytes = request.encode();
            assert_eq!(bytes.len(), bytes.capacity(), "encoded into a buffer of the exact size");
            assert_eq!(Request::decode(&bytes), Ok(request.clone()));
            if let Command::Put { key, value } = &request.command {
                let put = Request::encode_put(request.session, key, value);
                assert_eq!((put.len(), put.capacity()), (bytes.len(), bytes.len()));
                assert_eq!(put, bytes, "the write path's encoding is the request's");
            }
            for cut in 0..bytes.len() {
                assert!(Request::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Request::decode(&longer).is_err());
        }
        let responses = [
            Response::Value(None),
            Response::Value(Some(b"v".to_vec())),
            Response::Written { index: 9 },
            Response::Deleted { existed: true, index: 10 },
            Response::Swapped { index: 11 },
            Response::NotSwapped { current: Some(Vec::new()) },
            Response::NotSwapped { current: None },
            Response::StaleRequest { last_sequence: 5 },
            Response::SessionConflict,
            Response::NotKept { applied_at: 12 },
        ];
        for response in responses {
            let bytes = response.encode();
            assert_eq!(response.encoded_len(), bytes.len(), "{response:?}");
            assert_eq!(Response::decode(&bytes), Ok(response.clone()));
            for cut in 0..bytes.len() {
                assert!(Response::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn a_huge_length_is_an_error_not_an_allocation() {
        let mut bytes =
            Request { session: None, command: Command::Get { key: Vec::new() } }.encode();
        let key_length_at = bytes.len() - 4;
        bytes[key_length_at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&bytes).is_err());
    }

    #[test]
    fn fnv1a_64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn digests_are_fixed_and_tell_commands_apart() {
        let put =
            |key: &[u8], value: &[u8]| Command::Put { key: key.to_vec(), value: value.to_vec() };
        // Pinned: a digest is stored in snapshots, so it must not change between builds.
        assert_eq!(put(b"k", b"v").digest(), fnv1a_64(&[2, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v']));
        let cas = |expected: Option<&[u8]>, new: &[u8]| Command::CompareAndSwap {
            key: b"k".to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.to_vec(),
        };
        let commands = [
            put(b"k", b"v"),
            put(b"k", b"w"),
            put(b"j", b"v"),
            put(b"kv", b""),
            Command::Delete { key: b"k".to_vec() },
            Command::Get { key: b"k".to_vec() },
            cas(None, b"v"),
            cas(Some(b""), b"v"),
            cas(Some(b"v"), b"v"),
            cas(Some(b"v"), b"w"),
        ];
        let digests: std::collections::BTreeSet<u64> =
            commands.iter().map(Command::digest).collect();
        assert_eq!(digests.len(), commands.len(), "two commands share a digest");
        assert_eq!(put(b"k", b"v").digest(), put(b"k", b"v").digest());
    }

    #[test]
    fn the_largest_request_is_a_compare_and_swap_within_the_documented_overhead() {
        let (key, value) = (vec![7u8; 10], vec![8u8; 30]);
        let largest = Request {
            session: Some((u64::MAX, u64::MAX)),
            command: Command::CompareAndSwap {
                key: key.clone(),
                expected: Some(value.clone()),
                new: value.clone(),
            },
        };
        assert_eq!(largest.encode().len(), 10 + 2 * 30 + MAX_REQUEST_OVERHEAD_BYTES);
        let put = Request {
            session: Some((1, 1)),
            command: Command::Put { key: key.clone(), value: value.clone() },
        };
        assert!(put.encode().len() <= 10 + 30 + MAX_REQUEST_OVERHEAD_BYTES);
    }
}
