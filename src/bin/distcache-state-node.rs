//! `distcache-state-node`: the production state node. Consumes the set-del topic, applies events
//! to Redis, publishes done events. Every flag can also be set through its `DISTCACHE_*`
//! environment variable. SIGINT/SIGTERM drain the current batch, commit and exit 0.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use distcache::version::DEFAULT_MAX_CLOCK_SKEW;
use distcache::{event::GROUP_SET_DEL, StateNode, DEFAULT_KEY_PREFIX, DEFAULT_MAX_INTAKE_BYTES};

#[derive(Parser, Debug)]
#[command(
    name = "distcache-state-node",
    version,
    about = "The distcache state node"
)]
struct Args {
    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092 or host1:9092,host2:9092.
    #[arg(long, env = "DISTCACHE_BROKERS")]
    brokers: String,
    /// Redis URL, e.g. redis://127.0.0.1:6379/ or redis://user:password@host:port/db.
    #[arg(long, env = "DISTCACHE_REDIS")]
    redis: String,
    /// Treat --redis as a comma-separated list of Redis Cluster seed nodes.
    #[arg(long, env = "DISTCACHE_REDIS_CLUSTER")]
    redis_cluster: bool,
    /// Consumer group; state nodes in one group split the partitions.
    #[arg(long, env = "DISTCACHE_GROUP", default_value = GROUP_SET_DEL)]
    group: String,
    /// Partitions of each topic when this node creates it.
    #[arg(long, env = "DISTCACHE_PARTITIONS", default_value_t = 8)]
    partitions: i32,
    /// Most events per batch.
    #[arg(long, env = "DISTCACHE_BATCH_SIZE", default_value_t = 1024)]
    batch_size: usize,
    /// Longest wait for a batch to fill, in milliseconds (0: take what has arrived).
    #[arg(long, env = "DISTCACHE_BATCH_WAIT_MS", default_value_t = 0)]
    batch_wait_ms: u64,
    /// Redis worker threads (one connection each).
    #[arg(long, env = "DISTCACHE_THREADS", default_value_t = 4)]
    threads: usize,
    /// Redis key prefix; must match the core nodes'.
    #[arg(long, env = "DISTCACHE_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX)]
    key_prefix: String,
    /// How long a delete's tombstone lives in Redis, in seconds.
    #[arg(long, env = "DISTCACHE_TOMBSTONE_TTL_S", default_value_t = 600)]
    tombstone_ttl_s: u64,
    /// Refuse events stamped more than this many milliseconds ahead of this node's clock
    /// (counted as future_refused, reported stale).
    #[arg(long, env = "DISTCACHE_MAX_CLOCK_SKEW_MS", default_value_t = DEFAULT_MAX_CLOCK_SKEW.as_millis() as u64)]
    max_clock_skew_ms: u64,
    /// Most bytes of consumed records waiting for the pipeline (besides four batches of records).
    #[arg(long, env = "DISTCACHE_MAX_INTAKE_BYTES", default_value_t = DEFAULT_MAX_INTAKE_BYTES)]
    max_intake_bytes: usize,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = "DISTCACHE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Print metrics to stderr every N seconds (0: only at exit).
    #[arg(long, env = "DISTCACHE_METRICS_INTERVAL_S", default_value_t = 0)]
    metrics_interval_s: u64,
    /// Extra librdkafka property KEY=VALUE (repeatable), e.g. security.protocol=SASL_SSL. Applied
    /// after --kafka-config-file. Command lines are visible to other users (ps): put secrets such as
    /// sasl.password in the file instead.
    // Split after parsing, not by a clap value parser: clap would echo a malformed value, which
    // may hold a secret.
    #[arg(long = "kafka-config")]
    kafka_config: Vec<String>,
    /// A file of librdkafka properties, one KEY=VALUE a line (`#` starts a comment), e.g. the SASL
    /// or SSL settings with their secrets (keep it readable by the node's user only).
    #[arg(long, env = "DISTCACHE_KAFKA_CONFIG_FILE")]
    kafka_config_file: Option<std::path::PathBuf>,
    /// Static consumer-group member id (Kafka's group.instance.id), unique per state node and stable
    /// across restarts, e.g. the pod name: a restart with the same id takes the node's partitions
    /// back at once. Unset: dynamic membership. A static member does not leave the group on
    /// SIGTERM; its partitions wait for its restart or the session timeout.
    #[arg(long, env = "DISTCACHE_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Consumer-group session timeout in milliseconds: a dead node's partitions move after about this.
    #[arg(long, env = "DISTCACHE_SESSION_TIMEOUT_MS", default_value_t = 6000)]
    session_timeout_ms: u64,
    /// Consumer-group heartbeat interval in milliseconds; must be below the session timeout.
    #[arg(long, env = "DISTCACHE_HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    heartbeat_interval_ms: u64,
}

