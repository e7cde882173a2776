//! The byte encoding of a [`Configuration`], shared by everything that stores or sends one:
//! configuration entries in the write-ahead log and on the wire, and the configuration a
//! snapshot covers (in snapshot files and `InstallSnapshot` messages). The byte-level
//! specification is in `docs/wal-format.md` ("Configuration encoding"); keep the two in step.
//!
//! All integers are little-endian:
//!
//! ```text
//! version u8 (1)
//! | voter count u32 | voter ids u64, strictly increasing
//! | joint u8 (0 or 1) | when 1: outgoing voter count u32 | outgoing voter ids u64, strictly increasing
//! | learner count u32 | learner ids u64, strictly increasing
//! | address count u32 | per address, ids strictly increasing:
//!     id u64 | raft_addr length u16 | raft_addr UTF-8 | client_addr length u16 | client_addr UTF-8
//! ```
//!
//! Decoding never trusts a count for an allocation (each is checked against
//! [`MAX_MEMBERS`] and against the bytes left), refuses anything out of order, unknown or
//! left over, and checks that the result is a configuration the core could have built:
//! learners are not voters, and addresses belong to members.

use std::collections::{BTreeMap, BTreeSet};

use super::configuration::{Configuration, MemberAddress};
use super::quorum::MajorityConfig;
use crate::config::MAX_MEMBERS;
use crate::types::NodeId;

/// The encoding version this build writes and reads.
const ENCODING_VERSION: u8 = 1;

/// The longest address accepted, in bytes (a host name is at most 253).
pub const MAX_ADDRESS_BYTES: usize = 1024;

impl Configuration {
    /// Appends this configuration's encoding to `buffer`.
    pub(crate) fn encode_into(&self, buffer: &mut Vec<u8>) {
        buffer.push(ENCODING_VERSION);
        put_ids(buffer, self.voters().iter().copied());
        match self.outgoing_voters() {
            Some(outgoing) => {
                buffer.push(1);
                put_ids(buffer, outgoing.iter().copied());
            }
            None => buffer.push(0),
        }
        put_ids(buffer, self.learners().iter().copied());
        put_count(buffer, self.addresses().len());
        for (id, address) in self.addresses() {
            buffer.extend_from_slice(&id.0.to_le_bytes());
            put_text(buffer, &address.raft_addr);
            put_text(buffer, &address.client_addr);
        }
    }

    /// The length of this configuration's encoding, in bytes (without encoding it).
    pub fn encoded_len(&self) -> usize {
        let ids = |count: usize| 4 + 8 * count;
        let addresses: usize = self
            .addresses()
            .values()
            .map(|address| {
                8 + 2
                    + address.raft_addr.len().min(MAX_ADDRESS_BYTES)
                    + 2
                    + address.client_addr.len().min(MAX_ADDRESS_BYTES)
            })
            .sum();
        1 + ids(self.voters().len())
            + 1
            + self.outgoing_voters().map_or(0, |outgoing| ids(outgoing.len()))
            + ids(self.learners().len())
            + 4
            + addresses
    }

    /// This configuration's encoding.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(16 + self.members().len() * 40);
        self.encode_into(&mut buffer);
        buffer
    }

    /// Decodes a configuration encoded by [`encode_into`](Self::encode_into), which must fill
    /// `bytes` exactly. The error says what is wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Configuration, String> {
        let mut reader = Reader { bytes, offset: 0 };
        let version = reader.u8("version")?;
        if version != ENCODING_VERSION {
            return Err(format!("configuration encoding version {version} is unknown"));
        }
        let voters = reader.ids("voters")?;
        let outgoing = match reader.u8("joint flag")? {
            0 => None,
            1 => Some(reader.ids("outgoing voters")?),
            other => return Err(format!("configuration joint flag {other} is invalid")),
        };
        let learners = reader.ids("learners")?;
        let count = reader.count("addresses", 8 + 2 + 2)?;
        let mut addresses = BTreeMap::new();
        let mut previous: Option<NodeId> = None;
        for _ in 0..count {
            let id = NodeId(reader.u64("address id")?);
            if previous.is_some_and(|previous| previous >= id) {
                return Err(String::from("configuration addresses are out of order or repeated"));
            }
            previous = Some(id);
            let raft_addr = reader.text("raft address")?;
            let client_addr = reader.text("client address")?;
            addresses.insert(id, MemberAddress { raft_addr, client_addr });
        }
        if reader.offset != bytes.len() {
            return Err(format!(
                "configuration has {} bytes left over after its end",
                bytes.len() - reader.offset
            ));
        }
        if voters.is_empty() && (outgoing.is_some() || !learners.is_empty()) {
            return Err(String::from("configuration has learners or a joint half but no voters"));
        }
        let is_voter = |id: &NodeId| {
            voters.contains(id) || outgoing.as_ref().is_some_and(|half| half.contains(id))
        };
        if learners.iter().any(is_voter) {
            return Err(String::from("configuration lists a voter as a learner too"));
        }
        if addresses.keys().any(|id| !is_voter(id) && !learners.contains(id)) {
            return Err(String::from("configuration has an address for a non-member"));
        }
        Ok(Configuration::from_parts(
            MajorityConfig::new(voters),
            outgoing.map(MajorityConfig::new),
            learners,
            addresses,
        ))
    }
}

