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
//! every seen sample in the percentiles. The writer process and its handle are in `load/writer.rs`.

use super::*;

mod writer;

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

/// Latency samples of one path in microseconds, and the samples never seen.
#[derive(Default)]
pub(super) struct Path {
    pub(super) us: Vec<u64>,
    pub(super) misses: usize,
}

impl Path {
    fn taken(&self) -> usize {
        self.us.len() + self.misses
    }

    /// Milliseconds at quantile `q` (nearest rank) with misses ranked above every seen sample;
    /// `None` when the rank falls on a miss.
    pub(super) fn pct(&self, q: f64) -> Option<f64> {
        let n = self.taken();
        if n == 0 {
            return Some(0.0);
        }
        let mut s = self.us.clone();
        s.sort_unstable();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        s.get(rank - 1).map(|&v| v as f64 / 1000.0)
    }

    fn mean_seen(&self) -> f64 {
        self.us.iter().sum::<u64>() as f64 / self.us.len().max(1) as f64 / 1000.0
    }
}

/// One phase (idle or under load): both paths, sampled in rotation.
#[derive(Default)]
pub(super) struct Phase {
    pub(super) one_hop: Path,
    pub(super) distcache: Path,
    /// Share of all cores busy during the phase (from /proc/stat), percent.
    pub(super) machine_busy: Option<f64>,
    /// CPU of each of our processes during the phase, percent of one core (Linux).
    pub(super) processes: Vec<(&'static str, Option<f64>)>,
    /// Sampling stopped early (after [`MAX_MISSES`] misses).
    pub(super) cut_short: bool,
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

impl LoadRun {
    pub(super) fn achieved_rate(&self) -> f64 {
        self.window_acked as f64 / self.window.as_secs_f64().max(1e-9)
    }

    pub(super) fn applied_rate(&self) -> f64 {
        self.window_applied as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// Cumulative busy and total jiffies of all cores (Linux); `None` elsewhere.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let f: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    if f.len() < 8 {
        return None;
    }
    let total: u64 = f.iter().sum();
    Some((total - f[3] - f[4], total))
}

/// CPU time of process `pid` so far (user + system), in clock ticks (Linux).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second of /proc's CPU times: `USER_HZ`, 100 on every Linux this runs on.
const TICKS_PER_SEC: f64 = 100.0;

fn busy_percent(from: Option<(u64, u64)>, to: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (from?, to?);
    (t1 > t0).then(|| (b1 - b0) as f64 * 100.0 / (t1 - t0) as f64)
}

/// The probe: A, B, the raw one hop and how many probe writes A made.
struct Probe<'a> {
    c: &'a Config,
    a: DistributedCache<String>,
    b: Listener,
    raw: RawPaths,
    writes: u64,
    round: usize,
    /// Processes whose CPU each phase reports: (what it runs, pid).
    pids: Vec<(&'static str, u32)>,
}

impl Probe<'_> {
    /// One sample of each path, order alternating per round. Misses are counted; their details
    /// go to stderr.
    fn round(&mut self, phase: &mut Phase, keep: bool) -> R<()> {
        self.round += 1;
        let i = self.round;
        for step in 0..2 {
            if (i + step).is_multiple_of(2) {
                let seen = self.one_hop()?;
                if keep {
                    match seen {
                        Some(us) => phase.one_hop.us.push(us),
                        None => phase.one_hop.misses += 1,
                    }
                }
            } else {
                let seen = self.distcache(i)?;
                if keep {
                    match seen {
                        Some(us) => phase.distcache.us.push(us),
                        None => phase.distcache.misses += 1,
                    }
                }
            }
        }
        Ok(())
    }

    /// Send call → the consumer's poll returns the message, µs; `None` if not within 10 s.
    fn one_hop(&mut self) -> R<Option<u64>> {
        let raw = &mut self.raw;
        raw.round += 1;
        let body = payload(raw.value_bytes, raw.round);
        let key = format!("key-{}", raw.round);
        let t0 = Instant::now();
        raw.producer
            .send(
                BaseRecord::<_, _, ()>::to(&raw.hop_topic)
                    .key(&key)
                    .payload(&body),
            )
            .map_err(|(e, _)| e)?;
        if await_payload_within(&raw.hop_out, &body, MISS_AFTER)? {
            Ok(Some(t0.elapsed().as_micros() as u64))
        } else {
            progress(format!("  raw one hop: message {} not seen", raw.round));
            Ok(None)
        }
    }

    /// A's `set_with_sync` call → B's first matching local `get`, µs; `None` if B gave up.
    fn distcache(&mut self, i: usize) -> R<Option<u64>> {
        let key = format!("p{i}");
        let value = format!("v{i}-{}", self.c.run);
        self.b.expect(&key, &value)?;
        let t0 = now_micros();
        self.a.set_with_sync(&key, value, None, None)?;
        self.writes += 1;
        match self.b.seen()? {
            Ok(seen) => Ok(Some(seen.saturating_sub(t0))),
            Err(why) => {
                let am = self.a.metrics();
                progress(format!(
                    "  write {i} ({key:?}) not seen by B: {why}; A's listener: {} events, {} \
                     applied, {} resets",
                    am.events, am.events_applied, am.resets
                ));
                Ok(None)
            }
        }
    }

    /// `WARMUP` discarded rounds, then `samples` kept ones. `during(0)` runs right before the
    /// first kept round, `during(rounds done)` between rounds at most every [`PROGRESS_EVERY`].
    fn phase(
        &mut self,
        samples: usize,
        name: &str,
        mut during: impl FnMut(usize) -> R<()>,
    ) -> R<Phase> {
        let mut phase = Phase::default();
        for _ in 0..WARMUP {
            self.round(&mut phase, false)?;
        }
        during(0)?;
        let cpu = cpu_jiffies();
        let ticks: Vec<Option<u64>> = self
            .pids
            .iter()
            .map(|&(_, pid)| process_ticks(pid))
            .collect();
        let t0 = Instant::now();
        let mut last_progress = t0;
        for n in 0..samples {
            self.round(&mut phase, true)?;
            if phase.one_hop.misses + phase.distcache.misses >= MAX_MISSES {
                progress(format!(
                    "  {name}: {MAX_MISSES} misses, stopping after {} rounds",
                    n + 1
                ));
                phase.cut_short = true;
                break;
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                during(n + 1)?;
            }
        }
        phase.machine_busy = busy_percent(cpu, cpu_jiffies());
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        phase.processes = self
            .pids
            .iter()
            .zip(ticks)
            .map(|(&(name, pid), before)| {
                let used = process_ticks(pid)
                    .zip(before)
                    .and_then(|(a, b)| a.checked_sub(b));
                (name, used.map(|t| t as f64 / TICKS_PER_SEC / secs * 100.0))
            })
            .collect();
        Ok(phase)
    }
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

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "miss (> 10 s)".into(), |v| format!("{v:.2}"))
}

