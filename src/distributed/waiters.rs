//! Callers waiting for a done event: writers waiting for the state node's verdict on their write
//! (the `*_and_wait` calls), and readers waiting until this node's view of a key reached a version
//! (`wait_for`).
//!
//! A waiter is registered before its event is produced (or, for `wait_for`, before this node's
//! view is checked), so its done event cannot slip past. It is resolved by the first done event
//! for its key whose version is at least its own. Each waiter has an id of its own, so two callers
//! waiting on one (key, version) — a writer and a reader on the same node — never cancel each
//! other.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_channel::{bounded, Receiver, Sender};
use hashbrown::HashMap;
use parking_lot::Mutex;

use super::pending::Pending;
use crate::event::{DoneEvent, Op};
use crate::{Error, LocalCache, Result, Version};

/// What became of a write, as reported by the state node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write was applied: at that moment it was the newest for its key.
    Applied,
    /// A newer write to the same key won; this one was dropped or already overwritten.
    Superseded,
}

/// Callers waiting on one key: their versions, ids and where to send the verdict.
type KeyWaiters = Vec<(Version, u64, Sender<WriteOutcome>)>;

/// A registered waiter: its id (for [`Waiters::cancel`]) and where its verdict arrives.
pub(crate) struct Registered {
    pub id: u64,
    pub outcome: Receiver<WriteOutcome>,
}

pub(crate) struct Waiters {
    /// This node's writes between their version and their local apply (see `pending`).
    pub(crate) pending: Pending,
    by_key: Mutex<HashMap<String, KeyWaiters>>,
    count: AtomicUsize,
    next_id: AtomicU64,
    max: usize,
    /// The newest applied version (set or delete) the listener saw per key, for `wait_for` calls
    /// made after the event arrived while the local entry is gone (evicted, expired, or dropped
    /// for a value too large to inline). An LRU bounded in entries: a key pushed out of it is
    /// answered by the local cache alone.
    seen: LocalCache<()>,
}

impl Waiters {
    pub(crate) fn new(max: usize, seen_capacity: usize) -> Result<Self> {
        Ok(Waiters {
            pending: Pending::new(),
            by_key: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            max,
            seen: LocalCache::builder().capacity(seen_capacity).build()?,
        })
    }

    /// Records that the listener saw an applied write of `key` at `version`.
    pub(crate) fn saw(&self, key: &str, version: Version) {
        self.seen.set_if_newer(key, (), None, version);
    }

    /// The newest applied version of `key` the listener saw, if still remembered.
    pub(crate) fn seen(&self, key: &str) -> Option<Version> {
        self.seen.version_of(key)
    }

    /// Registers interest in the outcome of `version` of `key`. Refused when `max` callers already
    /// wait (each is a blocked thread; the bound keeps the map small).
    pub(crate) fn register(&self, key: &str, version: Version) -> Result<Registered> {
        let mut map = self.by_key.lock();
        if self.count.load(Ordering::Relaxed) >= self.max {
            return Err(Error::Rejected(format!(
                "{} callers are already waiting for done events",
                self.max
            )));
        }
        let (tx, rx) = bounded(1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        map.entry_ref(key).or_default().push((version, id, tx));
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(Registered { id, outcome: rx })
    }

    /// Forgets a waiter that gave up (timeout, failed produce, already satisfied).
    pub(crate) fn cancel(&self, key: &str, id: u64) {
        let mut map = self.by_key.lock();
        if let Some(list) = map.get_mut(key) {
            let before = list.len();
            list.retain(|(_, i, _)| *i != id);
            self.count.fetch_sub(before - list.len(), Ordering::Relaxed);
            if list.is_empty() {
                map.remove(key);
            }
        }
    }

    /// Resolves the waiters `event` settles. An applied write (set or delete) at version V settles
    /// every waiter of its key at or below V: V is applied, older writes lost to it. A `stale`
    /// verdict settles only the write it names: it says that one write was refused (older than
    /// Redis, or stamped too far ahead), nothing about others of the key, which get their own.
    pub(crate) fn notify(&self, event: &DoneEvent) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.by_key.lock();
        let Some(list) = map.get_mut(event.key.as_str()) else {
            return;
        };
        let before = list.len();
        list.retain(|(version, _, tx)| {
            if *version > event.version || (event.op == Op::Stale && *version != event.version) {
                return true;
            }
            let outcome = if *version == event.version && event.op != Op::Stale {
                WriteOutcome::Applied
            } else {
                WriteOutcome::Superseded
            };
            let _ = tx.try_send(outcome);
            false
        });
        self.count.fetch_sub(before - list.len(), Ordering::Relaxed);
        if list.is_empty() {
            map.remove(event.key.as_str());
        }
    }

    /// Waiters currently registered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::test_events::done;

    #[test]
    fn resolves_by_version() {
        let w = Waiters::new(10, 16).unwrap();
        let mine = w.register("k", Version::new(5, 1)).unwrap().outcome;
        let later = w.register("k", Version::new(9, 1)).unwrap().outcome;
        let other = w.register("x", Version::new(5, 1)).unwrap().outcome;
        w.notify(&done("k", 4, Op::Set));
        assert!(mine.try_recv().is_err());
        w.notify(&done("k", 5, Op::Delete));
        assert_eq!(mine.try_recv().unwrap(), WriteOutcome::Applied);
        w.notify(&done("k", 12, Op::Set));
        assert_eq!(later.try_recv().unwrap(), WriteOutcome::Superseded);
        w.notify(&done("x", 5, Op::Stale));
        assert_eq!(other.try_recv().unwrap(), WriteOutcome::Superseded);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_stale_verdict_settles_only_the_write_it_names() {
        let w = Waiters::new(10, 16).unwrap();
        let correct = w.register("k", Version::new(5, 1)).unwrap().outcome;
        let far_ahead = w.register("k", Version::new(900, 1)).unwrap().outcome;
        w.notify(&done("k", 900, Op::Stale));
        assert_eq!(far_ahead.try_recv().unwrap(), WriteOutcome::Superseded);
        assert!(
            correct.try_recv().is_err(),
            "refusing another write says nothing of this one"
        );
        w.notify(&done("k", 5, Op::Set));
        assert_eq!(correct.try_recv().unwrap(), WriteOutcome::Applied);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn bounded_and_cancellable() {
        let w = Waiters::new(1, 16).unwrap();
        let a = w.register("a", Version::new(1, 1)).unwrap();
        assert!(matches!(
            w.register("b", Version::new(1, 1)),
            Err(Error::Rejected(_))
        ));
        w.cancel("a", a.id);
        assert_eq!(w.len(), 0);
        assert!(w.register("b", Version::new(1, 1)).is_ok());
    }

    /// A writer and a reader waiting on the same (key, version): one giving up leaves the other.
    #[test]
    fn cancelling_one_waiter_keeps_another_of_the_same_version() {
        let w = Waiters::new(10, 16).unwrap();
        let writer = w.register("k", Version::new(5, 1)).unwrap();
        let reader = w.register("k", Version::new(5, 1)).unwrap();
        w.cancel("k", reader.id);
        assert_eq!(w.len(), 1);
        w.notify(&done("k", 5, Op::Set));
        assert_eq!(writer.outcome.try_recv().unwrap(), WriteOutcome::Applied);
    }
}
