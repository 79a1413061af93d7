//! The load of section `load`: the `--role writer` process (one core node whose threads write at
//! a paced rate) and [`Writer`], the handle section `load` drives it with over stdin/stdout.

use super::*;

/// Write slots more than this overdue are skipped (counted) instead of written in a burst.
pub(super) const MAX_BEHIND: Duration = Duration::from_millis(100);

/// The writer process's counters at one moment.
#[derive(Clone, Copy, Debug)]
pub(super) struct WriterMark {
    pub(super) acked: u64,
    pub(super) failed: u64,
    pub(super) skipped: u64,
    /// Time spent in acknowledged writes, µs.
    pub(super) acked_us: u64,
    pub(super) at: Instant,
}

/// The writer process (`--role writer`), driven over its stdin/stdout.
pub(super) struct Writer {
    pub(super) process: RoleProcess,
}

impl Writer {
    pub(super) fn spawn(c: &Config, ns: &str, prefix: &str) -> R<Writer> {
        Ok(Writer {
            process: RoleProcess::spawn(
                "writer",
                &[
                    ns,
                    prefix,
                    &c.value_bytes.to_string(),
                    &c.keys.to_string(),
                    &c.load.threads.to_string(),
                ],
            )?,
        })
    }

    pub(super) fn start(&mut self, rate: usize) -> R<()> {
        let reply = self.process.request(&format!("start {rate}"))?;
        if reply != "STARTED" {
            return Err(format!("writer process: {reply}").into());
        }
        Ok(())
    }

    pub(super) fn mark(&mut self) -> R<WriterMark> {
        let reply = self.process.request("mark")?;
        parse_mark(&reply)
    }

    /// Stops the writers (joined); the counters then.
    pub(super) fn pause(&mut self) -> R<WriterMark> {
        let reply = self.process.request("pause")?;
        parse_mark(&reply)
    }

    /// Stops the writers (joined) and the process; its final counters.
    pub(super) fn finish(self) -> R<WriterMark> {
        parse_mark(&self.process.finish("quit")?)
    }
}

fn parse_mark(reply: &str) -> R<WriterMark> {
    let at = Instant::now();
    let f: Vec<u64> = reply
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match f[..] {
        [acked, failed, skipped, acked_us] => Ok(WriterMark {
            acked,
            failed,
            skipped,
            acked_us,
            at,
        }),
        _ => Err(format!("writer process: {reply}").into()),
    }
}

/// `--role listener …` (node B, see [`listener_role`]) or `--role writer …` (the load).
pub(crate) fn role(args: &[String]) -> R<()> {
    match args.first().map(String::as_str) {
        Some("writer") => writer_role(&args[1..]),
        _ => listener_role(args),
    }
}

/// `--role writer NS PREFIX VALUE_BYTES KEYS THREADS`: the load. Builds one core node, prints
/// `READY`; then reads commands: `start RATE` (threads begin paced `set_with_sync` writes of keys
/// `load-<n % KEYS>`, replies `STARTED`), `mark` (replies `ACKED FAILED SKIPPED ACKED_US`,
/// cumulative), `pause` (stops and joins the threads, replies the counters), `quit` (the same,
/// then exits).
pub(super) fn writer_role(args: &[String]) -> R<()> {
    let [ns, prefix, value_bytes, keys, threads] = args else {
        return Err("usage: --role writer NAMESPACE PREFIX VALUE_BYTES KEYS THREADS".into());
    };
    let value_bytes: usize = value_bytes.parse()?;
    let keys: u64 = keys.parse::<u64>()?.max(1);
    let threads: usize = threads.parse::<usize>()?.max(1);
    let cache: DistributedCache<String> = DistributedCache::builder()
        .kafka_brokers(env_var("DISTCACHE_BROKERS"))
        .redis_url(env_var("DISTCACHE_REDIS_URL"))
        .namespace(ns)
        .key_prefix(prefix)
        .build()?;
    let counters = Arc::new(WriterCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "READY")?;
    out.flush()?;
    let reply = |c: &WriterCounters| {
        format!(
            "{} {} {} {}",
            c.acked.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.skipped.load(Ordering::Relaxed),
            c.acked_us.load(Ordering::Relaxed)
        )
    };
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if let (Some(rate), true) = (line.strip_prefix("start "), handles.is_empty()) {
            let schedule = Arc::new(Schedule {
                t0: Instant::now(),
                rate: rate.parse::<f64>()?.max(1.0),
                next: AtomicU64::new(0),
            });
            for _ in 0..threads {
                let (cache, counters, stop, schedule) = (
                    cache.clone(),
                    counters.clone(),
                    stop.clone(),
                    schedule.clone(),
                );
                handles.push(thread::spawn(move || {
                    write_paced(&cache, &schedule, &counters, &stop, keys, value_bytes)
                }));
            }
            writeln!(out, "STARTED")?;
        } else if line == "mark" {
            writeln!(out, "{}", reply(&counters))?;
        } else if line == "pause" || line == "quit" {
            stop.store(true, Ordering::Relaxed);
            for h in handles.drain(..) {
                h.join().map_err(|_| "writer thread panicked")?;
            }
            stop.store(false, Ordering::Relaxed);
            writeln!(out, "{}", reply(&counters))?;
            out.flush()?;
            if line == "quit" {
                break;
            }
        } else {
            writeln!(out, "unknown command {line:?}")?;
        }
        out.flush()?;
    }
    Ok(())
}

