//! Done events for the unit tests of the listener's helpers (pending writes, waiters).

use crate::event::{DoneEvent, Op, WriteEvent};
use crate::Version;

/// A done event of namespace `n` for `key` at version `(hlc, 1)`, without a value: an applied
/// delete, an applied set whose value was omitted, or a stale marker.
pub(crate) fn done(key: &str, hlc: u64, op: Op) -> DoneEvent {
    let version = Version::new(hlc, 1);
    match op {
        Op::Set => DoneEvent::applied(WriteEvent::set("n", key, version, vec![0]), 0),
        Op::Delete => DoneEvent::applied(WriteEvent::delete("n", key, version), 0),
        Op::Stale => DoneEvent::stale(WriteEvent::delete("n", key, version)),
    }
}
