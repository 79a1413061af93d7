//! Where the binary's settings come from, and in which order they win: flags, then `DISTCACHE_*`
//! environment variables (clap reads both), then the optional TOML file (`--config`), then the
//! defaults shown by `--help`. A setting counts as given on the command line or in the
//! environment exactly when clap did not take it from its default.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use distcache::{
    event::GROUP_SET_DEL, DEFAULT_KEY_PREFIX, DEFAULT_MAX_CLOCK_SKEW, DEFAULT_MAX_INTAKE_BYTES,
};
use serde::{Deserialize, Serialize};

const ABOUT: &str = "The distcache state node: the one writer of Redis. It consumes the set-del \
topic in a consumer group, applies each batch to Redis with a version check, publishes done \
events and commits offsets.";

const AFTER_HELP: &str = "\
Settings come from, highest first: flags, DISTCACHE_* environment variables, the TOML file of
--config (keys named like the flags with '_' for '-': brokers, redis, batch_size, instance_id,
metrics_addr, ...; librdkafka properties in a [kafka_config] table), then the defaults above.
--brokers and --redis are required from one of them.

SIGINT/SIGTERM drain the current batch, commit, write --final-metrics-file (if given) and exit 0.

Exit codes:
  0  clean shutdown, or --check passed
  1  internal error (e.g. a signal handler could not be installed, or --final-metrics-file could
     not be written at the stop)
  2  usage or configuration error (bad flag, config file, value or credentials; metrics address in
     use; --final-metrics-file in a directory that is not there or cannot be written)
  3  Redis unreachable (at start or --check)
  4  Kafka unreachable (at start or --check)
  5  the node failed while running and left its group (the Kafka consumer failed for good, e.g.
     a fenced static member; a Redis worker kept panicking): restart it";

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// env_logger's human-readable lines.
    Text,
    /// One JSON object a line: ts (RFC 3339, UTC), level, target, msg.
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "distcache-state-node",
    version,
    about = ABOUT,
    after_help = AFTER_HELP
)]
pub struct Args {
    /// A TOML file of settings (see below); flags and DISTCACHE_* variables override it.
    #[arg(
        help_heading = "Operations",
        long,
        env = "DISTCACHE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Validate the settings, check that Redis answers PING and the brokers answer a metadata
    /// request, print the verdict and exit (codes below). Creates nothing, joins no group.
    #[arg(help_heading = "Operations", long)]
    pub check: bool,
    /// Print the effective settings (secrets hidden) as TOML and exit.
    #[arg(help_heading = "Operations", long)]
    pub print_config: bool,
    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092 or host1:9092,host2:9092. Required.
    #[arg(
        help_heading = "Connections",
        long,
        env = "DISTCACHE_BROKERS",
        value_name = "HOST:PORT[,...]"
    )]
    pub brokers: Option<String>,
    /// Redis URL, e.g. redis://127.0.0.1:6379/ or redis://user:password@host:port/db. Required.
    /// Prefer the environment variable: command lines are visible to other users.
    #[arg(
        help_heading = "Connections",
        long,
        env = "DISTCACHE_REDIS",
        value_name = "URL"
    )]
    pub redis: Option<String>,
    /// Treat --redis as a comma-separated list of Redis Cluster seed nodes.
    #[arg(help_heading = "Connections", long, env = "DISTCACHE_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Consumer group; state nodes in one group split the partitions.
    #[arg(value_name = "NAME", help_heading = "Consumer group", long, env = "DISTCACHE_GROUP", default_value = GROUP_SET_DEL)]
    pub group: String,
    /// Partitions of each topic when this node creates it.
    #[arg(
        value_name = "N",
        help_heading = "Consumer group",
        long,
        env = "DISTCACHE_PARTITIONS",
        default_value_t = 8
    )]
    pub partitions: i32,
    /// Most events per batch.
    #[arg(
        value_name = "N",
        help_heading = "Pipeline",
        long,
        env = "DISTCACHE_BATCH_SIZE",
        default_value_t = 1024
    )]
    pub batch_size: usize,
    /// Longest wait for a batch to fill, in milliseconds (0: take what has arrived).
    #[arg(
        value_name = "MS",
        help_heading = "Pipeline",
        long,
        env = "DISTCACHE_BATCH_WAIT_MS",
        default_value_t = 0
    )]
    pub batch_wait_ms: u64,
    /// Redis worker threads (one connection each).
    #[arg(
        value_name = "N",
        help_heading = "Pipeline",
        long,
        env = "DISTCACHE_THREADS",
        default_value_t = 4
    )]
    pub threads: usize,
    /// Redis key prefix; must match the core nodes'.
    #[arg(value_name = "PREFIX", help_heading = "Pipeline", long, env = "DISTCACHE_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,
    /// How long a delete's tombstone lives in Redis, in seconds.
    #[arg(
        value_name = "S",
        help_heading = "Pipeline",
        long,
        env = "DISTCACHE_TOMBSTONE_TTL_S",
        default_value_t = 600
    )]
    pub tombstone_ttl_s: u64,
    /// Refuse events stamped more than this many milliseconds ahead of this node's clock
    /// (counted as future_refused, reported stale).
    #[arg(value_name = "MS", help_heading = "Pipeline", long, env = "DISTCACHE_MAX_CLOCK_SKEW_MS", default_value_t = DEFAULT_MAX_CLOCK_SKEW.as_millis() as u64)]
    pub max_clock_skew_ms: u64,
    /// Most bytes of consumed records waiting for the pipeline (besides four batches of records).
    #[arg(value_name = "BYTES", help_heading = "Pipeline", long, env = "DISTCACHE_MAX_INTAKE_BYTES", default_value_t = DEFAULT_MAX_INTAKE_BYTES)]
    pub max_intake_bytes: usize,
    /// Log level: error, warn, info, debug, trace (or env_logger filters such as
    /// info,distcache::bus=debug).
    #[arg(
        value_name = "LEVEL",
        help_heading = "Operations",
        long,
        env = "DISTCACHE_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    /// Log line format on stderr.
    #[arg(value_name = "FORMAT", help_heading = "Operations", long, env = "DISTCACHE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve GET /metrics (Prometheus text) and GET /health on this address, e.g. 0.0.0.0:9464
    /// (default: no endpoint).
    #[arg(
        help_heading = "Operations",
        long,
        env = "DISTCACHE_METRICS_ADDR",
        value_name = "HOST:PORT"
    )]
    pub metrics_addr: Option<String>,
    /// Time this node's stages of every event's journey (produced → taken, the Redis apply,
    /// applied → done events acknowledged) into the trace metrics, and log each batch at debug
    /// level under target distcache::trace.
    #[arg(help_heading = "Operations", long, env = "DISTCACHE_TRACE")]
    pub trace: bool,
    /// Log metrics every N seconds (0: only at exit).
    #[arg(
        value_name = "S",
        help_heading = "Operations",
        long,
        env = "DISTCACHE_METRICS_INTERVAL_S",
        default_value_t = 0
    )]
    pub metrics_interval_s: u64,
    /// When the node stops (SIGINT/SIGTERM, or a failure after it started), write its final
    /// counters to this file as one JSON object: each counter and gauge by name as a number, each
    /// summary as an object of count, sum, max, p50 and p99 (README "State node CLI"). Written
    /// atomically (a temporary file renamed over it); a file of an earlier run is removed at the
    /// start. Default: none.
    #[arg(
        help_heading = "Operations",
        long,
        env = "DISTCACHE_FINAL_METRICS_FILE",
        value_name = "FILE"
    )]
    pub final_metrics_file: Option<PathBuf>,
    /// Extra librdkafka property KEY=VALUE (repeatable), e.g. security.protocol=SASL_SSL. Applied
    /// after --kafka-config-file. Command lines are visible to other users (ps): put secrets such as
    /// sasl.password in the file instead.
    // Split after parsing, not by a clap value parser: clap would echo a malformed value, which
    // may hold a secret.
    #[arg(
        help_heading = "Connections",
        long = "kafka-config",
        value_name = "KEY=VALUE"
    )]
    pub kafka_config: Vec<String>,
    /// A file of librdkafka properties, one KEY=VALUE a line (`#` starts a comment), e.g. the SASL
    /// or SSL settings with their secrets (keep it readable by the node's user only).
    #[arg(
        help_heading = "Connections",
        long,
        env = "DISTCACHE_KAFKA_CONFIG_FILE",
        value_name = "FILE"
    )]
    pub kafka_config_file: Option<PathBuf>,
    /// Static consumer-group member id (Kafka's group.instance.id), unique per state node and stable
    /// across restarts, e.g. the pod name: a restart with the same id takes the node's partitions
    /// back at once. Unset: dynamic membership. A static member does not leave the group on
    /// SIGTERM; its partitions wait for its restart or the session timeout.
    #[arg(
        value_name = "ID",
        help_heading = "Consumer group",
        long,
        env = "DISTCACHE_INSTANCE_ID"
    )]
    pub instance_id: Option<String>,
    /// Consumer-group session timeout in milliseconds: a dead node's partitions move after about this.
    #[arg(
        value_name = "MS",
        help_heading = "Consumer group",
        long,
        env = "DISTCACHE_SESSION_TIMEOUT_MS",
        default_value_t = 6000
    )]
    pub session_timeout_ms: u64,
    /// Consumer-group heartbeat interval in milliseconds; must be below the session timeout.
    #[arg(
        value_name = "MS",
        help_heading = "Consumer group",
        long,
        env = "DISTCACHE_HEARTBEAT_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub heartbeat_interval_ms: u64,
}

