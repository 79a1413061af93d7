//! Section `scale`: the drain rate with 1, 2 and 3 `distcache-state-node` processes in one group,
//! against one redis-server and against a 3-master Redis Cluster, side by side in one run, with
//! the CPU every process used. On a 2-core machine every added process shares the same cores:
//! the table shows what that costs rather than what more machines would give.

use std::collections::HashMap;
use std::path::PathBuf;

use super::outside::*;
use super::*;

/// A throwaway Redis Cluster of `MASTERS` masters, no replicas, nothing persisted, each in its
/// own directory; stopped when dropped.
struct BenchCluster {
    nodes: Vec<(Child, u16)>,
    dir: PathBuf,
}

const MASTERS: usize = 3;

impl BenchCluster {
    fn start(run: &str) -> R<BenchCluster> {
        let dir = std::env::temp_dir().join(format!("distcache-bench-cluster-{run}"));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = BenchCluster {
            nodes: Vec::new(),
            dir,
        };
        for i in 0..MASTERS {
            let (port, bus) = (free_port()?, free_port()?);
            let node_dir = cluster.dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("start redis-server: {e}"))?;
            cluster.nodes.push((child, port));
        }
        let ping = |port: u16| {
            Command::new("redis-cli")
                .args(["-p", &port.to_string(), "PING"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
        };
        for &(_, port) in &cluster.nodes {
            wait_until(|| ping(port), Duration::from_millis(50))
                .ok_or_else(|| format!("cluster node on {port} never answered"))?;
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| format!("redis-cli --cluster create (package redis-tools): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )
            .into());
        }
        let ok = |port: u16| {
            Command::new("redis-cli")
                .args(["-p", &port.to_string(), "CLUSTER", "INFO"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
        };
        for &(_, port) in &cluster.nodes {
            wait_until(|| ok(port), Duration::from_millis(100))
                .ok_or_else(|| format!("cluster node on {port} never reached cluster_state:ok"))?;
        }
        Ok(cluster)
    }

    fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(_, p)| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// The seeds in the form `distcache-state-node --redis-cluster` takes.
    fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|(_, p)| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn watched(&self) -> Vec<Watched> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, (child, _))| Watched {
                role: format!("cluster master {}", i + 1),
                pid: child.id(),
            })
            .collect()
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> R<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One drain by `nodes` state nodes against one Redis topology.
pub(super) struct ScaleRun {
    /// An untimed first drain that warms the broker's JIT up; shown, not compared.
    pub(super) warmup: bool,
    pub(super) nodes: usize,
    pub(super) cluster: bool,
    pub(super) events: u64,
    pub(super) elapsed: Duration,
    /// From the first consumed record until every node held a partition.
    pub(super) all_assigned: Option<Duration>,
    /// CPU seconds during the drain: the state nodes together, Redis (all servers), the broker.
    pub(super) cpu_s: [f64; 3],
    pub(super) retries: f64,
}

impl ScaleRun {
    pub(super) fn rate(&self) -> f64 {
        rate(self.events as usize, self.elapsed)
    }
}

pub(super) fn scale(c: &Config) -> R<Vec<ScaleRun>> {
    let total = preproduce_backlog(c, "scale")?;
    let cluster = BenchCluster::start(&c.run)?;
    progress(format!("  redis cluster of {MASTERS} masters up"));
    let single: Vec<Watched> = pid_from_env("DISTCACHE_REDIS_PID")
        .map(|pid| Watched {
            role: "redis-server".into(),
            pid,
        })
        .into_iter()
        .collect();
    let broker = pid_from_env("DISTCACHE_BROKER_PID");
    let mut runs = Vec::new();
    let one = [c.redis_url.clone()];
    let target = Target {
        servers: &one,
        pids: &single,
    };
    let mut warmup = scale_run(c, total, 1, false, &c.redis_url, &target, broker)?;
    warmup.warmup = true;
    runs.push(warmup);
    for on_cluster in [false, true] {
        for nodes in 1..=3 {
            let (redis, servers, redis_pids) = if on_cluster {
                (cluster.seeds(), cluster.urls(), cluster.watched())
            } else {
                (
                    c.redis_url.clone(),
                    vec![c.redis_url.clone()],
                    single.clone(),
                )
            };
            let target = Target {
                servers: &servers,
                pids: &redis_pids,
            };
            let run = scale_run(c, total, nodes, on_cluster, &redis, &target, broker)?;
            progress(format!(
                "  {nodes} node(s), {}: {} events in {:?} = {:.0}/s",
                if on_cluster { "cluster" } else { "one redis" },
                run.events,
                run.elapsed,
                run.rate()
            ));
            runs.push(run);
        }
    }
    Ok(runs)
}

/// The Redis servers a run writes to: their URLs (every master of a cluster) and processes.
struct Target<'a> {
    servers: &'a [String],
    pids: &'a [Watched],
}

/// Keys in every server of `conns` (`DBSIZE`, constant time).
fn keys_in(conns: &mut [redis::Connection]) -> R<u64> {
    let mut total = 0;
    for conn in conns {
        total += redis::cmd("DBSIZE").query::<u64>(conn)?;
    }
    Ok(total)
}

/// One drain. It is over when Redis holds every key of the backlog (each run writes under a
/// fresh prefix and every key of the backlog is distinct, so that is `total` new keys): the
/// nodes' own counters would count twice the records a rebalance hands to another node before
/// they were committed.
fn scale_run(
    c: &Config,
    total: u64,
    nodes: usize,
    cluster: bool,
    redis: &str,
    target: &Target<'_>,
    broker: Option<u32>,
) -> R<ScaleRun> {
    let redis_pids = target.pids;
    let mut conns: Vec<redis::Connection> = target
        .servers
        .iter()
        .map(|u| Ok(redis::Client::open(u.as_str())?.get_connection()?))
        .collect::<R<_>>()?;
    let keys_before = keys_in(&mut conns)?;
    let tag = format!(
        "{}-{}{nodes}-{}",
        c.run,
        if cluster { "c" } else { "s" },
        now_micros() % 1_000_000
    );
    let group = format!("bench-scale-{tag}");
    let mut c = c.clone();
    // A fresh key prefix per run: every write is new to Redis.
    c.node_args.push(format!("--key-prefix=bench:scale:{tag}:"));
    // Spawned together, and polled from the start: a node that waited for the others to come up
    // would drain before the clock starts.
    let procs: Vec<NodeProcess> = (0..nodes)
        .map(|_| NodeProcess::spawn(&c, &group, redis, cluster))
        .collect::<R<_>>()?;
    let every = Duration::from_millis(5);
    let sum = |name: &str, scrapes: &[HashMap<String, f64>]| -> f64 {
        scrapes
            .iter()
            .map(|m| m.get(name).copied().unwrap_or(0.0))
            .sum()
    };
    let scrape_all = || -> Vec<HashMap<String, f64>> {
        procs
            .iter()
            .map(|p| p.scrape().unwrap_or_default())
            .collect()
    };
    wait_until(
        || sum("distcache_state_node_consumed_total", &scrape_all()) > 0.0,
        every,
    )
    .ok_or("the state nodes consumed nothing")?;
    let t0 = Instant::now();
    let node_pids: Vec<u32> = procs.iter().map(NodeProcess::pid).collect();
    let ticks = || -> [u64; 3] {
        [
            node_pids.iter().filter_map(|&p| process_ticks(p)).sum(),
            redis_pids.iter().filter_map(|w| process_ticks(w.pid)).sum(),
            broker.and_then(process_ticks).unwrap_or(0),
        ]
    };
    let before = ticks();
    let mut all_assigned = None;
    let mut last = Vec::new();
    let done = wait_until(
        || {
            let scrapes = scrape_all();
            if all_assigned.is_none()
                && scrapes.iter().all(|m| {
                    m.get("distcache_state_node_assigned_partitions")
                        .is_some_and(|&p| p > 0.0)
                })
            {
                all_assigned = Some(t0.elapsed());
            }
            last = scrapes;
            keys_in(&mut conns).is_ok_and(|k| k >= keys_before + total)
        },
        every,
    )
    .ok_or_else(|| {
        format!(
            "{nodes} state node(s) did not finish the drain; first node's log:\n{}",
            procs[0].log_tail()
        )
    })?;
    let after = ticks();
    let per_s = clock_ticks();
    Ok(ScaleRun {
        warmup: false,
        nodes,
        cluster,
        events: total,
        elapsed: done - t0,
        all_assigned,
        cpu_s: [0, 1, 2].map(|i| after[i].saturating_sub(before[i]) as f64 / per_s),
        retries: sum("distcache_state_node_retries_total", &last),
    })
}

pub(super) fn print_scale(c: &Config, runs: &[ScaleRun]) {
    println!("### Scale-out: 1–3 state nodes, one Redis and a Redis Cluster\n");
    println!(
        "{} set events (distinct keys, {} value bytes) pre-produced onto `{TOPIC_SET_DEL}` \
         ({PARTITIONS} partitions); per row a fresh group of N `distcache-state-node` processes \
         (default settings, a fresh key prefix) started together against one redis-server or a \
         {MASTERS}-master Redis Cluster (no replicas) on this machine, timed from the first \
         consumed record until Redis holds every key of the backlog (`DBSIZE` on every server, \
         polled every 5 ms; the nodes' counters would count twice what a rebalance replays). \
         The nodes join \
         one by one, so the first rebalances fall inside the timed drain (\"all assigned\" says \
         when every node held partitions). CPU = user + system seconds from `/proc` during the \
         drain. The first row is an untimed warm-up of a freshly started broker (its JIT compiles \
         the hot paths). This machine has {} cores, shared by every process in the row, so more nodes \
         cannot add cores here: the rows show what the extra processes cost.\n",
        c.n,
        c.value_bytes,
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let base = runs.iter().find(|r| !r.warmup).map_or(1.0, ScaleRun::rate);
    println!("| redis | state nodes | events | drain time | events/s | × 1 node, one Redis | all assigned | CPU s: nodes / redis / broker | cores busy | retries |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let cpu: f64 = r.cpu_s.iter().sum();
        println!(
            "| {} | {} | {} | {} | {} | {:.2}× | {} | {:.2} / {:.2} / {:.2} | {:.2} | {:.0} |",
            match (r.warmup, r.cluster) {
                (true, _) => "one server (warm-up)".to_string(),
                (false, true) => format!("cluster ({MASTERS} masters)"),
                (false, false) => "one server".into(),
            },
            r.nodes,
            r.events,
            secs(r.elapsed),
            thousands(r.rate()),
            r.rate() / base,
            r.all_assigned.map_or("never".into(), secs),
            r.cpu_s[0],
            r.cpu_s[1],
            r.cpu_s[2],
            cpu / r.elapsed.as_secs_f64(),
            r.retries
        );
    }
    println!();
}
