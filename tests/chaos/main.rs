//! The chaos harness: real processes (a broker, redis-server, the `distcache-state-node` binary, three
//! `examples/core_node` writers), one fault per round, and after each round the checks of `verdict.rs`:
//! nothing acknowledged is lost, Redis and every local cache agree with the newest write of every key.
//!
//! Each round writes conflicting synced and plain sets and deletes from three writers on a fresh set of 8
//! keys while its fault strikes (see `faults.rs`), waits until the deployment settles (every check passes;
//! at most `SETTLE`) and prints one line; the run ends with `rounds=N lost=L diverged=D`, and fails unless
//! both are 0. Seeded and repeatable: the seed picks the faults' order, the writes and the moments the faults
//! strike (process timing still varies).
//!
//! Environment: `DISTCACHE_CHAOS_ROUNDS` (default 3, the run `scripts/test.sh` makes), `DISTCACHE_CHAOS_SEED`
//! (default 1), `DISTCACHE_CHAOS_FAULTS` (comma-separated names, e.g. `kill-state-node,restart-broker`; default
//! all, in a seeded order), `DISTCACHE_TEST_BROKER` (kafka or tansu). `scripts/chaos.sh` drives it.

#[path = "../support/mod.rs"]
mod support;

mod done_log;
mod faults;
mod verdict;
mod workload;
mod world;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use done_log::DoneLog;
use faults::Fault;
use support::BrokerKind;
use verdict::Verdict;
use world::{Exit, World};

/// How long a round may take to settle after its writes: a session timeout, a broker restart and a
/// rebalance on a loaded machine fit in it.
const SETTLE: Duration = Duration::from_secs(120);
const KEYS_PER_ROUND: usize = 8;

#[test]
fn chaos_rounds_lose_nothing_acknowledged() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .is_test(true)
        .try_init();
    let rounds: usize = env_number("DISTCACHE_CHAOS_ROUNDS", 3);
    let seed: u64 = env_number("DISTCACHE_CHAOS_SEED", 1);
    let kind = BrokerKind::from_env();
    let schedule = schedule(seed, rounds, kind);
    println!(
        "chaos: broker={kind:?} rounds={rounds} seed={seed} faults={}",
        schedule
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    let world = World::start(kind);
    warm_up(&world);

    let mut totals = Totals::default();
    let started = Instant::now();
    for (i, fault) in schedule.into_iter().enumerate() {
        let round = i + 1;
        let line = run_round(&world, round, fault, seed, &mut totals);
        println!("round {round}/{rounds} [{:.0?}] {line}", started.elapsed());
    }
    let summary = format!(
        "rounds={rounds} lost={} diverged={} destroyed={} crashed={} restarted={} seed={seed} broker={kind:?}",
        totals.lost, totals.diverged, totals.destroyed, totals.crashed, totals.restarted
    );
    println!("{summary}");
    assert!(
        totals.lost == 0 && totals.diverged == 0 && totals.crashed == 0,
        "{summary}\n{}\n{}",
        totals.details.join("\n"),
        world.logs()
    );
}

#[derive(Default)]
struct Totals {
    lost: usize,
    diverged: usize,
    destroyed: usize,
    crashed: usize,
    restarted: usize,
    details: Vec<String>,
}

