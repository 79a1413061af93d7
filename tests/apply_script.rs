//! The state node's versioned-apply script against a real `redis-server`, one transition at a
//! time: what it writes, what it leaves, and which TTL the entry ends with. The script skips the
//! calls a transition does not need (no `HDEL` without a plain version, no `PERSIST` on a key it
//! just created), so every path that must still clear a TTL or a plain version is pinned here.

mod support;

use distcache::bench_support::APPLY_SCRIPT;
use distcache::Version;
use support::RedisServer;

const TOMBSTONE_MS: u64 = 600_000;

struct Script {
    conn: redis::Connection,
    sha: String,
}

impl Script {
    fn load(server: &RedisServer) -> Script {
        let client = redis::Client::open(server.url()).expect("redis url");
        let mut conn = client.get_connection().expect("connect to redis");
        let sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(APPLY_SCRIPT)
            .query(&mut conn)
            .expect("load the apply script");
        Script { conn, sha }
    }

    /// One write: `value` `None` is a delete; `synced` false is a plain write. Returns the
    /// script's reply for the key (1 applied, 0 stale).
    fn apply(
        &mut self,
        key: &str,
        hlc: u64,
        value: Option<&str>,
        ttl_ms: u64,
        synced: bool,
    ) -> i64 {
        let replies: Vec<redis::Value> = redis::cmd("EVALSHA")
            .arg(&self.sha)
            .arg(1)
            .arg(key)
            .arg(Version::new(hlc, 1).to_hex())
            .arg(if value.is_some() { "s" } else { "d" })
            .arg(if synced { "1" } else { "0" })
            .arg(value.unwrap_or(""))
            .arg(ttl_ms)
            .arg(TOMBSTONE_MS)
            .query(&mut self.conn)
            .expect("run the apply script");
        match replies.as_slice() {
            [redis::Value::Int(n)] => *n,
            other => panic!("unexpected reply for {key}: {other:?}"),
        }
    }

    fn fields(&mut self, key: &str) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(key)
            .query(&mut self.conn)
            .expect("HGETALL");
        fields.sort();
        fields
    }

    fn pttl(&mut self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query(&mut self.conn)
            .expect("PTTL")
    }

    fn raw(&mut self, cmd: &mut redis::Cmd) {
        cmd.query::<redis::Value>(&mut self.conn)
            .expect("raw command");
    }
}

fn ver(hlc: u64) -> String {
    Version::new(hlc, 1).to_hex()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn every_transition_leaves_the_right_fields_and_ttl() {
    let server = RedisServer::start();
    let mut s = Script::load(&server);

    // A new key: value and version, no expiry.
    assert_eq!(s.apply("new", 10, Some("a"), 0, true), 1);
    assert_eq!(s.fields("new"), pairs(&[("v", "a"), ("ver", &ver(10))]));
    assert_eq!(s.pttl("new"), -1, "a new key without a TTL has none");

    // A set with a TTL expires.
    assert_eq!(s.apply("ttl", 10, Some("a"), 50_000, true), 1);
    let ttl = s.pttl("ttl");
    assert!(ttl > 0 && ttl <= 50_000, "PTTL {ttl}");
    // A newer set without one removes it.
    assert_eq!(s.apply("ttl", 11, Some("b"), 0, true), 1);
    assert_eq!(s.pttl("ttl"), -1, "the older set's TTL is cleared");

    // A delete leaves a tombstone that expires; a newer set brings the key back for good.
    assert_eq!(s.apply("tomb", 10, Some("a"), 0, true), 1);
    assert_eq!(s.apply("tomb", 11, None, 0, true), 1);
    assert_eq!(s.fields("tomb"), pairs(&[("ver", &ver(11))]));
    assert!(s.pttl("tomb") > 0, "a tombstone expires");
    assert_eq!(
        s.apply("tomb", 9, Some("old"), 0, true),
        0,
        "older than the tombstone"
    );
    assert_eq!(s.apply("tomb", 12, Some("c"), 0, true), 1);
    assert_eq!(s.fields("tomb"), pairs(&[("v", "c"), ("ver", &ver(12))]));
    assert_eq!(s.pttl("tomb"), -1, "the tombstone's TTL is cleared");

    // An unversioned entry (a `RedisCache::set`, with a TTL) taken over by a versioned set.
    s.raw(redis::cmd("HSET").arg("plain-entry").arg("v").arg("x"));
    s.raw(redis::cmd("PEXPIRE").arg("plain-entry").arg(50_000));
    assert_eq!(s.apply("plain-entry", 10, Some("y"), 0, true), 1);
    assert_eq!(
        s.fields("plain-entry"),
        pairs(&[("v", "y"), ("ver", &ver(10))])
    );
    assert_eq!(
        s.pttl("plain-entry"),
        -1,
        "the unversioned entry's TTL is cleared"
    );

    // A plain write on a missing key leaves only its version, expiring like a tombstone; a newer
    // synced set takes over, drops the plain version and the TTL.
    assert_eq!(s.apply("pver", 10, Some("p"), 0, false), 1);
    assert_eq!(s.fields("pver"), pairs(&[("pver", &ver(10))]));
    assert!(s.pttl("pver") > 0);
    assert_eq!(
        s.apply("pver", 10, Some("same"), 0, true),
        1,
        "an equal version applies"
    );
    assert_eq!(s.fields("pver"), pairs(&[("v", "same"), ("ver", &ver(10))]));
    assert_eq!(s.pttl("pver"), -1);

    // A plain write on a key with a value keeps the value and its (absent) TTL.
    assert_eq!(s.apply("new", 11, Some("plain"), 0, false), 1);
    assert_eq!(
        s.fields("new"),
        pairs(&[("v", "a"), ("ver", &ver(10)), ("pver", &ver(11))])
    );
    assert_eq!(s.pttl("new"), -1);
    // An older synced set loses to the plain version; a newer one clears it.
    assert_eq!(s.apply("new", 10, Some("old"), 0, true), 0);
    assert_eq!(s.apply("new", 12, Some("b"), 0, true), 1);
    assert_eq!(s.fields("new"), pairs(&[("v", "b"), ("ver", &ver(12))]));
}
