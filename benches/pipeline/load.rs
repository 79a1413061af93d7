//! Section `load`: propagation A → B while other writers keep the system busy.
//!
//! Section 2 measures one write at a time on an otherwise idle system; users care what a write
//! costs to propagate while thousands of others are in flight. This section runs the same probe
//! (A = this process `set_with_sync`, B = a `--role listener` process polling its local `get`,
//! an embedded state node with the default settings, a raw one hop sampled in rotation) twice:
//!
//! 1. idle: nothing else writes. Its raw one hop is the baseline every ratio divides by.
//! 2. under load: a writer process (`--role writer`, a real core node: one `DistributedCache`
//!    in the same namespace, `set_with_sync` from many threads, paced to a target rate on keys
//!    disjoint from the probe keys) keeps the state node, Redis, the broker and B's listener
//!    busy while the probe samples again.
//!
//! The writers live in their own process for two reasons: other writers are other core nodes in
//! a deployment (their own producer queue, their own listener applying every done event), and A's
//! clock stamps are not delayed by the load generator's threads contending for this process's
//! allocator and locks. (The cores are shared either way; the machine's busy share is reported.)
//!
//! The achieved write rate is measured (the writer's acknowledged writes over the sampling
//! window), not assumed from the target; samples B never saw within 10 s are misses, ranked above
//! every seen sample in the percentiles.
//!
//! One file a job: this one runs the section (the warm-up, both phases, the drain after), the
//! probe that samples both paths is in `load/probe.rs`, the writer process and its handle in
//! `load/writer.rs`, the tables and the summary lines in `load/report.rs`.

use super::*;

mod probe;
mod report;
mod writer;

use probe::*;
pub(super) use report::{load_summary, print_load};
pub(super) use writer::role;
use writer::*;

/// B's (and the raw consumer's) give-up time: a sample not seen by then is a miss.
const MISS_AFTER: Duration = Duration::from_secs(10);
/// The run stops sampling after this many misses (each costs [`MISS_AFTER`]); the table says so.
const MAX_MISSES: usize = 20;
/// How long the load runs before the warm-up rounds under load, so the state node and the broker
/// are at their steady state.
const LOAD_SETTLE: Duration = Duration::from_secs(3);
/// How often progress (with the write rate so far) is printed while sampling.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// The load's knobs (`--load-rate`, `--load-threads`).
#[derive(Clone, Debug)]
pub(super) struct LoadConfig {
    /// Target writes per second of the writer process.
    pub(super) rate: usize,
    /// Writer threads. Each blocks in `set_with_sync` until the broker acknowledges, so the
    /// achievable rate is at most threads ÷ acknowledgement latency (256 threads: 10k/s up to a
    /// 25.6 ms acknowledgement; 64 threads fell short on this machine at ~10 ms).
    pub(super) threads: usize,
    /// Seconds of load before anything is measured: a fresh JVM broker compiles its produce and
    /// fetch paths under load (seen here: ~1k acknowledged writes/s in the first 10 s, ~6k/s
    /// after), which would slow the idle baseline and the first loaded samples alike.
    pub(super) warmup_secs: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            rate: 10_000,
            threads: 256,
            warmup_secs: 20,
        }
    }
}