fn ratio(num: Option<f64>, den: Option<f64>) -> String {
    match (num, den) {
        (Some(n), Some(d)) => format!("{:.2}×", n / d.max(1e-9)),
        _ => "n/a (a miss)".into(),
    }
}

pub(super) fn print_load(c: &Config, r: &LoadRun) {
    println!("### Propagation under load\n");
    let busy = |p: &Phase| {
        p.machine_busy
            .map_or("n/a".into(), |b| format!("{b:.0} % of all cores busy"))
    };
    println!(
        "Each phase: {WARMUP} warm-up rounds, then {} rounds of one sample of each path (order \
         alternating). distcache: A = this process, `set_with_sync(\"p<i>\", ~{}-byte string)`, \
         one at a time; B = a second process (`--role listener`, same namespace) polling its \
         local `get` every 50 µs; latency = B's first matching `get` − A's call (wall clock, one \
         machine). One embedded state node in A's process, `max_batch=1024`, `max_wait=0`, \
         `redis_workers=4` (the defaults), 8-partition set-del and done topics. Raw one hop: \
         rdkafka producer (`linger.ms=0`, `acks=all`) → `BaseConsumer` assigned to every \
         partition (`fetch.wait.max.ms={}`); send call → poll returns it. Under load: a third \
         process (`--role writer`: one `DistributedCache`, same namespace, {} threads each \
         blocking in `set_with_sync`) paced to a target of {} writes/s over {} keys `load-<n>` \
         (disjoint from the probe's `p<i>`, ~{}-byte values), started {} s before the warm-up \
         rounds; before the idle phase the same load ran for {} s (a fresh broker's JIT \
         warm-up) and was paused until the state node had settled all of it. The state node \
         applies those writes to Redis and B's listener applies their done events. A sample not seen within 10 s is a miss: counted, ranked above every \
         seen sample (a percentile that lands on one reads \"miss\"), never dropped. \
         Percentiles exact (nearest rank); mean over seen samples.\n",
        c.samples,
        c.value_bytes,
        c.fetch_wait_ms,
        r.load.threads,
        thousands(r.load.rate as f64),
        thousands(c.keys as f64),
        c.value_bytes,
        LOAD_SETTLE.as_secs(),
        r.load.warmup_secs
    );
    println!("| phase | path | samples | misses | p50 ms | p90 ms | p99 ms | max ms | mean ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let achieved = format!(
        "under load ({} writes/s achieved)",
        thousands(r.achieved_rate())
    );
    for (phase_name, p) in [("idle", &r.idle), (achieved.as_str(), &r.loaded)] {
        for (name, path) in [
            ("raw one hop: produce → consumer", &p.one_hop),
            (
                "distcache: A `set_with_sync` → state node → B's local `get`",
                &p.distcache,
            ),
        ] {
            println!(
                "| {phase_name} | {name} | {} | {} | {} | {} | {} | {} | {:.2} |",
                path.taken(),
                path.misses,
                ms(path.pct(0.5)),
                ms(path.pct(0.9)),
                ms(path.pct(0.99)),
                ms(path.pct(1.0)),
                path.mean_seen()
            );
        }
    }
    println!();

    println!("| ratio | p50 | p90 | p99 |");
    println!("|---|---:|---:|---:|");
    let idle_hop = &r.idle.one_hop;
    for (name, num, den) in [
        (
            "**distcache under load ÷ idle raw one hop** (goal: p99 ≤ 3×)",
            &r.loaded.distcache,
            idle_hop,
        ),
        (
            "distcache under load ÷ raw one hop under load",
            &r.loaded.distcache,
            &r.loaded.one_hop,
        ),
        (
            "raw one hop under load ÷ idle raw one hop (what the load does to the broker alone)",
            &r.loaded.one_hop,
            idle_hop,
        ),
        (
            "distcache idle ÷ idle raw one hop (section 2's figure, this run)",
            &r.idle.distcache,
            idle_hop,
        ),
        (
            "distcache under load ÷ distcache idle",
            &r.loaded.distcache,
            &r.idle.distcache,
        ),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            ratio(num.pct(0.5), den.pct(0.5)),
            ratio(num.pct(0.9), den.pct(0.9)),
            ratio(num.pct(0.99), den.pct(0.99))
        );
    }
    println!();

    let window = r.window.as_secs_f64();
    println!("| the load during the sampling window under load | value |");
    println!("|---|---:|");
    println!(
        "| window: the writer's and the state node's counters read right before the first kept round and right after the last | {window:.2} s |"
    );
    println!(
        "| target write rate | {} /s |",
        thousands(r.load.rate as f64)
    );
    println!(
        "| **achieved write rate** (writer's acknowledged `set_with_sync` ÷ window) | {} /s |",
        thousands(r.achieved_rate())
    );
    println!(
        "| writes acknowledged / failed in the window | {} / {} |",
        thousands(r.window_acked as f64),
        r.window_failed
    );
    println!(
        "| writer's mean `set_with_sync` time (call → broker ack); {} threads bound the rate to threads ÷ this | {:.2} ms (≤ {} /s) |",
        r.load.threads,
        r.window_ack_ms,
        thousands(r.load.threads as f64 * 1000.0 / r.window_ack_ms.max(1e-9))
    );
    println!(
        "| write slots skipped (> {} ms overdue when a writer thread was free) | {} |",
        MAX_BEHIND.as_millis(),
        r.window_skipped
    );
    println!(
        "| state node: events applied in the window (rate) | {} ({} /s) |",
        thousands(r.window_applied as f64),
        thousands(r.applied_rate())
    );
    println!(
        "| state node: events settled in the window (applied, stale, deduped, malformed, failed) | {} |",
        thousands(r.window_settled as f64)
    );
    println!(
        "| set-del events not yet settled when the writers stopped | {} |",
        r.backlog_at_stop
    );
    println!(
        "| … settled all of them after | {} |",
        r.drained_after
            .map_or("not within 30 s".into(), |d| format!(
                "{:.0} ms",
                d.as_secs_f64() * 1000.0
            ))
    );
    println!(
        "| broker warm-up before the idle phase: {} s of the same load; its last rate | {} /s |",
        r.load.warmup_secs,
        thousands(r.warmup.last_rate)
    );
    println!(
        "| … then paused; the state node had settled all of its writes after (the idle phase began then) | {} |",
        r.warmup
            .drained_after
            .map_or("not within 60 s".into(), |d| format!(
                "{:.0} ms",
                d.as_secs_f64() * 1000.0
            ))
    );
    println!(
        "| machine CPU, idle phase / under load (/proc/stat, everything on it) | {} / {} |",
        busy(&r.idle),
        busy(&r.loaded)
    );
    for (i, (name, _)) in r.loaded.processes.iter().enumerate() {
        let cell = |p: &Phase| {
            p.processes
                .get(i)
                .and_then(|&(_, busy)| busy)
                .map_or("n/a".into(), |b| format!("{b:.0} %"))
        };
        println!(
            "| CPU of {name}, idle phase / under load (% of one core, /proc) | {} / {} |",
            cell(&r.idle),
            cell(&r.loaded)
        );
    }
    println!();
    println!(
        "- B's listener: p50 `propagation_us` over the whole run {} (its own metric, bucket bound).",
        r.b_listener
    );
    println!(
        "- Where a write's time goes (`trace(true)` on A and the state node; whole run, the \
         load's writes make up nearly all of it; bucket bounds): {}.",
        r.spans
            .iter()
            .map(|(name, s)| format!(
                "{name} p50 {} / p99 {} (n = {})",
                us(s.p50),
                us(s.p99),
                s.count
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if r.achieved_rate() < 0.95 * r.load.rate as f64 {
        println!(
            "- **The target rate was not reached** ({} of {} writes/s): with {} writer threads \
             at a mean {:.2} ms per acknowledged write the writers could do at most {} /s; \
             under load {}. More threads (`--load-threads`) raise that bound only while the \
             acknowledgement time does not grow with them.",
            thousands(r.achieved_rate()),
            thousands(r.load.rate as f64),
            r.load.threads,
            r.window_ack_ms,
            thousands(r.load.threads as f64 * 1000.0 / r.window_ack_ms.max(1e-9)),
            busy(&r.loaded)
        );
    }
    for (name, p) in [("idle", &r.idle), ("under load", &r.loaded)] {
        if p.cut_short {
            println!(
                "- **{name}: sampling stopped after {MAX_MISSES} misses** ({} rounds kept).",
                p.distcache.taken().max(p.one_hop.taken())
            );
        }
    }
    println!();
}

/// The headline figures as `name=value` lines (`inf` where a percentile lands on a miss).
pub(super) fn load_summary(r: &LoadRun) -> Vec<String> {
    let v = |x: Option<f64>| x.unwrap_or(f64::INFINITY);
    let q = |num: Option<f64>, den: Option<f64>| match (num, den) {
        (Some(n), Some(d)) => n / d.max(1e-9),
        _ => f64::INFINITY,
    };
    let (idle, loaded) = (&r.idle, &r.loaded);
    let mut s = vec![
        format!("load_target_rate={}", r.load.rate),
        format!("load_achieved_rate={:.0}", r.achieved_rate()),
        format!("load_applied_rate={:.0}", r.applied_rate()),
        format!("load_failed={}", r.window_failed),
        format!("load_writer_ack_ms={:.3}", r.window_ack_ms),
        format!("load_distcache_misses={}", loaded.distcache.misses),
        format!("load_one_hop_misses={}", loaded.one_hop.misses),
    ];
    for (qv, name) in [(0.5, "p50"), (0.99, "p99")] {
        s.push(format!(
            "idle_one_hop_{name}_ms={:.3}",
            v(idle.one_hop.pct(qv))
        ));
        s.push(format!(
            "idle_distcache_{name}_ms={:.3}",
            v(idle.distcache.pct(qv))
        ));
        s.push(format!(
            "load_one_hop_{name}_ms={:.3}",
            v(loaded.one_hop.pct(qv))
        ));
        s.push(format!(
            "load_distcache_{name}_ms={:.3}",
            v(loaded.distcache.pct(qv))
        ));
        s.push(format!(
            "load_ratio_idle_hop_{name}={:.3}",
            q(loaded.distcache.pct(qv), idle.one_hop.pct(qv))
        ));
        s.push(format!(
            "load_ratio_loaded_hop_{name}={:.3}",
            q(loaded.distcache.pct(qv), loaded.one_hop.pct(qv))
        ));
    }
    s
}
