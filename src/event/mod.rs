//! The wire format of both topics: a small, versioned, binary envelope.
//!
//! Every message on `core-distributed-cache-set-del` (a core node's write, [`WriteEvent`]) and on
//! `core-distributed-cache-done` (a state node's report of what became of it, [`DoneEvent`]) is one
//! envelope, [`Event`]. The two typed views hold only what their topic allows and are built by
//! their constructors; `Event` with its public fields is the raw envelope, for tools that read or
//! forge messages.
//! The Kafka message key is `namespace + "\x1f" + cache key`, so all events of one key share a
//! partition and stay in order. The value is the envelope below, all integers big-endian:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 2 | magic `"DC"` (`0x44 0x43`) |
//! | 2  | 1 | format, currently `1`; other values are rejected |
//! | 3  | 1 | op: `1` set, `2` delete, `3` stale (done topic only: the write lost to a newer one) |
//! | 4  | 1 | flags: bit0 remote TTL present, bit1 local TTL present, bit2 value present, bit3 write Redis, bit4 value omitted (too large to inline) |
//! | 5  | 8 | version hlc |
//! | 13 | 8 | version node |
//! | 21 | 8 | origin node id |
//! | 29 | 8 | produced at, Unix microseconds |
//! | 37 | 8 | remote (Redis) TTL in ms; must be 0 when bit0 is clear |
//! | 45 | 8 | local TTL in ms; must be 0 when bit1 is clear |
//! | 53 | 2 | namespace length `N`, then `N` bytes UTF-8 |
//! |    | 4 | key length `K`, then `K` bytes UTF-8 |
//! |    | 4 | value length `V`, then `V` bytes (only when bit2 is set) |
//!
//! Nothing may follow the value. A message that breaks any of these rules is rejected by
//! [`Event::decode`] with [`Error::Codec`]; consumers count it, log it and move on.
//! [`WriteEvent::decode`] also rejects what only the done topic may carry (a stale marker, an
//! omitted value).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Error, Result, Version};

mod done;
mod write;

pub use done::DoneEvent;
pub use write::WriteEvent;

/// Name of the topic core nodes write their set/delete events to.
pub const TOPIC_SET_DEL: &str = "core-distributed-cache-set-del";
/// Name of the topic state nodes publish applied events to.
pub const TOPIC_DONE: &str = "core-distributed-cache-done";
/// Consumer group of the state nodes.
pub const GROUP_SET_DEL: &str = "core-distributed-cache-set-del";

/// Separates namespace and cache key in the Kafka message key.
pub const KEY_SEPARATOR: char = '\x1f';

const MAGIC: [u8; 2] = *b"DC";
/// The envelope format this build writes and reads.
pub const FORMAT: u8 = 1;
const HEADER_LEN: usize = 53;

const FLAG_REMOTE_TTL: u8 = 1 << 0;
const FLAG_LOCAL_TTL: u8 = 1 << 1;
const FLAG_VALUE: u8 = 1 << 2;
const FLAG_WRITE_REDIS: u8 = 1 << 3;
const FLAG_VALUE_OMITTED: u8 = 1 << 4;
const KNOWN_FLAGS: u8 =
    FLAG_REMOTE_TTL | FLAG_LOCAL_TTL | FLAG_VALUE | FLAG_WRITE_REDIS | FLAG_VALUE_OMITTED;

/// What an event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Store a value.
    Set,
    /// Remove the key.
    Delete,
    /// Done topic only: the write with this version lost to a newer one and was not applied.
    /// Listeners use it to wake writers waiting for the outcome, and drop their local copy of the
    /// key unless it is newer (so a writer whose write lost stops serving it).
    Stale,
}

impl Op {
    fn code(self) -> u8 {
        match self {
            Op::Set => 1,
            Op::Delete => 2,
            Op::Stale => 3,
        }
    }

    fn from_code(code: u8) -> Option<Op> {
        match code {
            1 => Some(Op::Set),
            2 => Some(Op::Delete),
            3 => Some(Op::Stale),
            _ => None,
        }
    }
}