/// `--kafka-config` arguments as (key, value); an error names the argument by position only.
fn kafka_config_args(args: &[String]) -> Result<Vec<(String, String)>, String> {
    args.iter()
        .enumerate()
        .map(|(i, arg)| {
            arg.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--kafka-config #{}: expected KEY=VALUE", i + 1))
        })
        .collect()
}

/// The KEY=VALUE lines of a librdkafka properties file. Errors name the file and line, never a
/// value (it may be a secret).
fn read_kafka_config_file(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--kafka-config-file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| {
            format!(
                "--kafka-config-file {} line {}: expected KEY=VALUE",
                path.display(),
                n + 1
            )
        })?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::new()
        .parse_filters(&args.log_level)
        .target(env_logger::Target::Stderr)
        .init();

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            log::error!("cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }

    let mut builder = StateNode::builder()
        .kafka_brokers(&args.brokers)
        .redis_url(&args.redis)
        .redis_cluster(args.redis_cluster)
        .group(&args.group)
        .partitions(args.partitions)
        .max_batch(args.batch_size)
        .max_wait(Duration::from_millis(args.batch_wait_ms))
        .redis_workers(args.threads)
        .key_prefix(&args.key_prefix)
        .tombstone_ttl(Duration::from_secs(args.tombstone_ttl_s))
        .max_clock_skew(Duration::from_millis(args.max_clock_skew_ms))
        .max_intake_bytes(args.max_intake_bytes);
    builder = builder
        .session_timeout(Duration::from_millis(args.session_timeout_ms))
        .heartbeat_interval(Duration::from_millis(args.heartbeat_interval_ms));
    if let Some(id) = &args.instance_id {
        builder = builder.instance_id(id);
    }
    let from_file = match args
        .kafka_config_file
        .as_deref()
        .map(read_kafka_config_file)
    {
        None => Ok(Vec::new()),
        Some(entries) => entries,
    };
    let (from_file, from_args) = match (from_file, kafka_config_args(&args.kafka_config)) {
        (Ok(file), Ok(args)) => (file, args),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for (k, v) in from_file.iter().chain(&from_args) {
        builder = builder.kafka_config(k, v);
    }
    let node = match builder.start() {
        Ok(node) => node,
        Err(e) => {
            log::error!("state node failed to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!("state node running; SIGINT or SIGTERM to stop");

    let mut last_report = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(why) = node.failure() {
            // The node has left its group; exit so a supervisor restarts it.
            log::error!("state node failed: {why}");
            node.shutdown();
            log::info!("final metrics: {:?}", node.metrics());
            return ExitCode::FAILURE;
        }
        if args.metrics_interval_s > 0
            && last_report.elapsed() >= Duration::from_secs(args.metrics_interval_s)
        {
            log::info!("metrics: {:?}", node.metrics());
            last_report = Instant::now();
        }
    }
    log::info!("signal received: draining and committing");
    node.shutdown();
    log::info!("stopped; final metrics: {:?}", node.metrics());
    ExitCode::SUCCESS
}
