//! Done events for the unit tests of the listener's helpers (pending writes, waiters).

use crate::event::{Event, Op};
use crate::Version;

/// A done event of namespace `n` for `key` at version `(hlc, 1)`, without a value.
pub(crate) fn done(key: &str, hlc: u64, op: Op) -> Event {
    Event {
        op,
        value: None,
        ..Event::delete("n", key, Version::new(hlc, 1))
    }
}