/// The `--config` file: every setting optional, unknown keys refused (a typo must not be ignored).
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    brokers: Option<String>,
    redis: Option<String>,
    redis_cluster: Option<bool>,
    group: Option<String>,
    partitions: Option<i32>,
    batch_size: Option<usize>,
    batch_wait_ms: Option<u64>,
    threads: Option<usize>,
    key_prefix: Option<String>,
    tombstone_ttl_s: Option<u64>,
    max_clock_skew_ms: Option<u64>,
    max_intake_bytes: Option<usize>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    metrics_addr: Option<String>,
    metrics_interval_s: Option<u64>,
    final_metrics_file: Option<PathBuf>,
    trace: Option<bool>,
    /// librdkafka properties, applied after `kafka_config_file`'s and before `--kafka-config`'s.
    kafka_config: Option<std::collections::BTreeMap<String, String>>,
    kafka_config_file: Option<PathBuf>,
    instance_id: Option<String>,
    session_timeout_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
}

/// The settings after every source was applied.
#[derive(Debug)]
pub struct Settings {
    pub args: Args,
    pub brokers: String,
    pub redis: String,
    /// librdkafka properties in the order they apply (later wins).
    pub kafka_config: Vec<(String, String)>,
}

/// Parses the command line and the environment (clap exits 2 on a usage error, 0 for --help).
pub fn parse() -> (Args, ArgMatches) {
    let matches = Args::command().get_matches();
    match Args::from_arg_matches(&matches) {
        Ok(args) => (args, matches),
        Err(e) => e.exit(),
    }
}

