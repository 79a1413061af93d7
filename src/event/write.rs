//! A core node's write, as the set-del topic carries it.

use std::ops::Deref;
use std::time::Duration;

use super::{malformed, now_micros, Event, Op};
use crate::{Result, Version};

/// A set or a delete on its way to the state node: never a stale marker, never a set without its
/// value. Only the constructors and [`decode`](Self::decode) make one, so every `WriteEvent` is a
/// write the state node can apply. Read its fields through the envelope it derefs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteEvent(Event);

impl WriteEvent {
    /// A synced set as a core node's `set_with_sync` writes it: Redis and every local cache take
    /// `value` (already encoded by the namespace's codec). No TTLs; stamped by `version.node`,
    /// produced now. Chain [`plain`](Self::plain) and [`with_ttls`](Self::with_ttls) for the
    /// other shapes of a write.
    ///
    /// ```
    /// use distcache::event::{Op, WriteEvent};
    /// use distcache::Version;
    ///
    /// let write = WriteEvent::set("users", "u:1", Version::new(1 << 16, 7), b"\"Ana\"".to_vec());
    /// let back = WriteEvent::decode(&write.encode())?;
    /// assert_eq!((back.op, back.origin, back.write_redis), (Op::Set, 7, true));
    /// # Ok::<(), distcache::Error>(())
    /// ```
    pub fn set(
        ns: impl Into<String>,
        key: impl Into<String>,
        version: Version,
        value: Vec<u8>,
    ) -> WriteEvent {
        WriteEvent(Event {
            op: Op::Set,
            ns: ns.into(),
            key: key.into(),
            version,
            remote_ttl: None,
            local_ttl: None,
            value: Some(value),
            write_redis: true,
            value_omitted: false,
            origin: version.node,
            produced_at_us: now_micros(),
        })
    }

    /// A synced delete as `delete_with_sync` writes it (see [`set`](Self::set)).
    pub fn delete(ns: impl Into<String>, key: impl Into<String>, version: Version) -> WriteEvent {
        let mut write = WriteEvent::set(ns, key, version, Vec::new());
        write.0.op = Op::Delete;
        write.0.value = None;
        write
    }

    /// This write as a plain one (`set`/`delete`): only the local caches take it; Redis records
    /// its version.
    pub fn plain(mut self) -> WriteEvent {
        self.0.write_redis = false;
        self
    }

    /// This write with a Redis TTL and a local TTL.
    pub fn with_ttls(mut self, remote: Option<Duration>, local: Option<Duration>) -> WriteEvent {
        self.0.remote_ttl = remote;
        self.0.local_ttl = local;
        self
    }

    /// Decodes a set-del record: [`Event::decode`], and what only the done topic may carry (a
    /// stale marker, an omitted value) is rejected with [`Error::Codec`](crate::Error::Codec) too.
    pub fn decode(bytes: &[u8]) -> Result<WriteEvent> {
        let event = Event::decode(bytes)?;
        if event.op == Op::Stale || event.value_omitted {
            return Err(malformed(
                "a done report (stale marker or omitted value) is not a write",
            ));
        }
        Ok(WriteEvent(event))
    }

    /// The raw envelope, to change fields freely (tools forging messages).
    pub fn into_envelope(self) -> Event {
        self.0
    }
}

impl Deref for WriteEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_what_only_the_done_topic_carries() {
        let write = WriteEvent::set("n", "k", Version::new(1 << 16, 1), b"1".to_vec());
        assert_eq!(WriteEvent::decode(&write.encode()).unwrap(), write);
        let stale = Event {
            op: Op::Stale,
            value: None,
            ..write.clone().into_envelope()
        };
        let omitted = Event {
            value: None,
            value_omitted: true,
            ..write.into_envelope()
        };
        for done_only in [stale, omitted] {
            assert!(Event::decode(&done_only.encode()).is_ok());
            assert!(
                matches!(
                    WriteEvent::decode(&done_only.encode()),
                    Err(crate::Error::Codec(_))
                ),
                "{done_only:?} is not a write"
            );
        }
    }
}
