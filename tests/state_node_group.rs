//! Two state nodes in one consumer group, against a real redis-server and broker: they split the partitions,
//! a second node joining mid-stream takes over part of them without losing or double-applying writes, and a
//! graceful SIGTERM while writes flow drains and commits. The harness is `support::Deployment`.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use distcache::DistributedCache;
use support::{
    expected, plans, split_between, terminate, terminate_signalled, unique_name, wait_until,
    Deployment, NodeProcess, Writers, BATCHED_NODE_ARGS, PARTITIONS, PATIENCE,
};

/// One test's deployment, with a namespace and a consumer group of its own.
struct Scene {
    dep: Deployment,
    ns: String,
    group: String,
}

impl Scene {
    fn new(dep: Deployment, tag: &str) -> Scene {
        Scene {
            dep,
            ns: unique_name(tag),
            group: unique_name("group"),
        }
    }

    /// A state-node process in the test's group.
    fn node(&self, label: &str) -> NodeProcess {
        self.dep
            .state_node_process(label, Some(&self.group), BATCHED_NODE_ARGS)
    }

    /// The writer of the test's namespace.
    fn cache(&self) -> DistributedCache<String> {
        self.dep.cache(&self.ns)
    }

    /// What a failed check prints: the named nodes' stderr tails and the servers' logs.
    fn diagnostics(&self, nodes: &[(&str, &NodeProcess)]) -> String {
        let mut out = String::new();
        for (name, node) in nodes {
            out.push_str(&format!("--- {name}:\n{}\n", node.stderr_tail(20)));
        }
        out + &self.dep.logs()
    }

    /// Fails the test unless `split` (`a` and `b` came to hold all partitions between them).
    fn assert_split(&self, split: bool, a: &NodeProcess, b: &NodeProcess) {
        assert!(
            split,
            "the nodes never split {PARTITIONS} partitions\n{}",
            self.diagnostics(&[("a", a), ("b", b)])
        );
    }

    /// Waits until Redis holds what `want` allows for every key of the test's namespace.
    fn wait_converged(&self, want: &BTreeMap<String, Vec<String>>, nodes: &[(&str, &NodeProcess)]) {
        self.dep
            .probe()
            .wait_converged(&self.ns, want, PATIENCE, || self.diagnostics(nodes));
    }
}

/// SIGTERM to both nodes, then each one's exit and final metrics.
fn stop_both(a: &NodeProcess, b: &NodeProcess) -> (HashMap<String, u64>, HashMap<String, u64>) {
    assert!(a.terminate() && b.terminate());
    let (_, ma) = terminate_signalled(a);
    let (_, mb) = terminate_signalled(b);
    (ma, mb)
}

// ------------------------------------------------------------------------------------------------
// 3. Two state nodes in one group
// ------------------------------------------------------------------------------------------------

#[test]
fn two_state_nodes_split_the_partitions() {
    let started = Instant::now();
    // The nodes create the topics (`--partitions 8`), racing each other.
    let scene = Scene::new(Deployment::start(), "faults-split");
    let a = scene.node("state-node-a");
    let b = scene.node("state-node-b");
    let split = wait_until(PATIENCE, || split_between(&a, &b, PARTITIONS));
    scene.assert_split(split, &a, &b);
    eprintln!(
        "split test: a holds {:?}, b holds {:?} after {:?}",
        a.held(),
        b.held(),
        started.elapsed()
    );

    let cache = scene.cache();
    let writes = Writers::start(&cache, plans("split", 4, 500, 1)).join();
    assert!(
        writes.iter().all(|w| w.ok),
        "a write failed with a healthy broker"
    );
    let want = expected(&writes, |_| true);
    assert_eq!(want.len(), 2000);
    scene.wait_converged(&want, &[("a", &a), ("b", &b)]);

    let (ma, mb) = stop_both(&a, &b);
    eprintln!("split test: a {ma:?}\nb {mb:?}\n{:?}", started.elapsed());
    assert!(
        ma["consumed"] > 0 && mb["consumed"] > 0,
        "both nodes must work: a {ma:?}, b {mb:?}"
    );
    assert!(
        ma["consumed"] + mb["consumed"] >= 2000,
        "a {ma:?}, b {mb:?}"
    );
    assert_eq!(
        ma["applied"] + mb["applied"],
        2000,
        "each write applied by exactly one node: a {ma:?}, b {mb:?}"
    );
}

