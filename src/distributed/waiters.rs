//! Writers waiting for the state node's verdict on their write (the `*_and_wait` calls).
//!
//! A waiter is registered before its event is produced, so its done event cannot slip past.
//! It is resolved by the first done event for its key whose version is at least its own.

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{bounded, Receiver, Sender};
use hashbrown::HashMap;
use parking_lot::Mutex;

use super::pending::Pending;
use crate::event::{Event, Op};
use crate::{Error, Result, Version};

/// What became of a write, as reported by the state node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write was applied: at that moment it was the newest for its key.
    Applied,
    /// A newer write to the same key won; this one was dropped or already overwritten.
    Superseded,
}

/// Writers waiting on one key: their versions and where to send the verdict.
type KeyWaiters = Vec<(Version, Sender<WriteOutcome>)>;

pub(crate) struct Waiters {
    /// This node's writes between their version and their local apply (see `pending`).
    pub(crate) pending: Pending,
    by_key: Mutex<HashMap<String, KeyWaiters>>,
    count: AtomicUsize,
    max: usize,
}

impl Waiters {
    pub(crate) fn new(max: usize) -> Self {
        Waiters {
            pending: Pending::new(),
            by_key: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            max,
        }
    }

    /// Registers interest in the outcome of `version` of `key`. Refused when `max` writers already
    /// wait (each is a blocked thread; the bound keeps the map small).
    pub(crate) fn register(&self, key: &str, version: Version) -> Result<Receiver<WriteOutcome>> {
        let mut map = self.by_key.lock();
        if self.count.load(Ordering::Relaxed) >= self.max {
            return Err(Error::Rejected(format!(
                "{} writers are already waiting for their writes to apply",
                self.max
            )));
        }
        let (tx, rx) = bounded(1);
        map.entry_ref(key).or_default().push((version, tx));
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(rx)
    }

    /// Forgets a waiter that gave up (timeout, failed produce).
    pub(crate) fn cancel(&self, key: &str, version: Version) {
        let mut map = self.by_key.lock();
        if let Some(list) = map.get_mut(key) {
            let before = list.len();
            list.retain(|(v, _)| *v != version);
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
    pub(crate) fn notify(&self, event: &Event) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.by_key.lock();
        let Some(list) = map.get_mut(event.key.as_str()) else {
            return;
        };
        let before = list.len();
        list.retain(|(version, tx)| {
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
        let w = Waiters::new(10);
        let mine = w.register("k", Version::new(5, 1)).unwrap();
        let later = w.register("k", Version::new(9, 1)).unwrap();
        let other = w.register("x", Version::new(5, 1)).unwrap();
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
        let w = Waiters::new(10);
        let correct = w.register("k", Version::new(5, 1)).unwrap();
        let far_ahead = w.register("k", Version::new(900, 1)).unwrap();
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
        let w = Waiters::new(1);
        let _a = w.register("a", Version::new(1, 1)).unwrap();
        assert!(matches!(
            w.register("b", Version::new(1, 1)),
            Err(Error::Rejected(_))
        ));
        w.cancel("a", Version::new(1, 1));
        assert_eq!(w.len(), 0);
        assert!(w.register("b", Version::new(1, 1)).is_ok());
    }
}
