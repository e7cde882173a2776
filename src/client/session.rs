//! The client side of retry deduplication: [`ClientId`], [`SessionStamp`] (a client id and a
//! sequence number), [`Session`] (which hands out increasing sequence numbers), and the
//! [`Envelope`] that carries a stamp in front of a command's bytes.
//!
//! ```text
//! envelope: tag u8 (0xD5) | version u8 (1) | client id u64 LE | sequence u64 LE | command
//! ```
//!
//! The state machine unwraps an envelope with [`Envelope::decode`] (or lets
//! [`SessionTable::apply_envelope`](super::SessionTable::apply_envelope) do it). An application
//! with its own request format carries the stamp there instead and never needs the envelope.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// The first byte of an [`Envelope`].
pub const ENVELOPE_TAG: u8 = 0xD5;

/// The envelope format version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// Bytes of an envelope before its command: tag, version, client id and sequence number.
pub const ENVELOPE_HEADER_BYTES: usize = 1 + 1 + 8 + 8;

/// The identity of one client session. Two clients that use the same id at the same time
/// confuse each other's retries, so ids should be random ([`ClientId::random`]) or handed out
/// by the application. Displayed as `client<N>`.
///
/// ```
/// use raft_consensus::client::ClientId;
/// assert_eq!(ClientId(7).to_string(), "client7");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

impl ClientId {
    /// A random id (from the standard library's per-process random hash keys and the
    /// clock): two processes, or two calls, draw the same id with a chance of about 2^-64
    /// per pair.
    pub fn random() -> ClientId {
        let nanos =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
        ClientId(RandomState::new().hash_one((nanos, std::process::id())))
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client{}", self.0)
    }
}

/// One request of a session: the client's id and the request's sequence number. A state
/// machine applies a stamp's command at most once (see
/// [`SessionTable`](super::SessionTable)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionStamp {
    /// The client.
    pub client: ClientId,
    /// The request's number within the session: 1, 2, 3, ...
    pub sequence: u64,
}

/// A client session: an id and the next sequence number. Each request takes the next number
/// ([`next_stamp`](Self::next_stamp)), whether it succeeds or not, so that a request given up
/// on is never confused with the next one.
///
/// One request at a time: a session's table keeps only the client's last sequence number,
/// so a request overtaken by a later one of the same session is refused as stale. The
/// [`Client`](super::Client) methods that take a session take it by `&mut` for that reason.
///
/// A restarted process must not reuse a session (its numbers would start over and be refused
/// as stale): start a new one with a new id.
#[derive(Clone, Debug)]
pub struct Session {
    client: ClientId,
    next_sequence: u64,
}

impl Session {
    /// A session for `client`, whose first request gets sequence number 1.
    pub fn new(client: ClientId) -> Session {
        Session { client, next_sequence: 1 }
    }

    /// A session with a [random](ClientId::random) id.
    pub fn random() -> Session {
        Session::new(ClientId::random())
    }

    /// The session's client id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The sequence number the next request will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Takes the next sequence number.
    ///
    /// ```
    /// use raft_consensus::client::{ClientId, Session};
    /// let mut session = Session::new(ClientId(3));
    /// assert_eq!(session.next_stamp().sequence, 1);
    /// assert_eq!(session.next_stamp().sequence, 2);
    /// ```
    pub fn next_stamp(&mut self) -> SessionStamp {
        let stamp = SessionStamp { client: self.client, sequence: self.next_sequence };
        // Saturating: a session would need 2^64 requests to reach the end (it would then
        // repeat its last number, never go back to 1).
        self.next_sequence = self.next_sequence.saturating_add(1);
        stamp
    }
}

/// Bytes that are not an envelope this build reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Fewer bytes than an envelope's header.
    #[error("an envelope needs {ENVELOPE_HEADER_BYTES} header bytes, got {length}")]
    Truncated {
        /// The bytes present.
        length: usize,
    },
    /// The first byte is not [`ENVELOPE_TAG`]: not an envelope.
    #[error("not a session envelope (first byte {found:#04x}, expected {ENVELOPE_TAG:#04x})")]
    NotAnEnvelope {
        /// The first byte.
        found: u8,
    },
    /// An envelope of a format version this build does not read.
    #[error("session envelope version {found}; this build reads version {ENVELOPE_VERSION}")]
    UnsupportedVersion {
        /// The version byte.
        found: u8,
    },
}

