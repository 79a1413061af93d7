//! One shard of a [`LocalCache`](super::LocalCache): an LRU map, its budget and its counters,
//! all behind one lock. Holds the cache's rules (TTL, versions, tombstones, budget, which counter
//! an operation bumps); the map itself is in `lru_map.rs`.
//!
//! Every method here runs with the shard's lock held, which is why plain integers make exact
//! counters. Each method does one map operation plus bounded housekeeping (at most
//! [`RECLAIM_PER_WRITE`] expired entries from the LRU end, then evictions until the shard is back
//! within its budget) and never scans the map.
//!
//! Invariants, true whenever the lock is released:
//! - `used` is the sum of the weights of all entries in the map, tombstones included;
//! - `live` is the number of entries that hold a value (tombstones excluded, expired values
//!   not yet reclaimed included);
//! - `used <= budget`.

use std::mem;
use std::time::{Duration, Instant};

use super::lru_map::{KeyHasher, LruMap, Slot};
use crate::Version;

/// How many expired entries one write reclaims from the LRU end, at most.
const RECLAIM_PER_WRITE: usize = 4;

/// What the map stores under a key: a value, or a tombstone that only remembers a version.
///
/// Laid out for the hit path and for size (`repr(C)`, fields in this order): a hit reads the
/// deadline and the value, which follow the node's hash and key (see `lru_map.rs`), so the
/// bytes a hit reads are contiguous; the version, weight and flags only matter to writes. A
/// deadline in 8 bytes and the two optional facts folded into `flags` make an entry of a `u64`
/// 56 bytes instead of 72.
#[repr(C)]
pub(super) struct Entry<T> {
    /// When the entry stops being visible.
    expires_at: Deadline,
    /// `None` marks a tombstone: the key was deleted at `version`.
    value: Option<T>,
    /// The version of the write that produced this entry; meaningful only with [`HAS_VERSION`].
    version: Version,
    /// Units of the shard's budget this entry holds (1 unless a weigher says otherwise).
    weight: u64,
    /// [`HAS_VERSION`] and [`ABSENT`].
    flags: u8,
}

/// The entry was written with a version (`set_if_newer`, `delete_if_newer`, a marker that saw
/// one); without it, it is unversioned and yields to any version.
const HAS_VERSION: u8 = 1;
/// A tombstone that records a read which found nothing (negative caching), not a delete.
const ABSENT: u8 = 2;

impl<T> Entry<T> {
    fn new(
        value: Option<T>,
        expires_at: Deadline,
        version: Option<Version>,
        weight: u64,
        absent: bool,
    ) -> Self {
        let flags =
            if version.is_some() { HAS_VERSION } else { 0 } | if absent { ABSENT } else { 0 };
        Entry {
            expires_at,
            value,
            version: version.unwrap_or(Version::new(0, 0)),
            weight,
            flags,
        }
    }

    /// An entry holding `value`.
    pub(super) fn value(
        value: T,
        expires_at: Deadline,
        version: Option<Version>,
        weight: u64,
    ) -> Self {
        Entry::new(Some(value), expires_at, version, weight, false)
    }

    /// A tombstone: no value, only the version of the delete. It weighs one unit.
    pub(super) fn tombstone(version: Version, expires_at: Deadline) -> Self {
        Entry::new(None, expires_at, Some(version), 1, false)
    }

    /// An absent marker: a tombstone saying a read found no value (negative caching), carrying the
    /// version the read saw (`None`: no version at all, so any versioned write replaces it).
    pub(super) fn absent(version: Option<Version>, expires_at: Deadline) -> Self {
        Entry::new(None, expires_at, version, 1, true)
    }

    /// The version the entry carries.
    pub(super) fn version(&self) -> Option<Version> {
        (self.flags & HAS_VERSION != 0).then_some(self.version)
    }

    /// Whether this is an absent marker.
    pub(super) fn is_absent(&self) -> bool {
        self.flags & ABSENT != 0
    }

    pub(super) fn is_live(&self) -> bool {
        self.value.is_some()
    }
}

