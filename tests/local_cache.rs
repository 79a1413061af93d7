//! LocalCache against a reference model, under TTLs, and under concurrent use.
//! No external services.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use distcache::{Cache, Error, LocalCache, LocalMetrics, Version};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Model-based test: one shard, small capacity, small key space, every result checked.
// ---------------------------------------------------------------------------------------------

const KEYS: u8 = 8;

fn key(k: u8) -> String {
    format!("key-{k}")
}

#[derive(Clone, Debug)]
enum Op {
    Set(u8, u32),
    Get(u8),
    Peek(u8),
    Exists(u8),
    Delete(u8),
    SetIfNewer(u8, u32, Version),
    DeleteIfNewer(u8, Version),
    VersionOf(u8),
    Invalidate(u8),
    InvalidateAll,
    Clear,
}

fn version() -> impl Strategy<Value = Version> {
    // Few distinct values so that ties and reorderings are common.
    (0u64..6, 0u64..2).prop_map(|(hlc, node)| Version::new(hlc, node))
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS;
    prop_oneof![
        6 => (k.clone(), 0u32..32).prop_map(|(k, v)| Op::Set(k, v)),
        6 => k.clone().prop_map(Op::Get),
        2 => k.clone().prop_map(Op::Peek),
        1 => k.clone().prop_map(Op::Exists),
        2 => k.clone().prop_map(Op::Delete),
        5 => (k.clone(), 0u32..32, version()).prop_map(|(k, v, ver)| Op::SetIfNewer(k, v, ver)),
        3 => (k.clone(), version()).prop_map(|(k, ver)| Op::DeleteIfNewer(k, ver)),
        1 => k.clone().prop_map(Op::VersionOf),
        1 => k.prop_map(Op::Invalidate),
        1 => Just(Op::InvalidateAll),
        1 => Just(Op::Clear),
    ]
}

/// What an operation returned, for comparing the cache with the model.
#[derive(Debug, PartialEq)]
enum Out {
    Unit,
    Value(Option<u32>),
    Bool(bool),
    Version(Option<Version>),
    Count(usize),
}

#[derive(Debug)]
struct ModelEntry {
    key: u8,
    /// `None`: a tombstone.
    value: Option<u32>,
    version: Option<Version>,
    weight: u64,
}

/// A plain LRU over a `Vec` (least recently used first), written from the documented rules.
struct Model {
    entries: Vec<ModelEntry>,
    budget: u64,
    weigh: fn(u32) -> u64,
    metrics: LocalMetrics,
}

impl Model {
    fn new(budget: u64, weigh: fn(u32) -> u64) -> Self {
        Model {
            entries: Vec::new(),
            budget,
            weigh,
            metrics: LocalMetrics::default(),
        }
    }

    fn pos(&self, k: u8) -> Option<usize> {
        self.entries.iter().position(|e| e.key == k)
    }

    fn touch(&mut self, i: usize) -> &ModelEntry {
        let e = self.entries.remove(i);
        self.entries.push(e);
        self.entries.last().unwrap()
    }

    fn live(&self) -> usize {
        self.entries.iter().filter(|e| e.value.is_some()).count()
    }

    fn read(&mut self, k: u8, touch: bool) -> Option<u32> {
        let value = match self.pos(k) {
            Some(i) if touch => self.touch(i).value,
            Some(i) => self.entries[i].value,
            None => None,
        };
        if value.is_some() {
            self.metrics.hits += 1;
        } else {
            self.metrics.misses += 1;
        }
        value
    }

    fn remove(&mut self, k: u8) -> Option<ModelEntry> {
        self.pos(k).map(|i| self.entries.remove(i))
    }

