//! `distcache-state-node`: the production state node. Consumes the set-del topic, applies events
//! to Redis, publishes done events. Settings come from flags, `DISTCACHE_*` environment variables
//! and an optional TOML file, in that order (`settings.rs`); `--help` lists them with the exit
//! codes. SIGINT/SIGTERM drain the current batch, commit, write the final metrics (`report.rs`)
//! and exit 0.

mod logging;
mod report;
mod settings;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distcache::{Error, MetricsServer, StateNode, StateNodeBuilder};

use settings::Settings;

/// Exit codes, one per failure class (documented in `--help` and the README).
mod exit {
    /// Clean shutdown after a signal, or `--check` passed.
    pub const OK: u8 = 0;
    /// Something no setting can fix (a signal handler could not be installed).
    pub const INTERNAL: u8 = 1;
    /// Usage or configuration error (clap uses 2 for usage errors too).
    pub const CONFIG: u8 = 2;
    /// Redis did not answer.
    pub const REDIS: u8 = 3;
    /// The Kafka brokers did not answer.
    pub const KAFKA: u8 = 4;
    /// The node failed while running and left its group; a supervisor should restart it.
    pub const FAILED: u8 = 5;
}

/// The exit code for an error from starting or checking the node: which service failed, or a
/// configuration error.
fn exit_code(err: &Error) -> u8 {
    let names_redis = |what: &str| what.starts_with("redis");
    match err {
        Error::Config(_) => exit::CONFIG,
        Error::Unavailable { service, .. } if *service == "redis" => exit::REDIS,
        Error::Unavailable { .. } => exit::KAFKA,
        Error::Timeout { what, .. } | Error::Rejected(what) if names_redis(what) => exit::REDIS,
        Error::Timeout { .. } => exit::KAFKA,
        _ => exit::INTERNAL,
    }
}

fn builder(s: &Settings) -> StateNodeBuilder {
    let a = &s.args;
    let mut builder = StateNode::builder()
        .kafka_brokers(&s.brokers)
        .redis_url(&s.redis)
        .redis_cluster(a.redis_cluster)
        .group(&a.group)
        .partitions(a.partitions)
        .max_batch(a.batch_size)
        .max_wait(Duration::from_millis(a.batch_wait_ms))
        .redis_workers(a.threads)
        .key_prefix(&a.key_prefix)
        .tombstone_ttl(Duration::from_secs(a.tombstone_ttl_s))
        .max_clock_skew(Duration::from_millis(a.max_clock_skew_ms))
        .trace(a.trace)
        .max_intake_bytes(a.max_intake_bytes)
        .session_timeout(Duration::from_millis(a.session_timeout_ms))
        .heartbeat_interval(Duration::from_millis(a.heartbeat_interval_ms));
    if let Some(id) = &a.instance_id {
        builder = builder.instance_id(id);
    }
    for (k, v) in &s.kafka_config {
        builder = builder.kafka_config(k, v);
    }
    builder
}

fn main() -> ExitCode {
    ExitCode::from(run())
}

fn run() -> u8 {
    let (args, matches) = settings::parse();
    // The logger's own settings may come from the file: peek at it before anything is logged.
    let settings = settings::resolve(args, &matches);
    let (filters, format) = match &settings {
        Ok(s) => (s.args.log_level.clone(), s.args.log_format),
        Err(_) => ("info".to_string(), settings::LogFormat::Text),
    };
    logging::init(&filters, format);
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return exit::CONFIG;
        }
    };
    if settings.args.print_config {
        print!("{}", settings.to_toml());
        return exit::OK;
    }
    if settings.args.check {
        return check(&settings);
    }
    serve(&settings)
}

/// `--check`: the settings, Redis PING, a metadata request to the brokers. One line on stdout.
fn check(settings: &Settings) -> u8 {
    match builder(settings).check() {
        Ok(()) => {
            println!("ok: settings valid, redis answers PING, kafka brokers answer");
            exit::OK
        }
        Err(e) => {
            let code = exit_code(&e);
            let what = match code {
                exit::CONFIG => "invalid configuration",
                exit::REDIS => "redis unreachable",
                exit::KAFKA => "kafka unreachable",
                _ => "check failed",
            };
            println!("{what} (exit {code}): {e}");
            log::error!("check failed: {e}");
            code
        }
    }
}

fn serve(settings: &Settings) -> u8 {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            log::error!("cannot install signal handler: {e}");
            return exit::INTERNAL;
        }
    }
    let final_metrics_file = settings.args.final_metrics_file.as_deref();
    if let Some(path) = final_metrics_file {
        if let Err(e) = report::prepare(path) {
            log::error!("--final-metrics-file {}: {e}", path.display());
            return exit::CONFIG;
        }
    }
    let node = match builder(settings).start() {
        Ok(node) => node,
        Err(e) => {
            log::error!("state node failed to start: {e}");
            return exit_code(&e);
        }
    };
    let _metrics = match settings.args.metrics_addr.as_deref() {
        None => None,
        Some(addr) => match MetricsServer::serve(addr, node.monitor()) {
            Ok(server) => {
                log::info!(
                    "metrics on http://{}/metrics, health on /health",
                    server.local_addr()
                );
                Some(server)
            }
            Err(e) => {
                log::error!("--metrics-addr {addr}: {e}");
                return stop_node(&node, final_metrics_file, exit::CONFIG);
            }
        },
    };
    log::info!("state node running; SIGINT or SIGTERM to stop");

    let interval = settings.args.metrics_interval_s;
    let mut last_report = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(why) = node.failure() {
            // The node has left its group; exit so a supervisor restarts it.
            log::error!("state node failed: {why}");
            return stop_node(&node, final_metrics_file, exit::FAILED);
        }
        if interval > 0 && last_report.elapsed() >= Duration::from_secs(interval) {
            log::info!("metrics: {}", report::line(&node.metrics()));
            last_report = Instant::now();
        }
    }
    log::info!("signal received: draining and committing");
    stop_node(&node, final_metrics_file, exit::OK)
}

/// Every stop of a started node: shut it down (drain, commit), log its final counters and write
/// them to the `--final-metrics-file`. Returns `code`, or `INTERNAL` when a clean stop could not
/// write the file (whoever reads it must not take its absence for success).
fn stop_node(node: &StateNode, final_metrics_file: Option<&Path>, code: u8) -> u8 {
    node.shutdown();
    let metrics = node.metrics();
    log::info!("stopped; final metrics: {}", report::line(&metrics));
    let Some(path) = final_metrics_file else {
        return code;
    };
    match report::write_file(path, &metrics) {
        Ok(()) => code,
        Err(e) => {
            log::error!("--final-metrics-file {}: {e}", path.display());
            if code == exit::OK {
                exit::INTERNAL
            } else {
                code
            }
        }
    }
}