/// When an entry stops being visible: nanoseconds since the cache's epoch (see [`Now`]), or
/// [`Deadline::NEVER`]. Half the size of an `Option<Instant>`, and every entry has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Deadline(u64);

impl Deadline {
    /// No deadline: the entry never expires.
    pub(super) const NEVER: Deadline = Deadline(u64::MAX);
}

/// The clock of one operation: read at most once, and only when an entry with a deadline is
/// looked at or one is computed, so entries without a TTL never pay for `Instant::now()`.
/// Times are nanoseconds since the cache's `epoch` (its creation), which 64 bits hold for 584
/// years.
pub(super) struct Now {
    epoch: Instant,
    nanos: Option<u64>,
}

impl Now {
    /// A clock for one operation of the cache created at `epoch`.
    #[inline]
    pub(super) fn new(epoch: Instant) -> Self {
        Now { epoch, nanos: None }
    }

    #[inline]
    fn nanos(&mut self) -> u64 {
        let epoch = self.epoch;
        *self
            .nanos
            .get_or_insert_with(|| u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// `ttl` from now; [`Deadline::NEVER`] without a TTL or when the sum does not fit (the
    /// deadline would be centuries away).
    pub(super) fn deadline(&mut self, ttl: Option<Duration>) -> Deadline {
        match ttl {
            None => Deadline::NEVER,
            Some(ttl) => {
                let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
                Deadline(self.nanos().saturating_add(ttl))
            }
        }
    }

    #[inline]
    fn passed(&mut self, deadline: Deadline) -> bool {
        deadline != Deadline::NEVER && deadline.0 <= self.nanos()
    }
}

/// Exact per-shard counters; summed into [`LocalMetrics`](super::LocalMetrics).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: u64,
    pub(super) misses: u64,
    pub(super) inserts: u64,
    pub(super) updates: u64,
    pub(super) evictions: u64,
    pub(super) expirations: u64,
    pub(super) invalidations: u64,
    pub(super) stale_rejections: u64,
}

/// Why an entry leaves the map; decides which counter a live, unexpired value bumps.
/// (An expired value always counts as an expiration; a tombstone counts as nothing.)
#[derive(Clone, Copy)]
pub(super) enum Removal {
    /// Pushed out to stay within budget.
    Evicted,
    /// Explicitly invalidated.
    Invalidated,
    /// Deleted or cleared: not counted.
    Deleted,
}

/// One LRU map with its budget and counters.
pub(super) struct Shard<T> {
    map: LruMap<Entry<T>>,
    budget: u64,
    used: u64,
    live: usize,
    pub(super) counters: Counters,
}

impl<T> Shard<T> {
    /// An empty shard that holds at most `budget` units, of keys hashed by `hasher`.
    pub(super) fn new(budget: u64, hasher: KeyHasher) -> Self {
        // Every entry weighs at least one unit and a write inserts before it evicts, so the map
        // holds at most `budget + 1` entries at once.
        let max_len = usize::try_from(budget.saturating_add(1)).unwrap_or(usize::MAX);
        Shard {
            map: LruMap::new(max_len, hasher),
            budget,
            used: 0,
            live: 0,
            counters: Counters::default(),
        }
    }

    /// The number of entries holding a value (expired ones not yet reclaimed included).
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// The value under `key`, counted as a hit or a miss. `touch` marks it most recently used.
    #[inline]
    pub(super) fn read(&mut self, hash: u64, key: &str, touch: bool, now: &mut Now) -> Option<T>
    where
        T: Clone,
    {
        let Some(slot) = self.map.find(hash, key) else {
            self.counters.misses += 1;
            return None;
        };
        let entry = self.map.get(slot);
        if now.passed(entry.expires_at) {
            self.remove_slot(slot, Removal::Deleted, now);
            self.counters.misses += 1;
            return None;
        }
        let value = entry.value.clone();
        if touch {
            self.map.touch(slot);
        }
        if value.is_some() {
            self.counters.hits += 1;
        } else {
            self.counters.misses += 1;
        }
        value
    }

