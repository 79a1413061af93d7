//! LocalCache against moka, quick_cache and one `Mutex<lru::LruCache>`.
//!
//! Workload (the one DESIGN.md quotes): 1M distinct 16-byte `String` keys, Zipf(0.99) key
//! popularity, 90 % `get` / 10 % `set`, capacity 100k entries, `u64` values, on 1 and 2
//! threads. Each thread replays its own pre-generated trace of 100k operations, so the random
//! number generator runs before the clock starts. A threaded iteration is timed from the moment
//! all threads pass a barrier until the last one finishes (`iter_custom`).
//!
//! `hit_path` times a single-threaded `get` of a present key, keys drawn from the same Zipf
//! popularity.
//!
//! `scripts/bench.sh local` runs this and prints the comparison table.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use distcache::{Cache, LocalCache};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

const KEYS: usize = 1_000_000;
const CAPACITY: usize = 100_000;
const OPS_PER_THREAD: usize = 100_000;
const WRITE_PERCENT: u32 = 10;
const ZIPF_EXPONENT: f64 = 0.99;
const HIT_TRACE_LEN: usize = 1 << 16;

/// The operations every implementation is measured on.
trait Subject: Sync {
    /// Returns whether it was a hit.
    fn get(&self, key: &str) -> bool;
    fn set(&self, key: &str, value: u64);
}

impl Subject for LocalCache<u64> {
    fn get(&self, key: &str) -> bool {
        matches!(Cache::get(self, key), Ok(Some(_)))
    }
    fn set(&self, key: &str, value: u64) {
        let _ = Cache::set(self, key, value, None);
    }
}

impl Subject for moka::sync::Cache<String, u64> {
    fn get(&self, key: &str) -> bool {
        moka::sync::Cache::get(self, key).is_some()
    }
    fn set(&self, key: &str, value: u64) {
        self.insert(key.to_owned(), value);
    }
}

impl Subject for quick_cache::sync::Cache<String, u64> {
    fn get(&self, key: &str) -> bool {
        quick_cache::sync::Cache::get(self, key).is_some()
    }
    fn set(&self, key: &str, value: u64) {
        self.insert(key.to_owned(), value);
    }
}

/// One global lock around one LRU: the baseline the sharding has to beat.
struct MutexLru(parking_lot::Mutex<lru::LruCache<String, u64>>);

impl Subject for MutexLru {
    fn get(&self, key: &str) -> bool {
        self.0.lock().get(key).is_some()
    }
    fn set(&self, key: &str, value: u64) {
        self.0.lock().put(key.to_owned(), value);
    }
}

#[derive(Clone, Copy)]
struct Op {
    key: u32,
    write: bool,
}

struct Workload {
    /// `keys[i]` is the key of popularity rank `i` (0 = most popular): 16 bytes each.
    keys: Vec<String>,
    /// One trace per thread.
    traces: Vec<Vec<Op>>,
}

impl Workload {
    fn new(threads: usize) -> Self {
        let keys: Vec<String> = (0..KEYS).map(|i| format!("key:{i:012}")).collect();
        debug_assert!(keys.iter().all(|k| k.len() == 16));
        let traces = (0..threads)
            .map(|t| {
                let mut rng = StdRng::seed_from_u64(0x5eed + t as u64);
                let zipf = zipf();
                (0..OPS_PER_THREAD)
                    .map(|_| Op {
                        key: rank(&zipf, &mut rng),
                        write: rng.random_range(0..100) < WRITE_PERCENT,
                    })
                    .collect()
            })
            .collect();
        Workload { keys, traces }
    }
}

fn zipf() -> Zipf<f64> {
    Zipf::new(KEYS as f64, ZIPF_EXPONENT).expect("valid Zipf parameters")
}

/// A popularity rank in `0..KEYS`.
fn rank(zipf: &Zipf<f64>, rng: &mut StdRng) -> u32 {
    (zipf.sample(rng) as u32 - 1).min(KEYS as u32 - 1)
}

fn run_trace<S: Subject>(cache: &S, keys: &[String], trace: &[Op]) {
    for op in trace {
        let key = &keys[op.key as usize];
        if op.write {
            cache.set(key, u64::from(op.key));
        } else {
            black_box(cache.get(key));
        }
    }
}

