//! Security groups: whether a NIC's rules allow a frame it sends (outbound) or receives
//! (inbound). The loader compiles each NIC's groups into one rule-table entry per direction,
//! protocol and remote prefix, holding every range its rules allow for that remote (shorter
//! prefixes' ranges merged in). A lookup is one longest-prefix match and a binary search, however
//! many rules the groups have.
use aya_ebpf::maps::lpm_trie::Key;
use iqd_common::{sg_direction, SgKey, SgRanges, MAX_SG_RANGES, SG_KEY_FIXED_BITS};

use crate::{maps::IQD_SG_RULES, parse::Flow};

/// Enough halvings for `MAX_SG_RANGES` entries.
const SEARCH_STEPS: usize = 11;

/// Whether the sender's (port `from`) outbound rules and the receiver's (port `to`) inbound
/// rules allow `flow`: `Err(direction)` names the first that does not. One lookup key serves
/// both (16-byte addresses leave no stack for two).
#[inline(always)]
pub fn allows(from: u32, to: u32, flow: &Flow) -> Result<(), u8> {
    let mut key = Key::new(
        SG_KEY_FIXED_BITS + 128,
        SgKey::new(from, sg_direction::OUTBOUND, flow.class, flow.daddr.bytes()),
    );
    if !lookup(&key, flow) {
        return Err(sg_direction::OUTBOUND);
    }
    key.data.ifindex_be = to.to_be_bytes();
    key.data.direction = sg_direction::INBOUND;
    key.data.remote = flow.saddr.bytes();
    if !lookup(&key, flow) {
        return Err(sg_direction::INBOUND);
    }
    Ok(())
}

#[inline(always)]
fn lookup(key: &Key<SgKey>, flow: &Flow) -> bool {
    match IQD_SG_RULES.get(key) {
        Some(ranges) => contains(ranges, flow.rule_value),
        None => false,
    }
}

/// Binary search for the last range starting at or below `value`.
#[inline(always)]
fn contains(set: &SgRanges, value: u16) -> bool {
    let count = set.count as usize;
    if count == 0 || count > MAX_SG_RANGES {
        return false;
    }
    let (mut lo, mut hi) = (0usize, count);
    for _ in 0..SEARCH_STEPS {
        if hi - lo <= 1 {
            break;
        }
        let mid = (lo + hi) / 2;
        if mid >= MAX_SG_RANGES {
            return false;
        }
        if (set.ranges[mid] >> 16) as u16 <= value {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if lo >= MAX_SG_RANGES {
        return false;
    }
    let range = set.ranges[lo];
    (range >> 16) as u16 <= value && value <= range as u16
}
