//! What the pipeline tests check after concurrent writers: every acknowledged write by version,
//! the winner Redis must hold per key, and a state node that has accounted for every record.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use distcache::{DistributedCache, StateNode, StateNodeMetrics, Version, WriteOutcome};

use super::{CoreNodeProcess, Deployment, Stored};

/// Node ids of the two core nodes of a pipeline test (B is the child process, with the higher id).
pub const NODE_A: u64 = 0xA;
pub const NODE_B: u64 = 0xB;

/// The nodes of a two-node pipeline test on `dep`: an in-process state node with two Redis
/// workers, core node [`NODE_A`] in process and core node [`NODE_B`] in its own process, started
/// with `b_args`.
pub fn two_core_nodes(
    dep: &Deployment,
    b_args: &[&str],
) -> (StateNode, DistributedCache<String>, CoreNodeProcess) {
    let state = dep.state_node_with(|b| b.redis_workers(2));
    let a = dep.core_node(NODE_A);
    let b = dep.core_node_process_as(NODE_B, b_args);
    (state, a, b)
}

/// Every record the state node read is accounted for (applied, stale, deduplicated, malformed or refused),
/// and at least `expected` were read: the node is idle with nothing in flight.
pub fn state_node_settled(m: &StateNodeMetrics, expected: u64) -> Result<(), String> {
    let accounted =
        m.applied + m.stale_dropped + m.deduped + m.malformed + m.failed + m.future_refused;
    if m.consumed >= expected && accounted == m.consumed {
        Ok(())
    } else {
        Err(format!(
            "state node not settled: expected >= {expected} consumed, {m:?}"
        ))
    }
}

/// Waits until the state node works (it joined its consumer group): one write, applied.
pub fn warm_up(a: &DistributedCache<String>) {
    let started = Instant::now();
    let outcome = a
        .set_with_sync_and_wait("warm-up", "1".into(), None, None)
        .expect("warm-up write applied");
    assert_eq!(outcome, WriteOutcome::Applied);
    eprintln!("state node applies writes after {:?}", started.elapsed());
}

/// The version of an acknowledged write of a core node started with `--reply-versions` (`OK <version>`).
pub fn acked_version(line: &str, reply: &str) -> Version {
    reply
        .strip_prefix("OK ")
        .and_then(Version::from_hex)
        .unwrap_or_else(|| panic!("{line:?} answered {reply:?}, not OK <version>"))
}

/// Every acknowledged write of one key by every writer: version → value (`None`: a delete).
pub type KeyWrites = BTreeMap<Version, Option<String>>;

/// Adds `writes` (one writer's, per key) to `all`; no version may appear twice (an equal version means
/// the same write).
pub fn merge_writes(all: &mut HashMap<String, KeyWrites>, writes: HashMap<String, KeyWrites>) {
    for (key, per_key) in writes {
        let into = all.entry(key.clone()).or_default();
        for (version, value) in per_key {
            let dup = into.insert(version, value);
            assert!(dup.is_none(), "{key}: version {version} acknowledged twice");
        }
    }
}

/// Checks Redis' entry for one key after concurrent writers: it holds exactly the largest version over
/// every writer's acknowledged writes of the key, with that write's content (a tombstone for a delete).
pub fn check_winner(
    key: &str,
    stored: &Option<Stored>,
    writes: Option<&KeyWrites>,
) -> Result<(), String> {
    let Some((newest, value)) = writes.and_then(|w| w.last_key_value()) else {
        return match stored {
            None => Ok(()),
            Some(s) => Err(format!("{key} was never written but redis holds {s:?}")),
        };
    };
    let Some(Stored {
        value: stored_value,
        version: Some(ver),
    }) = stored
    else {
        return Err(format!("{key}: redis holds no versioned entry: {stored:?}"));
    };
    if ver != newest {
        return Err(format!(
            "{key}: redis holds version {ver}, but the newest acknowledged write is {newest} \
             (node {:x})",
            newest.node
        ));
    }
    if stored_value != value {
        return Err(format!(
            "{key}: redis holds {stored_value:?} at {ver}, but that write was {value:?}"
        ));
    }
    Ok(())
}
