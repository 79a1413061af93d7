//! The Redis tier (`RedisCache<T>`) against a real `redis-server` started by tests/support: typed round trips
//! for both codecs (and what JSON looks like in Redis), TTLs, key-prefix isolation with `SCAN` over several
//! pages, the `Cache` semantics, a server killed or hung mid-test, corrupt stored values, bad configuration,
//! and a shared handle under concurrency (authentication: `redis_auth.rs`).

mod support;

use std::collections::HashMap;
use std::fmt::Debug;
use std::thread;
use std::time::{Duration, Instant};

use distcache::{Cache, Codec, Error, RedisCache};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use support::{free_port, wait_until, RedisServer};

/// The bound for "fails fast, never hangs" assertions.
const FAIL_FAST: Duration = Duration::from_secs(3);
/// How long a restarted or resumed server may take to serve this cache again.
const RECOVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Address {
    street: String,
    zip: u32,
    geo: (f64, f64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    address: Address,
    tags: Vec<String>,
    shape: Shape,
    nick: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Circle(f64),
    Pair(i32, i32),
    Rect { w: u32, h: u32 },
}

fn sample_user() -> User {
    User {
        id: 42,
        name: "Ana Müller".into(),
        address: Address {
            street: "Hauptstraße 1".into(),
            zip: 10115,
            geo: (52.52, 13.405),
        },
        tags: vec!["admin".into(), "beta".into()],
        shape: Shape::Rect { w: 3, h: 4 },
        nick: Some("ana".into()),
    }
}

/// A direct connection to the test server, for reading and planting raw data behind the cache's back.
fn raw(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).expect("raw redis client");
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("raw redis connection");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("raw read timeout");
    conn.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("raw write timeout");
    conn
}

fn hget(conn: &mut redis::Connection, key: &str, field: &str) -> Option<Vec<u8>> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(conn)
        .expect("raw HGET")
}

fn pttl(conn: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(conn).expect("raw PTTL")
}

fn dbsize(conn: &mut redis::Connection) -> usize {
    redis::cmd("DBSIZE").query(conn).expect("raw DBSIZE")
}

fn cache<T: Serialize + DeserializeOwned>(
    redis: &RedisServer,
    prefix: &str,
    codec: Codec,
) -> RedisCache<T> {
    RedisCache::<T>::builder(redis.url())
        .key_prefix(prefix)
        .codec(codec)
        .build()
        .expect("build RedisCache")
}

/// Sets `value` under `key`, reads it back through this handle and a fresh one, and checks the raw hash:
/// `v` holds exactly what the codec produces (for JSON: serde_json's output), and a plain set stores no `ver`.
fn round_trip<T>(redis: &RedisServer, codec: Codec, key: &str, value: T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let prefix = format!("rt:{codec:?}:");
    let typed = cache::<T>(redis, &prefix, codec);
    typed.set(key, value.clone(), None).expect("set");
    assert_eq!(
        typed.get(key).expect("get"),
        Some(value.clone()),
        "{codec:?} get {key}"
    );
    assert_eq!(
        typed.peek(key).expect("peek"),
        Some(value.clone()),
        "{codec:?} peek {key}"
    );
    let fresh = cache::<T>(redis, &prefix, codec);
    assert_eq!(
        fresh.get(key).expect("get"),
        Some(value.clone()),
        "{codec:?} fresh handle {key}"
    );

    let mut conn = raw(&redis.url());
    let full = format!("{prefix}{key}");
    let stored = hget(&mut conn, &full, "v").unwrap_or_else(|| panic!("no field v at {full}"));
    assert_eq!(
        codec.decode::<T>(&stored).expect("stored bytes decode"),
        value,
        "{codec:?} raw {full}"
    );
    if codec == Codec::Json {
        // Compared as JSON values, so a HashMap's iteration order does not matter.
        let stored: serde_json::Value = serde_json::from_slice(&stored)
            .unwrap_or_else(|e| panic!("{full} does not hold JSON ({e}): {stored:?}"));
        assert_eq!(
            stored,
            serde_json::to_value(&value).expect("to_value"),
            "{full}"
        );
    }
    assert_eq!(
        hget(&mut conn, &full, "ver"),
        None,
        "a plain set stores no version"
    );
}

