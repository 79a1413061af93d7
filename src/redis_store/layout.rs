//! How a cache entry is laid out in Redis, and the Lua script that applies versioned writes.
//!
//! Each entry of a [`DistributedCache`](crate::DistributedCache) is one Redis hash at
//! [`redis_entry_key`]`(prefix, namespace, key)` = `prefix + escaped namespace + ":" + key`, where the
//! namespace is escaped (`%` → `%25`, `:` → `%3A`) so that it never contains the separator: the first `:`
//! after the prefix ends the namespace, and no two (namespace, key) pairs share a Redis key. The hash has
//! up to three fields:
//! - `v`: the encoded value (absent in a tombstone),
//! - `ver`: the version of the `*_with_sync` write that produced `v` (or the tombstone), as 32
//!   hex digits ([`Version::to_hex`]),
//! - `pver`: the version of a newer plain write (`set`/`delete` without sync), which replicates
//!   to local caches only and so leaves `v` and `ver` alone. Only the apply script reads it.
//!
//! The key's version, which every write must beat, is the larger of `ver` and `pver`: plain and
//! synced writes share one version order. A plain write on a key with no value (no hash, or a
//! tombstone) leaves a hash that expires after the tombstone TTL, like a tombstone; on a key with a
//! value it keeps the value's TTL. A synced write removes `pver` (it is newer).
//! A reader of the value takes `ver` as its version and ignores `pver`.
//!
//! Value and version live in one key, so the version check and the write are atomic in one script
//! and the pair always hashes to the same Redis Cluster slot. A delete leaves a tombstone (`ver`
//! only) that expires after the tombstone TTL, so a late, older set cannot resurrect the key.
//! Redis TTLs (`PEXPIRE`) apply to the whole hash.

use crate::Version;

/// Hash field holding the encoded value.
pub(crate) const FIELD_VALUE: &str = "v";

/// Applies versioned events, one per key in `KEYS`, with six arguments each in `ARGV`: version
/// (32 hex digits), op (`s`/`d`), write (`1`: a synced write, or `0`: a plain write, whose version
/// alone is recorded in `pver`), value, TTL ms (`0`: none), tombstone TTL ms. Returns one reply
/// per key: 1 when the event is at least as new as the key's version (and was written), 0 when
/// Redis holds a newer version and it was dropped, or an error message when that key cannot be
/// written: `BADVERSION …` when a stored version is not 32 hex digits (a foreign or corrupt hash,
/// left alone), Redis' own error (`WRONGTYPE …`, `OOM …`) otherwise. The other keys are still
/// applied.
///
/// An equal version is the same write delivered again (a replay after a crash, a retried batch, a
/// producer retry): it counts as applied, so its done event is published again instead of
/// reporting the write as stale.
///
/// Versions are compared in four 8-hex-digit chunks: Lua numbers are doubles, which cannot hold a
/// 64-bit clock exactly, and string comparison in Redis' Lua depends on the server's locale.
/// Several keys per call share the script's fixed cost; on a cluster every call carries one key.
/// Every `redis.call` costs about as much as the rest of a key's work, so the common write (a
/// set of a new key) makes two: the version read and the write.
pub const APPLY_SCRIPT: &str = r#"
local function valid(v)
  return string.len(v) == 32 and not string.find(v, '[^0-9a-fA-F]')
end
local function newer(a, b)
  for i = 1, 25, 8 do
    local x = tonumber(string.sub(a, i, i + 7), 16)
    local y = tonumber(string.sub(b, i, i + 7), 16)
    if x ~= y then return x > y end
  end
  return false