pub(super) struct LoadRun {
    pub(super) load: LoadConfig,
    pub(super) idle: Phase,
    pub(super) loaded: Phase,
    /// Writes the writer process had acknowledged / failed / skipped (behind schedule) during
    /// the sampling window under load.
    pub(super) window_acked: u64,
    pub(super) window_failed: u64,
    pub(super) window_skipped: u64,
    /// Mean time of the writer's acknowledged `set_with_sync` calls in the window, ms.
    pub(super) window_ack_ms: f64,
    /// Events the state node applied (and settled: applied, stale, deduped, malformed, failed)
    /// during the window.
    pub(super) window_applied: u64,
    pub(super) window_settled: u64,
    /// Events on set-del not yet settled when the writers stopped, and how long the state node
    /// took to settle them (`None`: not within 30 s).
    pub(super) backlog_at_stop: i64,
    pub(super) drained_after: Option<Duration>,
    /// B's listener's p50 `propagation_us` over the whole run (bucket bound, as text).
    pub(super) b_listener: String,
    /// The stages of a write, from the trace of A (a core node) and the state node, over the
    /// whole run (idle and loaded; the load's writes make up nearly all of it).
    pub(super) spans: Vec<(&'static str, Summary)>,
    /// From the writer's counters before the first kept round under load to after the last.
    pub(super) window: Duration,
    pub(super) warmup: Warmup,
}

/// The broker warm-up before the idle phase.
pub(super) struct Warmup {
    /// Acknowledged writes per second over the warm-up's last seconds.
    pub(super) last_rate: f64,
    /// How long the state node then took to settle everything (`None`: not within 60 s).
    pub(super) drained_after: Option<Duration>,
}

impl LoadRun {
    pub(super) fn achieved_rate(&self) -> f64 {
        self.window_acked as f64 / self.window.as_secs_f64().max(1e-9)
    }