fn round_trips(codec: Codec) {
    let redis = RedisServer::start();
    round_trip(&redis, codec, "user", sample_user());
    round_trip(&redis, codec, "u64-max", u64::MAX);
    round_trip(&redis, codec, "u64-zero", 0u64);
    round_trip(&redis, codec, "i64-min", i64::MIN);
    round_trip(&redis, codec, "i64-neg", -7i64);
    round_trip(
        &redis,
        codec,
        "string",
        "héllo \"wörld\"\n\u{1F980}".to_string(),
    );
    round_trip(&redis, codec, "empty-string", String::new());
    round_trip(&redis, codec, "vec", vec![1u32, 2, 3, u32::MAX]);
    round_trip(&redis, codec, "empty-vec", Vec::<String>::new());
    round_trip(&redis, codec, "bytes", vec![0u8, 0xff, b'\r', b'\n', 0]);
    round_trip(&redis, codec, "enum-unit", Shape::Unit);
    round_trip(&redis, codec, "enum-newtype", Shape::Circle(1.5));
    round_trip(&redis, codec, "enum-tuple", Shape::Pair(-1, i32::MAX));
    round_trip(&redis, codec, "enum-struct", Shape::Rect { w: 3, h: 4 });
    round_trip(&redis, codec, "option-some", Some(sample_user()));
    round_trip(&redis, codec, "option-none", None::<User>);
    round_trip(
        &redis,
        codec,
        "map",
        HashMap::from([
            ("a".to_string(), vec![1i64, -2]),
            ("b".to_string(), vec![]),
            ("ç".to_string(), vec![i64::MAX]),
        ]),
    );
    let users: HashMap<u32, User> = (0..20).map(|i| (i, sample_user())).collect();
    round_trip(&redis, codec, "map-of-structs", users);
    // Keys are opaque: spaces, unicode and glob characters are fine.
    round_trip(&redis, codec, "we*ird [key]? ü", 7u64);
}

#[test]
fn json_round_trips_typed_values() {
    round_trips(Codec::Json);
}

#[test]
fn binary_round_trips_typed_values() {
    round_trips(Codec::Binary);
}

