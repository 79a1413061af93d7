//! How a cache entry is laid out in Redis, and the Lua script that applies versioned writes.
//!
//! Each entry is one Redis hash at `prefix + key` with two fields:
//! - `v`: the encoded value (absent in a tombstone),
//! - `ver`: the version of the write that produced it, as 32 hex digits ([`Version::to_hex`]).
//!
//! Value and version live in one key, so the version check and the write are atomic in one script
//! and the pair always hashes to the same Redis Cluster slot. A delete leaves a tombstone (`ver`
//! only) that expires after the tombstone TTL, so a late, older set cannot resurrect the key.
//! Redis TTLs (`PEXPIRE`) apply to the whole hash.

use crate::Version;

/// Hash field holding the encoded value.
pub(crate) const FIELD_VALUE: &str = "v";
/// Hash field holding the version.
pub(crate) const FIELD_VERSION: &str = "ver";

/// Applies one versioned event. Returns 1 when the event is at least as new as the stored version
/// (and, when ARGV[3] is "1", was written), 0 when Redis holds a newer version and it was dropped.
///
/// An equal version is the same write delivered again (a replay after a crash, a retried batch, a
/// producer retry): it counts as applied, so its done event is published again instead of
/// reporting the write as stale.
///
/// Versions are compared in four 8-hex-digit chunks: Lua numbers are doubles, which cannot hold a
/// 64-bit clock exactly, and string comparison in Redis' Lua depends on the server's locale.
pub(crate) const APPLY_SCRIPT: &str = r#"
local function newer(a, b)
  for i = 1, 25, 8 do
    local x = tonumber(string.sub(a, i, i + 7), 16)
    local y = tonumber(string.sub(b, i, i + 7), 16)
    if x ~= y then return x > y end
  end
  return false
end
local cur = redis.call('HGET', KEYS[1], 'ver')
if cur and newer(cur, ARGV[1]) then return 0 end
if ARGV[3] == '1' then
  if ARGV[2] == 's' then
    redis.call('HSET', KEYS[1], 'v', ARGV[4], 'ver', ARGV[1])
    if ARGV[5] ~= '0' then
      redis.call('PEXPIRE', KEYS[1], ARGV[5])
    else
      redis.call('PERSIST', KEYS[1])
    end
  else
    redis.call('HDEL', KEYS[1], 'v')
    redis.call('HSET', KEYS[1], 'ver', ARGV[1])
    redis.call('PEXPIRE', KEYS[1], ARGV[6])
  end
end
return 1
"#;

/// Unversioned set: value in, version out, TTL applied (ARGV[2] = TTL in ms, "0" for none).
pub(crate) const SET_SCRIPT: &str = r#"
redis.call('HSET', KEYS[1], 'v', ARGV[1])
redis.call('HDEL', KEYS[1], 'ver')
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
    /// Whether to write at all, or only compare (plain writes that skip Redis).
    pub write: bool,
    /// How long a delete's tombstone lives, in ms (at least 1).
    pub tombstone_ms: u64,
}

impl VersionedWrite<'_> {
    /// This write as one call of the apply script: `EVALSHA sha` when the script is loaded on the
    /// connection's server, or `EVAL` with the script's text (a cluster routes each command to
    /// another server, where the script may not be loaded).
    pub(crate) fn command(&self, sha: Option<&str>) -> redis::Cmd {
        let op = if self.value.is_some() { "s" } else { "d" };
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
        cmd.arg(1)
            .arg(self.key)
            .arg(self.version.to_hex())
            .arg(op)
            .arg(if self.write { "1" } else { "0" })
            .arg(self.value.unwrap_or(b""))
            .arg(self.ttl_ms)
            .arg(self.tombstone_ms.max(1));
        cmd
    }
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
    fn escapes_glob_characters() {
        assert_eq!(glob_escape("app:*[x]?\\"), "app:\\*\\[x\\]\\?\\\\");
        assert_eq!(glob_escape("plain:"), "plain:");
    }
}
