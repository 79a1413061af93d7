//! The deployment a chaos run works on: one broker, one redis-server with its append-only file on, the
//! `distcache-state-node` binary (one node, a second one during the rounds that need two) and three writers
//! (`examples/core_node` processes replying with their writes' versions). Everything lives for the whole run,
//! so every round starts from what the earlier rounds left behind, as a long-running deployment would.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use distcache::event::{TOPIC_DONE, TOPIC_SET_DEL};

use crate::support::{Broker, BrokerKind, ChildProcess, CoreNodeProcess, RedisServer};

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

/// How a state node that exited on its own had ended.
pub struct Exit {
    /// It stopped itself with a reason (and was started again, as a supervisor would).
    pub stopped_itself: bool,
    /// Its last "state node failed:" line, or the tail of its stderr.
    pub why: String,
}

pub struct World {
    pub broker: Broker,
    pub redis: RedisServer,
    pub writers: Vec<CoreNodeProcess>,
    /// State nodes by instance id (`a` always, `b` during two-node rounds).
    state_nodes: Mutex<HashMap<&'static str, ChildProcess>>,
    /// Processes started so far, for labels.
    started: Mutex<u32>,
    conn: Mutex<Option<redis::Connection>>,
}

impl World {
    pub fn start(kind: BrokerKind) -> World {
        let redis = RedisServer::start_with_aof();
        let broker = Broker::start_kind(kind);
        broker.create_topic(TOPIC_SET_DEL, PARTITIONS);
        broker.create_topic(TOPIC_DONE, PARTITIONS);
        let world = World {
            broker,
            redis,
            writers: Vec::new(),
            state_nodes: Mutex::new(HashMap::new()),
            started: Mutex::new(0),
            conn: Mutex::new(None),
        };
        world.start_state_node("a");
        let writers = (1..=WRITERS)
            .map(|n| {
                let args = [
                    "--brokers".to_string(),
                    world.broker.bootstrap(),
                    "--redis".into(),
                    world.redis.url(),
                    "--namespace".into(),
                    NS.into(),
                    "--prefix".into(),
                    PREFIX.into(),
                    "--node-id".into(),
                    n.to_string(),
                    "--reply-versions".into(),
                ];
                CoreNodeProcess::start(&format!("writer-{n}"), &args, REPLY_WAIT)
                    .unwrap_or_else(|e| panic!("{e}\n{}", world.logs()))
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_distcache-state-node"));
        cmd.args(["--brokers", &self.broker.bootstrap()])
            .args(["--redis", &self.redis.url()])
            .args(["--group", GROUP])
            .args(["--partitions", &PARTITIONS.to_string()])
            .args(["--key-prefix", PREFIX])
            .args(["--threads", "2"])
            .args(["--instance-id", id])
            .args([
                "--session-timeout-ms",
                &SESSION_TIMEOUT.as_millis().to_string(),
            ])
            .args(["--heartbeat-interval-ms", "1000"])
            .args(["--log-level", "info"])
            .env_remove("DISTCACHE_INSTANCE_ID");
        let node = ChildProcess::spawn(&format!("state-node-{id}#{generation}"), cmd);
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
    /// each had ended: a node that stopped itself (it logs "state node failed:", then exits non-zero,
    /// e.g. after librdkafka gave its consumer up) or one that crashed.
    pub fn supervise(&self) -> Vec<Exit> {
        let exited: Vec<(&'static str, ChildProcess)> = {
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
                let log = node.stderr();
                Exit {
                    stopped_itself: log.contains("state node failed:"),
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
        self.nodes().get(id).is_some_and(ChildProcess::is_running)
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, ChildProcess>> {
        self.state_nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What Redis holds for each of `keys` (`None`: no entry); `Err` when Redis does not answer.
    pub fn stored(&self, keys: &[String]) -> Result<Vec<Option<Stored>>, String> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let client = redis::Client::open(self.redis.url()).map_err(|e| e.to_string())?;
            let conn = client
                .get_connection_with_timeout(Duration::from_secs(2))
                .map_err(|e| format!("connect to redis: {e}"))?;
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            *guard = Some(conn);
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HGETALL")
                .arg(distcache::redis_entry_key(PREFIX, NS, key));
        }
        let conn = guard.as_mut().expect("connected");
        let maps: Vec<HashMap<String, Vec<u8>>> = pipe.query(conn).map_err(|e| {
            *guard = None;
            format!("read redis: {e}")
        })?;
        Ok(maps.into_iter().map(stored_from_hash).collect())
    }

    /// Tails of the servers' and state nodes' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = format!(
            "--- broker log:\n{}\n--- redis log:\n{}",
            self.broker.log_tail(15),
            self.redis.log_tail(8)
        );
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