/// The envelope of one versioned write, as carried on both topics. Every field is public so that
/// tools can read and forge messages; the library itself builds [`WriteEvent`]s and
/// [`DoneEvent`]s, which keep each topic's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Set, delete or stale.
    pub op: Op,
    /// The cache namespace (one per cached type by default).
    pub ns: String,
    /// The cache key inside the namespace.
    pub key: String,
    /// The write's version; larger wins.
    pub version: Version,
    /// TTL of the value in Redis (`None`: no expiry).
    pub remote_ttl: Option<Duration>,
    /// TTL of the value in every node's local cache (`None`: the cache's default).
    pub local_ttl: Option<Duration>,
    /// The encoded value (sets only; on the done topic absent when it was too large to inline).
    pub value: Option<Vec<u8>>,
    /// True for the `*_with_sync` writes that also go to Redis; plain writes only replicate to
    /// the local caches.
    pub write_redis: bool,
    /// Done topic: the value was too large to inline; listeners drop their local copy instead.
    pub value_omitted: bool,
    /// The node that made the write.
    pub origin: u64,
    /// When the core node produced the event, Unix microseconds (for latency metrics only).
    pub produced_at_us: u64,
}

impl Event {
    /// The Kafka message key for this event: `ns + "\x1f" + key`.
    pub fn message_key(&self) -> Vec<u8> {
        message_key(&self.ns, &self.key)
    }

    /// Encodes the envelope described in the module docs.
    pub fn encode(&self) -> Vec<u8> {
        let value_len = self.value.as_ref().map_or(0, |v| 4 + v.len());
        let mut out =
            Vec::with_capacity(HEADER_LEN + 2 + self.ns.len() + 4 + self.key.len() + value_len);
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT);
        out.push(self.op.code());
        let mut flags = 0;
        if self.remote_ttl.is_some() {
            flags |= FLAG_REMOTE_TTL;
        }
        if self.local_ttl.is_some() {
            flags |= FLAG_LOCAL_TTL;
        }
        if self.value.is_some() {
            flags |= FLAG_VALUE;
        }
        if self.write_redis {
            flags |= FLAG_WRITE_REDIS;
        }
        if self.value_omitted {
            flags |= FLAG_VALUE_OMITTED;
        }
        out.push(flags);
        out.extend_from_slice(&self.version.hlc.to_be_bytes());
        out.extend_from_slice(&self.version.node.to_be_bytes());
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(&self.produced_at_us.to_be_bytes());
        out.extend_from_slice(&ttl_millis(self.remote_ttl).to_be_bytes());
        out.extend_from_slice(&ttl_millis(self.local_ttl).to_be_bytes());
        out.extend_from_slice(&(self.ns.len() as u16).to_be_bytes());
        out.extend_from_slice(self.ns.as_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_be_bytes());
        out.extend_from_slice(self.key.as_bytes());
        if let Some(value) = &self.value {
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    /// Decodes an envelope, rejecting anything malformed or of an unknown format with
    /// [`Error::Codec`].
    pub fn decode(bytes: &[u8]) -> Result<Event> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(2)? != MAGIC {
            return Err(malformed("bad magic (not a distcache event)"));
        }
        let format = r.u8()?;
        if format != FORMAT {
            return Err(malformed(format!("unknown format {format}")));
        }
        let op = r.u8()?;
        let op = Op::from_code(op).ok_or_else(|| malformed(format!("unknown op {op}")))?;
        let flags = r.u8()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(malformed(format!("unknown flags {flags:#04x}")));
        }
        let version = Version::new(r.u64()?, r.u64()?);
        let origin = r.u64()?;
        let produced_at_us = r.u64()?;
        let remote_ms = r.u64()?;
        let local_ms = r.u64()?;
        // One message, one meaning: a TTL field without its flag must be 0, as `encode` writes it.
        if (flags & FLAG_REMOTE_TTL == 0 && remote_ms != 0)
            || (flags & FLAG_LOCAL_TTL == 0 && local_ms != 0)
        {
            return Err(malformed("a TTL without its flag"));
        }
        let ns_len = r.u16()? as usize;
        let ns = r.utf8(ns_len, "namespace")?;
        let key_len = r.u32()? as usize;
        let key = r.utf8(key_len, "key")?;
        let value = if flags & FLAG_VALUE != 0 {
            let len = r.u32()? as usize;
            Some(r.take(len)?.to_vec())
        } else {
            None
        };
        if r.pos != bytes.len() {
            return Err(malformed("trailing bytes after the value"));
        }
        if op == Op::Set && value.is_none() && flags & FLAG_VALUE_OMITTED == 0 {
            return Err(malformed("set without a value"));
        }
        if op != Op::Set && (value.is_some() || flags & FLAG_VALUE_OMITTED != 0) {
            return Err(malformed("only a set carries a value"));
        }
        if value.is_some() && flags & FLAG_VALUE_OMITTED != 0 {
            return Err(malformed("a value marked as omitted"));
        }
        Ok(Event {
            op,
            ns,
            key,
            version,
            remote_ttl: (flags & FLAG_REMOTE_TTL != 0).then(|| Duration::from_millis(remote_ms)),
            local_ttl: (flags & FLAG_LOCAL_TTL != 0).then(|| Duration::from_millis(local_ms)),
            value,
            write_redis: flags & FLAG_WRITE_REDIS != 0,
            value_omitted: flags & FLAG_VALUE_OMITTED != 0,
            origin,
            produced_at_us,
        })
    }
}

