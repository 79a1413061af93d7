//! The write pipeline against real services: a Kafka broker (Apache Kafka or tansu, as
//! scripts/bench.sh starts it) and redis-server.
//!
//! One run measures everything, so the ratios between lines mean something on a noisy shared
//! machine. In the order they run (`--sections 1,2,3`):
//!
//! 1. Raw broker throughput with plain rdkafka clients (producer → broker → `BaseConsumer`):
//!    produce, consume in a fresh group, and both at once. The ceiling (3) is compared to.
//! 2. Propagation latency: node A (in this process) does `set_with_sync(key_i, value_i)` one at a
//!    time; node B is this binary re-executed with `--role listener` (its own process, same
//!    namespace) and polls its local `get(key_i)` every 50 µs until it returns `value_i`, then
//!    replies with the wall-clock time. Both sit on one machine, so the difference of the two
//!    `SystemTime` stamps is the propagation time. Baselines with the same consumer settings,
//!    sampled in rotation with it: one raw hop (produce → consumer assigned to every partition)
//!    and a raw two-hop relay (produce → consumer that re-produces → consumer), the structural
//!    floor of the distcache path. Runs before (3), whose traffic slows the broker's fetches
//!    from the done topic (measured at the end of (3)).
//! 3. State-node throughput: N set events are pre-produced onto the set-del topic, then an
//!    embedded [`StateNode`] (fresh group, fresh Redis key prefix) is started per `max_batch` and
//!    timed from its first consumed record (so the ~3 s group join is excluded) until every
//!    event is settled (`applied + stale_dropped + deduped + malformed + failed`); best of a few
//!    rounds. Plus a Redis ceiling (the same versioned writes as pipelined `EVALSHA`s from 4
//!    connections, and as plain `HSET`s), the cost of each broker step of a batch measured
//!    alone (publish the done events, commit offsets), and a raw hop on the now large done
//!    topic against one on a fresh topic.
//!
//! Addresses come from `DISTCACHE_BROKERS` (host:port) and `DISTCACHE_REDIS_URL`;
//! `scripts/bench.sh pipeline` starts both services, runs this and stops them. Results are
//! markdown tables on stdout; progress and logs go to stderr.
//!
//! One file per section: `raw.rs` (1), `latency.rs` (2), `drain.rs` (3), `load.rs` (`load`:
//! propagation while other writers sustain a write rate; only when asked for, as
//! `scripts/bench.sh propagation-load` does); `kafka.rs` holds the plain rdkafka clients they
//! share, `format.rs` the number formatting.
//!
//! ```text
//! cargo bench --bench pipeline -- [--n 50000] [--keys 10000] [--samples 1000] [--rounds 2]
//!     [--batches 1,16,128,1024] [--batch-one 2000] [--diag-samples 500] [--sections 1,2,3,drain,load,scale]
//!     [--node-args --trace] [--load-rate 10000] [--load-threads 256] [--load-warmup-s 20]
//!     [--dump latency.csv]
//! ```

use std::error::Error;
use std::future::Future;
use std::io::{BufRead, BufReader, Write as _};
use std::pin::pin;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use distcache::event::{now_micros, WriteEvent, TOPIC_DONE, TOPIC_SET_DEL};
use distcache::{Cache, DistributedCache, StateNode, StateNodeMetrics, Summary, Version};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

type R<T> = Result<T, Box<dyn Error + Send + Sync>>;

mod capacity;
mod drain;
mod format;
mod kafka;
mod latency;
mod load;
mod outside;
#[path = "../../tests/support/proc_stat.rs"]
mod proc_stat;
mod raw;
mod role;
mod scale;

use capacity::*;
use drain::*;
use format::*;
use kafka::*;
use latency::*;
use load::*;
use raw::*;
use role::*;
use scale::*;

