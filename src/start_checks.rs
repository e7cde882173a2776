//! The checks [`RaftNode::start`](crate::RaftNode::start) makes across its parts before it
//! starts anything: the storage and the transport belong to one cluster, and the
//! configuration's messages fit the transport's frames (see [`Config`]'s "Size limits"; the
//! storage's entry limit is checked by [`Node::start`](crate::node::Node::start)).

use crate::config::Config;
use crate::error::{ConfigError, StartError};
use crate::storage::Storage;
use crate::transport::Transport;
use crate::transport::codec::largest_messages;

/// Checks `config` (on its own, then against the transport's frame limit) and that the
/// storage and the transport report the same cluster id, when both report one.
pub(crate) fn check_parts(
    config: &Config,
    storage: &impl Storage,
    transport: &impl Transport,
) -> Result<(), StartError> {
    config.validate()?;
    if let (Some(storage), Some(transport)) = (storage.cluster_id(), transport.cluster_id())
        && storage != transport
    {
        return Err(StartError::ClusterIdMismatch { storage, transport });
    }
    if let Some(max_frame_bytes) = transport.max_message_bytes() {
        check_frame_limit(config, max_frame_bytes)?;
    }
    Ok(())
}

/// Refuses a configuration that lets a node send a message larger than `max_frame_bytes`.
pub(crate) fn check_frame_limit(
    config: &Config,
    max_frame_bytes: usize,
) -> Result<(), ConfigError> {
    for (name, value, message_bytes) in largest_messages(config) {
        if message_bytes > max_frame_bytes {
            return Err(ConfigError::MessageAboveFrameLimit {
                name,
                value,
                message_bytes,
                max_frame_bytes,
            });
        }
    }
    Ok(())
}
