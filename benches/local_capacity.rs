//! What a [`LocalCache`] of a given capacity costs and buys, next to quick_cache, moka and one
//! `Mutex<lru::LruCache>`: the hit path timed in interleaved rounds, the heap bytes each entry
//! costs beyond its key and value, and the hit ratio on a Zipf trace and on a trace that mixes
//! sequential scans into a hot set. Prints markdown tables (`scripts/bench.sh local` runs it).
//!
//! Usage: `cargo bench --bench local_capacity -- [hit] [memory] [hit-ratio] [--rounds N]`
//! (no section: all three; `--rounds` for the hit path, default 30). With
//! `LOCAL_CAPACITY_ONLY=<implementation>` the hit section runs only that implementation's passes
//! and prints nothing, for `perf record`.
//!
//! Why not criterion: the hit-path group of `benches/local_cache.rs` times each implementation
//! for two seconds one after the other, so on a shared machine a change of load between two
//! implementations shows up as a ratio. Here every round times one pass over the same trace
//! for each implementation back to back (in a rotating order), and the table gives medians of
//! the per-round ratios. Memory is counted by a global allocator that adds up live heap bytes,
//! which criterion's own allocations would blur.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use distcache::{Cache, LocalCache};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};

/// Counts live heap bytes (requested sizes, not what the allocator rounds them up to) and live
/// allocations.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// (live bytes, live allocations).
fn live_heap() -> (usize, usize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_ALLOCATIONS.load(Ordering::Relaxed),
    )
}

/// The four implementations, behind the operations every section needs.
trait Subject {
    const NAME: &'static str;
    fn with_capacity(capacity: usize) -> Self;
    /// Returns whether it was a hit.
    fn get(&self, key: &str) -> bool;
    fn set(&self, key: &str, value: u64);
    /// Entries held now (after any pending housekeeping).
    fn entries(&self) -> usize;
}

impl Subject for LocalCache<u64> {
    const NAME: &'static str = "LocalCache";
    /// The default shard count, as users get it.
    fn with_capacity(capacity: usize) -> Self {
        LocalCache::builder()
            .capacity(capacity)
            .build()
            .expect("valid config")
    }
    fn get(&self, key: &str) -> bool {
        matches!(Cache::get(self, key), Ok(Some(_)))
    }
    fn set(&self, key: &str, value: u64) {
        let _ = Cache::set(self, key, value, None);
    }
    fn entries(&self) -> usize {
        Cache::len(self).unwrap_or(0)
    }
}

impl Subject for quick_cache::sync::Cache<String, u64> {
    const NAME: &'static str = "quick_cache";
    fn with_capacity(capacity: usize) -> Self {
        quick_cache::sync::Cache::new(capacity)
    }
    fn get(&self, key: &str) -> bool {
        quick_cache::sync::Cache::get(self, key).is_some()
    }
    fn set(&self, key: &str, value: u64) {
        self.insert(key.to_owned(), value);
    }
    fn entries(&self) -> usize {
        self.len()
    }
}

impl Subject for moka::sync::Cache<String, u64> {
    const NAME: &'static str = "moka";
    fn with_capacity(capacity: usize) -> Self {
        moka::sync::Cache::new(capacity as u64)
    }
    fn get(&self, key: &str) -> bool {
        moka::sync::Cache::get(self, key).is_some()
    }
    fn set(&self, key: &str, value: u64) {
        self.insert(key.to_owned(), value);
    }
    fn entries(&self) -> usize {
        self.run_pending_tasks();
        self.entry_count() as usize
    }
}

/// One global lock around one LRU: exact LRU order over the whole capacity.
struct MutexLru(parking_lot::Mutex<lru::LruCache<String, u64>>);