/// Runs the first `threads` traces concurrently; returns the wall time from the common start.
fn run_threads<S: Subject>(cache: &S, workload: &Workload, threads: usize) -> Duration {
    if threads == 1 {
        let start = Instant::now();
        run_trace(cache, &workload.keys, &workload.traces[0]);
        return start.elapsed();
    }
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = workload.traces[..threads]
            .iter()
            .map(|trace| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    run_trace(cache, &workload.keys, trace);
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min().expect("threads ran");
    let end = spans.iter().map(|s| s.1).max().expect("threads ran");
    end - start
}

/// With the default shard count (64 on a machine of up to 16 cores).
fn local_cache() -> LocalCache<u64> {
    LocalCache::builder()
        .capacity(CAPACITY)
        .build()
        .expect("valid config")
}

fn moka_cache() -> moka::sync::Cache<String, u64> {
    moka::sync::Cache::new(CAPACITY as u64)
}

fn quick_cache() -> quick_cache::sync::Cache<String, u64> {
    quick_cache::sync::Cache::new(CAPACITY)
}

fn mutex_lru() -> MutexLru {
    MutexLru(parking_lot::Mutex::new(lru::LruCache::new(
        std::num::NonZeroUsize::new(CAPACITY).expect("nonzero"),
    )))
}

fn mixed_one<S: Subject>(c: &mut Criterion, workload: &Workload, name: &str, cache: S) {
    let mut group = c.benchmark_group("local_mixed");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    // Warm the cache so every implementation starts full.
    for trace in &workload.traces {
        run_trace(&cache, &workload.keys, trace);
    }
    for threads in [1, 2] {
        group.throughput(Throughput::Elements((OPS_PER_THREAD * threads) as u64));
        group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run_threads(&cache, workload, threads))
                    .sum()
            })
        });
    }
    group.finish();
}

fn mixed(c: &mut Criterion) {
    let workload = Workload::new(2);
    mixed_one(c, &workload, "LocalCache", local_cache());
    mixed_one(c, &workload, "quick_cache", quick_cache());
    mixed_one(c, &workload, "moka", moka_cache());
    mixed_one(c, &workload, "Mutex-lru", mutex_lru());
}

fn hit_one<S: Subject>(c: &mut Criterion, keys: &[String], trace: &[u32], name: &str, cache: S) {
    let mut group = c.benchmark_group("local_hit");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for &i in trace {
        cache.set(&keys[i as usize], u64::from(i));
    }
    group.bench_function(BenchmarkId::new(name, 1), |b| {
        let mut i = 0;
        b.iter(|| {
            let key = &keys[trace[i] as usize];
            i = (i + 1) % trace.len();
            assert!(cache.get(key), "hit-path key missing");
        })
    });
    group.finish();
}

/// `get` of a present key. The present keys are the 50k most popular ones, read in Zipf order.
fn hit_path(c: &mut Criterion) {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key:{i:012}")).collect();
    let present = (CAPACITY / 2) as u32;
    let zipf = zipf();
    let mut rng = StdRng::seed_from_u64(7);
    let trace: Vec<u32> = std::iter::repeat_with(|| rank(&zipf, &mut rng))
        .filter(|&r| r < present)
        .take(HIT_TRACE_LEN)
        .collect();
    let fill: Vec<u32> = (0..present).collect();
    let filled = |cache: &dyn Fn(&str, u64)| {
        for &i in &fill {
            cache(&keys[i as usize], u64::from(i));
        }
    };
    let local = local_cache();
    filled(&|k, v| Subject::set(&local, k, v));
    hit_one(c, &keys, &trace, "LocalCache", local);
    let quick = quick_cache();
    filled(&|k, v| Subject::set(&quick, k, v));
    hit_one(c, &keys, &trace, "quick_cache", quick);
    let moka = moka_cache();
    filled(&|k, v| Subject::set(&moka, k, v));
    moka.run_pending_tasks();
    hit_one(c, &keys, &trace, "moka", moka);
    let lru = mutex_lru();
    filled(&|k, v| Subject::set(&lru, k, v));
    hit_one(c, &keys, &trace, "Mutex-lru", lru);
}

criterion_group!(benches, hit_path, mixed);
criterion_main!(benches);
