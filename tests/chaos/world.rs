//! The deployment a chaos run works on: one broker, one redis-server with its append-only file on, the
//! `distcache-state-node` binary (one node, a second one during the rounds that need two) and three writers
//! (`examples/core_node` processes replying with their writes' versions). Everything lives for the whole run,
//! so every round starts from what the earlier rounds left behind, as a long-running deployment would.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::support::{
    Broker, BrokerKind, CoreNodeProcess, Deployment, NodeProcess, RedisProbe, RedisServer,
};

/// tansu re-creates a topic it lost (after its restart) with 4 partitions when a producer writes to it: the
/// run creates its topics with the same count, so a re-created topic looks like the original.
pub const PARTITIONS: u32 = 4;
/// The state nodes' session timeout: short, so the rounds that wait for a session to expire stay short.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// The namespace and key prefix of every write.
pub const NS: &str = "chaos";
pub const PREFIX: &str = "chaos:";
/// Writers in the run.
pub const WRITERS: usize = 3;
/// How long a writer may take to answer one command (a write blocked by a broker restart included).
const REPLY_WAIT: Duration = Duration::from_secs(120);
const GROUP: &str = "chaos-state-nodes";

/// What Redis holds for one key (fields of the entry hash; see the README's Redis layout).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The decoded value (`v`), absent in a tombstone.
    pub value: Option<String>,
    /// The synced write's version (`ver`), as 32 hex digits.
    pub ver: Option<String>,
    /// The newest plain write's version (`pver`).
    pub pver: Option<String>,
}

impl Stored {
    /// The newest version Redis records for the key, synced or plain.
    pub fn recorded(&self) -> Option<&str> {
        self.ver.as_deref().max(self.pver.as_deref())
    }
}

/// The binary's exit code for "failed while running, left its group; restart me" (README, State
/// node CLI).
const STOPPED_ITSELF: i32 = 5;

/// How a state node that exited on its own had ended.
pub struct Exit {
    /// It exited with code 5: it stopped itself (and was started again, as a supervisor would).
    pub stopped_itself: bool,
    /// Its last "state node failed:" line, or the tail of its stderr.
    pub why: String,
}

pub struct World {
    /// The servers, the namespace [`NS`] and the key prefix [`PREFIX`].
    pub dep: Deployment,
    pub writers: Vec<CoreNodeProcess>,
    /// State nodes by instance id (`a` always, `b` during two-node rounds).
    state_nodes: Mutex<HashMap<&'static str, NodeProcess>>,
    /// Processes started so far, for labels.
    started: Mutex<u32>,
    probe: Mutex<RedisProbe>,
}

impl World {
    pub fn start(kind: BrokerKind) -> World {
        let mut dep = Deployment::on(
            RedisServer::start_with_aof(),
            Broker::start_kind(kind),
            NS,
            PREFIX,
        )
        .with_topics(PARTITIONS);
        dep.wait = REPLY_WAIT;
        let world = World {
            probe: Mutex::new(dep.probe()),
            dep,
            writers: Vec::new(),
            state_nodes: Mutex::new(HashMap::new()),
            started: Mutex::new(0),
        };
        world.start_state_node("a");
        let writers = (1..=WRITERS)
            .map(|n| {
                world.dep.core_node_process(
                    NS,
                    &format!("writer-{n}"),
                    &["--node-id", &n.to_string(), "--reply-versions"],
                )
            })
            .collect();
        World { writers, ..world }
    }

    /// Starts the state node with instance id `id` (replacing a dead one of that id).
    pub fn start_state_node(&self, id: &'static str) {
        let generation = {
            let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
            *started += 1;
            *started
        };
        let (partitions, session) = (
            PARTITIONS.to_string(),
            SESSION_TIMEOUT.as_millis().to_string(),
        );
        let node = self.dep.state_node_process(
            &format!("state-node-{id}#{generation}"),
            Some(GROUP),
            &[
                "--partitions",
                &partitions,
                "--threads",
                "2",
                "--instance-id",
                id,
                "--session-timeout-ms",
                &session,
                "--heartbeat-interval-ms",
                "1000",
            ],
        );
        self.nodes().insert(id, node);
    }

    /// SIGKILLs state node `id` and forgets it.
    pub fn kill_state_node(&self, id: &str) {
        if let Some(node) = self.nodes().remove(id) {
            node.kill();
        }
    }

    /// SIGTERM (a clean leave) to state node `id`, then forgets it.
    pub fn stop_state_node(&self, id: &str) {
        if let Some(node) = self.nodes().remove(id) {
            node.terminate();
            if node.wait_timeout(Duration::from_secs(30)).is_none() {
                node.kill();
            }
        }
    }

    /// Sends `signal` ("STOP", "CONT") to state node `id`.
    pub fn signal_state_node(&self, id: &str, signal: &str) -> bool {
        self.nodes().get(id).is_some_and(|n| n.signal(signal))
    }

    /// Does what a supervisor does: starts again every state node that exited on its own. Says how
    /// each had ended: a node that stopped itself (exit code 5, e.g. after librdkafka gave its
    /// consumer up) or one that crashed or was killed.
    pub fn supervise(&self) -> Vec<Exit> {
        let exited: Vec<(&'static str, NodeProcess)> = {
            let mut nodes = self.nodes();
            let dead: Vec<&'static str> = nodes
                .iter()
                .filter(|(_, n)| !n.is_running())
                .map(|(id, _)| *id)
                .collect();
            dead.into_iter()
                .filter_map(|id| nodes.remove(id).map(|n| (id, n)))
                .collect()
        };
        exited
            .into_iter()
            .map(|(id, node)| {
                self.start_state_node(id);
                let code = node.wait_timeout(Duration::ZERO).and_then(|s| s.code());
                let log = node.stderr();
                Exit {
                    stopped_itself: code == Some(STOPPED_ITSELF),
                    // For the report only: the reason it logged, else what it printed last.
                    why: log
                        .lines()
                        .rfind(|l| l.contains("state node failed:"))
                        .map_or_else(|| node.stderr_tail(20), str::to_string),
                }
            })
            .collect()
    }

    /// Whether state node `id` is running.
    pub fn has_state_node(&self, id: &str) -> bool {
        self.nodes().get(id).is_some_and(|n| n.is_running())
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, NodeProcess>> {
        self.state_nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What Redis holds for each of `keys` (`None`: no entry); `Err` when Redis does not answer.
    pub fn stored(&self, keys: &[String]) -> Result<Vec<Option<Stored>>, String> {
        let mut probe = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        let maps = probe.hashes(NS, keys)?;
        Ok(maps.into_iter().map(stored_from_hash).collect())
    }

    /// Tails of the servers' and state nodes' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = self.dep.logs();
        for (id, node) in self.nodes().iter() {
            out.push_str(&format!("\n--- state node {id}:\n{}", node.stderr_tail(60)));
        }
        out
    }
}

fn stored_from_hash(map: HashMap<String, Vec<u8>>) -> Option<Stored> {
    if map.is_empty() {
        return None;
    }
    let text = |field: &str| {
        map.get(field)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    Some(Stored {
        // A value that is not a JSON string shows as its raw bytes, which match no write.
        value: map.get("v").map(|b| {
            serde_json::from_slice::<String>(b)
                .unwrap_or_else(|_| format!("<raw {}>", String::from_utf8_lossy(b)))
        }),
        ver: text("ver"),
        pver: text("pver"),
    })
}