/// Applies the file under flags and environment, and checks what must be given. Errors are
/// configuration errors (exit 2); they never echo a value (it may be a secret).
pub fn resolve(mut args: Args, matches: &ArgMatches) -> Result<Settings, String> {
    let file = match &args.config {
        Some(path) => read_config_file(path)?,
        None => FileConfig::default(),
    };
    let given = |id: &str| {
        !matches!(
            matches.value_source(id),
            None | Some(ValueSource::DefaultValue)
        )
    };
    // A file value replaces a default, never a flag or an environment variable.
    macro_rules! under_flags {
        ($($field:ident),* $(,)?) => {$(
            if !given(stringify!($field)) {
                if let Some(v) = file.$field {
                    args.$field = v;
                }
            }
        )*};
    }
    under_flags!(
        redis_cluster,
        group,
        partitions,
        batch_size,
        batch_wait_ms,
        threads,
        key_prefix,
        tombstone_ttl_s,
        max_clock_skew_ms,
        max_intake_bytes,
        log_level,
        log_format,
        metrics_interval_s,
        trace,
        session_timeout_ms,
        heartbeat_interval_ms,
    );
    if !given("brokers") && file.brokers.is_some() {
        args.brokers = file.brokers;
    }
    if !given("redis") && file.redis.is_some() {
        args.redis = file.redis;
    }
    if !given("metrics_addr") && file.metrics_addr.is_some() {
        args.metrics_addr = file.metrics_addr;
    }
    if !given("final_metrics_file") && file.final_metrics_file.is_some() {
        args.final_metrics_file = file.final_metrics_file;
    }
    if !given("instance_id") && file.instance_id.is_some() {
        args.instance_id = file.instance_id;
    }
    if !given("kafka_config_file") && file.kafka_config_file.is_some() {
        args.kafka_config_file = file.kafka_config_file;
    }

    let missing = |what: &str, var: &str| {
        format!("{what} is required: give --{what}, {var} or `{what}` in the --config file")
    };
    let brokers = args
        .brokers
        .clone()
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| missing("brokers", "DISTCACHE_BROKERS"))?;
    let redis = args
        .redis
        .clone()
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| missing("redis", "DISTCACHE_REDIS"))?;

    if let Some(path) = &args.final_metrics_file {
        check_final_metrics_file(path)?;
    }

    let mut kafka_config = match args.kafka_config_file.as_deref() {
        Some(path) => read_kafka_config_file(path)?,
        None => Vec::new(),
    };
    kafka_config.extend(file.kafka_config.unwrap_or_default());
    kafka_config.extend(kafka_config_args(&args.kafka_config)?);
    Ok(Settings {
        args,
        brokers,
        redis,
        kafka_config,
    })
}

