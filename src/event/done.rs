//! A state node's report of what became of a write, as the done topic carries it.

use std::ops::Deref;

use super::{Event, Op, WriteEvent};
use crate::Result;

/// What became of one write: applied (the write itself, its value inlined or omitted) or stale
/// (it lost to a newer write of its key, or will never apply). Built from the [`WriteEvent`] it
/// answers, so it always carries that write's key, version and origin. Read its fields through
/// the envelope it derefs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoneEvent(Event);

impl DoneEvent {
    /// An applied write's report: the write itself, its value inlined up to `inline_limit` bytes,
    /// else omitted (listeners then drop their copy and re-read Redis on demand).
    ///
    /// ```
    /// use distcache::event::{DoneEvent, WriteEvent};
    /// use distcache::Version;
    ///
    /// let write = WriteEvent::set("users", "u:1", Version::new(1 << 16, 7), vec![0; 100]);
    /// let done = DoneEvent::applied(write, 64);
    /// assert!(done.value.is_none() && done.value_omitted);
    /// ```
    pub fn applied(write: WriteEvent, inline_limit: usize) -> DoneEvent {
        let mut done = write.into_envelope();
        if done.value.as_ref().is_some_and(|v| v.len() > inline_limit) {
            done.value = None;
            done.value_omitted = true;
        }
        DoneEvent(done)
    }

    /// The report of a write that lost to a newer one, or will never apply: same key, version
    /// and origin, no value and no TTLs. It wakes writers waiting for the outcome, and local
    /// caches drop their copy of the key unless it is newer.
    pub fn stale(write: WriteEvent) -> DoneEvent {
        DoneEvent(Event {
            op: Op::Stale,
            value: None,
            value_omitted: false,
            remote_ttl: None,
            local_ttl: None,
            ..write.into_envelope()
        })
    }

    /// Decodes a done record ([`Event::decode`]: every well-formed envelope is a valid report).
    pub fn decode(bytes: &[u8]) -> Result<DoneEvent> {
        Event::decode(bytes).map(DoneEvent)
    }

    /// The raw envelope.
    pub fn into_envelope(self) -> Event {
        self.0
    }
}

impl Deref for DoneEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;

    fn write(value_len: usize) -> WriteEvent {
        WriteEvent::set("n", "k", Version::new(1 << 16, 1), vec![0; value_len])
    }

    #[test]
    fn applied_inlines_small_values_and_omits_large_ones() {
        let small = DoneEvent::applied(write(10), 10);
        assert_eq!(small.value.as_deref(), Some(&[0; 10][..]));
        let big = DoneEvent::applied(write(11), 10);
        assert!(big.value.is_none() && big.value_omitted);
        assert_eq!(DoneEvent::decode(&big.encode()).unwrap(), big);
    }

    #[test]
    fn stale_keeps_the_writes_identity_and_nothing_else() {
        let w = write(10).with_ttls(
            Some(std::time::Duration::from_secs(1)),
            Some(std::time::Duration::from_secs(2)),
        );
        let s = DoneEvent::stale(w.clone());
        assert_eq!(
            (s.op, &s.key, s.version, s.origin),
            (Op::Stale, &w.key, w.version, w.origin)
        );
        assert!(s.value.is_none() && !s.value_omitted);
        assert!(s.remote_ttl.is_none() && s.local_ttl.is_none());
        assert_eq!(DoneEvent::decode(&s.encode()).unwrap(), s);
    }
}
