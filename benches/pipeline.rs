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
//! ```text
//! cargo bench --bench pipeline -- [--n 50000] [--keys 10000] [--samples 1000] [--rounds 2]
//!     [--batches 1,16,128,1024] [--batch-one 2000] [--diag-samples 500] [--sections 1,2,3]
//!     [--dump latency.csv]
//! ```

use std::error::Error;
use std::future::Future;
use std::io::{BufRead, BufReader, Write as _};
use std::pin::pin;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use distcache::event::{now_micros, Event, Op, TOPIC_DONE, TOPIC_SET_DEL};
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

const PARTITIONS: i32 = 8;
/// How long any single wait in this bench may take before it is reported as a failure.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------------------------ config

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
    /// Which of the three parts to run (all by default).
    sections: Vec<u8>,
    /// Where to write every latency sample as CSV (`max_wait_ms,path,index,latency_us`).
    dump: Option<String>,
    /// Where to write the headline figures as `name=value` lines (scripts/bench.sh puts the brokers' side by
    /// side from them).
    summary: Option<String>,
    /// The broker's name for the tables (`DISTCACHE_BROKER_NAME`, set by scripts/bench.sh).
    broker_name: String,
    /// Unique per run: topic, group, namespace and key-prefix names derive from it.
    run: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: pipeline [--n N] [--keys K] [--value-bytes B] [--batches 1,16,128,1024] \
         [--batch-one N] [--samples S] [--diag-samples S] [--rounds R] [--sections 1,2,3] [--dump CSV] [--summary FILE]\n\
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
        sections: vec![1, 2, 3],
        dump: None,
        summary: None,
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
            "--dump" => c.dump = Some(it.next().cloned().unwrap_or_else(|| usage())),
            "--summary" => c.summary = Some(it.next().cloned().unwrap_or_else(|| usage())),
            "--sections" => {
                let list = it.next().unwrap_or_else(|| usage());
                c.sections = list
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage()))
                    .collect();
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
        listener_role(&args[1..])
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
    if c.sections.contains(&1) {
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
    if c.sections.contains(&2) {
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
    if c.sections.contains(&3) {
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

    println!(
        "\nTotal bench time {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &c.summary {
        std::fs::write(path, summary.join("\n") + "\n")?;
    }
    Ok(())
}

// ----------------------------------------------------------------------------- kafka helpers

fn base_config(c: &Config) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &c.brokers)
        .set("socket.nagle.disable", "true")
        .set("log_level", "4");
    cc
}

fn producer_config(c: &Config, linger_ms: u32) -> ClientConfig {
    let mut cc = base_config(c);
    cc.set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "1000000");
    cc
}

fn consumer_config(c: &Config, group: &str) -> ClientConfig {
    let mut cc = base_config(c);
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .set("fetch.wait.max.ms", c.fetch_wait_ms.to_string())
        .set("enable.partition.eof", "false");
    cc
}

/// Counts delivery reports and wakes whoever waits for them.
#[derive(Default)]
struct Acks {
    /// (acknowledged, failed)
    counts: Mutex<(u64, u64)>,
    changed: Condvar,
}

struct CountingContext(Arc<Acks>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut counts = self.0.counts.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => counts.0 += 1,
            Err(_) => counts.1 += 1,
        }
        self.0.changed.notify_all();
    }
}

/// A `ThreadedProducer`: its thread serves delivery reports as they arrive, as distcache's own
/// producer does. (`BaseProducer::flush` in rdkafka 0.39 polls in 100 ms slices, which would
/// add up to 100 ms to every timed wait.)
type CountingProducer = ThreadedProducer<CountingContext>;

fn counting_producer(c: &Config, linger_ms: u32) -> R<(CountingProducer, Arc<Acks>)> {
    let acks = Arc::new(Acks::default());
    let producer =
        producer_config(c, linger_ms).create_with_context(CountingContext(acks.clone()))?;
    Ok((producer, acks))
}

/// Queues one message, waiting while librdkafka's queue is full.
fn send(producer: &CountingProducer, topic: &str, key: &[u8], payload: &[u8]) -> R<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                thread::sleep(Duration::from_micros(500));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Waits until `expected` messages (counted over the producer's life) were acknowledged; fails
/// if any delivery failed.
fn wait_acks(acks: &Acks, expected: u64) -> R<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut counts = acks.counts.lock().unwrap_or_else(|e| e.into_inner());
    while counts.0 + counts.1 < expected && Instant::now() < deadline {
        counts = acks
            .changed
            .wait_timeout(counts, Duration::from_millis(100))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    let (ok, failed) = *counts;
    if failed > 0 || ok < expected {
        return Err(format!("{failed} deliveries failed, {ok} of {expected} acknowledged").into());
    }
    Ok(())
}

/// Runs a future to completion on this thread (rdkafka's admin API returns futures; no runtime).
fn block_on<F: Future>(fut: F) -> F::Output {
    struct ThreadWaker(Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

/// Creates `topics` with [`PARTITIONS`] partitions; existing ones are left alone.
fn create_topics(c: &Config, topics: &[&str]) -> R<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(c).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    for result in block_on(admin.create_topics(&new, &opts))? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("creating topic {topic}: {code}").into()),
        }
    }
    wait_until_served(c, topics)
}

/// Waits until every partition of `topics` answers a watermark query: Apache Kafka reports a
/// freshly created partition's leader a moment after the topic exists (NotLeaderForPartition).
fn wait_until_served(c: &Config, topics: &[&str]) -> R<()> {
    let consumer: BaseConsumer = base_config(c).create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for topic in topics {
        for p in partitions(&consumer, topic)? {
            loop {
                match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("{topic}/{p} is not served: {e}").into())
                    }
                    Err(_) => thread::sleep(Duration::from_millis(100)),
                }
            }
        }
    }
    Ok(())
}

