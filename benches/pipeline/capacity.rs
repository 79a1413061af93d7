//! Sections `drain` and `cost`: what one `distcache-state-node` (the binary, default settings)
//! drains per second from a pre-produced backlog, against the Redis ceiling of the same versioned
//! write measured by `redis-benchmark` in the same run, and what each event costs in CPU in the
//! state node, redis-server and the broker, next to the raw client-side cost of the same
//! operations (one consume, one produce, one pipelined script call) measured in the same run.

use std::collections::HashMap;

use super::outside::*;
use super::*;

/// One round: the Redis ceiling measured right before, then one drain.
pub(super) struct DrainRound {
    /// The first drain on a fresh broker, which compiles its hot paths meanwhile: shown, not
    /// counted in the summary.
    pub(super) warmup: bool,
    /// `redis-benchmark` requests/s of the single-key apply script.
    pub(super) ceiling: f64,
    pub(super) events: u64,
    pub(super) elapsed: Duration,
    /// Group join: from the node's start to its first consumed record (excluded from `elapsed`).
    pub(super) join: Duration,
    /// CPU ticks during `elapsed`, one per watched process.
    pub(super) cpu: Vec<u64>,
    /// Each watched process's CPU ticks during `elapsed` by thread name, busiest first (the
    /// state node first).
    pub(super) threads: Vec<Vec<(String, u64)>>,
    pub(super) batches: f64,
    pub(super) retries: f64,
    /// The node's other counters at the end of the round that tell of extra broker work.
    pub(super) extras: Vec<(&'static str, f64)>,
    /// Σ of the node's per-batch Redis apply time (its `apply_duration` summary).
    pub(super) apply_s: f64,
    /// Σ from each batch's Redis answer to its last done event acknowledged (`--trace` only).
    pub(super) done_s: Option<f64>,
}

impl DrainRound {
    pub(super) fn rate(&self) -> f64 {
        rate(self.events as usize, self.elapsed)
    }
}

/// The raw client-side cost of one event's operations, measured alone in this process.
pub(super) struct RawCost {
    pub(super) n: usize,
    /// Per operation (consume, produce, script calls): this process's ticks, then each watched
    /// service's (in the order of `Capacity::watched` after the state node).
    pub(super) ops: Vec<(&'static str, u64, Vec<u64>)>,
}

pub(super) struct Capacity {
    pub(super) rounds: Vec<DrainRound>,
    pub(super) watched: Vec<Watched>,
    pub(super) raw: RawCost,
    pub(super) ticks_per_s: f64,
    /// The `redis-benchmark` command line of the ceiling.
    pub(super) ceiling_command: String,
}

/// Pre-produces `c.n` set events of namespace `bench-TAG-RUN` with distinct keys onto the set-del
/// topic; returns how many records a fresh group will read there (more than `c.n` on a reused
/// broker).
pub(super) fn preproduce_backlog(c: &Config, tag: &str) -> R<u64> {
    create_topics(c, &[TOPIC_SET_DEL, TOPIC_DONE])?;
    let ns = format!("bench-{tag}-{}", c.run);
    {
        let (producer, acks) = counting_producer(c, 5)?;
        for i in 0..c.n {
            let e = set_event(
                &ns,
                format!("k{i:07}"),
                i as u64 + 1,
                payload(c.value_bytes, i),
            );
            send(&producer, TOPIC_SET_DEL, &e.message_key(), &e.encode())?;
        }
        wait_acks(&acks, c.n as u64)?;
    }
    let total = set_del_backlog(c, tag)?;
    progress(format!(
        "  pre-produced {} set events ({total} on the topic)",
        c.n
    ));
    Ok(total)
}

/// Pre-produces `c.n` set events with distinct keys, then per round measures the ceiling and one
/// drain by a fresh node (fresh group, fresh key prefix: every write is new to Redis).
pub(super) fn capacity(c: &Config) -> R<Capacity> {
    let total = preproduce_backlog(c, "drain")?;
    let mut watched = Vec::new();
    for (role, var) in [
        ("redis-server", "DISTCACHE_REDIS_PID"),
        ("broker", "DISTCACHE_BROKER_PID"),
    ] {
        match pid_from_env(var) {
            Some(pid) => watched.push(Watched {
                role: role.into(),
                pid,
            }),
            None => progress(format!("  {var} not set: {role} CPU not measured")),
        }
    }
    let mut rounds = Vec::new();
    let mut ceiling_command = String::new();
    // Round 0 warms the broker up (a fresh JVM compiles its hot paths during the first drain).
    for round in 0..=c.rounds {
        let ceiling = lua_ceiling(c)?;
        ceiling_command.clone_from(&ceiling.command);
        let mut r = drain_round(c, round, total, &watched, &ceiling)?;
        r.warmup = round == 0;
        progress(format!(
            "  round {round}: {} events in {:?} = {:.0}/s; ceiling {:.0}/s",
            r.events,
            r.elapsed,
            r.rate(),
            r.ceiling
        ));
        rounds.push(r);
    }
    let raw = raw_cost(c, &watched)?;
    let mut all = vec![Watched {
        role: "state node".into(),
        pid: 0,
    }];
    all.extend(watched);
    Ok(Capacity {
        rounds,
        watched: all,
        raw,
        ticks_per_s: clock_ticks(),
        ceiling_command,
    })
}

/// The Redis ceiling of the versioned write: `redis-benchmark -P 64 -c 4` sending the state
/// node's apply script (`EVALSHA`, one key per call, random keys) to the same redis-server.
pub(super) struct LuaCeiling {
    pub(super) rps: f64,
    pub(super) command: String,
}

pub(super) const CEILING_REQUESTS: usize = 200_000;

pub(super) fn lua_ceiling(c: &Config) -> R<LuaCeiling> {
    let client = redis::Client::open(c.redis_url.as_str())?;
    let (host, port) = match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
        other => return Err(format!("redis-benchmark needs a TCP address, not {other:?}").into()),
    };
    let mut conn = client.get_connection()?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(distcache::bench_support::APPLY_SCRIPT)
        .query(&mut conn)?;
    let version = Version::new(1, 7).to_hex();
    let value = "x".repeat(c.value_bytes);
    let key = format!("bench:{}:lua-ceiling:__rand_int__", c.run);
    let args: Vec<String> = [
        "-h",
        &host,
        "-p",
        &port.to_string(),
        "-P",
        "64",
        "-c",
        "4",
        "-n",
        &CEILING_REQUESTS.to_string(),
        "-r",
        "100000000",
        "-q",
        "EVALSHA",
        &sha,
        "1",
        &key,
        &version,
        "s",
        "1",
        &value,
        "0",
        "600000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = Command::new("redis-benchmark")
        .args(&args)
        .output()
        .map_err(|e| format!("run redis-benchmark (package redis-tools): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `-q` ends each test with "…: 201207.25 requests per second, p50=…"; the last one counts.
    let rps = text
        .split('\r')
        .flat_map(str::lines)
        .filter_map(|l| {
            let before = l.split(" requests per second").next()?;
            (before.len() < l.len()).then(|| before.rsplit(' ').next()?.parse::<f64>().ok())?
        })
        .next_back()
        .ok_or_else(|| format!("no rate in redis-benchmark's output: {text}"))?;
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.len() > 40 {
                format!("<{} bytes>", a.len())
            } else {
                a.clone()
            }
        })
        .collect();
    Ok(LuaCeiling {
        rps,
        command: format!("redis-benchmark {}", shown.join(" ")),
    })
}

fn drain_round(
    c: &Config,
    round: usize,
    total: u64,
    watched: &[Watched],
    ceiling: &LuaCeiling,
) -> R<DrainRound> {
    let group = format!("bench-drain-{}-r{round}", c.run);
    // A fresh key prefix per round: every write is new to Redis.
    let mut c = c.clone();
    c.node_args
        .push(format!("--key-prefix=bench:drain:{}:r{round}:", c.run));
    let c = &c;
    let started = Instant::now();
    let node = NodeProcess::start(c, &group, &c.redis_url, false)?;
    // The pre-produce and the ceiling leave the broker and Redis warm; the first round of a
    // fresh broker still pays for its JIT (shown: every round is printed).
    let mut all = vec![Watched {
        role: "state node".into(),
        pid: node.pid(),
    }];
    all.extend(watched.iter().cloned());
    // Polled every 5 ms: the timing is good to that (≪ the drain's seconds).
    let every = Duration::from_millis(5);
    wait_until(
        || {
            node.metric("distcache_state_node_consumed_total")
                .unwrap_or(0.0)
                > 0.0
        },
        every,
    )
    .ok_or_else(|| format!("the state node consumed nothing; log:\n{}", node.log_tail()))?;
    let t0 = Instant::now();
    let cpu0 = ticks_of(&all);
    let threads0: Vec<_> = all.iter().map(|w| thread_ticks(w.pid)).collect();
    let join = t0 - started;
    let mut last = HashMap::new();
    let done = wait_until(
        || match node.scrape() {
            Ok(m) => {
                let settled = settled_of(&m);
                last = m;
                settled >= total
            }
            Err(_) => false,
        },
        every,
    )
    .ok_or_else(|| format!("the drain did not finish; log:\n{}", node.log_tail()))?;
    let elapsed = done - t0;
    let cpu1 = ticks_of(&all);
    let threads = all
        .iter()
        .zip(threads0)
        .map(|(w, before)| busiest_threads(&before, thread_ticks(w.pid)))
        .collect();
    let get = |name: &str| last.get(name).copied().unwrap_or(0.0);
    Ok(DrainRound {
        warmup: false,
        ceiling: ceiling.rps,
        events: total,
        elapsed,
        join,
        cpu: cpu1
            .iter()
            .zip(&cpu0)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect(),
        threads,
        batches: get("distcache_state_node_batches_total"),
        retries: get("distcache_state_node_retries_total"),
        apply_s: get("distcache_state_node_apply_duration_seconds_sum"),
        extras: [
            ("commits", "distcache_state_node_commits_total"),
            ("published", "distcache_state_node_published_total"),
            ("holes re-read", "distcache_state_node_holes_reread_total"),
            (
                "consumer errors",
                "distcache_state_node_consumer_errors_total",
            ),
        ]
        .into_iter()
        .map(|(label, name)| (label, get(name)))
        .collect(),
        done_s: last
            .get("distcache_state_node_trace_done_seconds_sum")
            .copied()
            .filter(|_| c.node_args.iter().any(|a| a == "--trace")),
    })
}

/// Ticks per thread name between two readings, busiest first, idle ones left out.
fn busiest_threads(
    before: &HashMap<String, u64>,
    after: HashMap<String, u64>,
) -> Vec<(String, u64)> {
    let mut threads: Vec<(String, u64)> = after
        .into_iter()
        .map(|(name, t)| {
            let then = before.get(&name).copied().unwrap_or(0);
            (name, t.saturating_sub(then))
        })
        .filter(|(_, t)| *t > 0)
        .collect();
    threads.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    threads
}

/// This process's CPU ticks (every thread).
fn own_ticks() -> u64 {
    process_ticks(std::process::id()).unwrap_or(0)
}

/// The client-side CPU of the raw operations a drained event needs, measured alone: consume it
/// (a `BaseConsumer` reading the backlog), produce its done event (the state node's producer
/// settings: `linger.ms=0`, `acks=all`), and its share of the pipelined script calls
/// ([`redis_ceiling`]: 64 keys per `EVALSHA`, 4 connections).
fn raw_cost(c: &Config, watched: &[Watched]) -> R<RawCost> {
    let n = c.n;
    // Consume.
    let consumer: BaseConsumer =
        consumer_config(c, &format!("bench-rawcost-{}", c.run)).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions(&consumer, TOPIC_SET_DEL)? {
        tpl.add_partition_offset(TOPIC_SET_DEL, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut ops = Vec::new();
    let (before, services) = (own_ticks(), ticks_of(watched));
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut seen = 0;
    while seen < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            // Touch the payload as the state node does.
            seen += usize::from(m.payload().is_some_and(|p| !p.is_empty()));
        }
    }
    ops.push((
        "consume one record",
        own_ticks() - before,
        since(watched, &services),
    ));
    drop(consumer);
    if seen < n {
        return Err(format!("raw consume saw {seen} of {n} records").into());
    }
    // Produce done-sized events.
    let (producer, acks) = counting_producer(c, 0)?;
    let bodies: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| {
            let e = set_event(
                &format!("bench-rawcost-{}", c.run),
                format!("k{i:07}"),
                i as u64 + 1,
                payload(c.value_bytes, i),
            );
            (e.message_key(), e.encode())
        })
        .collect();
    let (before, services) = (own_ticks(), ticks_of(watched));
    for (key, body) in &bodies {
        send(&producer, TOPIC_DONE, key, body)?;
    }
    wait_acks(&acks, n as u64)?;
    ops.push((
        "produce one done event",
        own_ticks() - before,
        since(watched, &services),
    ));
    drop(producer);
    // The script calls.
    let (before, services) = (own_ticks(), ticks_of(watched));
    let distinct = Config {
        keys: n,
        ..c.clone()
    };
    redis_ceiling(&distinct, Some(&apply_script()), 99)?;
    ops.push((
        "its share of a pipelined script call",
        own_ticks() - before,
        since(watched, &services),
    ));
    Ok(RawCost { n, ops })
}

/// Each watched process's ticks since `before`.
fn since(watched: &[Watched], before: &[u64]) -> Vec<u64> {
    ticks_of(watched)
        .iter()
        .zip(before)
        .map(|(now, then)| now.saturating_sub(*then))
        .collect()
}

/// Round 0 is the warm-up.
fn round_label(i: usize, r: &DrainRound) -> String {
    if r.warmup {
        "warm-up".into()
    } else {
        i.to_string()
    }
}

pub(super) fn print_capacity(c: &Config, cap: &Capacity) {
    let ceiling_command = &cap.ceiling_command;
    let us_per = |ticks: u64, events: u64| ticks as f64 * 1e6 / cap.ticks_per_s / events as f64;
    println!("### Drain: one `distcache-state-node`, default settings\n");
    println!(
        "{} set events ({} value bytes, every key distinct) pre-produced onto \
         `{TOPIC_SET_DEL}` ({PARTITIONS} partitions), then per round: the Redis ceiling, then a \
         fresh `distcache-state-node` process (the binary, release build, default settings: \
         `--batch-size 1024 --batch-wait-ms 0 --threads 4`; a fresh group and key prefix, so \
         every write is new to Redis) timed from its first consumed record (group join \
         excluded, shown) until its metrics page counts every record settled (polled every \
         5 ms). The warm-up round is the first drain on a freshly started broker, whose JIT \
         compiler threads take much of its CPU then (see the thread breakdown). Lua ceiling: `{ceiling_command}` against the same redis-server right before \
         the round: one key per call of the state node's own apply script, 64 calls per round \
         trip on 4 connections. Every round is shown.\n",
        c.n, c.value_bytes
    );
    println!("| round | events | group join | drain time | events/s | Lua ceiling (req/s) | × Lua ceiling | batches | retries |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in cap.rounds.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2}× | {:.0} | {:.0} |",
            round_label(i, r),
            r.events,
            secs(r.join),
            secs(r.elapsed),
            thousands(r.rate()),
            thousands(r.ceiling),
            r.rate() / r.ceiling,
            r.batches,
            r.retries
        );
    }
    println!();
    println!("### Cost: CPU per drained event, per process\n");
    println!(
        "CPU time (user + system, from `/proc/<pid>/stat`) each process used during the timed \
         drain, divided by the events drained. The machine has {} cores shared by all of them. \
         Raw client-side cost, measured alone in the bench process right after (its CPU time \
         for {} events): consume = a `BaseConsumer` reading the backlog; produce = done-sized \
         events with the state node's producer settings (`linger.ms=0`, `acks=all`) until \
         acknowledged; script = the same versioned writes as pipelined `EVALSHA`s, 64 keys per \
         call, 4 connections (redis-rs).\n",
        thread::available_parallelism().map_or(0, |n| n.get()),
        cap.raw.n
    );
    print!("| round |");
    for w in &cap.watched {
        print!(" {} µs/event |", w.role);
    }
    println!(" all processes µs/event | cores busy |");
    print!("|---:|");
    for _ in &cap.watched {
        print!("---:|");
    }
    println!("---:|---:|");
    for (i, r) in cap.rounds.iter().enumerate() {
        print!("| {} |", round_label(i, r));
        for t in &r.cpu {
            print!(" {:.2} |", us_per(*t, r.events));
        }
        let sum: u64 = r.cpu.iter().sum();
        println!(
            " {:.2} | {:.2} |",
            us_per(sum, r.events),
            sum as f64 / cap.ticks_per_s / r.elapsed.as_secs_f64()
        );
    }
    println!();
    let raw = &cap.raw;
    let n = raw.n as u64;
    let services = &cap.watched[1..];
    print!("| raw client-side operation, alone | bench process µs/event |");
    for w in services {
        print!(" {} µs/event |", w.role);
    }
    println!();
    print!("|---|---:|");
    for _ in services {
        print!("---:|");
    }
    println!();
    for (name, own, theirs) in &raw.ops {
        print!("| {name} | {:.2} |", us_per(*own, n));
        for t in theirs {
            print!(" {:.2} |", us_per(*t, n));
        }
        println!();
    }
    let raw_sum: u64 = raw.ops.iter().map(|(_, own, _)| own).sum();
    print!("| **sum** | **{:.2}** |", us_per(raw_sum, n));
    for i in 0..services.len() {
        let t: u64 = raw.ops.iter().map(|(_, _, theirs)| theirs[i]).sum();
        print!(" {:.2} |", us_per(t, n));
    }
    println!("\n");
    println!(
        "Where a round's time goes: per batch, the state node's Redis apply (its \
         `apply_duration` summary){}; the rest is planning and waiting on the hand-off to \
         delivery.\n",
        if cap.rounds.iter().any(|r| r.done_s.is_some()) {
            " and, with `--trace`, Redis' answer → last done event acknowledged, which overlaps \
             the next batch's apply"
        } else {
            ""
        }
    );
    println!("| round | batches | per batch | mean apply | apply share | mean apply → done acked | other counters |");
    println!("|---:|---:|---:|---:|---:|---:|---|");
    for (i, r) in cap.rounds.iter().enumerate() {
        let per = r.elapsed.as_secs_f64() / r.batches.max(1.0);
        let extras: Vec<String> = r
            .extras
            .iter()
            .map(|(label, v)| format!("{label} {v:.0}"))
            .collect();
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} % | {} | {} |",
            round_label(i, r),
            r.batches,
            per * 1e3,
            r.apply_s / r.batches.max(1.0) * 1e3,
            r.apply_s / r.elapsed.as_secs_f64() * 100.0,
            r.done_s.map_or("n/a".into(), |d| format!(
                "{:.2} ms",
                d / r.batches.max(1.0) * 1e3
            )),
            extras.join(", ")
        );
    }
    println!();
    for (i, r) in cap.rounds.iter().enumerate() {
        let node = us_per(r.cpu[0], r.events);
        println!(
            "- round {}: state node {:.2} µs/event = **{:.2}× the raw sum**",
            round_label(i, r),
            node,
            node / us_per(raw_sum, n),
        );
        for (w, threads) in cap.watched.iter().zip(&r.threads) {
            println!(
                "  - {} threads, µs/event: {}",
                w.role,
                threads
                    .iter()
                    .take(8)
                    .map(|(name, t)| format!("`{name}` {:.2}", us_per(*t, r.events)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    println!();
}
