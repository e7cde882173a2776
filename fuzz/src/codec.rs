//! The `codec` target: arbitrary bytes as one message frame for
//! [`raft_consensus::transport::codec::decode_message`]. Decoding must return an error or a
//! message, never panic; a decoded message must encode to bytes that decode to it again.

use raft_consensus::transport::codec::{decode_message, encode_message};

/// The target.
pub fn decode_frame(data: &[u8]) {
    let Ok(message) = decode_message(&data.to_vec().into()) else { return };
    let mut encoded = Vec::new();
    encode_message(&message, &mut encoded);
    assert!(encoded.len() <= data.len(), "a decoded message re-encodes longer than its frame");
    let again = decode_message(&encoded.into());
    assert_eq!(again.as_ref(), Ok(&message), "a decoded message does not round-trip");
}