const PARTITIONS: i32 = 8;
/// How long any single wait in this bench may take before it is reported as a failure.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
struct Config {
    brokers: String,
    redis_url: String,
    /// Messages for the throughput runs (1 and 3).
    n: usize,
    /// Distinct cache keys the set events of (3) cycle through.
    keys: usize,
    value_bytes: usize,
    batch_sizes: Vec<usize>,
    /// Events timed for `max_batch = 1` (slow: one Redis trip, one ack and one commit each).
    batch_one: usize,
    /// Sequential writes per latency measurement (2).
    samples: usize,
    /// Writes for the `max_wait = 0` diagnostic of (2); 0 skips it.
    diag_samples: usize,
    fetch_wait_ms: u64,
    /// State-node runs per batch size (the fastest is shown).
    rounds: usize,
    /// Which parts to run: `1`, `2`, `3` (the default), `drain` (drain and cost per event of the
    /// state-node binary), `load` (propagation under load) and `scale` (1–3 state nodes, one
    /// Redis and a Redis Cluster).
    sections: Vec<String>,
    /// Propagation under load (`--sections load`): the background writers' target rate and threads.
    load: LoadConfig,
    /// Where to write every latency sample as CSV (`max_wait_ms,path,index,latency_us`).
    dump: Option<String>,
    /// Where to write the headline figures as `name=value` lines (scripts/bench.sh puts the brokers' side by
    /// side from them).
    summary: Option<String>,
    /// Extra arguments for every `distcache-state-node` the `drain` section starts.
    node_args: Vec<String>,
    /// The broker's name for the tables (`DISTCACHE_BROKER_NAME`, set by scripts/bench.sh).
    broker_name: String,
    /// Unique per run: topic, group, namespace and key-prefix names derive from it.
    run: String,
}

/// Sections `--sections` knows.
const SECTIONS: [&str; 6] = ["1", "2", "3", "drain", "load", "scale"];

impl Config {
    fn has(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: pipeline [--n N] [--keys K] [--value-bytes B] [--batches 1,16,128,1024] \
         [--batch-one N] [--samples S] [--diag-samples S] [--rounds R] [--sections 1,2,3,drain,load,scale] [--node-args --trace,--threads=8] [--load-rate W] [--load-threads T] [--load-warmup-s S] [--dump CSV] [--summary FILE]\n\
         env: DISTCACHE_BROKERS=host:port DISTCACHE_REDIS_URL=redis://host:port/ \
         DISTCACHE_BROKER_NAME=name"
    );
    std::process::exit(2);
}

fn env_var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => {
            eprintln!("pipeline bench: {name} is not set (scripts/bench.sh pipeline sets it)");
            usage();
        }
    }
}