    /// Applies `f` to the unexpired entry (value or tombstone) under `key` without touching its
    /// recency or the hit/miss counters. An expired entry is removed and yields `None`.
    pub(super) fn inspect<R>(
        &mut self,
        hash: u64,
        key: &str,
        now: &mut Now,
        f: impl FnOnce(Option<&T>, Option<Version>) -> R,
    ) -> Option<R> {
        let slot = self.map.find(hash, key)?;
        let entry = self.map.get(slot);
        if now.passed(entry.expires_at) {
            self.remove_slot(slot, Removal::Deleted, now);
            return None;
        }
        Some(f(entry.value.as_ref(), entry.version()))
    }

    /// Like [`inspect`](Self::inspect), with the whole entry.
    pub(super) fn inspect_entry<R>(
        &mut self,
        hash: u64,
        key: &str,
        now: &mut Now,
        f: impl FnOnce(&Entry<T>) -> R,
    ) -> Option<R> {
        let slot = self.map.find(hash, key)?;
        let entry = self.map.get(slot);
        if now.passed(entry.expires_at) {
            self.remove_slot(slot, Removal::Deleted, now);
            return None;
        }
        Some(f(entry))
    }

    /// Stores `entry` under `key` as the most recently used entry.
    ///
    /// With `newer_than: Some(v)` the write applies only if the key has no unexpired entry, or
    /// that entry has no version, or its version is older than `v`; a refused write is counted
    /// as a stale rejection and changes nothing. Returns whether the write applied.
    ///
    /// `entry.weight` must not exceed the budget (the caller drops heavier values).
    pub(super) fn write(
        &mut self,
        hash: u64,
        key: &str,
        entry: Entry<T>,
        newer_than: Option<Version>,
        now: &mut Now,
    ) -> bool {
        debug_assert!(entry.weight <= self.budget);
        self.reclaim_expired(now);
        let (weight, is_live) = (entry.weight, entry.is_live());
        let replaced_live = match self.map.find(hash, key) {
            Some(slot) => {
                let old = self.map.get(slot);
                let expired = now.passed(old.expires_at);
                if let Some(version) = newer_than {
                    if !expired && old.version().is_some_and(|old| old >= version) {
                        self.counters.stale_rejections += 1;
                        return false;
                    }
                }
                self.map.touch(slot);
                let old = mem::replace(self.map.get_mut(slot), entry);
                self.used -= old.weight;
                if old.is_live() {
                    self.live -= 1;
                    if expired {
                        self.counters.expirations += 1;
                    }
                }
                old.is_live() && !expired
            }
            None => {
                self.map.insert(hash, key, entry);
                false
            }
        };
        self.used += weight;
        if is_live {
            self.live += 1;
            if replaced_live {
                self.counters.updates += 1;
            } else {
                self.counters.inserts += 1;
            }
        }
        self.evict_to_budget(now);
        debug_assert!(self.live <= self.map.len() && self.used <= self.budget);
        true
    }

    /// Removes the entry under `key`, value or tombstone. Returns true when it held a live,
    /// unexpired value.
    pub(super) fn remove(&mut self, hash: u64, key: &str, why: Removal, now: &mut Now) -> bool {
        match self.map.find(hash, key) {
            Some(slot) => self.remove_slot(slot, why, now),
            None => false,
        }
    }

    fn remove_slot(&mut self, slot: Slot, why: Removal, now: &mut Now) -> bool {
        let entry = self.map.remove(slot);
        self.account_removal(&entry, why, now)
    }

    /// Removes everything. Returns how many entries held a value (expired ones included).
    pub(super) fn clear(&mut self) -> usize {
        let live = self.live;
        self.map.clear();
        self.used = 0;
        self.live = 0;
        live
    }

