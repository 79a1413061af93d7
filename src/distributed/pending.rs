//! This node's own writes between "version stamped" and "applied to the local cache".
//!
//! A writer applies its write locally only after the broker acknowledged it, so the state node's
//! verdict can reach the listener first: a `stale` done event (the write lost to a newer one) or a
//! done event without an inlined value. Both correct the local cache by removing entries no newer
//! than their version, and leave no version behind: arriving before the writer's local apply, they
//! would find nothing to remove, and the losing value would then stay in the writer's cache. So
//! every write is registered here before it is produced; the listener records such corrections
//! for registered writes, and the writer re-applies them right after its local apply.
//!
//! The map holds only writes in flight, so it is bounded by the number of writing threads.

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::event::{DoneEvent, Op};
use crate::Version;

/// Writes in flight per key: their versions and the newest correction seen for each.
type KeyWrites = Vec<(Version, Option<Version>)>;

pub(crate) struct Pending {
    by_key: Mutex<HashMap<String, KeyWrites>>,
}

impl Pending {
    pub(crate) fn new() -> Self {
        Pending {
            by_key: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a write of `key` at `version` before it is produced.
    pub(crate) fn begin(&self, key: &str, version: Version) {
        self.by_key
            .lock()
            .entry_ref(key)
            .or_default()
            .push((version, None));
    }

    /// Ends the write of `key` at `version` (after its local apply, or when it failed) and returns
    /// the newest correction that arrived meanwhile: the local entry must then be removed unless
    /// it is newer than that version.
    pub(crate) fn end(&self, key: &str, version: Version) -> Option<Version> {
        let mut map = self.by_key.lock();
        let list = map.get_mut(key)?;
        let at = list.iter().position(|(v, _)| *v == version)?;
        let (_, correction) = list.swap_remove(at);
        if list.is_empty() {
            map.remove(key);
        }
        correction
    }

    /// Called by the listener for every done event of this namespace: records corrections that
    /// leave no version behind (see the module docs) for the writes in flight they concern.
    pub(crate) fn observe(&self, event: &DoneEvent) {
        let removes_older = match event.op {
            Op::Stale => true,
            Op::Set => event.value.is_none(),
            Op::Delete => false,
        };
        if !removes_older {
            return;
        }
        let mut map = self.by_key.lock();
        if map.is_empty() {
            return;
        }
        if let Some(list) = map.get_mut(event.key.as_str()) {
            for (version, correction) in list.iter_mut() {
                if *version <= event.version && correction.is_none_or(|c| c < event.version) {
                    *correction = Some(event.version);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::test_events::done;

    #[test]
    fn corrections_reach_writes_in_flight_only() {
        let p = Pending::new();
        p.begin("k", Version::new(5, 1));
        p.begin("k", Version::new(9, 1));
        p.observe(&done("k", 5, Op::Stale));
        p.observe(&done("x", 9, Op::Stale));
        assert_eq!(p.end("k", Version::new(9, 1)), None);
        assert_eq!(p.end("k", Version::new(5, 1)), Some(Version::new(5, 1)));
        assert_eq!(p.end("k", Version::new(5, 1)), None, "ended");
        assert!(p.by_key.lock().is_empty());
        p.observe(&done("k", 6, Op::Stale));
        assert!(
            p.by_key.lock().is_empty(),
            "nothing in flight, nothing kept"
        );
    }
}