/// The Kafka message key of `key` in namespace `ns`.
#[doc(hidden)]
pub fn message_key(ns: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(ns.len() + 1 + key.len());
    out.extend_from_slice(ns.as_bytes());
    out.push(KEY_SEPARATOR as u8);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Microseconds since the Unix epoch, for `produced_at_us`.
#[doc(hidden)]
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn ttl_millis(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}

fn malformed(msg: impl Into<String>) -> Error {
    Error::codec(format!("malformed event: {}", msg.into()))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| malformed(format!("truncated at byte {}", self.pos)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn utf8(&mut self, n: usize, what: &str) -> Result<String> {
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| malformed(format!("{what} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            produced_at_us: 1_700_000_000_000_000,
            ..WriteEvent::set(
                "users",
                "u:1",
                Version::new(123 << 16 | 7, 99),
                b"{\"a\":1}".to_vec(),
            )
            .with_ttls(Some(Duration::from_millis(5000)), None)
            .into_envelope()
        }
    }

    #[test]
    fn round_trips() {
        let ev = sample();
        assert_eq!(Event::decode(&ev.encode()).unwrap(), ev);
        let del = WriteEvent::delete("users", "u:1", Version::new(5 << 16, 1))
            .plain()
            .with_ttls(None, Some(Duration::from_secs(1)))
            .into_envelope();
        assert_eq!(Event::decode(&del.encode()).unwrap(), del);
    }

    #[test]
    fn message_key_joins_namespace_and_key() {
        assert_eq!(sample().message_key(), b"users\x1fu:1".to_vec());
    }

    #[test]
    fn rejects_malformed_input() {
        let good = sample().encode();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            b"hello world".to_vec(),
            good[..good.len() - 1].to_vec(),
            [good.clone(), vec![0]].concat(),
        ];
        let mut bad_format = good.clone();
        bad_format[2] = 2;
        cases.push(bad_format);
        let mut bad_op = good.clone();
        bad_op[3] = 9;
        cases.push(bad_op);
        let mut bad_flags = good.clone();
        bad_flags[4] |= 0x80;
        cases.push(bad_flags);
        let mut huge_key = good.clone();
        let key_len_at = HEADER_LEN + 2 + "users".len();
        huge_key[key_len_at..key_len_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        cases.push(huge_key);
        for case in cases {
            assert!(
                matches!(Event::decode(&case), Err(Error::Codec(_))),
                "{case:?} must be rejected"
            );
        }
    }

    #[test]
    fn only_sets_carry_values() {
        for op in [Op::Delete, Op::Stale] {
            let ev = Event { op, ..sample() };
            assert!(Event::decode(&ev.encode()).is_err(), "{op:?} with a value");
        }
    }

    #[test]
    fn set_without_value_is_rejected_unless_omitted() {
        let ev = Event {
            value: None,
            ..sample()
        };
        assert!(Event::decode(&ev.encode()).is_err());
        let omitted = Event {
            value: None,
            value_omitted: true,
            ..sample()
        };
        assert_eq!(Event::decode(&omitted.encode()).unwrap(), omitted);
        // Present and omitted at once: two readings of one message (found by scripts/fuzz.sh).
        let both = Event {
            value_omitted: true,
            ..sample()
        };
        assert!(Event::decode(&both.encode()).is_err());
    }
}