/// The faults of the run: `DISTCACHE_CHAOS_FAULTS` in turn, or every fault that runs on the broker once per
/// cycle of rounds in an order the seed shuffles.
fn schedule(seed: u64, rounds: usize, kind: BrokerKind) -> Vec<Fault> {
    let chosen: Vec<Fault> = match std::env::var("DISTCACHE_CHAOS_FAULTS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|name| {
                Fault::parse(name.trim()).unwrap_or_else(|| {
                    panic!(
                        "DISTCACHE_CHAOS_FAULTS: unknown fault {name:?}; known: {}",
                        Fault::ALL.map(Fault::name).join(",")
                    )
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(rounds);
    while out.len() < rounds {
        let mut cycle = if chosen.is_empty() {
            Fault::ALL.into_iter().filter(|f| f.runs_on(kind)).collect()
        } else {
            chosen.clone()
        };
        if chosen.is_empty() {
            cycle.shuffle(&mut rng);
        }
        out.extend(cycle.into_iter().take(rounds - out.len()));
    }
    out
}

/// Waits until the pipeline applies writes end to end (the state node joined its group).
fn warm_up(world: &World) {
    let started = Instant::now();
    let reply = world.writers[0].request("set-sync-wait warm-up 1");
    assert_eq!(reply, "OK applied", "warm-up write\n{}", world.logs());
    println!(
        "chaos: pipeline applies writes after {:.1?}",
        started.elapsed()
    );
}

/// One round: its writes and fault, then the checks until they pass or `SETTLE` ends. Returns its line.
fn run_round(world: &World, round: usize, fault: Fault, seed: u64, totals: &mut Totals) -> String {
    let round_seed = seed.wrapping_mul(1_000_003).wrapping_add(round as u64);
    let mut rng = StdRng::seed_from_u64(round_seed);
    let keys: Vec<String> = (0..KEYS_PER_ROUND)
        .map(|k| format!("r{round}-k{k}"))
        .collect();
    let counters_before = counters(world);
    let outcome = faults::run(world, fault, &keys, round_seed, &mut rng);

    let mut exits = world.supervise();
    // The survivor settles the two-node round alone; every other round goes on with node a.
    if fault != Fault::KillOneOfTwo && !world.has_state_node("a") {
        world.start_state_node("a");
    }
    let (verdict, settled) = settle(world, &keys, &outcome, &counters_before, &mut exits);
    if settled.is_none() {
        // The processes' logs now, while they still show what went wrong.
        println!("round {round} did not settle:\n{}", world.logs());
    }
    if fault == Fault::KillOneOfTwo {
        world.start_state_node("a");
        world.stop_state_node("b");
    }
    exits.extend(world.supervise());
    let (stopped, crashed): (Vec<Exit>, Vec<Exit>) =
        exits.into_iter().partition(|e| e.stopped_itself);

    let acked = outcome
        .made
        .iter()
        .filter(|m| m.version().is_some())
        .count();
    let failed = outcome.made.len() - acked;
    totals.lost += verdict.lost.len();
    totals.diverged += verdict.diverged.len();
    totals.destroyed += verdict.destroyed;
    totals.crashed += crashed.len();
    totals.restarted += stopped.len();
    for detail in verdict.lost.iter().chain(&verdict.diverged) {
        totals
            .details
            .push(format!("round {round} ({}): {detail}", fault.name()));
    }
    for exit in &crashed {
        totals.details.push(format!(
            "round {round}: a state node crashed:\n{}",
            exit.why
        ));
    }
    for exit in &stopped {
        println!(
            "round {round}: a state node stopped itself and was restarted: {}",
            exit.why
        );
    }
    format!(
        "fault={} writes={} acked={acked} failed={failed} destroyed={} lost={} diverged={} crashed={} restarted={} {} ({})",
        fault.name(),
        outcome.made.len(),
        verdict.destroyed,
        verdict.lost.len(),
        verdict.diverged.len(),
        crashed.len(),
        stopped.len(),
        match settled {
            Some(after) => format!("settled {after:.1?} after the writes"),
            None => format!("NOT settled within {SETTLE:?}"),
        },
        outcome.note
    )
}

/// Re-checks until the round's checks pass (→ the time it took) or `SETTLE` passes (→ the last verdict).
fn settle(
    world: &World,
    keys: &[String],
    outcome: &faults::Outcome,
    counters_before: &[HashMap<String, u64>],
    exits: &mut Vec<Exit>,
) -> (Verdict, Option<Duration>) {
    let started = Instant::now();
    let mut done: Option<DoneLog> = None;
    let mut last = Verdict::default();
    while started.elapsed() < SETTLE {
        exits.extend(world.supervise());
        // A broker that lost its log has a new done topic: open the reader once it exists.
        if done.is_none() {
            done = DoneLog::open(&world.dep.broker).ok();
        }
        let Some(log) = done.as_mut() else {
            thread::sleep(Duration::from_millis(500));
            continue;
        };
        log.read(Duration::from_millis(500));
        last = match verdict::check(world, keys, &outcome.made, outcome.losses, log) {
            Ok(v) => v,
            Err(e) => Verdict {
                diverged: vec![format!("cannot check: {e}")],
                ..Verdict::default()
            },
        };
        if !outcome.expect_raised.is_empty() {
            let now = counters(world);
            for (writer, (before, now)) in counters_before.iter().zip(&now).enumerate() {
                for &(name, by) in &outcome.expect_raised {
                    let raised = now
                        .get(name)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(before.get(name).copied().unwrap_or(0));
                    if raised < by {
                        last.diverged.push(format!(
                            "writer-{}: {name} rose by {raised}, expected at least {by}",
                            writer + 1
                        ));
                    }
                }
            }
        }
        if last.is_clean() {
            return (last, Some(started.elapsed()));
        }
        thread::sleep(Duration::from_millis(300));
    }
    (last, None)
}

/// Every writer's `metrics` counters, in writer order.
fn counters(world: &World) -> Vec<HashMap<String, u64>> {
    world.writers.iter().map(|w| w.metrics()).collect()
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        _ => default,
    }
}