impl Subject for MutexLru {
    const NAME: &'static str = "Mutex-lru";
    fn with_capacity(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).expect("nonzero capacity");
        MutexLru(parking_lot::Mutex::new(lru::LruCache::new(capacity)))
    }
    fn get(&self, key: &str) -> bool {
        self.0.lock().get(key).is_some()
    }
    fn set(&self, key: &str, value: u64) {
        self.0.lock().put(key.to_owned(), value);
    }
    fn entries(&self) -> usize {
        self.0.lock().len()
    }
}

/// Calls `$body` with the type of each implementation, in table order.
macro_rules! for_each_subject {
    ($body:ident!($($arg:expr),*)) => {
        [
            $body!(LocalCache<u64>, $($arg),*),
            $body!(quick_cache::sync::Cache<String, u64>, $($arg),*),
            $body!(moka::sync::Cache<String, u64>, $($arg),*),
            $body!(MutexLru, $($arg),*),
        ]
    };
}

/// `key:` and the number zero-padded to `len` bytes in all.
fn key(i: u64, len: usize) -> String {
    format!("key:{i:0width$}", width = len - 4)
}

fn zipf(n: u64, exponent: f64) -> Zipf<f64> {
    Zipf::new(n as f64, exponent).expect("valid Zipf parameters")
}

/// A rank in `0..n` (0 the most popular).
fn rank(zipf: &Zipf<f64>, n: u64, rng: &mut StdRng) -> u64 {
    (zipf.sample(rng) as u64).clamp(1, n) - 1
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

// ---------------------------------------------------------------------------------------------
// Hit path
// ---------------------------------------------------------------------------------------------

/// The workload of `benches/local_cache.rs`'s `local_hit` group: capacity 100k, the 50k most
/// popular of 1M 16-byte keys present, gets in Zipf(0.99) order restricted to them. Then the
/// same with only the 1k most popular keys present, a working set that stays in the CPU's
/// caches: what the code costs when memory does not.
const HIT_KEYS: u64 = 1_000_000;
const HIT_CAPACITY: usize = 100_000;
const HIT_PRESENT: [u64; 2] = [50_000, 1_000];
const HIT_TRACE_LEN: usize = 1 << 16;

/// Times one pass of gets over a trace (key ids into the keys); returns ns per get.
type Pass = Box<dyn Fn(&[String], &[u32]) -> f64>;

/// One implementation filled for the hit path, timed pass by pass.
struct HitRunner {
    name: &'static str,
    pass: Pass,
    samples: Vec<f64>,
}

fn hit_runner<S: Subject + 'static>(keys: &[String], present: u64) -> HitRunner {
    let cache = S::with_capacity(HIT_CAPACITY);
    for (i, key) in keys.iter().enumerate().take(present as usize) {
        cache.set(key, i as u64);
    }
    S::entries(&cache); // moka: apply the pending inserts first
    HitRunner {
        name: S::NAME,
        pass: Box::new(move |keys, trace| {
            let start = Instant::now();
            for &i in trace {
                assert!(cache.get(&keys[i as usize]), "hit-path key missing");
            }
            start.elapsed().as_nanos() as f64 / trace.len() as f64
        }),
        samples: Vec::new(),
    }
}

fn hit_path(rounds: usize) {
    let keys: Vec<String> = (0..HIT_KEYS).map(|i| key(i, 16)).collect();
    println!(
        "### LocalCache: hit path, interleaved ({rounds} rounds; each round one pass of {HIT_TRACE_LEN} \
         gets per implementation, rotating order; capacity 100k, the N most popular of 1M 16-byte \
         keys present, gets in Zipf(0.99) order restricted to them, u64 values, one thread)"
    );
    println!();
    println!(
        "| present keys | implementation | median ns/get | min ns/get | gets/s (median) | \
         median ratio to quick_cache (per round) |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for present in HIT_PRESENT {
        eprintln!("   hit path: {present} keys present, {rounds} rounds");
        hit_rounds(&keys, present, rounds);
    }
    println!();
}