fn put_count(buffer: &mut Vec<u8>, count: usize) {
    // Configurations hold at most MAX_MEMBERS of each: the core refuses more.
    let count = u32::try_from(count.min(MAX_MEMBERS)).unwrap_or(u32::MAX);
    buffer.extend_from_slice(&count.to_le_bytes());
}

fn put_ids(buffer: &mut Vec<u8>, ids: impl ExactSizeIterator<Item = NodeId>) {
    put_count(buffer, ids.len());
    for id in ids.take(MAX_MEMBERS) {
        buffer.extend_from_slice(&id.0.to_le_bytes());
    }
}

fn put_text(buffer: &mut Vec<u8>, text: &str) {
    // Addresses are checked against MAX_ADDRESS_BYTES before they enter a configuration;
    // a longer one is cut at a character boundary rather than written unreadable.
    let mut end = text.len().min(MAX_ADDRESS_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let length = end as u16;
    buffer.extend_from_slice(&length.to_le_bytes());
    buffer.extend_from_slice(&text.as_bytes()[..end]);
}

/// Reads the fields in order, each with a name for the error.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    fn take(&mut self, field: &str, length: usize) -> Result<&[u8], String> {
        let end = self.offset.checked_add(length).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("configuration ends inside its {field}"));
        };
        let taken = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(taken)
    }

    fn u8(&mut self, field: &str) -> Result<u8, String> {
        Ok(self.take(field, 1)?[0])
    }

    fn u64(&mut self, field: &str) -> Result<u64, String> {
        let bytes = self.take(field, 8)?;
        let mut array = [0; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(array))
    }

    /// A count of items of at least `item_len` bytes each, checked against the limit and the
    /// bytes left before anything is allocated for it.
    fn count(&mut self, field: &str, item_len: usize) -> Result<usize, String> {
        let bytes = self.take(field, 4)?;
        let count = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if count > MAX_MEMBERS {
            return Err(format!(
                "configuration lists {count} {field}, more than the {MAX_MEMBERS} supported"
            ));
        }
        if count.saturating_mul(item_len) > self.bytes.len() - self.offset {
            return Err(format!("configuration ends inside its {field}"));
        }
        Ok(count)
    }

    fn ids(&mut self, field: &str) -> Result<BTreeSet<NodeId>, String> {
        let count = self.count(field, 8)?;
        let mut ids = BTreeSet::new();
        let mut previous: Option<NodeId> = None;
        for _ in 0..count {
            let id = NodeId(self.u64(field)?);
            if previous.is_some_and(|previous| previous >= id) {
                return Err(format!("configuration {field} are out of order or repeated"));
            }
            previous = Some(id);
            ids.insert(id);
        }
        Ok(ids)
    }

    fn text(&mut self, field: &str) -> Result<String, String> {
        let bytes = self.take(field, 2)?;
        let length = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
        if length > MAX_ADDRESS_BYTES {
            return Err(format!(
                "configuration {field} of {length} bytes is longer than {MAX_ADDRESS_BYTES}"
            ));
        }
        let bytes = self.take(field, length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("configuration {field} is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(raft: &str, client: &str) -> MemberAddress {
        MemberAddress { raft_addr: raft.into(), client_addr: client.into() }
    }

    fn sample() -> Configuration {
        Configuration::simple([NodeId(1), NodeId(2), NodeId(3)])
            .expect("voters given")
            .with_learner(NodeId(4), address("127.0.0.1:7004", "127.0.0.1:8004"))
            .enter_joint([NodeId(1), NodeId(2), NodeId(4)])
    }

    #[test]
    fn configurations_round_trip() {
        for configuration in [
            Configuration::unknown(),
            Configuration::simple([NodeId(7)]).expect("voters given"),
            sample(),
            sample().leave_joint(),
            sample().leave_joint().with_learner(NodeId(9), address("", "")),
        ] {
            let bytes = configuration.encode();
            assert_eq!(bytes.len(), configuration.encoded_len());
            assert_eq!(Configuration::decode(&bytes), Ok(configuration));
        }
    }

    #[test]
    fn every_cut_and_every_extra_byte_is_refused() {
        let bytes = sample().encode();
        for length in 0..bytes.len() {
            assert!(Configuration::decode(&bytes[..length]).is_err(), "cut at {length}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Configuration::decode(&longer).is_err());
    }

    #[test]
    fn huge_counts_and_bad_orders_are_refused_without_allocating() {
        let mut huge = vec![ENCODING_VERSION];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Configuration::decode(&huge).unwrap_err().contains("more than"));
        let mut unordered = vec![ENCODING_VERSION];
        unordered.extend_from_slice(&2u32.to_le_bytes());
        unordered.extend_from_slice(&5u64.to_le_bytes());
        unordered.extend_from_slice(&5u64.to_le_bytes());
        unordered.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Configuration::decode(&unordered).unwrap_err().contains("out of order"));
        let mut version = sample().encode();
        version[0] = 2;
        assert!(Configuration::decode(&version).unwrap_err().contains("version"));
    }

    #[test]
    fn a_learner_that_votes_or_an_address_of_a_stranger_is_refused() {
        // voters {1}, not joint, learners {1}, no addresses.
        let mut both = vec![ENCODING_VERSION];
        both.extend_from_slice(&1u32.to_le_bytes());
        both.extend_from_slice(&1u64.to_le_bytes());
        both.push(0);
        both.extend_from_slice(&1u32.to_le_bytes());
        both.extend_from_slice(&1u64.to_le_bytes());
        both.extend_from_slice(&0u32.to_le_bytes());
        assert!(Configuration::decode(&both).unwrap_err().contains("learner too"));
        // voters {1}, an address for 2.
        let mut stranger = vec![ENCODING_VERSION];
        stranger.extend_from_slice(&1u32.to_le_bytes());
        stranger.extend_from_slice(&1u64.to_le_bytes());
        stranger.push(0);
        stranger.extend_from_slice(&0u32.to_le_bytes());
        stranger.extend_from_slice(&1u32.to_le_bytes());
        stranger.extend_from_slice(&2u64.to_le_bytes());
        stranger.extend_from_slice(&[0, 0, 0, 0]);
        assert!(Configuration::decode(&stranger).unwrap_err().contains("non-member"));
    }

    /// Appends a count and that many ids.
    fn ids(bytes: &mut Vec<u8>, ids: &[u64]) {
        bytes.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
    }

    #[test]
    fn the_limits_are_inclusive() {
        let all = Configuration::of_voters((1..=MAX_MEMBERS as u64).map(NodeId));
        assert_eq!(Configuration::decode(&all.encode()), Ok(all));
        let at_limit = "a".repeat(MAX_ADDRESS_BYTES);
        let long = Configuration::of_voters([NodeId(1)])
            .with_learner(NodeId(2), address(&at_limit, &at_limit));
        assert_eq!(Configuration::decode(&long.encode()), Ok(long));
        // One byte over, written by hand (the encoder never writes it).
        let mut over = vec![ENCODING_VERSION];
        ids(&mut over, &[1]);
        over.push(0);
        ids(&mut over, &[]);
        over.extend_from_slice(&1u32.to_le_bytes());
        over.extend_from_slice(&1u64.to_le_bytes());
        over.extend_from_slice(&(MAX_ADDRESS_BYTES as u16 + 1).to_le_bytes());
        over.extend(std::iter::repeat_n(b'a', MAX_ADDRESS_BYTES + 1));
        over.extend_from_slice(&0u16.to_le_bytes());
        assert!(Configuration::decode(&over).unwrap_err().contains("longer than"));
    }

    #[test]
    fn an_overlong_address_is_cut_at_a_character_boundary() {
        // 'é' is two bytes: the limit falls inside one.
        let text = format!("{}{}", "a".repeat(MAX_ADDRESS_BYTES - 1), "é");
        let mut buffer = Vec::new();
        put_text(&mut buffer, &text);
        let length = u16::from_le_bytes([buffer[0], buffer[1]]) as usize;
        assert_eq!(length, MAX_ADDRESS_BYTES - 1);
        assert!(std::str::from_utf8(&buffer[2..]).is_ok());
    }

    #[test]
    fn a_count_beyond_the_bytes_left_is_refused_before_reading_the_items() {
        // One address claimed (at least 12 bytes) with 10 bytes left.
        let mut bytes = vec![ENCODING_VERSION];
        ids(&mut bytes, &[1]);
        bytes.push(0);
        ids(&mut bytes, &[]);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&[0; 10]);
        assert!(Configuration::decode(&bytes).unwrap_err().contains("inside its addresses"));
        // Voters claimed beyond the bytes left.
        let mut short = vec![ENCODING_VERSION];
        short.extend_from_slice(&3u32.to_le_bytes());
        short.extend_from_slice(&[0; 20]);
        assert!(Configuration::decode(&short).unwrap_err().contains("inside its voters"));
    }

    #[test]
    fn learners_without_voters_are_refused() {
        let mut bytes = vec![ENCODING_VERSION];
        ids(&mut bytes, &[]);
        bytes.push(0);
        ids(&mut bytes, &[4]);
        ids(&mut bytes, &[]);
        assert!(Configuration::decode(&bytes).unwrap_err().contains("no voters"));
    }

    #[test]
    fn a_learner_removed_leaves_the_rest() {
        let base = Configuration::of_voters([NodeId(1), NodeId(2)]);
        let with = base.with_learner(NodeId(3), address("", ""));
        assert_eq!(with.without_learner(NodeId(3)).voters(), base.voters());
        assert!(with.without_learner(NodeId(3)).learners().is_empty());
    }
}