end
local function apply(key, ver, op, write, val, ttl, tomb)
  local stored = redis.call('HMGET', key, 'ver', 'pver')
  local cur = false
  for j, name in ipairs({'ver', 'pver'}) do
    local s = stored[j]
    if s then
      if not valid(s) then
        return 'BADVERSION stored ' .. name .. ' is not 32 hex digits'
      end
      if not cur or newer(s, cur) then cur = s end
    end
  end
  if cur and newer(cur, ver) then return 0 end
  if write == '1' then
    if op == 's' then
      local added = redis.call('HSET', key, 'v', val, 'ver', ver)
      if stored[2] then redis.call('HDEL', key, 'pver') end
      if ttl ~= '0' then
        redis.call('PEXPIRE', key, ttl)
      elseif cur or added < 2 then
        -- The key was there (a tombstone's or an older set's TTL may be on it). A key with
        -- neither `ver` nor `pver` whose `v` was new did not exist (or held only fields that
        -- are not ours): nothing to persist.
        redis.call('PERSIST', key)
      end
    else
      redis.call('HDEL', key, 'v', 'pver')
      redis.call('HSET', key, 'ver', ver)
      redis.call('PEXPIRE', key, tomb)
    end
  else
    redis.call('HSET', key, 'pver', ver)
    -- With no value to keep, the hash is a tombstone: it lives as long as one.
    if redis.call('HEXISTS', key, 'v') == 0 then redis.call('PEXPIRE', key, tomb) end
  end
  return 1
end
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 6
  local ok, res = pcall(apply, KEYS[i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
    ARGV[a + 5], ARGV[a + 6])
  if ok then
    out[i] = res
  elseif type(res) == 'table' and res.err then
    out[i] = res.err
  else
    out[i] = tostring(res)
  end
end
return out
"#;

/// Prefix of the apply script's reply for a key whose stored version is not one of ours.
pub(crate) const BAD_VERSION: &str = "BADVERSION";

/// Reads an entry: `{{value, version}, PTTL}` (missing fields are nil; PTTL is negative when the
/// key has no expiry or does not exist).
pub(crate) const GET_SCRIPT: &str = r#"
return {redis.call('HMGET', KEYS[1], 'v', 'ver'), redis.call('PTTL', KEYS[1])}
"#;

/// Unversioned set: value in, version out, TTL applied (ARGV[2] = TTL in ms, "0" for none).
pub(crate) const SET_SCRIPT: &str = r#"
redis.call('HSET', KEYS[1], 'v', ARGV[1])
redis.call('HDEL', KEYS[1], 'ver', 'pver')
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
"#;

/// A versioned write for [`APPLY_SCRIPT`].
#[derive(Clone, Debug)]
pub(crate) struct VersionedWrite<'a> {
    /// Full Redis key (prefix included).
    pub key: &'a str,
    pub version: Version,
    /// `Some(value)` for a set, `None` for a delete.
    pub value: Option<&'a [u8]>,
    /// Redis TTL of a set, in ms (0: none).
    pub ttl_ms: u64,
    /// Whether to write the value (`*_with_sync`), or only record the version (plain writes).
    pub write: bool,
    /// How long a delete's tombstone lives, in ms (at least 1).
    pub tombstone_ms: u64,
}

