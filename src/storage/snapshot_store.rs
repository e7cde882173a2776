//! [`SnapshotStore`]: where a node's snapshots live, streamed in and out so that a snapshot's
//! bytes never sit whole in memory.
//!
//! A snapshot enters storage through a [`SnapshotSink`] (the state machine writing its view,
//! or a follower writing the chunks it receives, in order) and becomes the stored snapshot
//! when [`SnapshotSink::finish`] returns; a sink dropped unfinished leaves nothing behind. It
//! is read back through a [`SnapshotSource`], by position (a leader reading the chunks it
//! sends) or from the start with a [`SnapshotReader`] (restoring a state machine), which
//! verifies the checksum when it reaches the end.

use std::io;

use bytes::Bytes;

use crate::error::StorageError;
use crate::snapshot::{Snapshot, SnapshotMeta};

/// Stores and reads back snapshots for a [`Storage`](super::Storage); a handle usable from
/// any thread (the node writes the snapshots it takes on another thread).
pub trait SnapshotStore: Send + 'static {
    /// Starts a new snapshot covering `meta`: write its bytes into the sink, then
    /// [`finish`](SnapshotSink::finish) it.
    fn create(&mut self, meta: &SnapshotMeta) -> Result<Box<dyn SnapshotSink>, StorageError>;

    /// Opens the stored `snapshot` for reading. An open source stays readable after a newer
    /// snapshot replaces it (as an open file stays readable after it is unlinked).
    fn open(&self, snapshot: &Snapshot) -> Result<Box<dyn SnapshotSource>, StorageError>;
}

/// A snapshot being written: its bytes, in order, through [`io::Write`].
pub trait SnapshotSink: io::Write + Send {
    /// Makes what was written durable as the latest snapshot (written aside and renamed
    /// into place, so a crash leaves either the previous snapshot or this one), may then
    /// remove older ones, and returns its description (length and checksum of the bytes
    /// written).
    fn finish(self: Box<Self>) -> Result<Snapshot, StorageError>;
}

/// A stored snapshot's bytes, open for reading by position.
pub trait SnapshotSource: Send + Sync {
    /// The snapshot read from.
    fn snapshot(&self) -> &Snapshot;

    /// Reads `len` bytes from `offset` (fewer only where the snapshot ends).
    fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, StorageError>;
}

/// Reads a [`SnapshotSource`] from the start, through [`io::Read`], in blocks of
/// [`READ_BLOCK_BYTES`], and fails the read that reaches the end if the bytes do not match
/// the snapshot's length and checksum.
pub struct SnapshotReader {
    source: Box<dyn SnapshotSource>,
    offset: u64,
    checksum: u32,
    block: Bytes,
}

/// How much a [`SnapshotReader`] reads from storage at a time.
pub const READ_BLOCK_BYTES: usize = 1 << 20;

impl SnapshotReader {
    /// A reader from the start of `source`.
    pub fn new(source: Box<dyn SnapshotSource>) -> Self {
        SnapshotReader { source, offset: 0, checksum: 0, block: Bytes::new() }
    }

    /// Reads whatever the reader's user left unread, so that the checksum is checked even
    /// when it stopped before the end.
    pub fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink()).map(drop)
    }
}

impl io::Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.block.is_empty() {
            let size = self.source.snapshot().size;
            if self.offset >= size {
                if self.checksum != self.source.snapshot().checksum {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: the snapshot's bytes do not match its checksum",
                            self.source.snapshot().id
                        ),
                    ));
                }
                return Ok(0);
            }
            let want =
                READ_BLOCK_BYTES.min(usize::try_from(size - self.offset).unwrap_or(usize::MAX));
            let block = self.source.read_at(self.offset, want).map_err(io::Error::other)?;
            if block.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: the stored snapshot ends early", self.source.snapshot().id),
                ));
            }
            self.checksum = crc32c::crc32c_append(self.checksum, &block);
            self.offset += block.len() as u64;
            self.block = block;
        }
        let count = buf.len().min(self.block.len());
        buf[..count].copy_from_slice(&self.block[..count]);
        let _ = self.block.split_to(count);
        Ok(count)
    }
}

/// A [`SnapshotSource`] over bytes in memory (in-memory storage and tests).
#[derive(Clone, Debug)]
pub struct BytesSource {
    snapshot: Snapshot,
    data: Bytes,
}

impl BytesSource {
    /// A source for `snapshot`, whose bytes are `data`.
    pub fn new(snapshot: Snapshot, data: Bytes) -> Self {
        BytesSource { snapshot, data }
    }
}

impl SnapshotSource for BytesSource {
    fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, StorageError> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.data.len());
        let end = start.saturating_add(len).min(self.data.len());
        Ok(self.data.slice(start..end))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn source(data: &'static [u8], checksum: u32) -> Box<dyn SnapshotSource> {
        let mut snapshot = Snapshot::of_bytes(SnapshotMeta::default(), data);
        snapshot.checksum = checksum;
        Box::new(BytesSource::new(snapshot, Bytes::from_static(data)))
    }

    #[test]
    fn a_reader_returns_the_bytes_and_checks_them_at_the_end() {
        let data: &'static [u8] = b"the state machine's bytes";
        let mut read = Vec::new();
        SnapshotReader::new(source(data, crc32c::crc32c(data)))
            .read_to_end(&mut read)
            .expect("intact");
        assert_eq!(read, data);

        let error = SnapshotReader::new(source(data, crc32c::crc32c(data) ^ 1))
            .read_to_end(&mut Vec::new())
            .expect_err("a checksum mismatch fails the last read");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        // A user that stops early still has the checksum checked by `finish`.
        let mut reader = SnapshotReader::new(source(data, 7));
        reader.read_exact(&mut [0; 3]).expect("the start reads");
        assert!(reader.finish().is_err());
    }

    #[test]
    fn a_source_shorter_than_its_snapshot_fails() {
        let mut snapshot = Snapshot::of_bytes(SnapshotMeta::default(), b"abc");
        snapshot.size = 10;
        let source = BytesSource::new(snapshot, Bytes::from_static(b"abc"));
        let error = SnapshotReader::new(Box::new(source)).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
