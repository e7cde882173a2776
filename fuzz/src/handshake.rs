//! The `handshake` target: arbitrary bytes as a peer's transport handshake (the fixed part,
//! the advertised address's length and the address) for
//! [`raft_consensus::transport::check_handshake_bytes`], the checks the listener makes before
//! it reads any frame. It must refuse or accept, never panic; an accepted handshake names the
//! node id its bytes carry.

use raft_consensus::transport::check_handshake_bytes;

/// The target.
pub fn check_handshake(data: &[u8]) {
    let Ok((peer, _address)) = check_handshake_bytes(data, 1) else { return };
    let mut id = [0u8; 8];
    id.copy_from_slice(&data[20..28]);
    assert_eq!(peer.0, u64::from_le_bytes(id), "an accepted handshake names another node");
}