    /// Updates `used`, `live` and the counters for an entry that has left the map. Returns
    /// true when it held a live, unexpired value.
    fn account_removal(&mut self, entry: &Entry<T>, why: Removal, now: &mut Now) -> bool {
        self.used -= entry.weight;
        if !entry.is_live() {
            return false;
        }
        self.live -= 1;
        if now.passed(entry.expires_at) {
            self.counters.expirations += 1;
            return false;
        }
        match why {
            Removal::Evicted => self.counters.evictions += 1,
            Removal::Invalidated => self.counters.invalidations += 1,
            Removal::Deleted => {}
        }
        true
    }

    /// Drops up to [`RECLAIM_PER_WRITE`] expired entries from the LRU end, where entries that
    /// nobody reads collect. Bounded work, so a write never turns into a scan.
    fn reclaim_expired(&mut self, now: &mut Now) {
        for _ in 0..RECLAIM_PER_WRITE {
            match self.map.lru() {
                Some(slot) if now.passed(self.map.get(slot).expires_at) => {
                    self.remove_slot(slot, Removal::Deleted, now);
                }
                _ => return,
            }
        }
    }

    /// Evicts from the LRU end until the shard is within budget. The entry just written is the
    /// most recently used and weighs at most the budget, so it always survives.
    fn evict_to_budget(&mut self, now: &mut Now) {
        while self.used > self.budget {
            match self.map.lru() {
                Some(slot) => {
                    self.remove_slot(slot, Removal::Evicted, now);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_at(nanos: u64) -> Now {
        Now {
            epoch: Instant::now(),
            nanos: Some(nanos),
        }
    }

    #[test]
    fn a_deadline_passes_at_its_instant_and_never_overflows() {
        let mut now = now_at(100);
        let at = now.deadline(Some(Duration::from_nanos(50)));
        assert_eq!(at, Deadline(150));
        assert!(!now.passed(at));
        assert!(!now_at(149).passed(Deadline(150)));
        assert!(
            now_at(150).passed(at),
            "visible up to, not at, its deadline"
        );
        assert_eq!(now.deadline(None), Deadline::NEVER);
        assert_eq!(now.deadline(Some(Duration::MAX)), Deadline::NEVER);
        assert_eq!(
            now_at(u64::MAX - 10).deadline(Some(Duration::from_secs(1))),
            Deadline::NEVER,
            "saturates instead of wrapping into the past"
        );
        assert!(!now_at(u64::MAX).passed(Deadline::NEVER));
    }

    #[test]
    fn the_clock_is_read_once_per_operation_and_only_when_needed() {
        let mut now = Now::new(Instant::now());
        assert!(!now.passed(Deadline::NEVER));
        assert_eq!(now.nanos, None, "no deadline, no clock read");
        let first = now.deadline(Some(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(now.deadline(Some(Duration::from_secs(1))), first);
    }

    #[test]
    fn flags_keep_the_version_and_the_absent_marker() {
        let v = Version::new(7, 3);
        let value = Entry::value(1u64, Deadline::NEVER, None, 1);
        assert_eq!(
            (value.version(), value.is_absent(), value.is_live()),
            (None, false, true)
        );
        let versioned = Entry::value(1u64, Deadline::NEVER, Some(v), 1);
        assert_eq!(versioned.version(), Some(v));
        let tombstone = Entry::<u64>::tombstone(v, Deadline::NEVER);
        assert_eq!(
            (
                tombstone.version(),
                tombstone.is_absent(),
                tombstone.is_live()
            ),
            (Some(v), false, false)
        );
        let absent = Entry::<u64>::absent(None, Deadline::NEVER);
        assert_eq!((absent.version(), absent.is_absent()), (None, true));
        let absent = Entry::<u64>::absent(Some(Version::new(0, 0)), Deadline::NEVER);
        assert_eq!(
            absent.version(),
            Some(Version::new(0, 0)),
            "version zero is still a version"
        );
    }

    #[test]
    fn an_entry_of_a_u64_takes_56_bytes() {
        // What the per-entry memory figure in the README rests on (was 72 bytes).
        assert_eq!(mem::size_of::<Entry<u64>>(), 56);
    }
}