    fn write(&mut self, entry: ModelEntry, guard: Option<Version>) -> bool {
        let mut replaced_live = false;
        if let Some(i) = self.pos(entry.key) {
            let old = &self.entries[i];
            if let (Some(g), Some(old_version)) = (guard, old.version) {
                if old_version >= g {
                    self.metrics.stale_rejections += 1;
                    return false;
                }
            }
            replaced_live = old.value.is_some();
            self.entries.remove(i);
        }
        if entry.value.is_some() {
            if replaced_live {
                self.metrics.updates += 1;
            } else {
                self.metrics.inserts += 1;
            }
        }
        self.entries.push(entry);
        while self.entries.iter().map(|e| e.weight).sum::<u64>() > self.budget {
            if self.entries.remove(0).value.is_some() {
                self.metrics.evictions += 1;
            }
        }
        true
    }

    fn apply(&mut self, op: &Op) -> Out {
        match *op {
            Op::Set(k, v) => {
                let weight = (self.weigh)(v);
                if weight > self.budget {
                    self.remove(k);
                    self.metrics.evictions += 1;
                } else {
                    let entry = ModelEntry {
                        key: k,
                        value: Some(v),
                        version: None,
                        weight,
                    };
                    self.write(entry, None);
                }
                Out::Unit
            }
            Op::Get(k) => Out::Value(self.read(k, true)),
            Op::Peek(k) => Out::Value(self.read(k, false)),
            Op::Exists(k) => {
                Out::Bool(self.pos(k).is_some_and(|i| self.entries[i].value.is_some()))
            }
            Op::Delete(k) => {
                self.remove(k);
                Out::Unit
            }
            Op::SetIfNewer(k, v, ver) => {
                let weight = (self.weigh)(v);
                if weight > self.budget {
                    // Too heavy: the version still wins and is remembered by a tombstone.
                    let tombstone = ModelEntry {
                        key: k,
                        value: None,
                        version: Some(ver),
                        weight: 1,
                    };
                    let applied = self.write(tombstone, Some(ver));
                    if applied {
                        self.metrics.evictions += 1;
                    }
                    Out::Bool(applied)
                } else {
                    let entry = ModelEntry {
                        key: k,
                        value: Some(v),
                        version: Some(ver),
                        weight,
                    };
                    Out::Bool(self.write(entry, Some(ver)))
                }
            }
            Op::DeleteIfNewer(k, ver) => {
                let tombstone = ModelEntry {
                    key: k,
                    value: None,
                    version: Some(ver),
                    weight: 1,
                };
                Out::Bool(self.write(tombstone, Some(ver)))
            }
            Op::VersionOf(k) => Out::Version(self.pos(k).and_then(|i| self.entries[i].version)),
            Op::Invalidate(k) => {
                let live = self.remove(k).is_some_and(|e| e.value.is_some());
                if live {
                    self.metrics.invalidations += 1;
                }
                Out::Bool(live)
            }
            Op::InvalidateAll => {
                let live = self.live();
                self.metrics.invalidations += live as u64;
                self.entries.clear();
                Out::Count(live)
            }
            Op::Clear => {
                self.entries.clear();
                Out::Unit
            }
        }
    }

    fn metrics(&self) -> LocalMetrics {
        LocalMetrics {
            entries: self.live() as u64,
            ..self.metrics
        }
    }
}

fn apply(cache: &LocalCache<u32>, op: &Op) -> Out {
    match *op {
        Op::Set(k, v) => {
            cache.set(&key(k), v, None).unwrap();
            Out::Unit
        }
        Op::Get(k) => Out::Value(cache.get(&key(k)).unwrap()),
        Op::Peek(k) => Out::Value(cache.peek(&key(k)).unwrap()),
        Op::Exists(k) => Out::Bool(cache.exists(&key(k)).unwrap()),
        Op::Delete(k) => {
            cache.delete(&key(k)).unwrap();
            Out::Unit
        }
        Op::SetIfNewer(k, v, ver) => Out::Bool(cache.set_if_newer(&key(k), v, None, ver)),
        Op::DeleteIfNewer(k, ver) => Out::Bool(cache.delete_if_newer(&key(k), ver)),
        Op::VersionOf(k) => Out::Version(cache.version_of(&key(k))),
        Op::Invalidate(k) => Out::Bool(cache.invalidate(&key(k))),
        Op::InvalidateAll => Out::Count(cache.invalidate_all()),
        Op::Clear => {
            cache.clear().unwrap();
            Out::Unit
        }
    }
}

