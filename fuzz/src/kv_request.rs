//! The `kv_request` target: arbitrary bytes as a raft-kv [`Request`] and as a [`Response`]
//! (`raft-kv/src/command.rs`). Decoding must return an error or a value, never panic; a
//! decoded value must encode to bytes that decode to it again, and be no longer than the input.

use raft_kv::{Request, Response};

/// The target.
pub fn decode_request(data: &[u8]) {
    if let Ok(request) = Request::decode(data) {
        let encoded = request.encode();
        assert!(encoded.len() <= data.len(), "a decoded request re-encodes longer");
        assert_eq!(Request::decode(&encoded), Ok(request), "a request does not round-trip");
    }
    if let Ok(response) = Response::decode(data) {
        let encoded = response.encode();
        assert!(encoded.len() <= data.len(), "a decoded response re-encodes longer");
        assert_eq!(Response::decode(&encoded), Ok(response), "a response does not round-trip");
    }
}