fn parse_args(args: &[String]) -> Config {
    let mut c = Config {
        brokers: env_var("DISTCACHE_BROKERS"),
        redis_url: env_var("DISTCACHE_REDIS_URL"),
        n: 50_000,
        keys: 10_000,
        value_bytes: 100,
        batch_sizes: vec![1, 16, 128, 1024],
        batch_one: 2_000,
        samples: 1_000,
        diag_samples: 500,
        fetch_wait_ms: 5,
        rounds: 2,
        sections: ["1", "2", "3"].map(String::from).to_vec(),
        load: LoadConfig::default(),
        dump: None,
        summary: None,
        node_args: Vec::new(),
        broker_name: std::env::var("DISTCACHE_BROKER_NAME")
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "Kafka".into()),
        run: format!("{:x}{:x}", now_micros() % 0xffff_ffff, std::process::id()),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let num = |it: &mut std::slice::Iter<'_, String>| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match arg.as_str() {
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            "--n" => c.n = num(&mut it),
            "--keys" => c.keys = num(&mut it).max(1),
            "--value-bytes" => c.value_bytes = num(&mut it),
            "--batch-one" => c.batch_one = num(&mut it).max(1),
            "--samples" => c.samples = num(&mut it).max(1),
            "--rounds" => c.rounds = num(&mut it).max(1),
            "--diag-samples" => c.diag_samples = num(&mut it),
            "--load-rate" => c.load.rate = num(&mut it).max(1),
            "--load-threads" => c.load.threads = num(&mut it).max(1),
            "--load-warmup-s" => c.load.warmup_secs = num(&mut it) as u64,
            "--dump" => c.dump = Some(it.next().cloned().unwrap_or_else(|| usage())),
            "--summary" => c.summary = Some(it.next().cloned().unwrap_or_else(|| usage())),
            "--node-args" => {
                let list = it.next().unwrap_or_else(|| usage());
                // Comma-separated, so the list survives word splitting: `--trace,--threads=8`.
                c.node_args = list
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(String::from)
                    .collect();
            }
            "--sections" => {
                let list = it.next().unwrap_or_else(|| usage());
                c.sections = list.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = c.sections.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    eprintln!("pipeline bench: unknown section {bad:?} (known: {SECTIONS:?})");
                    usage();
                }
            }
            "--batches" => {
                let list = it.next().unwrap_or_else(|| usage());
                c.batch_sizes = list
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage()))
                    .collect();
            }
            "-h" | "--help" => usage(),
            other => {
                eprintln!("pipeline bench: unknown argument {other:?}");
                usage();
            }
        }
    }
    c
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --benches` runs bench targets without `--bench`: this bench needs the servers
    // scripts/bench.sh starts, so in test mode it only checks that it builds and starts.
    if args.first().map(String::as_str) != Some("--role") && !args.iter().any(|a| a == "--bench") {
        println!("pipeline bench: test mode, nothing measured (run scripts/bench.sh pipeline)");
        return;
    }
    let result = if args.first().map(String::as_str) == Some("--role") {
        role(&args[1..])
    } else {
        run_all(parse_args(&args))
    };
    if let Err(e) = result {
        eprintln!("pipeline bench failed: {e}");
        std::process::exit(1);
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("pipeline: {}", msg.as_ref());
}

fn run_all(c: Config) -> R<()> {
    let started = Instant::now();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!("### Pipeline: setup\n");
    println!(
        "One run against a real {} broker (`{}`) and redis-server (`{}`) on this machine \
         ({cores} cores, everything shares them). Release build. Topics have {PARTITIONS} \
         partitions. All clients: `socket.nagle.disable=true`, `acks=all`; consumers \
         `fetch.wait.max.ms={}`, `session.timeout.ms=6000`, `heartbeat.interval.ms=2000`, \
         `auto.offset.reset=earliest`. Throughput producers `linger.ms=5`; latency producers \
         `linger.ms=0` (as distcache's own). N = {} messages of {} value bytes, keys cycling \
         over {} distinct keys. Run id `{}`.\n",
        c.broker_name, c.brokers, c.redis_url, c.fetch_wait_ms, c.n, c.value_bytes, c.keys, c.run
    );

    let mut summary = Vec::new();
    let mut raw = None;
    if c.has("1") {
        progress("1/3 raw broker throughput");
        let r = raw_throughput(&c)?;
        print_raw(&c, &r);
        summary.push(format!("raw_consume={:.0}", rate(r.n, r.consume)));
        summary.push(format!("raw_produce={:.0}", rate(r.n, r.produce)));
        raw = Some(r);
    }
    // Latency before the state-node throughput runs: those leave several hundred thousand
    // events on the done topic, and tansu then fetches from it far more slowly (measured at the
    // end of part 3), which would not be distcache's doing.
    if c.has("2") {
        progress("2/3 propagation latency");
        let lat = latency(&c)?;
        print_latency(&c, &lat);
        for r in &lat {
            let mw = r.max_wait.as_millis();
            for (path, l) in [
                ("one_hop", &r.one_hop),
                ("two_hops", &r.two_hops),
                ("distcache", &r.distcache),
            ] {
                for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                    summary.push(format!("{path}_{name}_ms_wait{mw}={:.2}", l.pct(q)));
                }
            }
        }
        if let Some(path) = &c.dump {
            dump_latency(path, &lat)?;
        }
    }
    if c.has("scale") {
        progress("scale: 1-3 state nodes, one redis and a redis cluster");
        let runs = scale(&c)?;
        print_scale(&c, &runs);
        for r in runs.iter().filter(|r| !r.warmup) {
            let redis = if r.cluster { "cluster" } else { "single" };
            summary.push(format!("scale_{redis}_{}={:.0}", r.nodes, r.rate()));
        }
    }
    if c.has("load") {
        progress("load: propagation under load");
        let run = propagation_load(&c)?;
        print_load(&c, &run);
        summary.extend(load_summary(&run));
    }
    if c.has("3") {
        progress("3/3 state-node throughput");
        let (sn, ceiling, plain) = state_node_throughput(&c)?;
        let steps = step_costs(&c)?;
        let done_check = done_topic_check(&c)?;
        print_state_node(&c, &sn, ceiling.as_ref(), &plain, raw.as_ref());
        for run in &sn {
            summary.push(format!("drain_batch{}={:.0}", run.max_batch, run.rate()));
        }
        print_step_costs(&sn, &steps);
        print_done_topic_check(&c, &done_check);
    }
    if c.has("drain") {
        progress("drain: the state-node binary's drain rate and CPU per event");
        let cap = capacity(&c)?;
        print_capacity(&c, &cap);
        for (i, r) in cap.rounds.iter().enumerate().filter(|(_, r)| !r.warmup) {
            summary.push(format!("drain_r{i}={:.0}", r.rate()));
            summary.push(format!("drain_ceiling_r{i}={:.0}", r.ceiling));
        }
    }

    println!(
        "\nTotal bench time {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &c.summary {
        std::fs::write(path, summary.join("\n") + "\n")?;
    }
    Ok(())
}