/// Replays `ops` on the cache and the model, comparing every result, the whole visible content
/// (through calls that neither count nor touch), `len` and the metrics after every step.
fn check_against_model(
    cache: &LocalCache<u32>,
    mut model: Model,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    for (step, op) in ops.iter().enumerate() {
        let expected = model.apply(op);
        let actual = apply(cache, op);
        prop_assert_eq!(actual, expected, "step {}: {:?}", step, op);
        for k in 0..KEYS {
            let i = model.pos(k);
            let live = i.is_some_and(|i| model.entries[i].value.is_some());
            prop_assert_eq!(
                cache.exists(&key(k)).unwrap(),
                live,
                "step {}: exists({})",
                step,
                k
            );
            let version = i.and_then(|i| model.entries[i].version);
            prop_assert_eq!(
                cache.version_of(&key(k)),
                version,
                "step {}: version_of({})",
                step,
                k
            );
        }
        prop_assert_eq!(cache.len().unwrap(), model.live(), "step {}: len", step);
        prop_assert_eq!(cache.metrics(), model.metrics(), "step {}: metrics", step);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn behaves_like_the_model(capacity in 1usize..=6, ops in prop::collection::vec(op(), 1..150)) {
        let cache = LocalCache::builder().capacity(capacity).shards(1).build().unwrap();
        check_against_model(&cache, Model::new(capacity as u64, |_| 1), &ops)?;
    }

    #[test]
    fn behaves_like_the_model_with_a_weigher(
        capacity in 3usize..=10,
        ops in prop::collection::vec(op(), 1..150),
    ) {
        fn weigh(v: u32) -> u64 {
            u64::from(v % 12 + 1)
        }
        let cache = LocalCache::builder()
            .capacity(capacity)
            .shards(1)
            .weigher(|_, v: &u32| weigh(*v))
            .build()
            .unwrap();
        check_against_model(&cache, Model::new(capacity as u64, weigh), &ops)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Versions and tombstones.
// ---------------------------------------------------------------------------------------------

fn v(hlc: u64) -> Version {
    Version::new(hlc, 0)
}

#[test]
fn set_if_newer_keeps_the_largest_version_whatever_the_arrival_order() {
    let cache = LocalCache::<u64>::builder().build().unwrap();
    let arrivals = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3];
    let mut applied = 0;
    for hlc in arrivals {
        if cache.set_if_newer("k", hlc, None, v(hlc)) {
            applied += 1;
        }
    }
    assert_eq!(applied, 4, "3, 4, 5 and 9 each beat everything before them");
    assert_eq!(cache.get("k").unwrap(), Some(9));
    assert_eq!(cache.version_of("k"), Some(v(9)));
    assert_eq!(cache.metrics().stale_rejections, 6);
    // The node id breaks ties between equal clocks.
    assert!(cache.set_if_newer("k", 10, None, Version::new(9, 1)));
    assert!(!cache.set_if_newer("k", 11, None, Version::new(9, 1)));
}

#[test]
fn a_tombstone_blocks_older_writes_and_is_invisible() {
    let cache = LocalCache::<&str>::builder().build().unwrap();
    assert!(cache.set_if_newer("k", "v1", None, v(1)));
    assert!(cache.delete_if_newer("k", v(3)));
    assert!(
        !cache.set_if_newer("k", "v2", None, v(2)),
        "older than the delete"
    );
    assert!(!cache.delete_if_newer("k", v(2)));
    assert_eq!(cache.get("k").unwrap(), None);
    assert_eq!(cache.peek("k").unwrap(), None);
    assert!(!cache.exists("k").unwrap());
    assert_eq!(cache.len().unwrap(), 0);
    assert_eq!(cache.version_of("k"), Some(v(3)));
    assert!(
        cache.set_if_newer("k", "v4", None, v(4)),
        "newer than the delete"
    );
    assert_eq!(cache.get("k").unwrap(), Some("v4"));
    // A delete of a key never seen still leaves a tombstone: its write may be on its way.
    assert!(cache.delete_if_newer("never-seen", v(7)));
    assert!(!cache.set_if_newer("never-seen", "late", None, v(6)));
}

#[test]
fn a_plain_set_overrides_versions_and_then_yields_to_any_version() {
    let cache = LocalCache::<u8>::builder().build().unwrap();
    cache.set_if_newer("k", 1, None, v(5));
    cache.set("k", 2, None).unwrap();
    assert_eq!(cache.version_of("k"), None);
    assert!(cache.set_if_newer("k", 3, None, v(1)));
    assert_eq!(cache.get("k").unwrap(), Some(3));
}

// ---------------------------------------------------------------------------------------------
// TTLs, with real time. The TTL is long enough that the presence checks right after a write always
// run (none is skipped on a slow run); expiry is checked after sleeping past the TTL, which the
// monotonic clock makes certain.
// ---------------------------------------------------------------------------------------------

const TTL: Duration = Duration::from_secs(1);
/// Past the TTL for sure.
const PAST_TTL: Duration = Duration::from_millis(1100);

#[test]
fn an_entry_expires_after_its_ttl() {
    let cache = LocalCache::<u32>::builder().build().unwrap();
    cache.set("k", 1, Some(TTL)).unwrap();
    cache.set("forever", 2, None).unwrap();
    assert_eq!(cache.get("k").unwrap(), Some(1));
    thread::sleep(PAST_TTL);
    assert_eq!(cache.get("k").unwrap(), None);
    assert!(!cache.exists("k").unwrap());
    assert_eq!(cache.get("forever").unwrap(), Some(2));
    let m = cache.metrics();
    assert_eq!(m.expirations, 1);
    assert_eq!(m.entries, 1, "the expired entry was removed when read");
}

#[test]
fn the_default_ttl_applies_when_none_is_given() {
    let cache = LocalCache::<u32>::builder()
        .default_ttl(TTL)
        .build()
        .unwrap();
    cache.set("default", 1, None).unwrap();
    cache
        .set("zero-means-default", 2, Some(Duration::ZERO))
        .unwrap();
    cache
        .set("explicit", 3, Some(Duration::from_secs(3600)))
        .unwrap();
    assert!(cache.exists("default").unwrap());
    thread::sleep(PAST_TTL);
    assert_eq!(cache.peek("default").unwrap(), None);
    assert_eq!(cache.peek("zero-means-default").unwrap(), None);
    assert_eq!(cache.peek("explicit").unwrap(), Some(3));
}

#[test]
fn an_expired_tombstone_no_longer_blocks_older_writes() {
    let cache = LocalCache::<u32>::builder()
        .tombstone_ttl(TTL)
        .build()
        .unwrap();
    assert!(cache.delete_if_newer("k", v(5)));
    assert!(
        !cache.set_if_newer("k", 3, None, v(3)),
        "the tombstone is still alive"
    );
    thread::sleep(PAST_TTL);
    assert_eq!(cache.version_of("k"), None);
    assert!(cache.set_if_newer("k", 3, None, v(3)));
    assert_eq!(cache.get("k").unwrap(), Some(3));
}

#[test]
fn an_expired_value_no_longer_blocks_older_writes() {
    let cache = LocalCache::<u32>::builder().build().unwrap();
    assert!(cache.set_if_newer("k", 5, Some(TTL), v(5)));
    thread::sleep(PAST_TTL);
    assert!(cache.set_if_newer("k", 3, None, v(3)));
    let m = cache.metrics();
    assert_eq!((m.expirations, m.inserts, m.updates), (1, 2, 0));
}

#[test]
fn writes_reclaim_expired_entries_without_reads() {
    let cache = LocalCache::<u32>::builder().shards(1).build().unwrap();
    for k in ["a", "b", "c"] {
        cache.set(k, 0, Some(TTL)).unwrap();
    }
    thread::sleep(PAST_TTL);
    assert_eq!(
        cache.len().unwrap(),
        3,
        "counted until reclaimed, as documented"
    );
    cache.set("d", 0, None).unwrap();
    assert_eq!(cache.len().unwrap(), 1);
    assert_eq!(cache.metrics().expirations, 3);
}

// ---------------------------------------------------------------------------------------------
// Weigher and builder.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_weigher_bounds_total_weight_and_evicts_lru_first() {
    let cache = LocalCache::<String>::builder()
        .capacity(100)
        .shards(1)
        .weigher(|_, v: &String| v.len() as u64)
        .build()
        .unwrap();
    let s = |n: usize| "x".repeat(n);
    cache.set("a", s(40), None).unwrap();
    cache.set("b", s(40), None).unwrap();
    cache.get("a").unwrap(); // b is now the least recently used
    cache.set("c", s(40), None).unwrap();
    assert!(cache.exists("a").unwrap() && cache.exists("c").unwrap());
    assert!(!cache.exists("b").unwrap());
    cache.set("big", s(101), None).unwrap(); // heavier than the whole budget: not stored
    assert!(!cache.exists("big").unwrap());
    cache.set("d", s(90), None).unwrap(); // pushes out both a and c
    assert_eq!(cache.len().unwrap(), 1);
    assert_eq!(cache.metrics().evictions, 4);
}

#[test]
fn the_capacity_is_split_across_shards_and_never_exceeded() {
    let cache = LocalCache::<u32>::builder()
        .capacity(1000)
        .shards(8)
        .build()
        .unwrap();
    for i in 0..50_000 {
        cache.set(&format!("key-{i}"), i, None).unwrap();
    }
    let len = cache.len().unwrap();
    assert!(len <= 1000 && len > 900, "{len}");
    assert_eq!(cache.capacity(), 1000);
    assert_eq!(cache.shards(), 8);
}

#[test]
fn the_builder_rejects_invalid_settings() {
    fn config_error(b: distcache::LocalCacheBuilder<u8>) -> String {
        match b.build() {
            Err(Error::Config(msg)) => msg,
            other => panic!("expected Error::Config, got {other:?}"),
        }
    }
    let b = LocalCache::<u8>::builder;
    assert!(config_error(b().capacity(0)).contains("capacity"));
    assert!(config_error(b().shards(0)).contains("power of two"));
    assert!(config_error(b().shards(6)).contains("power of two"));
    assert!(config_error(b().capacity(4).shards(8)).contains("capacity"));
    assert!(config_error(b().capacity(usize::MAX).shards(1 << 20)).contains("at most"));
    assert!(config_error(b().default_ttl(Duration::ZERO)).contains("default_ttl"));
    assert!(config_error(b().tombstone_ttl(Duration::ZERO)).contains("tombstone_ttl"));
    let cache = b().build().unwrap();
    assert_eq!(cache.capacity(), distcache::local::DEFAULT_CAPACITY);
    assert!(cache.shards().is_power_of_two());
}

// ---------------------------------------------------------------------------------------------
// Concurrency.
// ---------------------------------------------------------------------------------------------

/// A small xorshift generator: the threads need cheap, reproducible randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn concurrent_use_keeps_bounds_and_exact_counters() {
    const THREADS: u64 = 8;
    const OPS: u64 = 20_000;
    const CAPACITY: usize = 128;
    let cache = LocalCache::<u64>::builder()
        .capacity(CAPACITY)
        .shards(4)
        .build()
        .unwrap();
    let clock = Arc::new(AtomicU64::new(1));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = cache.clone();
            let clock = Arc::clone(&clock);
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                let (mut hits, mut misses, mut stale) = (0u64, 0u64, 0u64);
                for i in 0..OPS {
                    let k = format!("key-{}", rng.below(256));
                    let found = match rng.below(10) {
                        0..=3 => cache.get(&k).unwrap(),
                        4 => cache.peek(&k).unwrap(),
                        5 | 6 => {
                            cache.set(&k, i, None).unwrap();
                            continue;
                        }
                        7 => {
                            cache.delete(&k).unwrap();
                            continue;
                        }
                        8 => {
                            let version = Version::new(clock.fetch_add(1, Ordering::Relaxed), t);
                            // Every other write arrives late, with an old version.
                            let version = if i % 2 == 0 {
                                version
                            } else {
                                Version::new(version.hlc / 2, t)
                            };
                            if !cache.set_if_newer(&k, i, None, version) {
                                stale += 1;
                            }
                            continue;
                        }
                        _ => {
                            let version = Version::new(clock.fetch_add(1, Ordering::Relaxed), t);
                            if !cache.delete_if_newer(&k, version) {
                                stale += 1;
                            }
                            continue;
                        }
                    };
                    if found.is_some() {
                        hits += 1;
                    } else {
                        misses += 1;
                    }
                }
                (hits, misses, stale)
            })
        })
        .collect();
    let (mut hits, mut misses, mut stale) = (0, 0, 0);
    for h in handles {
        let (h, m, s) = h.join().expect("worker panicked");
        hits += h;
        misses += m;
        stale += s;
    }
    let m = cache.metrics();
    let len = cache.len().unwrap();
    assert!(
        len <= CAPACITY,
        "{len} entries for a capacity of {CAPACITY}"
    );
    assert_eq!(m.entries as usize, len);
    assert_eq!((m.hits, m.misses), (hits, misses));
    assert_eq!(m.stale_rejections, stale);
    assert!(m.evictions > 0 && m.inserts > 0 && m.updates > 0, "{m:?}");
    assert_eq!(m.expirations + m.invalidations, 0);
}