#[derive(Default)]
struct WriterCounters {
    acked: AtomicU64,
    failed: AtomicU64,
    /// Time spent in acknowledged `set_with_sync` calls, µs.
    acked_us: AtomicU64,
    /// Slots given up because they were more than [`MAX_BEHIND`] overdue when a thread got to them.
    skipped: AtomicU64,
}

/// The writers' shared schedule (a token bucket with no burst beyond [`MAX_BEHIND`]): slot `n` is
/// due at `t0 + n / rate`; whichever thread is free takes the next slot, so one slow
/// acknowledgement holds up one slot, not a thread's share of the rate.
struct Schedule {
    t0: Instant,
    rate: f64,
    next: AtomicU64,
}

impl Schedule {
    /// The next slot to write, once it is due; `None` when `stop` was set meanwhile. Slots more
    /// than [`MAX_BEHIND`] overdue are skipped (counted) instead of written in a burst.
    fn take(&self, counters: &WriterCounters, stop: &AtomicBool) -> Option<u64> {
        let max_behind = MAX_BEHIND.as_secs_f64();
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let due = n as f64 / self.rate;
            let mut now = self.t0.elapsed().as_secs_f64();
            if now - due > max_behind {
                // Skip this slot and every slot up to the one due `max_behind` ago.
                let caught_up = ((now - max_behind) * self.rate) as u64;
                let before = self.next.fetch_max(caught_up, Ordering::Relaxed);
                counters
                    .skipped
                    .fetch_add(1 + caught_up.saturating_sub(before), Ordering::Relaxed);
                continue;
            }
            while due > now {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                // Short sleeps, so `quit` is honoured promptly even at low rates.
                thread::sleep(Duration::from_secs_f64((due - now).min(0.05)));
                now = self.t0.elapsed().as_secs_f64();
            }
            return Some(n);
        }
    }
}

/// One writer thread: `set_with_sync("load-<n % keys>", <n, padded to value_bytes>)` for each slot
/// it takes, until `stop`.
fn write_paced(
    cache: &DistributedCache<String>,
    schedule: &Schedule,
    counters: &WriterCounters,
    stop: &AtomicBool,
    keys: u64,
    value_bytes: usize,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(n) = schedule.take(counters, stop) else {
            break;
        };
        let mut value = format!("{n:010}");
        value.extend(std::iter::repeat_n('x', value_bytes.saturating_sub(10)));
        let t0 = Instant::now();
        match cache.set_with_sync(&format!("load-{}", n % keys), value, None, None) {
            Ok(_) => {
                let us = t0.elapsed().as_micros() as u64;
                counters.acked_us.fetch_add(us, Ordering::Relaxed);
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if counters.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("pipeline: writer process: a write failed: {e}");
                }
            }
        }
    }
}
