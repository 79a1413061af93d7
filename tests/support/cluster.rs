//! A throwaway Redis Cluster for one test: N masters and no replicas, each a `redis-server` with
//! `--cluster-enabled yes` on a free loopback port in its own temporary directory, joined with
//! `redis-cli --cluster create` and waited on until every node serves the whole slot space. By default
//! nothing is persisted; [`RedisCluster::start_persistent`] gives every node an append-only file synced
//! on every write, so a node killed and restarted ([`RedisCluster::restart_node`]) comes back with its data.
//!
//! Each node also needs a cluster-bus port. Redis' default (port + 10000) can run past 65535 for the high
//! ports the OS hands out, or be taken, so every node gets its own free bus port (`--cluster-port`); a node
//! that fails to bind either port exits and is started again on new ones. A restart keeps both ports and
//! the node's `nodes.conf` (its identity and the cluster it belongs to), so it rejoins as itself.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::server::ServerProcess;
use super::{free_port, run_with_timeout, wait_until};

/// How long the cluster may take to agree on its slots once created.
const FORM_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `redis-cli --cluster create` may take (it waits for the nodes to meet).
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_millis(500);
const MISSING_CLI: &str =
    "redis-cli not found (package redis-tools): run scripts/services.sh install";

pub struct RedisCluster {
    nodes: Vec<ServerProcess>,
}

