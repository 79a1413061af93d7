//! One clock per process, and the node ids it stamps.
//!
//! Every cache of a process stamps its versions from one [`HybridClock`] counter, so no two writes
//! of the process ever share a version, whatever their namespace or configured node id. Node ids are
//! random 64-bit numbers unless configured, so two processes share one only by misconfiguration;
//! that is detected on the done topic: a done event carrying one of our node ids at a version we
//! did not issue comes from another process using our id. From then on every write with that id
//! fails with [`Error::Config`]: equal versions must always mean the same write, or Redis and the
//! local caches could keep different values of one version forever.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::event::now_micros;
use crate::version::wall_millis;
use crate::{Error, HybridClock, Result, Version};

/// How many issued versions per node id are remembered to recognise our own done events. A done
/// event older than the oldest remembered version is never called foreign.
const ISSUED_WINDOW: usize = 1 << 16;

/// Most distinct node ids one process may configure (the registry of clocks stays small).
const MAX_NODE_IDS: usize = 1024;

/// The clock of one node id in this process. Shared by every cache built with that id.
#[derive(Debug)]
pub(crate) struct NodeClock {
    clock: HybridClock,
    issued: Mutex<Issued>,
    duplicate: AtomicBool,
    /// When this clock was made, Unix µs: done events produced earlier come from an earlier
    /// process with this id (a restart), not from a concurrent one.
    created_us: u64,
}

/// Versions this node id issued, in increasing order, and where the record starts.
#[derive(Debug)]
struct Issued {
    /// Clock values below this were issued before the record started (or dropped from it).
    since: u64,
    hlcs: VecDeque<u64>,
}

struct Process {
    clock: HybridClock,
    random_node: u64,
    nodes: HashMap<u64, Arc<NodeClock>>,
}

static PROCESS: LazyLock<Mutex<Process>> = LazyLock::new(|| {
    let random_node = rand::random::<u64>();
    Mutex::new(Process {
        clock: HybridClock::new(random_node),
        random_node,
        nodes: HashMap::new(),
    })
});

/// The process's clock for `node` (configured), or for the process's random node id.
pub(crate) fn process_clock(node: Option<u64>) -> Result<Arc<NodeClock>> {
    let mut process = PROCESS.lock();
    let id = node.unwrap_or(process.random_node);
    if let Some(existing) = process.nodes.get(&id) {
        return Ok(existing.clone());
    }
    if process.nodes.len() >= MAX_NODE_IDS {
        return Err(Error::Config(format!(
            "this process already uses {MAX_NODE_IDS} node ids; use fewer (the default is one random id)"
        )));
    }
    let clock = Arc::new(NodeClock {
        clock: process.clock.share(id),
        issued: Mutex::new(Issued {
            since: wall_millis() << 16,
            hlcs: VecDeque::new(),
        }),
        duplicate: AtomicBool::new(false),
        created_us: now_micros(),
    });
    process.nodes.insert(id, clock.clone());
    Ok(clock)
}

impl NodeClock {
    /// The node id stamped into versions.
    pub(crate) fn node(&self) -> u64 {
        self.clock.node()
    }

    /// A new version for a write. Fails when another process was seen using this node id
    /// ([`Error::Config`]) or when the version would be too far ahead of the wall clock
    /// ([`Error::Rejected`]; the caller counts it).
    pub(crate) fn stamp(&self) -> Result<Version> {
        if self.duplicate.load(Ordering::Acquire) {
            return Err(self.duplicate_error());
        }
        // Issue and record under one lock, so `is_foreign` never sees an issued version missing.
        let mut issued = self.issued.lock();
        let version = self
            .clock
            .try_now()
            .map_err(|e| Error::Rejected(e.to_string()))?;
        if issued.hlcs.len() >= ISSUED_WINDOW {
            if let Some(oldest) = issued.hlcs.pop_front() {
                issued.since = oldest + 1;
            }
        }
        issued.hlcs.push_back(version.hlc);
        Ok(version)
    }

    /// Advances the clock past `seen` (see [`HybridClock::observe`]).
    pub(crate) fn observe(&self, seen: Version) -> bool {
        self.clock.observe(seen)
    }

    /// True when `version` (of a done event produced at `produced_at_us`) carries this node id but
    /// this process never issued it: another process uses our node id. Marks the id as duplicate:
    /// every later write with it fails. Events produced before this clock existed (an earlier
    /// process with this id, e.g. before a restart) or older than the record are not judged.
    pub(crate) fn detect_duplicate(&self, version: Version, produced_at_us: u64) -> bool {
        if version.node != self.node() || produced_at_us < self.created_us {
            return false;
        }
        let foreign = {
            let issued = self.issued.lock();
            version.hlc >= issued.since && issued.hlcs.binary_search(&version.hlc).is_err()
        };
        if foreign {
            self.duplicate.store(true, Ordering::Release);
        }
        foreign
    }

    /// Whether another process was seen using this node id.
    pub(crate) fn is_duplicate(&self) -> bool {
        self.duplicate.load(Ordering::Acquire)
    }

    fn duplicate_error(&self) -> Error {
        Error::Config(format!(
            "another process uses node id {:x}: two writers with one id can issue one version for two \
             different values; give every process its own node id (or leave it unset: random)",
            self.node()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_counter_per_process() {
        let a = process_clock(Some(0xc10c_0001)).unwrap();
        let b = process_clock(Some(0xc10c_0002)).unwrap();
        let again = process_clock(Some(0xc10c_0001)).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let x = a.stamp().unwrap();
        let y = b.stamp().unwrap();
        assert!(y.hlc > x.hlc, "one counter: {x} then {y}");
        let random = process_clock(None).unwrap();
        assert!(Arc::ptr_eq(&random, &process_clock(None).unwrap()));
    }

    #[test]
    fn a_version_we_did_not_issue_marks_the_id_duplicate() {
        let c = process_clock(Some(0xd0b1_e1d0)).unwrap();
        let mine = c.stamp().unwrap();
        assert!(!c.detect_duplicate(mine, now_micros()));
        assert!(
            !c.detect_duplicate(Version::new(mine.hlc + 5, 7), now_micros()),
            "another id"
        );
        assert!(
            !c.detect_duplicate(Version::new(1, c.node()), now_micros()),
            "older than the record: unknown, not foreign"
        );
        let foreign = Version::new(mine.hlc + 5, c.node());
        assert!(
            !c.detect_duplicate(foreign, c.created_us - 1),
            "produced before this process started: an earlier process with this id"
        );
        assert!(c.detect_duplicate(foreign, now_micros()));
        assert!(c.is_duplicate());
        assert!(matches!(c.stamp(), Err(Error::Config(_))));
    }
}
