//! The output of section `load`: the markdown tables and the `name=value` summary lines.

use super::*;

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "miss (> 10 s)".into(), |v| format!("{v:.2}"))
}

fn ratio(num: Option<f64>, den: Option<f64>) -> String {
    match (num, den) {
        (Some(n), Some(d)) => format!("{:.2}×", n / d.max(1e-9)),
        _ => "n/a (a miss)".into(),
    }
}

pub(crate) fn print_load(c: &Config, r: &LoadRun) {
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
pub(crate) fn load_summary(r: &LoadRun) -> Vec<String> {
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
        for (phase, p) in [("idle", idle), ("load", loaded)] {
            for (path, samples) in [("one_hop", &p.one_hop), ("distcache", &p.distcache)] {
                s.push(format!(
                    "{phase}_{path}_{name}_ms={:.3}",
                    v(samples.pct(qv))
                ));
            }
        }
        for (hop, den) in [("idle_hop", &idle.one_hop), ("loaded_hop", &loaded.one_hop)] {
            s.push(format!(
                "load_ratio_{hop}_{name}={:.3}",
                q(loaded.distcache.pct(qv), den.pct(qv))
            ));
        }
    }
    s
}