impl RedisCluster {
    /// Starts `masters` (at least 3, redis-cli's minimum) cluster-enabled `redis-server`s, forms a cluster
    /// of them with every slot assigned, and waits until each node reports `cluster_state:ok` and sees every
    /// master connected. Panics with the nodes' logs if it does not come up. Nothing is persisted.
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_with(masters, false)
    }

    /// [`start`](Self::start) with every node keeping an append-only file in its directory, `fsync`ed
    /// before each reply (`appendfsync always`): a write a node acknowledged survives its SIGKILL.
    pub fn start_persistent(masters: usize) -> RedisCluster {
        RedisCluster::start_with(masters, true)
    }

    fn start_with(masters: usize, persistent: bool) -> RedisCluster {
        assert!(masters >= 3, "a redis cluster needs at least 3 masters");
        if let Err(e) = Command::new("redis-cli").arg("--version").output() {
            if e.kind() == std::io::ErrorKind::NotFound {
                panic!("{MISSING_CLI}");
            }
            panic!("run redis-cli --version: {e}");
        }
        let nodes = (0..masters).map(|_| start_node(persistent)).collect();
        let cluster = RedisCluster { nodes };
        cluster.create();
        cluster.wait_formed();
        cluster
    }

    /// The nodes' ports, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(ServerProcess::port).collect()
    }

    /// The seed list for `RedisConfig { cluster: true, .. }`: `redis://127.0.0.1:P1,redis://127.0.0.1:P2,…`.
    pub fn urls(&self) -> String {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A cluster-aware connection (routes each command by its key's slot).
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        let seeds: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect();
        redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5))
            .build()
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("connect to the cluster at {}: {e}", self.urls()))
    }

    /// A plain connection to the one node on `port` (for per-node commands such as `DBSIZE`).
    pub fn node_connection(&self, port: u16) -> redis::Connection {
        node_connection(port, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to cluster node 127.0.0.1:{port}: {e}"))
    }

    /// How many keys the node on `port` holds.
    pub fn dbsize(&self, port: u16) -> u64 {
        redis::cmd("DBSIZE")
            .query(&mut self.node_connection(port))
            .unwrap_or_else(|e| panic!("DBSIZE on 127.0.0.1:{port}: {e}"))
    }

    /// SIGKILL the node on `port` (a no-op when it is not running).
    pub fn kill_node(&self, port: u16) {
        self.node(port).kill();
    }

    /// Starts the node on `port` again (killing it first if it runs) on the same client and bus ports,
    /// with its `nodes.conf` (and, for a persistent cluster, its data), and waits until every node is back
    /// at `cluster_state:ok` with every master connected. Panics with the nodes' logs if it is not.
    pub fn restart_node(&self, port: u16) {
        self.node(port).restart();
        self.wait_formed();
    }

    fn node(&self, port: u16) -> &ServerProcess {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}: {:?}", self.ports()))
    }

    /// SIGKILL every node.
    pub fn kill_all(&self) {
        for node in &self.nodes {
            node.kill();
        }
    }

    /// The last `n` lines of every node's log, labelled.
    pub fn log_tails(&self, n: usize) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- node 127.0.0.1:{}\n{}", node.port(), node.log_tail(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn create(&self) {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--cluster", "create"]);
        for port in self.ports() {
            cmd.arg(format!("127.0.0.1:{port}"));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"]);
        if let Err(e) = run_with_timeout(&mut cmd, CREATE_TIMEOUT) {
            panic!("redis-cli --cluster create: {e}\n{}", self.log_tails(20));
        }
    }

    /// Waits until every node says `cluster_state:ok` for all 16384 slots and lists every master as
    /// connected and healthy: `len`/`clear` discover the masters from whichever node they ask.
    fn wait_formed(&self) {
        let ports = self.ports();
        let mut last = String::new();
        let formed = wait_until(FORM_TIMEOUT, || {
            ports
                .iter()
                .all(|&port| match node_view(port, ports.len()) {
                    Ok(()) => true,
                    Err(why) => {
                        last = format!("127.0.0.1:{port}: {why}");
                        false
                    }
                })
        });
        if !formed {
            panic!(
                "redis cluster {} did not form within {FORM_TIMEOUT:?} ({last})\n{}",
                self.urls(),
                self.log_tails(20)
            );
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The ports a node was last started on. A start on a new client port (the first, or a retry after a
/// port turned out to be taken) takes a new bus port too and begins without an identity; a start on the
/// same client port is a restart and keeps both.
#[derive(Default)]
struct NodePorts {
    port: u16,
    bus: u16,
}

fn start_node(persistent: bool) -> ServerProcess {
    let ports = Arc::new(Mutex::new(NodePorts::default()));
    ServerProcess::start(
        "redis-server",
        "redis-server not found: run scripts/services.sh install".to_string(),
        Box::new(move |port: u16, dir: &Path| {
            let mut last = ports.lock().unwrap_or_else(|e| e.into_inner());
            if last.port != port {
                // A start that failed to bind may have left a node identity behind; begin afresh.
                let _ = std::fs::remove_file(dir.join("nodes.conf"));
                *last = NodePorts {
                    port,
                    bus: free_port(),
                };
            }
            let mut cmd = Command::new("redis-server");
            cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "5000"])
                .args(["--cluster-port", &last.bus.to_string()])
                .args(["--save", ""]);
            if persistent {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
            } else {
                cmd.args(["--appendonly", "no"]);
            }
            cmd.args(["--daemonize", "no"]).arg("--dir").arg(dir);
            cmd
        }),
        Box::new(|port, pid| server_pid(port) == Some(pid)),
    )
}

fn node_connection(port: u16, io_timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let conn = client.get_connection_with_timeout(IO_TIMEOUT)?;
    conn.set_read_timeout(Some(io_timeout))?;
    conn.set_write_timeout(Some(io_timeout))?;
    Ok(conn)
}

/// The `process_id` the server on `port` reports: proves the answer comes from our process, not from
/// someone else's listener on a port that was taken meanwhile.
fn server_pid(port: u16) -> Option<u32> {
    let mut conn = node_connection(port, IO_TIMEOUT).ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:")?.trim().parse().ok())
}

/// `Ok` when the node on `port` serves every slot and sees `masters` connected, healthy masters.
fn node_view(port: u16, masters: usize) -> Result<(), String> {
    let mut conn = node_connection(port, IO_TIMEOUT).map_err(|e| e.to_string())?;
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut conn)
        .map_err(|e| e.to_string())?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    if field("cluster_state") != "ok" || field("cluster_slots_ok") != "16384" {
        return Err(format!(
            "cluster_state:{} cluster_slots_ok:{}",
            field("cluster_state"),
            field("cluster_slots_ok")
        ));
    }
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut conn)
        .map_err(|e| e.to_string())?;
    // `id host:port@bus flags master ping pong epoch link-state slots…`
    let healthy = nodes
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() >= 8 && {
                let flags: Vec<&str> = fields[2].split(',').collect();
                flags.contains(&"master")
                    && !flags
                        .iter()
                        .any(|f| matches!(*f, "fail" | "fail?" | "handshake" | "noaddr"))
                    && fields[7] == "connected"
            }
        })
        .count();
    if healthy != masters {
        return Err(format!(
            "sees {healthy} of {masters} masters connected:\n{nodes}"
        ));
    }
    Ok(())
}