/// One call of the apply script for `writes`: `EVALSHA sha` when the script is loaded on the
/// connection's server, or `EVAL` with the script's text (a cluster routes each command to
/// another server, where the script may not be loaded).
pub(crate) fn apply_command(writes: &[VersionedWrite<'_>], sha: Option<&str>) -> redis::Cmd {
    let mut cmd = match sha {
        Some(sha) => {
            let mut c = redis::cmd("EVALSHA");
            c.arg(sha);
            c
        }
        None => {
            let mut c = redis::cmd("EVAL");
            c.arg(APPLY_SCRIPT);
            c
        }
    };
    cmd.arg(writes.len());
    for w in writes {
        cmd.arg(w.key);
    }
    for w in writes {
        let op = if w.value.is_some() { "s" } else { "d" };
        cmd.arg(w.version.to_hex())
            .arg(op)
            .arg(if w.write { "1" } else { "0" })
            .arg(w.value.unwrap_or(b""))
            .arg(w.ttl_ms)
            .arg(w.tombstone_ms.max(1));
    }
    cmd
}

/// The apply script's reply for one key: `Ok(true)` applied, `Ok(false)` stale, `Err` refused.
pub(crate) type KeyReply = std::result::Result<bool, String>;

/// Splits the apply script's reply into one [`KeyReply`] per key.
pub(crate) fn key_replies(reply: redis::Value, keys: usize) -> Vec<KeyReply> {
    let items = match reply {
        redis::Value::Array(items) if items.len() == keys => items,
        other => {
            let why = format!("unexpected reply from the apply script: {other:?}");
            return vec![Err(why); keys];
        }
    };
    items
        .into_iter()
        .map(|item| match item {
            redis::Value::Int(n) => Ok(n == 1),
            redis::Value::BulkString(bytes) => Err(String::from_utf8_lossy(&bytes).into_owned()),
            redis::Value::SimpleString(s) => Err(s),
            other => Err(format!("unexpected reply from the apply script: {other:?}")),
        })
        .collect()
}

/// Default Redis key prefix; core nodes and state nodes must use the same one.
pub const DEFAULT_KEY_PREFIX: &str = "distcache:";

/// The Redis key prefix of every entry of namespace `ns` under `prefix`: `prefix + escaped ns + ":"`,
/// the namespace escaped as `%` → `%25`, `:` → `%3A` (every other character as is). Escaped namespaces
/// contain no `:`, so one namespace's prefix is never a prefix of another's keys: a `SCAN` of
/// `prefix*` stays inside the namespace.
///
/// ```
/// assert_eq!(distcache::redis_namespace_prefix("distcache:", "users"), "distcache:users:");
/// assert_eq!(distcache::redis_namespace_prefix("distcache:", "a:b%c"), "distcache:a%3Ab%25c:");
/// ```
pub fn redis_namespace_prefix(prefix: &str, ns: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + ns.len() + 8);
    out.push_str(prefix);
    for c in ns.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out.push(':');
    out
}

/// The Redis key of `key` in namespace `ns` under `prefix`:
/// [`redis_namespace_prefix`]`(prefix, ns) + key`. Injective: distinct (namespace, key) pairs
/// never share a Redis key.
///
/// ```
/// use distcache::redis_entry_key;
/// assert_eq!(redis_entry_key("distcache:", "users", "42"), "distcache:users:42");
/// assert_ne!(redis_entry_key("p:", "ns", "a:b"), redis_entry_key("p:", "ns:a", "b"));
/// ```
pub fn redis_entry_key(prefix: &str, ns: &str, key: &str) -> String {
    let mut out = redis_namespace_prefix(prefix, ns);
    out.push_str(key);
    out
}

/// Escapes glob characters so `prefix` matches literally in `SCAN … MATCH prefix*`.
pub(crate) fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_are_injective() {
        assert_eq!(redis_entry_key("p:", "ns", "a:b"), "p:ns:a:b");
        assert_eq!(redis_entry_key("p:", "ns:a", "b"), "p:ns%3Aa:b");
        assert_eq!(redis_entry_key("p:", "ns%3Aa", "b"), "p:ns%253Aa:b");
        let pairs = [
            ("ns", "a:b"),
            ("ns:a", "b"),
            ("ns%3Aa", "b"),
            ("ns%", "b"),
            ("ns", "%b"),
        ];
        for (i, a) in pairs.iter().enumerate() {
            for b in &pairs[i + 1..] {
                assert_ne!(
                    redis_entry_key("p:", a.0, a.1),
                    redis_entry_key("p:", b.0, b.1)
                );
            }
        }
        // One namespace's prefix never starts another namespace's keys.
        let scan = redis_namespace_prefix("p:", "ns");
        assert!(!redis_entry_key("p:", "ns:a", "b").starts_with(&scan));
    }

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(glob_escape("app:*[x]?\\"), "app:\\*\\[x\\]\\?\\\\");
        assert_eq!(glob_escape("plain:"), "plain:");
    }
}