    pub(super) fn applied_rate(&self) -> f64 {
        self.window_applied as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// Runs the load for `warmup_secs` (progress every 5 s), pauses it, and waits until the state node
/// settled all of it, so the idle phase starts idle.
fn warm_up(c: &Config, writer: &mut Writer, node: &StateNode, backlog: u64) -> R<Warmup> {
    let secs = c.load.warmup_secs;
    if secs == 0 {
        return Ok(Warmup {
            last_rate: 0.0,
            drained_after: Some(Duration::ZERO),
        });
    }
    progress(format!(
        "  warming the broker up: the writers at {} writes/s for {secs} s",
        thousands(c.load.rate as f64)
    ));
    writer.start(c.load.rate)?;
    let started = Instant::now();
    let mut last = writer.mark()?;
    let mut last_rate = 0.0;
    while started.elapsed() < Duration::from_secs(secs) {
        thread::sleep(Duration::from_secs(5).min(Duration::from_secs(secs) - started.elapsed()));
        let now = writer.mark()?;
        last_rate = (now.acked - last.acked) as f64 / (now.at - last.at).as_secs_f64().max(1e-9);
        progress(format!(
            "  warm-up: {:.0}/{secs} s, writes at {} /s",
            started.elapsed().as_secs_f64(),
            thousands(last_rate)
        ));
        last = now;
    }
    let paused = writer.pause()?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    let drained_after = loop {
        if settled(&node.metrics()) >= backlog + paused.acked {
            break Some(t0.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(Warmup {
        last_rate,
        drained_after,
    })
}

pub(super) fn propagation_load(c: &Config) -> R<LoadRun> {
    let prefix = format!("bench:{}:load:", c.run);
    let ns = format!("bench-load-{}", c.run);
    let backlog = set_del_backlog(c, "load")?;
    // The defaults, spelled out so the table's label stays true if they change.
    let node = StateNode::builder()
        .kafka_brokers(&c.brokers)
        .redis_url(&c.redis_url)
        .group(format!("bench-load-{}", c.run))
        .key_prefix(&prefix)
        .max_batch(1024)
        .max_wait(Duration::ZERO)
        .redis_workers(4)
        .trace(true)
        .start()?;
    wait_until(
        || settled(&node.metrics()) >= backlog,
        Duration::from_millis(5),
    )
    .ok_or("the state node did not catch up with set-del")?;

    let a: DistributedCache<String> = DistributedCache::builder()
        .kafka_brokers(&c.brokers)
        .redis_url(&c.redis_url)
        .namespace(&ns)
        .key_prefix(&prefix)
        .trace(true)
        .build()?;
    let b = Listener::spawn(&ns, &prefix)?;
    // Spawned (idle) before the idle phase, so both phases see the same processes.
    let mut writer = Writer::spawn(c, &ns, &prefix)?;
    let raw = RawPaths::start(c, "load")?;
    let mut probe = Probe {
        c,
        a,
        b,
        raw,
        writes: 0,
        round: 0,
        pids: Vec::new(),
    };
    probe.pids = vec![
        (
            "this process: A, the state node, the raw clients",
            std::process::id(),
        ),
        ("B (`--role listener`)", probe.b.process.child.id()),
        ("the writers (`--role writer`)", writer.process.child.id()),
    ];

    let warmup = warm_up(c, &mut writer, &node, backlog)?;

    progress(format!(
        "  idle: {WARMUP} warm-up + {} rounds (raw one hop, distcache)",
        c.samples
    ));
    let idle = probe.phase(c.samples, "idle", |n| {
        if n > 0 {
            progress(format!("  idle: {n}/{} rounds", c.samples));
        }
        Ok(())
    })?;

    progress(format!(
        "  starting the writer process: {} writes/s target, {} threads",
        c.load.rate, c.load.threads
    ));
    writer.start(c.load.rate)?;
    thread::sleep(LOAD_SETTLE);
    let settle_mark = writer.mark()?;
    progress(format!(
        "  load running for {:?}: {} writes acknowledged so far",
        LOAD_SETTLE, settle_mark.acked
    ));
    // The window: the writer's and the state node's counters right before the first kept
    // round and right after the last.
    let mut window_start = None;
    let loaded = {
        let samples = c.samples;
        let (w, node) = (&mut writer, &node);
        let mut last: Option<WriterMark> = None;
        probe.phase(samples, "under load", |n| {
            let now = w.mark()?;
            if n == 0 {
                window_start = Some((now, node.metrics()));
            } else if let (Some(prev), Some((start, _))) = (last, &window_start) {
                let secs = (now.at - prev.at).as_secs_f64().max(1e-9);
                progress(format!(
                    "  under load: {n}/{samples} rounds, writes at {} /s ({} failed, {} slots \
                     skipped so far)",
                    thousands((now.acked - prev.acked) as f64 / secs),
                    now.failed - start.failed,
                    now.skipped - start.skipped,
                ));
            }
            last = Some(now);
            Ok(())
        })?
    };
    let end = writer.mark()?;
    let after = node.metrics();
    let stopped = writer.finish()?;
    let (start, before) = window_start.ok_or("the sampling under load never started")?;

    // Everything produced to set-del so far: the backlog before, A's probe writes, the writer's
    // acknowledged writes. Failed writes may have reached the broker or not; they are not
    // expected.
    let expected = backlog + probe.writes + stopped.acked;
    let at_stop = settled(&node.metrics());
    let t_stop = Instant::now();
    let drained = {
        let deadline = t_stop + Duration::from_secs(30);
        loop {
            if settled(&node.metrics()) >= expected {
                break Some(t_stop.elapsed());
            }
            if Instant::now() > deadline {
                break None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    };
    let b_listener = probe.b.finish()?;
    probe.raw.stop()?;
    let (am, nm) = (probe.a.metrics(), node.metrics());
    let spans = vec![
        ("A: produce → broker ack (A's writes)", am.trace_produce_us),
        (
            "state node: produced → taken for applying (every write)",
            nm.trace_consumed_us,
        ),
        ("state node: Redis apply of a batch", nm.trace_applied_us),
        (
            "state node: Redis answered → done events acked",
            nm.trace_done_us,
        ),
        (
            "A's listener: done produced → seen (every write)",
            am.trace_done_to_seen_us,
        ),
    ];
    node.shutdown();

    let run = LoadRun {
        load: c.load.clone(),
        idle,
        loaded,
        window_acked: end.acked - start.acked,
        window_failed: end.failed - start.failed,
        window_skipped: end.skipped - start.skipped,
        window_ack_ms: (end.acked_us - start.acked_us) as f64
            / (end.acked - start.acked).max(1) as f64
            / 1000.0,
        window_applied: after.applied - before.applied,
        window_settled: settled(&after) - settled(&before),
        backlog_at_stop: expected as i64 - at_stop as i64,
        drained_after: drained,
        b_listener,
        spans,
        warmup,
        window: end.at - start.at,
    };
    progress(format!(
        "  under load: {} writes/s achieved, state node applied {} /s",
        thousands(run.achieved_rate()),
        thousands(run.applied_rate())
    ));
    Ok(run)
}
