//! The system seen from outside, as an operator sees it: `distcache-state-node` processes with
//! default settings, read through their metrics page, and the CPU time of any process (and of
//! each of its threads) from `/proc`.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};

use super::*;

/// A running `distcache-state-node` (the binary scripts/bench.sh builds and names in
/// `DISTCACHE_STATE_NODE_BIN`). Stopped with SIGTERM (then killed) when dropped.
pub(super) struct NodeProcess {
    child: Child,
    metrics_addr: String,
    log: std::path::PathBuf,
}

impl NodeProcess {
    /// Starts a node in `group` against `redis` (a URL, or a comma-separated list of cluster
    /// seeds with `cluster`) and returns at once; every pipeline setting is the binary's default
    /// unless `--node-args` says otherwise.
    pub(super) fn spawn(c: &Config, group: &str, redis: &str, cluster: bool) -> R<NodeProcess> {
        let bin = std::env::var("DISTCACHE_STATE_NODE_BIN").map_err(|_| {
            "DISTCACHE_STATE_NODE_BIN is not set (scripts/bench.sh builds the binary and sets it)"
        })?;
        let metrics_addr = {
            let probe = TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.to_string()
        };
        let log = std::env::temp_dir().join(format!("distcache-bench-{}-{group}.log", c.run));
        let mut cmd = Command::new(&bin);
        cmd.args(["--brokers", &c.brokers, "--group", group])
            .args(["--metrics-addr", &metrics_addr, "--log-level", "warn"])
            .args(&c.node_args)
            .env("DISTCACHE_REDIS", redis)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        if cluster {
            cmd.arg("--redis-cluster");
        }
        let child = cmd.spawn().map_err(|e| format!("start {bin}: {e}"))?;
        Ok(NodeProcess {
            child,
            metrics_addr,
            log,
        })
    }

    /// [`spawn`](Self::spawn), then waits until the node serves its metrics page.
    pub(super) fn start(c: &Config, group: &str, redis: &str, cluster: bool) -> R<NodeProcess> {
        let node = NodeProcess::spawn(c, group, redis, cluster)?;
        if wait_until(|| node.scrape().is_ok(), Duration::from_millis(20)).is_none() {
            return Err(
                format!("state node never served metrics; log:\n{}", node.log_tail()).into(),
            );
        }
        Ok(node)
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's metrics page as `name → value` (summaries' quantile lines keep their labels).
    pub(super) fn scrape(&self) -> R<HashMap<String, f64>> {
        let mut stream = TcpStream::connect(&self.metrics_addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect())
    }

    /// One metric, 0 when absent.
    pub(super) fn metric(&self, name: &str) -> R<f64> {
        Ok(self.scrape()?.get(name).copied().unwrap_or(0.0))
    }

    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events a node has settled: applied, found stale, deduplicated, malformed or failed.
pub(super) const SETTLED: [&str; 5] = [
    "distcache_state_node_applied_total",
    "distcache_state_node_stale_dropped_total",
    "distcache_state_node_deduped_total",
    "distcache_state_node_malformed_total",
    "distcache_state_node_failed_total",
];

pub(super) fn settled_of(m: &HashMap<String, f64>) -> u64 {
    SETTLED
        .iter()
        .map(|n| m.get(*n).copied().unwrap_or(0.0) as u64)
        .sum()
}

use crate::proc_stat::stat_ticks;
pub(super) use crate::proc_stat::{clock_ticks, process_ticks};

/// CPU time of each living thread of `pid`, in ticks, summed by thread name with digits taken
/// out (`distcache-redis-3` → `distcache-redis-`), so a pool is one row.
pub(super) fn thread_ticks(pid: u32) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, ticks)) = stat_ticks(&text) {
            let name: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
            *out.entry(name).or_default() += ticks;
        }
    }
    out
}

/// A process whose CPU time a measurement reads, by role.
#[derive(Clone, Debug)]
pub(super) struct Watched {
    pub(super) role: String,
    pub(super) pid: u32,
}

/// The pid in environment variable `var` (scripts/bench.sh passes the services' pid files).
pub(super) fn pid_from_env(var: &str) -> Option<u32> {
    std::env::var(var).ok()?.trim().parse().ok()
}

/// CPU ticks of every watched process at one moment.
pub(super) fn ticks_of(watched: &[Watched]) -> Vec<u64> {
    watched
        .iter()
        .map(|w| process_ticks(w.pid).unwrap_or(0))
        .collect()
}