#[test]
fn concurrent_versioned_writes_converge_to_the_largest_version() {
    const THREADS: u64 = 6;
    const ROUNDS: u64 = 3_000;
    const KEYS: u64 = 16;
    let cache = LocalCache::<Version>::builder()
        .capacity(1024)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = cache.clone();
            thread::spawn(move || {
                let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (t + 1));
                // Per thread, versions of a key only increase; threads interleave freely.
                let mut written: HashMap<u64, (Version, bool)> = HashMap::new();
                for round in 0..ROUNDS {
                    let k = rng.below(KEYS);
                    let version = Version::new(round, t);
                    let is_delete = rng.below(5) == 0;
                    if is_delete {
                        cache.delete_if_newer(&key(k as u8), version);
                    } else {
                        cache.set_if_newer(&key(k as u8), version, None, version);
                    }
                    written.insert(k, (version, is_delete));
                }
                written
            })
        })
        .collect();
    let mut newest: HashMap<u64, (Version, bool)> = HashMap::new();
    for h in handles {
        for (k, (version, is_delete)) in h.join().expect("worker panicked") {
            let slot = newest.entry(k).or_insert((version, is_delete));
            if version > slot.0 {
                *slot = (version, is_delete);
            }
        }
    }
    for (k, (version, is_delete)) in newest {
        let name = key(k as u8);
        assert_eq!(cache.version_of(&name), Some(version), "{name}");
        let expected = if is_delete { None } else { Some(version) };
        assert_eq!(cache.get(&name).unwrap(), expected, "{name}");
    }
}

#[test]
fn invalidate_unless_newer_keeps_newer_values_and_tombstones() {
    let cache = LocalCache::<u32>::builder().capacity(16).build().unwrap();
    let v = |hlc| Version::new(hlc, 1);

    cache.set_if_newer("newer", 1, None, v(20));
    assert!(!cache.invalidate_unless_newer("newer", v(19)));
    assert_eq!(cache.get("newer").unwrap(), Some(1));

    cache.set_if_newer("same", 2, None, v(20));
    assert!(cache.invalidate_unless_newer("same", v(20)));
    assert_eq!(cache.get("same").unwrap(), None);

    cache.set("plain", 3, None).unwrap();
    assert!(cache.invalidate_unless_newer("plain", v(1)));
    assert_eq!(cache.get("plain").unwrap(), None);

    cache.delete_if_newer("gone", v(30));
    assert!(!cache.invalidate_unless_newer("gone", v(40)));
    assert!(
        !cache.set_if_newer("gone", 4, None, v(25)),
        "the tombstone still blocks older writes"
    );
    assert!(!cache.invalidate_unless_newer("missing", v(1)));
    assert_eq!(cache.metrics().invalidations, 2);
}