/// Partition ids of `topic`, waiting for it to show up in the metadata.
fn partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> R<Vec<i32>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let md = match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(md) => md,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => {
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let ids: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !ids.is_empty() {
            return Ok(ids);
        }
        if Instant::now() > deadline {
            return Err(format!("topic {topic} has no partitions").into());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Records on the set-del topic, exactly, for "a fresh group has caught up" checks.
///
/// tansu 0.6.0 answers ListOffsets(latest) with the base offset of a partition's last record
/// batch + 1, not its last offset + 1: after a batched produce the high watermark lags the real
/// end by the last batch's size − 1 (seen here: a partition holding offsets 0..=2501 reported
/// 1663). So first end every partition with a one-record batch (a valid set event of a
/// sentinel namespace, acknowledged before the next is sent), then sum the watermarks.
fn set_del_backlog(c: &Config, tag: &str) -> R<u64> {
    create_topics(c, &[TOPIC_SET_DEL, TOPIC_DONE])?;
    let (producer, acks) = counting_producer(c, 0)?;
    let ids = partitions(&metadata_probe(c)?, TOPIC_SET_DEL)?;
    for (sent, &p) in ids.iter().enumerate() {
        let e = set_event(
            &format!("bench-sentinel-{}", c.run),
            format!("{tag}-{p}"),
            1,
            b"sentinel".to_vec(),
        );
        let (key, body) = (e.message_key(), e.encode());
        producer
            .send(
                BaseRecord::to(TOPIC_SET_DEL)
                    .partition(p)
                    .key(&key)
                    .payload(&body),
            )
            .map_err(|(e, _)| e)?;
        wait_acks(&acks, sent as u64 + 1)?;
    }
    topic_messages(c, TOPIC_SET_DEL)
}

/// Records in `topic` by its watermarks (sum of high − low); see [`set_del_backlog`] for why
/// this is exact only when every partition's last batch holds one record.
fn topic_messages(c: &Config, topic: &str) -> R<u64> {
    let consumer: BaseConsumer = consumer_config(c, &format!("bench-probe-{}", c.run)).create()?;
    let mut total = 0;
    for p in partitions(&consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        total += (high - low).max(0) as u64;
    }
    Ok(total)
}

/// A consumer assigned to every partition of `topic`, at the current end (no group join).
fn assigned_at_end(c: &Config, topic: &str, group: &str) -> R<BaseConsumer> {
    let consumer: BaseConsumer = consumer_config(c, group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions(&consumer, topic)? {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn payload(bytes: usize, i: usize) -> Vec<u8> {
    let mut p = format!("{i:010}").into_bytes();
    p.resize(bytes.max(10), b'x');
    p
}

// ------------------------------------------------------------------------ 1. raw throughput

struct RawThroughput {
    n: usize,
    produce: Duration,
    consume_join: Duration,
    /// Fastest of the group consume and the re-reads.
    consume: Duration,
    /// All consume times: the group consumer's first, then the re-reads.
    consumes: Vec<Duration>,
    combined: Duration,
    combined_produce: Duration,
}

impl RawThroughput {
    fn consume_rate(&self) -> f64 {
        rate(self.n, self.consume)
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn raw_throughput(c: &Config) -> R<RawThroughput> {
    let topic = format!("bench-raw-{}", c.run);
    let topic_both = format!("bench-raw-both-{}", c.run);
    create_topics(c, &[&topic, &topic_both])?;
    let messages: Vec<(Vec<u8>, Vec<u8>)> = (0..c.n)
        .map(|i| {
            (
                format!("key-{}", i % c.keys).into_bytes(),
                payload(c.value_bytes, i),
            )
        })
        .collect();

    // Produce alone: first send until the last acknowledgement.
    let (producer, acks) = counting_producer(c, 5)?;
    partitions(&metadata_probe(c)?, &topic)?;
    let t0 = Instant::now();
    for (k, v) in &messages {
        send(&producer, &topic, k, v)?;
    }
    wait_acks(&acks, c.n as u64)?;
    let produce = t0.elapsed();
    progress(format!("  produced {} in {produce:?}", c.n));

    // Consume alone, fresh group from the beginning: join excluded, first → last message.
    let consumer: BaseConsumer = consumer_config(c, &format!("bench-raw-{}", c.run)).create()?;
    let subscribed = Instant::now();
    consumer.subscribe(&[&topic])?;
    let (first, last) = consume_n(&consumer, c.n)?;
    let consume_join = first - subscribed;
    let consume = last - first;
    progress(format!(
        "  consumed {} in {consume:?} (+{consume_join:?} join)",
        c.n
    ));
    drop(consumer);
    // The same read twice more, from consumers assigned to every partition at offset 0 (no
    // group join, the same fetch path): one ~0.1 s interval is easily disturbed here.
    let mut consumes = vec![consume];
    for i in 0..2 {
        let consumer: BaseConsumer =
            consumer_config(c, &format!("bench-raw-{}-re{i}", c.run)).create()?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions(&consumer, &topic)? {
            tpl.add_partition_offset(&topic, p, Offset::Offset(0))?;
        }
        consumer.assign(&tpl)?;
        let (first, last) = consume_n(&consumer, c.n)?;
        consumes.push(last - first);
    }
    let consume = consumes.iter().copied().min().unwrap_or(consume);

    // Both at once: a consumer assigned to every partition of a fresh topic (no group join)
    // polls in its own thread while this thread produces.
    let consumer = assigned_at_end(c, &topic_both, &format!("bench-raw-both-{}", c.run))?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let n = c.n;
    let reader = thread::spawn(move || -> R<Instant> {
        // One empty poll first: connections and fetch sessions are up before the clock starts.
        if consumer.poll(Duration::from_millis(100)).is_some() {
            return Err("the fresh topic was not empty".into());
        }
        let _ = ready_tx.send(());
        Ok(consume_n(&consumer, n)?.1)
    });
    ready_rx.recv_timeout(Duration::from_secs(10))?;
    let (producer, acks) = counting_producer(c, 5)?;
    let t0 = Instant::now();
    for (k, v) in &messages {
        send(&producer, &topic_both, k, v)?;
    }
    wait_acks(&acks, c.n as u64)?;
    let combined_produce = t0.elapsed();
    let last = reader.join().map_err(|_| "consumer thread panicked")??;
    let combined = last - t0;
    progress(format!("  produce+consume {} in {combined:?}", c.n));
    Ok(RawThroughput {
        n: c.n,
        produce,
        consume_join,
        consume,
        consumes,
        combined,
        combined_produce,
    })
}

/// A throwaway consumer handle for metadata queries.
fn metadata_probe(c: &Config) -> R<BaseConsumer> {
    Ok(consumer_config(c, &format!("bench-probe-{}", c.run)).create()?)
}

/// Polls until `n` messages arrived. Returns when the first and the last arrived.
fn consume_n(consumer: &BaseConsumer, n: usize) -> R<(Instant, Instant)> {
    let mut first = None;
    let mut got = 0;
    let mut last_progress = Instant::now();
    while got < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                got += 1;
                last_progress = Instant::now();
                first.get_or_insert(last_progress);
            }
            Some(Err(e)) => progress(format!("  consumer error: {e}")),
            None => {}
        }
        if last_progress.elapsed() > Duration::from_secs(30) {
            return Err(format!("consumer stalled at {got} of {n} messages").into());
        }
    }
    let first = first.unwrap_or_else(Instant::now);
    Ok((first, last_progress))
}

fn print_raw(c: &Config, r: &RawThroughput) {
    println!(
        "### Pipeline 1. Raw broker throughput (rdkafka → {} → rdkafka, no distcache)\n",
        c.broker_name
    );
    println!("| measurement | messages | time | msg/s |");
    println!("|---|---:|---:|---:|");
    println!(
        "| produce: `ThreadedProducer`, keyed, `linger.ms=5`, first send → last ack | {} | {} | {} |",
        r.n,
        secs(r.produce),
        thousands(rate(r.n, r.produce))
    );
    println!(
        "| consume: `BaseConsumer` from the beginning, first → last message; fastest of a fresh group (join {} excluded) and two re-reads assigned at offset 0 (all: {}) | {} | {} | {} |",
        secs(r.consume_join),
        r.consumes
            .iter()
            .map(|&d| thousands(rate(r.n, d)))
            .collect::<Vec<_>>()
            .join(", "),
        r.n,
        secs(r.consume),
        thousands(r.consume_rate())
    );
    println!(
        "| produce → consume concurrently: consumer assigned to all partitions, first send → last message received (producer alone finished after {}) | {} | {} | {} |",
        secs(r.combined_produce),
        r.n,
        secs(r.combined),
        thousands(rate(r.n, r.combined))
    );
    println!();
}

// ------------------------------------------------------------------ 3. state-node throughput

struct StateNodeRun {
    max_batch: usize,
    events: u64,
    join: Duration,
    elapsed: Duration,
    shutdown: Duration,
    m: StateNodeMetrics,
    /// events/s of the other rounds with this `max_batch` (this run is the fastest).
    others: Vec<f64>,
}

impl StateNodeRun {
    fn rate(&self) -> f64 {
        rate(self.events as usize, self.elapsed)
    }
}

fn settled(m: &StateNodeMetrics) -> u64 {
    m.applied + m.stale_dropped + m.deduped + m.malformed + m.failed
}

fn set_event(ns: &str, key: String, hlc: u64, value: Vec<u8>) -> Event {
    Event {
        op: Op::Set,
        ns: ns.to_string(),
        key,
        version: Version::new(hlc, 7),
        remote_ttl: None,
        local_ttl: None,
        value: Some(value),
        write_redis: true,
        value_omitted: false,
        origin: 7,
        produced_at_us: now_micros(),
    }
}

/// The state-node runs (fastest per batch size) and the Redis ceilings with and without the
/// script (fastest of one per round, measured between the rounds).
fn state_node_throughput(c: &Config) -> R<(Vec<StateNodeRun>, Option<RedisCeiling>, RedisCeiling)> {
    create_topics(c, &[TOPIC_SET_DEL, TOPIC_DONE])?;
    // Versions are small integers: they sort like real ones and, observed by a core node's
    // clock later, do not push it forward.
    let ns = format!("bench-sn-{}", c.run);
    let (producer, acks) = counting_producer(c, 5)?;
    partitions(&metadata_probe(c)?, TOPIC_SET_DEL)?;
    let t0 = Instant::now();
    for i in 0..c.n {
        let e = set_event(
            &ns,
            format!("k{:06}", i % c.keys),
            i as u64 + 1,
            payload(c.value_bytes, i),
        );
        send(&producer, TOPIC_SET_DEL, &e.message_key(), &e.encode())?;
    }
    wait_acks(&acks, c.n as u64)?;
    progress(format!(
        "  pre-produced {} set events in {:?}",
        c.n,
        t0.elapsed()
    ));
    // A fresh group reads the whole topic: on a reused broker that is more than our N.
    let total = set_del_backlog(c, "sn")?;

    // Several rounds, alternating the order of batch sizes; the fastest run of each is shown
    // (load from elsewhere on a shared machine only ever slows a run down).
    let mut all: Vec<Vec<StateNodeRun>> = c.batch_sizes.iter().map(|_| Vec::new()).collect();
    let script = apply_script();
    let mut ceilings: Vec<RedisCeiling> = Vec::new();
    let mut plains: Vec<RedisCeiling> = Vec::new();
    for round in 0..c.rounds {
        ceilings.push(redis_ceiling(c, Some(&script), round)?);
        plains.push(redis_ceiling(c, None, round)?);
        let mut order: Vec<usize> = (0..c.batch_sizes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let b = c.batch_sizes[i];
            let target = if b == 1 {
                (c.batch_one as u64).min(total)
            } else {
                total
            };
            let run = state_node_run(c, b, target, round)?;
            progress(format!(
                "  round {round}, max_batch {b}: {} events in {:?} (join {:?}, shutdown {:?})",
                run.events, run.elapsed, run.join, run.shutdown
            ));
            all[i].push(run);
        }
    }
    let quickest = |v: Vec<RedisCeiling>| v.into_iter().min_by_key(|x| x.elapsed);
    let ceiling = quickest(ceilings);
    let plain = quickest(plains).ok_or("no rounds")?;
    let mut best = Vec::new();
    for mut runs in all {
        runs.sort_by(|x, y| y.rate().total_cmp(&x.rate()));
        let others: Vec<f64> = runs.iter().skip(1).map(StateNodeRun::rate).collect();
        if let Some(mut fastest) = runs.into_iter().next() {
            fastest.others = others;
            best.push(fastest);
        }
    }
    Ok((best, ceiling, plain))
}

fn state_node_run(c: &Config, max_batch: usize, target: u64, round: usize) -> R<StateNodeRun> {
    let started = Instant::now();
    let node = StateNode::builder()
        .kafka_brokers(&c.brokers)
        .redis_url(&c.redis_url)
        .group(format!("bench-sn-{}-b{max_batch}-r{round}", c.run))
        .key_prefix(format!("bench:{}:b{max_batch}:r{round}:", c.run))
        .max_batch(max_batch)
        .max_wait(Duration::from_millis(2))
        .redis_workers(4)
        .start()?;
    let first = wait_until(|| node.metrics().consumed > 0, Duration::from_micros(200))
        .ok_or("the state node consumed nothing")?;
    let done = wait_until(
        || settled(&node.metrics()) >= target,
        Duration::from_millis(1),
    )
    .ok_or_else(|| format!("state node stuck: {:?}", node.metrics()))?;
    let m = node.metrics();
    let t = Instant::now();
    node.shutdown();
    Ok(StateNodeRun {
        max_batch,
        events: settled(&m),
        join: first - started,
        elapsed: done - first,
        shutdown: t.elapsed(),
        m,
        others: Vec::new(),
    })
}

/// Polls `cond` every `every` until it holds (returns when) or [`STEP_TIMEOUT`] passes.
fn wait_until(mut cond: impl FnMut() -> bool, every: Duration) -> Option<Instant> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if cond() {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(every);
    }
}

struct RedisCeiling {
    writes: usize,
    connections: usize,
    pipeline: usize,
    /// Keys per `EVALSHA` (0: plain `HSET`s, no script).
    keys_per_call: usize,
    elapsed: Duration,
}

/// The state node's apply script and how many keys it sends per call, so the ceiling always runs
/// exactly what the state node runs.
struct ApplyScript {
    text: String,
    keys_per_call: usize,
}

fn apply_script() -> ApplyScript {
    ApplyScript {
        text: distcache::bench_support::APPLY_SCRIPT.to_string(),
        keys_per_call: distcache::bench_support::KEYS_PER_CALL,
    }
}

/// Counts the "applied" replies (integer 1) in a script reply, one key or many.
fn count_applied(v: &redis::Value) -> usize {
    match v {
        redis::Value::Int(1) => 1,
        redis::Value::Array(items) => items.iter().map(count_applied).sum(),
        _ => 0,
    }
}

/// The same versioned writes as the state node applies, straight to Redis: 4 connections, each
/// pipelining its share of the keys, 256 writes per round trip, as `EVALSHA`s of the state
/// node's script (`keys_per_call` keys each), or with `script == None` as plain `HSET`s (no
/// version check): what the script itself costs. No Kafka, no dedup, no done events.
fn redis_ceiling(c: &Config, script: Option<&ApplyScript>, round: usize) -> R<RedisCeiling> {
    const CONNECTIONS: usize = 4;
    const PIPELINE: usize = 256;
    let client = redis::Client::open(c.redis_url.as_str())?;
    let lua = script.is_some();
    let prefix = format!("bench:{}:ceiling-{lua}-r{round}:", c.run);
    let keys_per_call = script.map_or(0, |s| s.keys_per_call.max(1));
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut conn = client.get_connection()?;
        let sha = match script {
            Some(s) => redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(&s.text)
                .query::<String>(&mut conn)?,
            None => String::new(),
        };
        conns.push((conn, sha));
    }
    let value = payload(c.value_bytes, 0);
    let barrier = Arc::new(std::sync::Barrier::new(CONNECTIONS + 1));
    let mut handles = Vec::new();
    for (w, (mut conn, sha)) in conns.into_iter().enumerate() {
        let (prefix, value, barrier) = (prefix.clone(), value.clone(), barrier.clone());
        let (n, keys) = (c.n, c.keys);
        handles.push(thread::spawn(move || -> R<usize> {
            // Key k always goes to connection k % 4, as the state node shards by key.
            let mine: Vec<usize> = (0..n).filter(|i| (i % keys) % CONNECTIONS == w).collect();
            let key = |i: usize| format!("{prefix}k{:06}", i % keys);
            let version = |i: usize| Version::new(i as u64 + 1, 7).to_hex();
            barrier.wait();
            let mut applied = 0;
            for chunk in mine.chunks(PIPELINE) {
                let mut pipe = redis::pipe();
                if !lua {
                    for &i in chunk {
                        pipe.cmd("HSET")
                            .arg(key(i))
                            .arg("v")
                            .arg(&value[..])
                            .arg("ver")
                            .arg(version(i))
                            .ignore();
                    }
                    pipe.query::<()>(&mut conn)?;
                    applied += chunk.len();
                    continue;
                }
                for call in chunk.chunks(keys_per_call) {
                    let cmd = pipe.cmd("EVALSHA").arg(&sha).arg(call.len());
                    for &i in call {
                        cmd.arg(key(i));
                    }
                    for &i in call {
                        cmd.arg(version(i))
                            .arg("s")
                            .arg("1")
                            .arg(&value[..])
                            .arg(0)
                            .arg(600_000);
                    }
                }
                let replies: Vec<redis::Value> = pipe.query(&mut conn)?;
                applied += replies.iter().map(count_applied).sum::<usize>();
            }
            Ok(applied)
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut applied = 0;
    for h in handles {
        applied += h.join().map_err(|_| "redis thread panicked")??;
    }
    let elapsed = t0.elapsed();
    if applied != c.n {
        return Err(format!("redis ceiling: {applied} of {} writes applied", c.n).into());
    }
    progress(format!(
        "  redis ceiling ({}): {} writes in {elapsed:?}",
        if lua { "script" } else { "plain HSET" },
        c.n
    ));
    Ok(RedisCeiling {
        writes: c.n,
        connections: CONNECTIONS,
        pipeline: PIPELINE,
        keys_per_call,
        elapsed,
    })
}

/// One raw hop on the done topic (as it is after the throughput runs) against one on a fresh
/// topic, sampled in rotation: does the broker's fetch slow down as the done topic grows?
struct DoneTopicCheck {
    done_records: u64,
    fresh: Latency,
    done: Latency,
    /// Samples that did not arrive within [`PROBE_TIMEOUT`] (counted as that long).
    timeouts: (usize, usize),
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn done_topic_check(c: &Config) -> R<DoneTopicCheck> {
    const ROUNDS: usize = 60;
    const BUDGET: Duration = Duration::from_secs(30);
    let fresh_topic = format!("bench-probe-{}", c.run);
    create_topics(c, &[&fresh_topic])?;
    let done_records = topic_messages(c, TOPIC_DONE)?;
    let fresh_out = assigned_at_end(c, &fresh_topic, &fresh_topic)?;
    let done_out = assigned_at_end(c, TOPIC_DONE, &format!("bench-probe-done-{}", c.run))?;
    let producer: ThreadedProducer<DefaultProducerContext> = producer_config(c, 0).create()?;
    let ns = format!("bench-probe-{}", c.run);
    let mut check = DoneTopicCheck {
        done_records,
        fresh: Latency::with_capacity(ROUNDS),
        done: Latency::with_capacity(ROUNDS),
        timeouts: (0, 0),
    };
    let started = Instant::now();
    for round in 0..ROUNDS {
        if started.elapsed() > BUDGET {
            break;
        }
        for step in 0..2 {
            let on_done = (round + step) % 2 == 1;
            let key = format!("probe-{round}");
            // A valid event of a namespace nobody caches: harmless to any listener.
            let body = set_event(&ns, key.clone(), 1, payload(c.value_bytes, round)).encode();
            let (topic, out) = if on_done {
                (TOPIC_DONE, &done_out)
            } else {
                (fresh_topic.as_str(), &fresh_out)
            };
            let t0 = Instant::now();
            producer
                .send(BaseRecord::<_, _, ()>::to(topic).key(&key).payload(&body))
                .map_err(|(e, _)| e)?;
            let arrived = await_payload_within(out, &body, PROBE_TIMEOUT)?;
            let us = t0.elapsed().as_micros() as u64;
            let (samples, timeouts) = if on_done {
                (&mut check.done, &mut check.timeouts.1)
            } else {
                (&mut check.fresh, &mut check.timeouts.0)
            };
            samples.samples.push(us);
            if !arrived {
                *timeouts += 1;
            }
        }
    }
    producer.flush(Duration::from_secs(10))?;
    progress(format!(
        "  done-topic check: {} rounds",
        check.done.samples.len()
    ));
    Ok(check)
}

fn print_done_topic_check(c: &Config, d: &DoneTopicCheck) {
    println!(
        "Broker check after these runs: the done topic now holds ≈ {} events (watermark sum), \
         written by the state nodes above in batches of every size. One raw hop (produce with \
         `linger.ms=0` → `BaseConsumer` assigned at the end, `fetch.wait.max.ms={}`) on it, \
         against one on a fresh topic, in rotation; a message not seen within {} s counts as \
         that long.\n",
        d.done_records,
        c.fetch_wait_ms,
        PROBE_TIMEOUT.as_secs()
    );
    println!("| topic | samples | p50 ms | p90 ms | p99 ms | max ms | not seen in time |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, l, t) in [
        ("fresh topic", &d.fresh, d.timeouts.0),
        (TOPIC_DONE, &d.done, d.timeouts.1),
    ] {
        println!(
            "| `{name}` | {} | {:.2} | {:.2} | {:.2} | {:.2} | {t} |",
            l.samples.len(),
            l.pct(0.5),
            l.pct(0.9),
            l.pct(0.99),
            l.pct(1.0)
        );
    }
    println!();
}

/// What one batch's broker steps cost in isolation: publishing `batch` done-sized events with
/// the state node's producer settings (`linger.ms=0`, `acks=all`) until every one is
/// acknowledged, and one synchronous offset commit of every partition.
struct StepCosts {
    /// (batch size, mean publish time).
    publish: Vec<(usize, Duration)>,
    commit: Result<Duration, String>,
}

fn step_costs(c: &Config) -> R<StepCosts> {
    let topic = format!("bench-publish-{}", c.run);
    create_topics(c, &[&topic])?;
    let (producer, acks) = counting_producer(c, 0)?;
    partitions(&metadata_probe(c)?, &topic)?;
    let ns = format!("bench-publish-{}", c.run);
    let mut sent = 0u64;
    let mut publish = Vec::new();
    for &b in &c.batch_sizes {
        let reps = (8192 / b.max(1)).clamp(4, 200);
        let mut total = Duration::ZERO;
        for r in 0..reps {
            let events: Vec<(Vec<u8>, Vec<u8>)> = (0..b)
                .map(|i| {
                    let e = set_event(
                        &ns,
                        format!("k{:06}", (r * b + i) % c.keys),
                        (r * b + i) as u64 + 1,
                        payload(c.value_bytes, i),
                    );
                    (e.message_key(), e.encode())
                })
                .collect();
            let t0 = Instant::now();
            for (k, v) in &events {
                send(&producer, &topic, k, v)?;
            }
            sent += b as u64;
            wait_acks(&acks, sent)?;
            total += t0.elapsed();
        }
        publish.push((b, total / reps as u32));
    }
    let commit = commit_cost(c, &topic).map_err(|e| e.to_string());
    progress("  step costs measured");
    Ok(StepCosts { publish, commit })
}

/// Mean time of a synchronous commit of every partition's offset, from a consumer with a group
/// id but an explicit assignment (no group join).
fn commit_cost(c: &Config, topic: &str) -> R<Duration> {
    let consumer: BaseConsumer = consumer_config(c, &format!("bench-commit-{}", c.run)).create()?;
    let ids = partitions(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for &p in &ids {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    const REPS: u32 = 50;
    let t0 = Instant::now();
    for r in 0..REPS {
        let mut offsets = TopicPartitionList::new();
        for &p in &ids {
            offsets.add_partition_offset(topic, p, Offset::Offset(r as i64 + 1))?;
        }
        consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync)?;
    }
    Ok(t0.elapsed() / REPS)
}

fn print_step_costs(runs: &[StateNodeRun], steps: &StepCosts) {
    println!(
        "Where a batch's time goes. In the runs above: time per batch, its Redis apply, and the \
         rest (planning, handing the batch on, and any wait for the broker side: publishing \
         done events, their acks, the offset commit). Measured alone right after, for \
         reference: publish = that many done-sized events produced with `linger.ms=0`, \
         `acks=all`, until all acknowledged; commit = one synchronous commit of all \
         {PARTITIONS} partitions from a consumer with a group id but an explicit assignment \
         (an upper bound: it reads high against the in-run rest). A publish alone longer than \
         the in-run rest means the state node overlaps it with applying the next batch.\n"
    );
    println!(
        "| max_batch | per batch (time ÷ batches) | mean apply (in run) | rest (in run) | publish alone | commit alone |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let per_batch = r.elapsed.as_micros() as f64 / r.m.batches.max(1) as f64;
        let apply = r.m.apply_latency_us.mean();
        let publish = steps
            .publish
            .iter()
            .find(|(b, _)| *b == r.max_batch)
            .map(|(_, d)| d.as_micros() as f64);
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.max_batch,
            us_f(per_batch),
            us_f(apply),
            us_f((per_batch - apply).max(0.0)),
            publish.map_or("n/a".into(), us_f),
            match &steps.commit {
                Ok(d) => us_f(d.as_micros() as f64),
                Err(e) => format!("n/a ({e})"),
            },
        );
    }
    println!();
}

fn print_state_node(
    c: &Config,
    runs: &[StateNodeRun],
    ceiling: Option<&RedisCeiling>,
    plain: &RedisCeiling,
    raw: Option<&RawThroughput>,
) {
    println!("### Pipeline 3. State-node throughput (embedded `StateNode`, events pre-produced)\n");
    let ceiling_text = match ceiling {
        Some(x) => format!(
            "the same versioned writes through the state node's own apply script, {} key(s) per `EVALSHA` as the state node sends them, \
             {} writes per round trip, key-sharded over {} connections, no Kafka; measured once \
             per round, fastest shown",
            x.keys_per_call, x.pipeline, x.connections
        ),
        None => "not measured (the apply script was not found in src/)".into(),
    };
    println!(
        "{} set events (`write_redis: true`, {}-byte values, {} distinct keys, increasing \
         versions) pre-produced onto `{TOPIC_SET_DEL}`. One `StateNode` per run: fresh group, \
         fresh Redis key prefix, `max_wait=2ms`, `redis_workers=4`. Timed from its first \
         consumed record (group join excluded) until applied + stale + deduped ≥ events \
         (`max_batch=1`: only the first {} events). {} rounds, batch sizes in alternating \
         order; the fastest run per batch size is shown, the others' events/s after it. \
         × raw consume: events/s ÷ the raw consume msg/s of (1). Redis ceiling: {ceiling_text}. \
         Apply = the Redis step per batch (p50/p99 are power-of-two bucket bounds); apply \
         share = Σ apply ÷ elapsed; the rest is planning and the broker side of a batch \
         (publishing its done events, waiting for their acks, committing its offsets), in \
         whatever order and overlap the state node runs them.\n",
        c.n, c.value_bytes, c.keys, c.batch_one, c.rounds
    );
    let ceiling_rate = ceiling.map(|x| rate(x.writes, x.elapsed));
    let vs_ceiling = |eps: f64| match ceiling_rate {
        Some(r) => format!("{:.2}×", eps / r),
        None => "n/a".into(),
    };
    let vs_raw = |eps: f64| match raw {
        Some(r) => format!("{:.3}×", eps / r.consume_rate()),
        None => "n/a".into(),
    };
    println!(
        "| max_batch | events | time | events/s | other rounds | × raw consume | × Redis ceiling | applied / deduped / stale | batches | mean batch | apply p50 / p99 | mean apply | apply share | group join |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let eps = r.rate();
        let m = &r.m;
        let others: Vec<String> = r.others.iter().map(|&x| thousands(x)).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {:.1} | {} / {} | {} | {:.0} % | {} |",
            r.max_batch,
            r.events,
            secs(r.elapsed),
            thousands(eps),
            others.join(", "),
            vs_raw(eps),
            vs_ceiling(eps),
            m.applied,
            m.deduped,
            m.stale_dropped,
            m.batches,
            m.batch_size.mean(),
            us(m.apply_latency_us.p50),
            us(m.apply_latency_us.p99),
            us_f(m.apply_latency_us.mean()),
            100.0 * m.apply_latency_us.sum as f64 / r.elapsed.as_micros().max(1) as f64,
            secs(r.join),
        );
    }
    if let (Some(x), Some(x_rate)) = (ceiling, ceiling_rate) {
        println!(
            "| Redis ceiling: apply script, {} key(s) per call | {} | {} | {} | | {} | 1.00× | {} / 0 / 0 | | | | | | |",
            x.keys_per_call,
            x.writes,
            secs(x.elapsed),
            thousands(x_rate),
            vs_raw(x_rate),
            x.writes,
        );
    }
    let plain_rate = rate(plain.writes, plain.elapsed);
    println!(
        "| Redis: plain `HSET`s instead of the script (no version check) | {} | {} | {} | | {} | {} | | | | | | | |",
        plain.writes,
        secs(plain.elapsed),
        thousands(plain_rate),
        vs_raw(plain_rate),
        vs_ceiling(plain_rate),
    );
    println!();
}

// ------------------------------------------------------------------------------ 2. latency

/// Latency samples of one path, in microseconds, in the order they were taken.
struct Latency {
    samples: Vec<u64>,
}

impl Latency {
    fn with_capacity(n: usize) -> Self {
        Latency {
            samples: Vec::with_capacity(n),
        }
    }

    /// Milliseconds at quantile `q` (nearest rank).
    fn pct(&self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let mut s = self.samples.clone();
        s.sort_unstable();
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1] as f64 / 1000.0
    }

    fn mean(&self) -> f64 {
        self.samples.iter().sum::<u64>() as f64 / self.samples.len().max(1) as f64 / 1000.0
    }
}

/// One latency run: the distcache path and both raw baselines, sampled interleaved (one of
/// each per round, order rotating) so the machine's load at any moment hits all three alike.
struct LatencyRun {
    max_wait: Duration,
    one_hop: Latency,
    two_hops: Latency,
    distcache: Latency,
    /// Breakdown from the nodes' own metrics.
    note: String,
    /// Writes B did not see within 10 s, with both nodes' view at that moment.
    lost: Vec<String>,
}

const WARMUP: usize = 20;

fn latency(c: &Config) -> R<Vec<LatencyRun>> {
    let mut runs = vec![propagation(c, Duration::from_millis(2), c.samples, "a")?];
    if c.diag_samples > 0 {
        runs.push(propagation(c, Duration::ZERO, c.diag_samples, "b")?);
    }
    Ok(runs)
}

/// The two raw baselines, with the consumer settings distcache uses (`fetch.wait.max.ms`,
/// consumers assigned to every partition at the end offset, producers `linger.ms=0`):
/// - one hop: produce → consumer;
/// - two hops: produce → relay thread (a consumer that re-produces each message to a second
///   topic, as the state node does with done events) → consumer.
struct RawPaths {
    producer: ThreadedProducer<DefaultProducerContext>,
    hop_topic: String,
    hop_out: BaseConsumer,
    relay_topic: String,
    relay_out: BaseConsumer,
    relay_stop: Arc<AtomicBool>,
    relay: Option<thread::JoinHandle<R<()>>>,
    value_bytes: usize,
    round: usize,
}

impl RawPaths {
    fn start(c: &Config, tag: &str) -> R<RawPaths> {
        let hop_topic = format!("bench-hop-{}-{tag}", c.run);
        let relay_topic = format!("bench-relay-in-{}-{tag}", c.run);
        let relay_second = format!("bench-relay-out-{}-{tag}", c.run);
        create_topics(c, &[&hop_topic, &relay_topic, &relay_second])?;
        let hop_out = assigned_at_end(c, &hop_topic, &hop_topic)?;
        let relay_in = assigned_at_end(c, &relay_topic, &relay_topic)?;
        let relay_out = assigned_at_end(c, &relay_second, &relay_second)?;
        let relay_stop = Arc::new(AtomicBool::new(false));
        let relay = {
            let stop = relay_stop.clone();
            let producer: ThreadedProducer<DefaultProducerContext> =
                producer_config(c, 0).create()?;
            thread::spawn(move || -> R<()> {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(msg) = relay_in.poll(Duration::from_millis(100)) {
                        let msg = msg?;
                        producer
                            .send(
                                BaseRecord::<_, _, ()>::to(&relay_second)
                                    .key(msg.key().unwrap_or_default())
                                    .payload(msg.payload().unwrap_or_default()),
                            )
                            .map_err(|(e, _)| e)?;
                    }
                }
                producer.flush(Duration::from_secs(10))?;
                Ok(())
            })
        };
        Ok(RawPaths {
            producer: producer_config(c, 0).create()?,
            hop_topic,
            hop_out,
            relay_topic,
            relay_out,
            relay_stop,
            relay: Some(relay),
            value_bytes: c.value_bytes,
            round: 0,
        })
    }

    /// One message through one path: time from the send call to the poll returning it, µs.
    fn sample(&mut self, two_hops: bool) -> R<u64> {
        self.round += 1;
        let body = payload(self.value_bytes, self.round);
        let key = format!("key-{}", self.round);
        let (topic, out) = if two_hops {
            (&self.relay_topic, &self.relay_out)
        } else {
            (&self.hop_topic, &self.hop_out)
        };
        let t0 = Instant::now();
        self.producer
            .send(BaseRecord::<_, _, ()>::to(topic).key(&key).payload(&body))
            .map_err(|(e, _)| e)?;
        await_payload(out, &body)?;
        Ok(t0.elapsed().as_micros() as u64)
    }

    fn stop(mut self) -> R<()> {
        self.relay_stop.store(true, Ordering::Relaxed);
        if let Some(relay) = self.relay.take() {
            relay.join().map_err(|_| "relay thread panicked")??;
        }
        self.producer.flush(Duration::from_secs(10))?;
        Ok(())
    }
}

/// Polls until the message with `body` arrives (earlier ones are skipped).
fn await_payload(consumer: &BaseConsumer, body: &[u8]) -> R<()> {
    if await_payload_within(consumer, body, Duration::from_secs(10))? {
        Ok(())
    } else {
        Err("a message did not arrive within 10 s".into())
    }
}

/// Like [`await_payload`]; `false` when it did not arrive within `limit`.
fn await_payload_within(consumer: &BaseConsumer, body: &[u8], limit: Duration) -> R<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(msg) = consumer.poll(Duration::from_millis(50)) {
            if msg?.payload() == Some(body) {
                return Ok(true);
            }
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
    }
}

/// Node A here, node B a child process, a state node in this process applying the writes, and
/// the raw baselines, all alive at once and sampled in rotation.
fn propagation(c: &Config, max_wait: Duration, samples: usize, tag: &str) -> R<LatencyRun> {
    let prefix = format!("bench:{}:lat{tag}:", c.run);
    let ns = format!("bench-lat-{}-{tag}", c.run);
    let backlog = set_del_backlog(c, tag)?;
    let node = StateNode::builder()
        .kafka_brokers(&c.brokers)
        .redis_url(&c.redis_url)
        .group(format!("bench-lat-{}-{tag}", c.run))
        .key_prefix(&prefix)
        .max_batch(1024)
        .max_wait(max_wait)
        .redis_workers(4)
        .start()?;
    // A fresh group starts at the beginning of set-del: let it catch up first.
    wait_until(
        || settled(&node.metrics()) >= backlog,
        Duration::from_millis(5),
    )
    .ok_or("the latency state node did not catch up")?;

    let a: DistributedCache<String> = DistributedCache::builder()
        .kafka_brokers(&c.brokers)
        .redis_url(&c.redis_url)
        .namespace(&ns)
        .key_prefix(&prefix)
        .build()?;
    let mut b = Listener::spawn(&ns, &prefix)?;
    let mut raw = RawPaths::start(c, tag)?;
    let before = node.metrics();

    let mut run = LatencyRun {
        max_wait,
        one_hop: Latency::with_capacity(samples),
        two_hops: Latency::with_capacity(samples),
        distcache: Latency::with_capacity(samples),
        note: String::new(),
        lost: Vec::new(),
    };
    let mut acks = Vec::with_capacity(samples);
    for i in 0..WARMUP + samples {
        let keep = i >= WARMUP;
        for step in 0..3 {
            match (i + step) % 3 {
                0 => {
                    let us = raw.sample(false)?;
                    if keep {
                        run.one_hop.samples.push(us);
                    }
                }
                1 => {
                    let us = raw.sample(true)?;
                    if keep {
                        run.two_hops.samples.push(us);
                    }
                }
                _ => {
                    let key = format!("p{i}");
                    let value = format!("v{i}-{}", c.run);
                    b.expect(&key, &value)?;
                    let t0 = now_micros();
                    a.set_with_sync(&key, value, None, None)?;
                    let acked = now_micros();
                    match b.seen()? {
                        Ok(seen) if keep => {
                            run.distcache.samples.push(seen.saturating_sub(t0));
                            acks.push(acked.saturating_sub(t0));
                        }
                        Ok(_) => {}
                        Err(why) => {
                            let am = a.metrics();
                            let lost = format!(
                                "write {i} ({key:?}) not seen by B: {why}; A's listener: {} \
                                 events, {} applied, {} resets; A's get = {:?}; state node: {:?}",
                                am.events,
                                am.events_applied,
                                am.resets,
                                a.get(&key)?,
                                node.metrics()
                            );
                            progress(format!("  {lost}"));
                            run.lost.push(lost);
                            if run.lost.len() >= 3 {
                                return Err("3 writes not seen by B: giving up".into());
                            }
                        }
                    }
                }
            }
        }
    }
    let after = node.metrics();
    let b_listener = b.finish()?;
    raw.stop()?;
    node.shutdown();
    let batches = after.batches - before.batches;
    let window_mean = |s: fn(&StateNodeMetrics) -> Summary| {
        let (x, y) = (s(&after), s(&before));
        (x.sum - y.sum) as f64 / (x.count - y.count).max(1) as f64
    };
    acks.sort_unstable();
    run.note = format!(
        "A's `set_with_sync` returned (broker ack) after p50 {:.2} ms; the state node ran {} \
         batches (mean {:.2} events) with mean apply {} and mean produce → done acknowledged {}; \
         B's listener got the done event at p50 ≤ {} (its `propagation_us`, bucket bound)",
        acks.get(acks.len() / 2).copied().unwrap_or(0) as f64 / 1000.0,
        batches,
        (after.batch_size.sum - before.batch_size.sum) as f64 / batches.max(1) as f64,
        us_f(window_mean(|m| m.apply_latency_us)),
        us_f(window_mean(|m| m.end_to_end_us)),
        b_listener,
    );
    progress(format!(
        "  propagation (max_wait {max_wait:?}): {} samples per path",
        run.distcache.samples.len()
    ));
    Ok(run)
}

struct Listener {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Listener {
    fn spawn(ns: &str, prefix: &str) -> R<Listener> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--role", "listener", ns, prefix])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut l = Listener {
            child,
            stdin,
            stdout,
        };
        let ready = l.line()?;
        if ready != "READY" {
            let _ = l.child.kill();
            return Err(format!("listener process: {ready}").into());
        }
        Ok(l)
    }

    fn line(&mut self) -> R<String> {
        let mut s = String::new();
        if self.stdout.read_line(&mut s)? == 0 {
            return Err("listener process exited".into());
        }
        Ok(s.trim_end().to_string())
    }

    fn expect(&mut self, key: &str, value: &str) -> R<()> {
        writeln!(self.stdin, "{key} {value}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// When B first saw the expected value, Unix microseconds; `Err(line)` when it gave up
    /// (the line carries B's view: its listener's counters and what its `get` returned).
    fn seen(&mut self) -> R<Result<u64, String>> {
        let line = self.line()?;
        Ok(line.parse().map_err(|_| line))
    }

    /// Stops B; returns its listener's p50 propagation (as text).
    fn finish(mut self) -> R<String> {
        writeln!(self.stdin, "quit")?;
        self.stdin.flush()?;
        let summary = self.line()?;
        self.child.wait()?;
        Ok(summary)
    }
}

/// `--role listener NS PREFIX`: node B. Reads `KEY VALUE` lines; for each, polls the local
/// cache until `get(KEY) == VALUE` and prints the time that first held (Unix µs), or `TIMEOUT`.
fn listener_role(args: &[String]) -> R<()> {
    let [role, ns, prefix] = args else {
        return Err("usage: --role listener NAMESPACE PREFIX".into());
    };
    if role != "listener" {
        return Err(format!("unknown role {role}").into());
    }
    let cache: DistributedCache<String> = DistributedCache::builder()
        .kafka_brokers(env_var("DISTCACHE_BROKERS"))
        .redis_url(env_var("DISTCACHE_REDIS_URL"))
        .namespace(ns)
        .key_prefix(prefix)
        .build()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "READY")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line == "quit" {
            let p = cache.metrics().propagation_us;
            writeln!(out, "{}", us(p.p50))?;
            out.flush()?;
            break;
        }
        let (key, value) = line.split_once(' ').ok_or("bad request line")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let reply = loop {
            if cache.get(key)?.as_deref() == Some(value) {
                break now_micros().to_string();
            }
            if Instant::now() > deadline {
                let m = cache.metrics();
                break format!(
                    "TIMEOUT after 10 s: B's get({key:?}) = {:?}; B's listener: {} events of \
                     this namespace, {} applied, {} ignored, {} resets, {} malformed",
                    cache.get(key)?,
                    m.events,
                    m.events_applied,
                    m.events_ignored,
                    m.resets,
                    m.malformed
                );
            }
            thread::sleep(Duration::from_micros(50));
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

fn print_latency(c: &Config, runs: &[LatencyRun]) {
    println!("### Pipeline 2. Propagation latency (one write at a time)\n");
    println!(
        "Per run, {WARMUP} warm-up rounds, then rounds of one sample of each path (order \
         rotating, so the machine's load at any moment hits all three alike): {} rounds with \
         the default `max_wait=2ms`, {} with `max_wait=0` (diagnostic). ~{}-byte values; every \
         consumer `fetch.wait.max.ms={}` and assigned to all partitions at the end offset; \
         producers `linger.ms=0`, `acks=all`. distcache: A = this process, B = a second process \
         polling its local `get` every 50 µs; latency = B's first matching `get` − A's call to \
         `set_with_sync` (wall-clock µs, one machine); a state node (`max_batch=1024`, \
         `redis_workers=4`) runs in A's process. Raw: send call → consumer poll returns the \
         message. Percentiles exact (nearest rank).\n",
        c.samples, c.diag_samples, c.value_bytes, c.fetch_wait_ms
    );
    println!("| state node | path | samples | p50 ms | p90 ms | p99 ms | max ms | mean ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let mw = format!("`max_wait={}ms`", r.max_wait.as_millis());
        for (name, l) in [
            ("raw one hop: produce → consumer", &r.one_hop),
            (
                "raw two hops: produce → relay (consume, re-produce) → consumer",
                &r.two_hops,
            ),
            (
                "distcache: A `set_with_sync` → state node → B's local `get`",
                &r.distcache,
            ),
        ] {
            println!(
                "| {mw} | {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                l.samples.len(),
                l.pct(0.5),
                l.pct(0.9),
                l.pct(0.99),
                l.pct(1.0),
                l.mean()
            );
        }
    }
    println!();
    println!("| state node | ratio | p50 | p90 | p99 |");
    println!("|---|---|---:|---:|---:|");
    for r in runs {
        for (base, name) in [(&r.one_hop, "raw one hop"), (&r.two_hops, "raw two hops")] {
            let ratio = |q: f64| r.distcache.pct(q) / base.pct(q).max(1e-9);
            println!(
                "| `max_wait={}ms` | distcache ÷ {name} | {:.2}× | {:.2}× | {:.2}× |",
                r.max_wait.as_millis(),
                ratio(0.5),
                ratio(0.9),
                ratio(0.99)
            );
        }
    }
    println!();
    for r in runs {
        println!("- `max_wait={}ms`: {}", r.max_wait.as_millis(), r.note);
        for lost in &r.lost {
            println!("- `max_wait={}ms`: **{lost}**", r.max_wait.as_millis());
        }
    }
    println!();
}

/// Every latency sample as CSV, in the order taken.
fn dump_latency(path: &str, runs: &[LatencyRun]) -> R<()> {
    let mut csv = String::from("max_wait_ms,path,index,latency_us\n");
    for r in runs {
        for (name, l) in [
            ("one_hop", &r.one_hop),
            ("two_hops", &r.two_hops),
            ("distcache", &r.distcache),
        ] {
            for (i, v) in l.samples.iter().enumerate() {
                csv.push_str(&format!("{},{name},{i},{v}\n", r.max_wait.as_millis()));
            }
        }
    }
    std::fs::write(path, csv)?;
    Ok(())
}

// ------------------------------------------------------------------------------ formatting

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn us(v: u64) -> String {
    us_f(v as f64)
}

fn us_f(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