fn read_config_file(path: &Path) -> Result<FileConfig, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    // toml's messages can quote the offending value, which may be a secret written under the
    // wrong key: keep the first line (what and where) without anything in double quotes.
    toml::from_str(&text).map_err(|e| {
        let message = without_quoted(e.message().lines().next().unwrap_or("invalid TOML"));
        let line = e.span().map(|s| {
            text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        });
        match line {
            Some(line) => format!("--config {} line {line}: {message}", path.display()),
            None => format!("--config {}: {message}", path.display()),
        }
    })
}

/// `text` with every double-quoted part replaced by `"…"`.
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// A `--final-metrics-file` the node can write at its stop: a file name in a directory that
/// exists (whether it takes new files is checked when the node starts).
fn check_final_metrics_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    if path.is_dir() {
        return Err(format!("--final-metrics-file {shown}: is a directory"));
    }
    if path.file_name().is_none() {
        return Err(format!("--final-metrics-file {shown}: names no file"));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!(
            "--final-metrics-file {shown}: directory {} does not exist",
            dir.display()
        ));
    }
    Ok(())
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
fn read_kafka_config_file(path: &Path) -> Result<Vec<(String, String)>, String> {
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

/// What `--print-config` shows: the effective settings, secrets hidden.
#[derive(Serialize)]
struct Shown<'a> {
    brokers: &'a str,
    redis: String,
    redis_cluster: bool,
    group: &'a str,
    partitions: i32,
    batch_size: usize,
    batch_wait_ms: u64,
    threads: usize,
    key_prefix: &'a str,
    tombstone_ttl_s: u64,
    max_clock_skew_ms: u64,
    max_intake_bytes: usize,
    log_level: &'a str,
    log_format: LogFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_addr: Option<&'a str>,
    metrics_interval_s: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    final_metrics_file: Option<&'a Path>,
    trace: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<&'a str>,
    session_timeout_ms: u64,
    heartbeat_interval_ms: u64,
    /// Property names only: values may be secrets.
    kafka_config_keys: Vec<&'a str>,
}

impl Settings {
    /// The effective settings as TOML, with the Redis password and every librdkafka value left
    /// out.
    pub fn to_toml(&self) -> String {
        let a = &self.args;
        let shown = Shown {
            brokers: &self.brokers,
            redis: hide_password(&self.redis),
            redis_cluster: a.redis_cluster,
            group: &a.group,
            partitions: a.partitions,
            batch_size: a.batch_size,
            batch_wait_ms: a.batch_wait_ms,
            threads: a.threads,
            key_prefix: &a.key_prefix,
            tombstone_ttl_s: a.tombstone_ttl_s,
            max_clock_skew_ms: a.max_clock_skew_ms,
            max_intake_bytes: a.max_intake_bytes,
            log_level: &a.log_level,
            log_format: a.log_format,
            metrics_addr: a.metrics_addr.as_deref(),
            metrics_interval_s: a.metrics_interval_s,
            final_metrics_file: a.final_metrics_file.as_deref(),
            trace: a.trace,
            instance_id: a.instance_id.as_deref(),
            session_timeout_ms: a.session_timeout_ms,
            heartbeat_interval_ms: a.heartbeat_interval_ms,
            kafka_config_keys: self.kafka_config.iter().map(|(k, _)| k.as_str()).collect(),
        };
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot show the settings: {e}\n"))
    }
}

/// `scheme://user:***@host…` for every URL of a (comma-separated) list that carries a password.
fn hide_password(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &url[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_error_names_key_and_line_but_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "brokers = \"b:1\"\n\npartitions = \"s3cret-value\"\n",
        )
        .unwrap();
        let err = read_config_file(&path).unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        std::fs::write(&path, "batch_sise = 1\n").unwrap();
        let err = read_config_file(&path).unwrap_err();
        assert!(
            err.contains("batch_sise") && err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            hide_password("redis://u:secret@h:1/0,redis://h2:2/"),
            "redis://u:***@h:1/0,redis://h2:2/"
        );
        assert_eq!(hide_password("redis://:pw@h:1/"), "redis://:***@h:1/");
        assert_eq!(hide_password("redis://h:1/"), "redis://h:1/");
    }

    #[test]
    fn the_help_reads_and_the_command_is_consistent() {
        Args::command().debug_assert();
        let help = Args::command().render_long_help().to_string();
        for needle in [
            "--config",
            "--check",
            "--metrics-addr",
            "--final-metrics-file",
            "--log-format",
            "Exit codes",
        ] {
            assert!(help.contains(needle), "{needle} missing from --help");
        }
    }
}
