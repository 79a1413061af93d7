//! Section 2: propagation latency from node A to node B, against a raw hop and a raw two-hop relay.

use super::*;

/// Latency samples of one path, in microseconds, in the order they were taken.
pub(super) struct Latency {
    pub(super) samples: Vec<u64>,
}

impl Latency {
    pub(super) fn with_capacity(n: usize) -> Self {
        Latency {
            samples: Vec::with_capacity(n),
        }
    }

    /// Milliseconds at quantile `q` (nearest rank).
    pub(super) fn pct(&self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let mut s = self.samples.clone();
        s.sort_unstable();
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1] as f64 / 1000.0
    }

    pub(super) fn mean(&self) -> f64 {
        self.samples.iter().sum::<u64>() as f64 / self.samples.len().max(1) as f64 / 1000.0
    }
}

/// One latency run: the distcache path and both raw baselines, sampled interleaved (one of
/// each per round, order rotating) so the machine's load at any moment hits all three alike.
pub(super) struct LatencyRun {
    pub(super) max_wait: Duration,
    pub(super) one_hop: Latency,
    pub(super) two_hops: Latency,
    pub(super) distcache: Latency,
    /// Breakdown from the nodes' own metrics.
    pub(super) note: String,
    /// Writes B did not see within 10 s, with both nodes' view at that moment.
    pub(super) lost: Vec<String>,
}

pub(super) const WARMUP: usize = 20;

pub(super) fn latency(c: &Config) -> R<Vec<LatencyRun>> {
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
pub(super) struct RawPaths {
    pub(super) producer: ThreadedProducer<DefaultProducerContext>,
    pub(super) hop_topic: String,
    pub(super) hop_out: BaseConsumer,
    pub(super) relay_topic: String,
    pub(super) relay_out: BaseConsumer,
    pub(super) relay_stop: Arc<AtomicBool>,
    pub(super) relay: Option<thread::JoinHandle<R<()>>>,
    pub(super) value_bytes: usize,
    pub(super) round: usize,
}

impl RawPaths {
    pub(super) fn start(c: &Config, tag: &str) -> R<RawPaths> {
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
    pub(super) fn sample(&mut self, two_hops: bool) -> R<u64> {
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

    pub(super) fn stop(mut self) -> R<()> {
        self.relay_stop.store(true, Ordering::Relaxed);
        if let Some(relay) = self.relay.take() {
            relay.join().map_err(|_| "relay thread panicked")??;
        }
        self.producer.flush(Duration::from_secs(10))?;
        Ok(())
    }
}

/// Polls until the message with `body` arrives (earlier ones are skipped).
pub(super) fn await_payload(consumer: &BaseConsumer, body: &[u8]) -> R<()> {
    if await_payload_within(consumer, body, Duration::from_secs(10))? {
        Ok(())
    } else {
        Err("a message did not arrive within 10 s".into())
    }
}

/// Like [`await_payload`]; `false` when it did not arrive within `limit`.
pub(super) fn await_payload_within(
    consumer: &BaseConsumer,
    body: &[u8],
    limit: Duration,
) -> R<bool> {
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
pub(super) fn propagation(
    c: &Config,
    max_wait: Duration,
    samples: usize,
    tag: &str,
) -> R<LatencyRun> {
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

/// Node B: this bench as `--role listener`.
pub(super) struct Listener {
    pub(super) process: RoleProcess,
}

impl Listener {
    pub(super) fn spawn(ns: &str, prefix: &str) -> R<Listener> {
        Ok(Listener {
            process: RoleProcess::spawn("listener", &[ns, prefix])?,
        })
    }

    pub(super) fn expect(&mut self, key: &str, value: &str) -> R<()> {
        self.process.send(&format!("{key} {value}"))
    }

    /// When B first saw the expected value, Unix microseconds; `Err(line)` when it gave up
    /// (the line carries B's view: its listener's counters and what its `get` returned).
    pub(super) fn seen(&mut self) -> R<Result<u64, String>> {
        let line = self.process.line()?;
        Ok(line.parse().map_err(|_| line))
    }

    /// Stops B; returns its listener's p50 propagation (as text).
    pub(super) fn finish(self) -> R<String> {
        self.process.finish("quit")
    }
}

/// `--role listener NS PREFIX`: node B. Reads `KEY VALUE` lines; for each, polls the local
/// cache until `get(KEY) == VALUE` and prints the time that first held (Unix µs), or `TIMEOUT`.
pub(super) fn listener_role(args: &[String]) -> R<()> {
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

pub(super) fn print_latency(c: &Config, runs: &[LatencyRun]) {
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
pub(super) fn dump_latency(path: &str, runs: &[LatencyRun]) -> R<()> {
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