fn hit_rounds(keys: &[String], present: u64, rounds: usize) {
    let zipf = zipf(HIT_KEYS, 0.99);
    let mut rng = StdRng::seed_from_u64(7);
    let trace: Vec<u32> = std::iter::repeat_with(|| rank(&zipf, HIT_KEYS, &mut rng))
        .filter(|&r| r < present)
        .take(HIT_TRACE_LEN)
        .map(|r| r as u32)
        .collect();
    macro_rules! runner {
        ($t:ty, $keys:expr, $present:expr) => {
            hit_runner::<$t>($keys, $present)
        };
    }
    let mut runners = for_each_subject!(runner!(keys, present));
    if let Ok(only) = std::env::var("LOCAL_CAPACITY_ONLY") {
        // For profiling one implementation (perf stat / perf record); prints no table.
        let r = runners.iter().find(|r| r.name == only).expect("known name");
        for _ in 0..rounds {
            black_box((r.pass)(keys, &trace));
        }
        return;
    }
    // One untimed pass each to warm caches and branch predictors.
    for r in &runners {
        black_box((r.pass)(keys, &trace));
    }
    let n = runners.len();
    for round in 0..rounds {
        for k in 0..n {
            let r = &mut runners[(round + k) % n];
            let ns = (r.pass)(keys, &trace);
            r.samples.push(ns);
        }
    }
    let base: Vec<f64> = runners[1].samples.clone();
    for r in &mut runners {
        // quick_cache ns / this ns: above 1 means faster than quick_cache.
        let mut ratios: Vec<f64> = base.iter().zip(&r.samples).map(|(b, s)| b / s).collect();
        let min = r.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let med = median(&mut r.samples.clone());
        println!(
            "| {present} | {} | {:.1} | {:.1} | {:.2}M | {:.2}x |",
            r.name,
            med,
            min,
            1e3 / med,
            median(&mut ratios)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Memory per entry
// ---------------------------------------------------------------------------------------------

const MEMORY_CAPACITY: usize = 100_000;
/// 16 bytes: stored inside LocalCache's nodes; 40 bytes: on the heap (longer than 22).
const MEMORY_KEY_LENGTHS: [usize; 2] = [16, 40];
const VALUE_BYTES: usize = std::mem::size_of::<u64>();

struct Footprint {
    name: &'static str,
    entries: usize,
    bytes: usize,
    allocations: usize,
}

/// Fills a new cache with twice its capacity of distinct keys (so it is full and has evicted)
/// and counts the heap it holds: everything allocated from just before it was built.
fn footprint<S: Subject>(keys: &[String]) -> Footprint {
    let (bytes0, allocations0) = live_heap();
    let cache = S::with_capacity(MEMORY_CAPACITY);
    for (i, key) in keys.iter().enumerate() {
        cache.set(key, i as u64);
    }
    let entries = S::entries(&cache);
    let (bytes1, allocations1) = live_heap();
    drop(cache);
    Footprint {
        name: S::NAME,
        entries,
        bytes: bytes1.saturating_sub(bytes0),
        allocations: allocations1.saturating_sub(allocations0),
    }
}

fn memory() {
    println!(
        "### LocalCache: heap per entry (capacity {MEMORY_CAPACITY}, filled with {} distinct keys, \
         u64 values; live heap bytes counted by a global allocator from just before the cache is \
         built, requested sizes: the allocator's own headers, ~8-16 B per allocation, not included)",
        2 * MEMORY_CAPACITY
    );
    println!();
    println!(
        "| key bytes | implementation | entries held | heap bytes | bytes/entry | \
         bytes/entry beyond key + value | ratio to quick_cache | allocations/entry |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for key_len in MEMORY_KEY_LENGTHS {
        eprintln!("   memory: {key_len}-byte keys");
        let keys: Vec<String> = (0..2 * MEMORY_CAPACITY as u64)
            .map(|i| key(i, key_len))
            .collect();
        macro_rules! measure {
            ($t:ty, $keys:expr) => {
                footprint::<$t>($keys)
            };
        }
        let rows = for_each_subject!(measure!(&keys));
        let beyond = |f: &Footprint| {
            (f.bytes as f64 - (f.entries * (key_len + VALUE_BYTES)) as f64) / f.entries as f64
        };
        let base = beyond(&rows[1]);
        for f in &rows {
            println!(
                "| {key_len} | {} | {} | {} | {:.1} | {:.1} | {:.2}x | {:.2} |",
                f.name,
                f.entries,
                f.bytes,
                f.bytes as f64 / f.entries as f64,
                beyond(f),
                beyond(f) / base,
                f.allocations as f64 / f.entries as f64,
            );
        }
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Hit ratio
// ---------------------------------------------------------------------------------------------

/// A key id to read, and whether it counts toward the "hot reads" figure.
#[derive(Clone, Copy)]
struct Read {
    key: u32,
    hot: bool,
}

struct Trace {
    /// Short, for the table.
    name: &'static str,
    /// What was run, printed above the table.
    description: String,
    reads: Vec<Read>,
    /// Reads before this index warm the cache and are not counted.
    warm_up: usize,
    capacities: Vec<usize>,
    /// Whether to print a row for the hot reads only.
    has_cold: bool,
}

const ZIPF_KEYS: u64 = 1_000_000;
const ZIPF_READS: usize = 3_000_000;
const SCAN_HOT_KEYS: u64 = 10_000;
const SCAN_HOT_READS: usize = 40_000;
const SCAN_LEN: usize = 20_000;
const SCAN_CYCLES: usize = 50;
const SCAN_WARM_CYCLES: usize = 10;

fn zipf_trace() -> Trace {
    let zipf = zipf(ZIPF_KEYS, 0.99);
    let mut rng = StdRng::seed_from_u64(11);
    Trace {
        name: "Zipf 0.99",
        description: format!(
            "Zipf 0.99: {}M reads of {}M keys in Zipf(0.99) popularity; the first 1M reads warm the \
             cache and are not counted",
            ZIPF_READS / 1_000_000,
            ZIPF_KEYS / 1_000_000,
        ),
        reads: (0..ZIPF_READS)
            .map(|_| Read {
                key: rank(&zipf, ZIPF_KEYS, &mut rng) as u32,
                hot: true,
            })
            .collect(),
        warm_up: 1_000_000,
        capacities: vec![10_000, 100_000],
        has_cold: false,
    }
}

/// A hot set read in Zipf(0.99) order, interrupted by sequential scans of keys never read
/// again (a batch job reading through the cache).
fn scan_trace() -> Trace {
    let zipf = zipf(SCAN_HOT_KEYS, 0.99);
    let mut rng = StdRng::seed_from_u64(13);
    let mut next_cold = SCAN_HOT_KEYS as u32;
    let mut reads = Vec::with_capacity(SCAN_CYCLES * (SCAN_HOT_READS + SCAN_LEN));
    for _ in 0..SCAN_CYCLES {
        for _ in 0..SCAN_HOT_READS {
            reads.push(Read {
                key: rank(&zipf, SCAN_HOT_KEYS, &mut rng) as u32,
                hot: true,
            });
        }
        for _ in 0..SCAN_LEN {
            reads.push(Read {
                key: next_cold,
                hot: false,
            });
            next_cold += 1;
        }
    }
    Trace {
        name: "scan mix",
        description: format!(
            "scan mix: {} cycles of {}k reads of {}k hot keys in Zipf(0.99) popularity followed by \
             a sequential scan of {}k keys never read before or again (a third of all reads); the \
             first {} cycles warm the cache and are not counted. Scan reads miss in every cache, so \
             \"all\" cannot exceed 0.667",
            SCAN_CYCLES,
            SCAN_HOT_READS / 1000,
            SCAN_HOT_KEYS / 1000,
            SCAN_LEN / 1000,
            SCAN_WARM_CYCLES
        ),
        reads,
        warm_up: SCAN_WARM_CYCLES * (SCAN_HOT_READS + SCAN_LEN),
        capacities: vec![20_000, 50_000],
        has_cold: true,
    }
}

/// (hits, reads) over all counted reads and over the hot ones: read-through, a miss inserts.
fn replay<S: Subject>(trace: &Trace, keys: &[String], capacity: usize) -> [(u64, u64); 2] {
    let cache = S::with_capacity(capacity);
    let mut all = (0, 0);
    let mut hot = (0, 0);
    for (i, read) in trace.reads.iter().enumerate() {
        let key = &keys[read.key as usize];
        let hit = cache.get(key);
        if !hit {
            cache.set(key, u64::from(read.key));
        }
        if i >= trace.warm_up {
            all.0 += u64::from(hit);
            all.1 += 1;
            if read.hot {
                hot.0 += u64::from(hit);
                hot.1 += 1;
            }
        }
    }
    [all, hot]
}

fn hit_ratio() {
    let traces = [zipf_trace(), scan_trace()];
    let universe = traces
        .iter()
        .flat_map(|t| t.reads.iter().map(|r| r.key))
        .max()
        .unwrap_or(0);
    let keys: Vec<String> = (0..=u64::from(universe)).map(|i| key(i, 16)).collect();
    println!(
        "### LocalCache: hit ratio, read-through (get; on a miss, set), 16-byte keys, u64 values, \
         one thread, default settings of each (LocalCache: default shard count, LRU exact within a \
         shard; Mutex-lru: one exact LRU; quick_cache: S3-FIFO-like; moka: TinyLFU)"
    );
    println!();
    for trace in &traces {
        println!("- {}", trace.description);
    }
    println!();
    println!(
        "| trace | reads counted | capacity | LocalCache | quick_cache | moka | Mutex-lru | \
         LocalCache misses ÷ quick_cache misses |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for trace in &traces {
        for &capacity in &trace.capacities {
            macro_rules! run {
                ($t:ty, $trace:expr, $keys:expr, $capacity:expr) => {
                    replay::<$t>($trace, $keys, $capacity)
                };
            }
            eprintln!("   hit ratio: {}, capacity {capacity}", trace.name);
            let results = for_each_subject!(run!(trace, &keys, capacity));
            let kinds: &[(usize, &str)] = if trace.has_cold {
                &[(0, "all"), (1, "hot-set reads only")]
            } else {
                &[(0, "all")]
            };
            for &(kind, label) in kinds {
                let ratio = |r: &[(u64, u64); 2]| r[kind].0 as f64 / r[kind].1.max(1) as f64;
                let misses = |r: &[(u64, u64); 2]| (r[kind].1 - r[kind].0) as f64;
                let cells: Vec<String> =
                    results.iter().map(|r| format!("{:.3}", ratio(r))).collect();
                println!(
                    "| {} | {label} | {capacity} | {} | {:.2}x |",
                    trace.name,
                    cells.join(" | "),
                    misses(&results[0]) / misses(&results[1]).max(1.0),
                );
            }
        }
    }
    println!();
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: a debug build would spend
    // minutes on traces meant for release, so test mode only checks that it builds and starts.
    if !std::env::args().any(|a| a == "--bench") {
        println!("local_capacity bench: test mode, nothing measured (run scripts/bench.sh local)");
        return;
    }
    let mut sections = Vec::new();
    let mut rounds = 30;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds N");
            }
            "--bench" => {} // cargo bench passes it
            s @ ("hit" | "memory" | "hit-ratio") => sections.push(s.to_owned()),
            other => panic!("unknown argument {other}"),
        }
    }
    if sections.is_empty() {
        sections = vec!["hit".into(), "memory".into(), "hit-ratio".into()];
    }
    for section in &sections {
        match section.as_str() {
            "hit" => hit_path(rounds),
            "memory" => memory(),
            _ => hit_ratio(),
        }
    }
}