/// JSON is the default codec and what it stores is readable by anyone: exactly serde_json's bytes.
#[test]
fn json_values_are_inspectable_in_redis() {
    let redis = RedisServer::start();
    let users: RedisCache<User> = RedisCache::builder(redis.url())
        .key_prefix("app:users:")
        .build()
        .expect("build");
    let shapes = cache::<Shape>(&redis, "app:shapes:", Codec::Json);
    let mut conn = raw(&redis.url());

    let user = sample_user();
    users.set("42", user.clone(), None).expect("set user");
    let stored = hget(&mut conn, "app:users:42", "v").expect("user stored");
    assert_eq!(stored, serde_json::to_vec(&user).expect("serde_json"));
    assert_eq!(
        String::from_utf8(stored).expect("utf-8"),
        r#"{"id":42,"name":"Ana Müller","address":{"street":"Hauptstraße 1","zip":10115,"geo":[52.52,13.405]},"tags":["admin","beta"],"shape":{"Rect":{"w":3,"h":4}},"nick":"ana"}"#
    );

    for (key, shape, json) in [
        ("unit", Shape::Unit, r#""Unit""#),
        ("circle", Shape::Circle(1.5), r#"{"Circle":1.5}"#),
        ("pair", Shape::Pair(1, -2), r#"{"Pair":[1,-2]}"#),
        (
            "rect",
            Shape::Rect { w: 3, h: 4 },
            r#"{"Rect":{"w":3,"h":4}}"#,
        ),
    ] {
        shapes.set(key, shape, None).expect("set shape");
        let stored = hget(&mut conn, &format!("app:shapes:{key}"), "v").expect("shape stored");
        assert_eq!(String::from_utf8_lossy(&stored), json, "{key}");
    }

    // The binary codec stores postcard bytes: smaller than JSON and not JSON at all.
    let binary = cache::<User>(&redis, "app:bin:", Codec::Binary);
    binary.set("42", user.clone(), None).expect("set binary");
    let stored = hget(&mut conn, "app:bin:42", "v").expect("binary stored");
    assert_eq!(stored, Codec::Binary.encode(&user).expect("encode"));
    assert!(stored.len() < serde_json::to_vec(&user).expect("json").len());
    assert!(serde_json::from_slice::<serde_json::Value>(&stored).is_err());
}

#[test]
fn ttl_expires_entries_and_a_plain_set_persists() {
    let redis = RedisServer::start();
    let cache = cache::<String>(&redis, "ttl:", Codec::Json);
    let mut conn = raw(&redis.url());

    // A short TTL: present at first, gone soon after. Long enough that the presence checks always run.
    cache
        .set("short", "v".into(), Some(Duration::from_secs(2)))
        .expect("set short");
    let got = cache.get("short").expect("get short");
    let exists = cache.exists("short").expect("exists short");
    let ttl = pttl(&mut conn, "ttl:short");
    assert_eq!(got.as_deref(), Some("v"));
    assert!(exists);
    assert!(ttl > 0 && ttl <= 2000, "PTTL {ttl}");
    assert!(
        wait_until(Duration::from_secs(10), || cache
            .get("short")
            .expect("get")
            .is_none()),
        "a 2 s entry still present after 10 s"
    );
    assert!(!cache.exists("short").expect("exists"));
    assert_eq!(pttl(&mut conn, "ttl:short"), -2, "the whole hash expired");

    // A long TTL: checked without timing assumptions.
    cache
        .set("long", "v".into(), Some(Duration::from_secs(60)))
        .expect("set long");
    let ttl = pttl(&mut conn, "ttl:long");
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");
    assert_eq!(cache.get("long").expect("get").as_deref(), Some("v"));

    // Overwriting with a new TTL replaces the old one.
    cache
        .set("long", "w".into(), Some(Duration::from_secs(600)))
        .expect("set longer");
    let ttl = pttl(&mut conn, "ttl:long");
    assert!(ttl > 60_000 && ttl <= 600_000, "PTTL {ttl}");

    // A set without TTL after a TTL'd one persists.
    cache.set("long", "x".into(), None).expect("set no ttl");
    assert_eq!(pttl(&mut conn, "ttl:long"), -1);
    assert_eq!(cache.get("long").expect("get").as_deref(), Some("x"));

    // Sub-millisecond TTLs round up to 1 ms rather than becoming "no TTL".
    cache
        .set("tiny", "v".into(), Some(Duration::from_micros(10)))
        .expect("set tiny");
    assert!(
        wait_until(Duration::from_secs(5), || cache
            .get("tiny")
            .expect("get")
            .is_none()),
        "a 10 µs entry never expired"
    );
    assert_ne!(pttl(&mut conn, "ttl:tiny"), -1);
}

/// Two prefixes on one server, one holding 2 500 keys (several `SCAN` pages), next to raw keys that an
/// unescaped `MATCH a*[x]:*` would also match: `len` and `clear` count and remove only their own prefix.
#[test]
fn key_prefixes_isolate_caches_and_match_literally() {
    const MANY: usize = 2500;
    const FEW: usize = 30;
    let redis = RedisServer::start();
    let mut conn = raw(&redis.url());
    // `a*[x]:` as a glob also matches `abx:…` and `a*x:…`.
    let globby = cache::<u64>(&redis, "a*[x]:", Codec::Json);
    let other = cache::<u64>(&redis, "abx:", Codec::Binary);

    for i in 0..MANY {
        globby
            .set(&format!("k{i}"), i as u64, None)
            .expect("set globby");
    }
    for i in 0..FEW {
        other
            .set(&format!("k{i}"), 1_000_000 + i as u64, None)
            .expect("set other");
    }
    // Raw keys outside both prefixes: plain strings, so a HEXISTS on them would fail with WRONGTYPE.
    for key in ["unprefixed", "a*x:lookalike", "a*[x]"] {
        redis::cmd("SET")
            .arg(key)
            .arg("raw")
            .query::<()>(&mut conn)
            .expect("raw SET");
    }
    // A tombstone under the prefix (version only, no value): not an entry, but `clear` removes it.
    redis::cmd("HSET")
        .arg("a*[x]:tomb")
        .arg("ver")
        .arg("0000000000000001000000000000000a")
        .query::<()>(&mut conn)
        .expect("raw HSET tombstone");
    assert_eq!(dbsize(&mut conn), MANY + FEW + 3 + 1);

    // Same key name, different caches, different values.
    assert_eq!(globby.get("k7").expect("get"), Some(7));
    assert_eq!(other.get("k7").expect("get"), Some(1_000_007));
    assert_eq!(
        globby.get(&format!("k{}", MANY - 1)).expect("get"),
        Some(MANY as u64 - 1)
    );
    assert_eq!(other.get(&format!("k{FEW}")).expect("get"), None);
    assert!(!other.exists("k100").expect("exists"));
    assert!(!globby.exists("tomb").expect("exists tombstone"));
    assert_eq!(globby.get("tomb").expect("get tombstone"), None);

    assert_eq!(globby.len().expect("len globby"), MANY);
    assert_eq!(other.len().expect("len other"), FEW);
    assert!(!globby.is_empty().expect("is_empty"));

    globby.clear().expect("clear globby");
    assert_eq!(globby.len().expect("len globby"), 0);
    assert!(globby.is_empty().expect("is_empty"));
    assert_eq!(other.len().expect("len other"), FEW);
    assert_eq!(other.get("k7").expect("get"), Some(1_000_007));
    assert_eq!(
        dbsize(&mut conn),
        FEW + 3,
        "clear removed only its own prefix (tombstone too)"
    );
    for key in ["unprefixed", "a*x:lookalike", "a*[x]"] {
        let v: Option<String> = redis::cmd("GET")
            .arg(key)
            .query(&mut conn)
            .expect("raw GET");
        assert_eq!(v.as_deref(), Some("raw"), "{key}");
    }

    other.clear().expect("clear other");
    assert_eq!(other.len().expect("len other"), 0);
    assert_eq!(dbsize(&mut conn), 3, "raw keys survive both clears");
    // Clearing an empty prefix is fine.
    other.clear().expect("clear again");
}

#[test]
fn exists_peek_delete_semantics() {
    let redis = RedisServer::start();
    let cache = cache::<User>(&redis, "sem:", Codec::Json);
    let mut conn = raw(&redis.url());
    let user = sample_user();

    assert!(!cache.exists("u").expect("exists"));
    assert_eq!(cache.get("u").expect("get miss"), None);
    assert_eq!(cache.peek("u").expect("peek miss"), None);
    assert_eq!(cache.len().expect("len"), 0);
    assert!(cache.is_empty().expect("is_empty"));

    cache.set("u", user.clone(), None).expect("set");
    assert!(cache.exists("u").expect("exists"));
    assert_eq!(cache.peek("u").expect("peek"), Some(user.clone()));
    assert_eq!(cache.get("u").expect("get"), Some(user.clone()));
    assert_eq!(cache.len().expect("len"), 1);

    // Overwrite replaces.
    let renamed = User {
        name: "Bea".into(),
        ..user.clone()
    };
    cache.set("u", renamed.clone(), None).expect("overwrite");
    assert_eq!(cache.get("u").expect("get"), Some(renamed));
    assert_eq!(cache.len().expect("len"), 1);

    // A plain set over a versioned entry drops the stale version.
    redis::cmd("HSET")
        .arg("sem:u")
        .arg("ver")
        .arg("0000000000000001000000000000000a")
        .query::<()>(&mut conn)
        .expect("raw HSET ver");
    cache
        .set("u", user.clone(), None)
        .expect("set over versioned");
    assert_eq!(hget(&mut conn, "sem:u", "ver"), None);

    cache.delete("u").expect("delete");
    assert!(!cache.exists("u").expect("exists after delete"));
    assert_eq!(cache.get("u").expect("get after delete"), None);
    assert_eq!(cache.peek("u").expect("peek after delete"), None);
    let exists: bool = redis::cmd("EXISTS")
        .arg("sem:u")
        .query(&mut conn)
        .expect("raw EXISTS");
    assert!(!exists, "delete removes the whole hash");

    // Deleting what is not there is not an error.
    cache.delete("u").expect("delete twice");
    cache.delete("never-set").expect("delete missing");
    assert_eq!(cache.len().expect("len"), 0);
}

/// SIGKILL the server under a live cache: every operation fails fast with a transient error (no hang, no
/// panic, no leaked pool slot), and the same handle works again once the server is back.
#[test]
fn killed_redis_fails_fast_and_recovers_after_restart() {
    let redis = RedisServer::start();
    let cache: RedisCache<String> = RedisCache::builder(redis.url())
        .key_prefix("kill:")
        .pool_size(2)
        .build()
        .expect("build");
    cache
        .set("before", "x".into(), None)
        .expect("set before kill");
    assert_eq!(cache.get("before").expect("get").as_deref(), Some("x"));

    redis.kill();

    type Op = fn(&RedisCache<String>) -> Result<(), Error>;
    let ops: [(&str, Op); 7] = [
        ("get", |c| c.get("before").map(drop)),
        ("set", |c| c.set("k", "v".into(), None)),
        ("peek", |c| c.peek("before").map(drop)),
        ("exists", |c| c.exists("before").map(drop)),
        ("delete", |c| c.delete("before")),
        ("len", |c| c.len().map(drop)),
        ("clear", |c| c.clear()),
    ];
    // Twice round, more calls than pool slots: a failed connect must give its slot back, or later calls
    // would wait for the pool and report "all connections busy".
    for round in 0..2 {
        for (name, op) in ops {
            let started = Instant::now();
            let result = op(&cache);
            let elapsed = started.elapsed();
            assert!(
                elapsed < FAIL_FAST,
                "{name} (round {round}) took {elapsed:?}"
            );
            match result {
                Err(Error::Unavailable { service, .. }) => assert_eq!(service, "redis"),
                Err(Error::Timeout { ref what, .. }) => {
                    assert!(!what.contains("busy"), "{name}: pool slot leaked: {what}")
                }
                other => panic!("{name} (round {round}) with redis down: {other:?}"),
            }
        }
    }

    // Building a new handle while the server is down fails the same way.
    let started = Instant::now();
    let built = RedisCache::<String>::builder(redis.url()).build();
    assert!(
        started.elapsed() < FAIL_FAST,
        "build took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(built, Err(Error::Unavailable { .. })),
        "build with redis down: {built:?}"
    );

    redis.restart();
    assert!(
        wait_until(RECOVERY, || cache.set("after", "y".into(), None).is_ok()),
        "cache did not recover after restart; log:\n{}",
        redis.log_tail(10)
    );
    assert_eq!(cache.get("after").expect("get after").as_deref(), Some("y"));
    // The restarted server came back empty.
    assert_eq!(cache.get("before").expect("get before"), None);
    assert_eq!(cache.len().expect("len"), 1);
}

/// SIGSTOP the server (it keeps its port but answers nothing): a request gives up after `io_timeout`.
#[test]
fn hung_redis_times_out_and_recovers_after_resume() {
    let redis = RedisServer::start();
    let cache: RedisCache<String> = RedisCache::builder(redis.url())
        .key_prefix("hang:")
        .connect_timeout(Duration::from_millis(500))
        .io_timeout(Duration::from_millis(500))
        .build()
        .expect("build");
    cache.set("k", "v".into(), None).expect("set");

    assert!(redis.pause(), "SIGSTOP redis-server");
    let results: Vec<_> = (0..2)
        .map(|_| {
            let started = Instant::now();
            let result = cache.get("k");
            (started.elapsed(), result)
        })
        .collect();
    assert!(redis.resume(), "SIGCONT redis-server");
    for (elapsed, result) in results {
        assert!(elapsed < FAIL_FAST, "get on a hung server took {elapsed:?}");
        assert!(
            matches!(
                result,
                Err(Error::Timeout { .. } | Error::Unavailable { .. })
            ),
            "get on a hung server: {result:?}"
        );
    }

    assert!(
        wait_until(
            RECOVERY,
            || matches!(cache.get("k"), Ok(Some(ref v)) if v == "v")
        ),
        "cache did not recover after resume"
    );
}

/// Undecodable bytes in `v`: a `Codec` error naming the key, for both codecs; the entry can be replaced.
#[test]
fn corrupt_stored_value_is_a_codec_error_naming_the_key() {
    let redis = RedisServer::start();
    let mut conn = raw(&redis.url());
    for codec in [Codec::Json, Codec::Binary] {
        let prefix = format!("corrupt:{codec:?}:");
        let users = cache::<User>(&redis, &prefix, codec);
        let strings = cache::<String>(&redis, &prefix, codec);
        let full = format!("{prefix}bad");
        redis::cmd("HSET")
            .arg(&full)
            .arg("v")
            .arg(&b"\xff\xfe garbage"[..])
            .query::<()>(&mut conn)
            .expect("raw HSET");

        for (what, result) in [
            ("get User", users.get("bad").map(drop)),
            ("peek User", users.peek("bad").map(drop)),
            ("get String", strings.get("bad").map(drop)),
        ] {
            match result {
                Err(err @ Error::Codec(_)) => {
                    let message = err.to_string();
                    assert!(message.contains(&full), "{codec:?} {what}: {message}");
                }
                other => panic!("{codec:?} {what} of garbage: {other:?}"),
            }
        }
        // The entry exists (it holds a value), and it can be repaired or removed.
        assert!(users.exists("bad").expect("exists"));
        users
            .set("bad", sample_user(), None)
            .expect("overwrite garbage");
        assert_eq!(users.get("bad").expect("get repaired"), Some(sample_user()));
        users.delete("bad").expect("delete");
    }

    // A value of another type is also a codec error, not a panic or a wrong value.
    let strings = cache::<String>(&redis, "mixed:", Codec::Json);
    let users = cache::<User>(&redis, "mixed:", Codec::Json);
    strings
        .set("k", "just a string".into(), None)
        .expect("set string");
    assert!(matches!(users.get("k"), Err(Error::Codec(_))));
}

/// Keys under the prefix that the cache did not write: a non-UTF-8 key is still an entry to `len` and `clear`,
/// and a key of another Redis type is a `Rejected` error on read (not a panic, not a wrong value).
#[test]
fn foreign_keys_under_the_prefix_are_handled() {
    let redis = RedisServer::start();
    let mut conn = raw(&redis.url());
    let cache = cache::<String>(&redis, "foreign:", Codec::Json);
    cache.set("mine", "v".into(), None).expect("set");

    redis::cmd("HSET")
        .arg(&b"foreign:\xff\xfe"[..])
        .arg("v")
        .arg("\"binary key\"")
        .query::<()>(&mut conn)
        .expect("raw HSET binary key");
    assert_eq!(cache.len().expect("len with a non-UTF-8 key"), 2);

    redis::cmd("SET")
        .arg("foreign:plain")
        .arg("x")
        .query::<()>(&mut conn)
        .expect("raw SET");
    let got = cache.get("plain");
    assert!(
        matches!(got, Err(Error::Rejected(_))),
        "get of a string key: {got:?}"
    );
    let set = cache.set("plain", "v".into(), None);
    assert!(
        matches!(set, Err(Error::Rejected(_))),
        "set over a string key: {set:?}"
    );

    cache.clear().expect("clear with foreign keys");
    assert_eq!(dbsize(&mut conn), 0);
    assert_eq!(cache.len().expect("len"), 0);
}

#[test]
fn bad_configuration_and_unreachable_server_are_reported() {
    // Nothing listens on a port that was free a moment ago.
    let port = free_port();
    let started = Instant::now();
    let built = RedisCache::<String>::builder(format!("redis://127.0.0.1:{port}/")).build();
    assert!(
        started.elapsed() < FAIL_FAST,
        "build took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            built,
            Err(Error::Unavailable {
                service: "redis",
                ..
            })
        ),
        "unreachable: {built:?}"
    );

    for url in [
        "not a url",
        "",
        "http://127.0.0.1:6380/",
        "redis://127.0.0.1:notaport/",
    ] {
        let started = Instant::now();
        let built = RedisCache::<String>::builder(url).build();
        assert!(
            started.elapsed() < FAIL_FAST,
            "{url:?} took {:?}",
            started.elapsed()
        );
        assert!(matches!(built, Err(Error::Config(_))), "{url:?}: {built:?}");
    }

    // Settings are validated before any connection is tried (against a live server too).
    let redis = RedisServer::start();
    let built = RedisCache::<String>::builder(redis.url())
        .pool_size(0)
        .build();
    assert!(
        matches!(built, Err(Error::Config(_))),
        "pool_size(0): {built:?}"
    );
    let built = RedisCache::<String>::builder(redis.url())
        .io_timeout(Duration::ZERO)
        .build();
    assert!(
        matches!(built, Err(Error::Config(_))),
        "io_timeout(0): {built:?}"
    );
    let built = RedisCache::<String>::builder(redis.url())
        .connect_timeout(Duration::ZERO)
        .build();
    assert!(
        matches!(built, Err(Error::Config(_))),
        "connect_timeout(0): {built:?}"
    );
    // And the same server is fine with sane settings.
    RedisCache::<String>::builder(redis.url())
        .pool_size(1)
        .build()
        .expect("build with pool_size(1)");
}

/// One handle cloned into 8 threads over a pool of 4: every call succeeds, every thread reads its own
/// writes, and the pool never opens more than 4 connections.
#[test]
fn clones_share_a_bounded_pool_across_threads() {
    const THREADS: usize = 8;
    const OPS: usize = 200;
    let redis = RedisServer::start();
    let cache: RedisCache<(usize, usize, String)> = RedisCache::builder(redis.url())
        .key_prefix("conc:")
        .pool_size(4)
        .build()
        .expect("build");

    thread::scope(|s| {
        for t in 0..THREADS {
            let cache = cache.clone();
            s.spawn(move || {
                for i in 0..OPS {
                    let key = format!("t{t}:k{i}");
                    let value = (t, i, format!("value {t}/{i}"));
                    cache.set(&key, value.clone(), None).expect("set");
                    assert_eq!(cache.get(&key).expect("get"), Some(value));
                    // Everyone also races on one shared key.
                    cache
                        .set("shared", (t, i, String::new()), None)
                        .expect("set shared");
                }
            });
        }
    });

    assert_eq!(cache.len().expect("len"), THREADS * OPS + 1);
    let (t, i, _) = cache
        .get("shared")
        .expect("get shared")
        .expect("shared present");
    assert!(t < THREADS && i == OPS - 1, "shared = ({t}, {i})");
    assert_eq!(
        cache.get("t7:k199").expect("get"),
        Some((7, 199, "value 7/199".to_string()))
    );

    let mut conn = raw(&redis.url());
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut conn)
        .expect("INFO");
    let clients: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info}"));
    assert!(
        clients <= 4 + 1,
        "{clients} clients (pool of 4 + this raw one)"
    );
}