/// Scale-out while writes flow: the first node finishes and commits what it holds for the partitions it
/// gives up (revoke barrier), so the second takes over without losing or re-applying anything.
#[test]
fn second_state_node_joins_mid_stream() {
    let started = Instant::now();
    let scene = Scene::new(Deployment::start().with_topics(PARTITIONS), "faults-join");
    let a = scene.node("state-node-a");
    scene.dep.wait_assigned(&a);
    let cache = scene.cache();

    // Writes flow before, during and after the rebalance (~3 s); stopped a while after the split.
    let writers = Writers::start(&cache, plans("join", 2, 100_000, 1));
    writers.wait_acked(300);
    let b = scene.node("state-node-b");
    let split = wait_until(PATIENCE, || split_between(&a, &b, PARTITIONS));
    let acked_at_split = writers.acked();
    if split {
        writers.wait_acked(acked_at_split + 500);
    }
    writers.stop();
    let writes = writers.join();
    scene.assert_split(split, &a, &b);
    assert!(
        writes.iter().all(|w| w.ok),
        "a write failed with a healthy broker"
    );
    let want = expected(&writes, |_| true);
    scene.wait_converged(&want, &[("a", &a), ("b", &b)]);

    let (ma, mb) = stop_both(&a, &b);
    let total = writes.len() as u64;
    eprintln!(
        "join test: split after {acked_at_split} of {total} writes\na {ma:?}\nb {mb:?}\n{:?}",
        started.elapsed()
    );
    assert!(mb["consumed"] > 0, "the second node did no work: {mb:?}");
    assert_eq!(ma["applied"] + mb["applied"], total, "a {ma:?}, b {mb:?}");
    let replayed = ma["consumed"] + mb["consumed"] - total;
    assert!(
        replayed <= 10,
        "{replayed} records consumed twice across the rebalance: a {ma:?}, b {mb:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// 4. Graceful shutdown
// ------------------------------------------------------------------------------------------------

#[test]
fn sigterm_drains_and_commits() {
    let started = Instant::now();
    let scene = Scene::new(
        Deployment::start().with_topics(PARTITIONS),
        "faults-sigterm",
    );
    let first = scene.node("state-node-1");
    scene.dep.wait_assigned(&first);
    let cache = scene.cache();

    let total = 2000;
    let writers = Writers::start(&cache, plans("term", 2, total / 2, 1));
    writers.wait_acked(600);
    let (took, first_metrics) = terminate(&first, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(5),
        "graceful shutdown took {took:?}"
    );
    let writes = writers.join();
    assert_eq!(
        writes.iter().filter(|w| w.ok).count(),
        total,
        "a write failed with a healthy broker"
    );

    let second = scene.node("state-node-2");
    let want = expected(&writes, |_| true);
    scene.wait_converged(&want, &[("state-node-2", &second)]);
    let (_, second_metrics) = terminate(&second, Duration::from_secs(10));
    let (c1, c2) = (first_metrics["consumed"], second_metrics["consumed"]);
    eprintln!(
        "sigterm test: shutdown took {took:?}; first consumed {c1}, second consumed {c2} of {total}; {:?}",
        started.elapsed()
    );
    assert!(
        c1 > 0 && c1 < total as u64,
        "the first node must stop mid-stream: {first_metrics:?}"
    );
    assert!(
        c1 + c2 >= total as u64,
        "first {first_metrics:?}, second {second_metrics:?}"
    );
    // Everything the first node consumed was applied and committed before it left: the second one starts
    // where it stopped (a handful of records polled but not yet handed over may come again).
    let replayed = c1 + c2 - total as u64;
    assert!(
        replayed <= 10,
        "{replayed} records consumed twice: first {first_metrics:?}, second {second_metrics:?}"
    );
    // A replayed record is found stale in Redis, so each write is applied exactly once.
    assert_eq!(
        first_metrics["applied"] + second_metrics["applied"],
        total as u64,
        "first {first_metrics:?}, second {second_metrics:?}"
    );
}