/// The envelope that carries a [`SessionStamp`] in front of a command (format in the module
/// documentation).
///
/// ```
/// use raft_consensus::client::{ClientId, Envelope, SessionStamp};
/// let stamp = SessionStamp { client: ClientId(9), sequence: 4 };
/// let bytes = Envelope::encode(stamp, b"set x 1");
/// assert_eq!(Envelope::decode(&bytes), Ok((stamp, &b"set x 1"[..])));
/// assert!(Envelope::decode(b"set x 1").is_err());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Envelope;

impl Envelope {
    /// `command` wrapped with `stamp`.
    pub fn encode(stamp: SessionStamp, command: &[u8]) -> Bytes {
        let mut bytes = BytesMut::with_capacity(ENVELOPE_HEADER_BYTES + command.len());
        bytes.put_u8(ENVELOPE_TAG);
        bytes.put_u8(ENVELOPE_VERSION);
        bytes.put_u64_le(stamp.client.0);
        bytes.put_u64_le(stamp.sequence);
        bytes.put_slice(command);
        bytes.freeze()
    }

    /// The stamp and the command of an envelope.
    pub fn decode(bytes: &[u8]) -> Result<(SessionStamp, &[u8]), EnvelopeError> {
        let Some((header, command)) = bytes.split_at_checked(ENVELOPE_HEADER_BYTES) else {
            return Err(EnvelopeError::Truncated { length: bytes.len() });
        };
        if header[0] != ENVELOPE_TAG {
            return Err(EnvelopeError::NotAnEnvelope { found: header[0] });
        }
        if header[1] != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion { found: header[1] });
        }
        let mut client = [0u8; 8];
        client.copy_from_slice(&header[2..10]);
        let mut sequence = [0u8; 8];
        sequence.copy_from_slice(&header[10..18]);
        let stamp = SessionStamp {
            client: ClientId(u64::from_le_bytes(client)),
            sequence: u64::from_le_bytes(sequence),
        };
        Ok((stamp, command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_the_documented_bytes_and_bad_ones_are_refused() {
        let stamp = SessionStamp { client: ClientId(0x0102_0304_0506_0708), sequence: 5 };
        let bytes = Envelope::encode(stamp, b"cmd");
        let mut documented = vec![0xD5, 1];
        documented.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        documented.extend_from_slice(&5u64.to_le_bytes());
        documented.extend_from_slice(b"cmd");
        assert_eq!(&bytes[..], &documented[..]);
        assert_eq!(Envelope::decode(&bytes), Ok((stamp, &b"cmd"[..])));
        assert_eq!(Envelope::decode(&bytes[..ENVELOPE_HEADER_BYTES]), Ok((stamp, &b""[..])));
        for cut in 0..ENVELOPE_HEADER_BYTES {
            assert_eq!(
                Envelope::decode(&bytes[..cut]),
                Err(EnvelopeError::Truncated { length: cut })
            );
        }
        let mut other_tag = documented.clone();
        other_tag[0] = 0;
        assert_eq!(Envelope::decode(&other_tag), Err(EnvelopeError::NotAnEnvelope { found: 0 }));
        let mut other_version = documented;
        other_version[1] = 2;
        assert_eq!(
            Envelope::decode(&other_version),
            Err(EnvelopeError::UnsupportedVersion { found: 2 })
        );
    }

    #[test]
    fn a_session_numbers_its_requests_from_one_upwards() {
        let mut session = Session::new(ClientId(1));
        let stamps: Vec<u64> = (0..3).map(|_| session.next_stamp().sequence).collect();
        assert_eq!(stamps, [1, 2, 3]);
        assert_eq!(session.next_sequence(), 4);
        let mut worn = Session { client: ClientId(1), next_sequence: u64::MAX };
        assert_eq!(worn.next_stamp().sequence, u64::MAX);
        assert_eq!(worn.next_stamp().sequence, u64::MAX, "saturates rather than wrapping to 0");
        assert_ne!(ClientId::random(), ClientId::random());
    }
}
