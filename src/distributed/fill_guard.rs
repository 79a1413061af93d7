//! Guards `get_with_sync` against the stale-fill race.
//!
//! A read miss fetches the value from Redis and fills the local cache. If a done event for that
//! key arrives while the read is in flight, the fetched value may already be old. Versions settle
//! most cases (an older fill loses to a newer entry or tombstone), but not all: an event whose value
//! was too large to inline, an LRU eviction, or a cache reset leaves no version behind to compare.
//! So every event bumps a counter for its key's slot, every reset bumps an epoch, and a fill goes
//! ahead only if neither moved since the read started.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots of counters; keys share slots, which only costs a skipped fill now and then.
const SLOTS: usize = 4096;

pub(crate) struct FillGuard {
    slots: Box<[AtomicU64]>,
    epoch: AtomicU64,
    hasher: foldhash::fast::FixedState,
}

/// The state of one key's slot when a read started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    slot: u64,
    epoch: u64,
}

impl FillGuard {
    pub(crate) fn new() -> Self {
        FillGuard {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            hasher: foldhash::fast::FixedState::with_seed(0xf111),
        }
    }

    fn slot(&self, key: &str) -> &AtomicU64 {
        &self.slots[(self.hasher.hash_one(key) as usize) & (SLOTS - 1)]
    }

    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        Ticket {
            epoch: self.epoch.load(Ordering::Acquire),
            slot: self.slot(key).load(Ordering::Acquire),
        }
    }

    /// True when no event for the key's slot and no reset happened since `ticket`.
    pub(crate) fn unchanged(&self, key: &str, ticket: Ticket) -> bool {
        self.ticket(key) == ticket
    }

    pub(crate) fn touch(&self, key: &str) {
        self.slot(key).fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn reset(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_resets_invalidate_tickets() {
        let g = FillGuard::new();
        let t = g.ticket("a");
        assert!(g.unchanged("a", t));
        g.touch("a");
        assert!(!g.unchanged("a", t));
        let t = g.ticket("a");
        g.reset();
        assert!(!g.unchanged("a", t));
    }
}
