//! A runnable core node caching `String` values, driven by stdin (one command a line, one reply
//! line each). Used by `scripts/demo.sh` and the integration tests.
//!
//! ```text
//! cargo run --example core_node -- --brokers 127.0.0.1:9092 --redis redis://127.0.0.1:6379/
//! ```
//! Commands: `set K V [TTL_MS]`, `set-sync K V [TTL_MS]`, `get K`, `get-sync K`, `del K`,
//! `del-sync K`, `set-sync-wait K V`, `get-or-load K V` (`get_or_load` whose loader returns `V`),
//! `wait-for K VERSION TIMEOUT_MS`, `metrics`, `metrics table`, `quit`.
//! Options beyond the connection: `--trace` (the builder's `trace(true)`), `--absent-ttl-ms MS`
//! (negative caching, the builder's `absent_ttl`), `--reply-versions`, `--node-id`, `--codec
//! json|binary|raw` (`raw`: values stored as their UTF-8 bytes, as the C API stores them).
//! Replies: `OK`, `OK applied` / `OK superseded` (for set-sync-wait), `VALUE <v>`, `NIL`,
//! `ERR <message>`; `metrics` prints one line of `name=value` pairs. Prints `READY` once its
//! listener is subscribed.
//!
//! `metrics table` replies `TABLE <n>` and then `n` lines: the same metrics as a readable table
//! (`DistributedMetrics`' `Display`); the one-line `metrics` reply stays for machines.
//!
//! `wait-for K VERSION TIMEOUT_MS` calls `wait_for`: it replies `OK` once this node's view of `K` is
//! at least `VERSION` (the 32 hex digits `--reply-versions` prints), or `ERR timeout after …` when
//! `TIMEOUT_MS` passed first; `ERR bad VERSION …` / `ERR bad TIMEOUT_MS …` for malformed arguments.
//!
//! With `--reply-versions`, `set`, `set-sync`, `del` and `del-sync` reply `OK <version>` instead
//! of `OK`: the write's version as the 32 hex digits of the wire format (hlc, then node id), so
//! a driver can tell which of several writers' writes must win.

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::Parser;
use distcache::{Cache, Codec, DistributedCache, Version, WriteOutcome};

#[derive(Parser, Debug)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Redis URL.
    #[arg(long)]
    redis: String,
    /// Cache namespace.
    #[arg(long, default_value = "demo")]
    namespace: String,
    /// Redis key prefix (must match the state node's).
    #[arg(long, default_value = distcache::DEFAULT_KEY_PREFIX)]
    prefix: String,
    /// Node id stamped into versions (default: random).
    #[arg(long)]
    node_id: Option<u64>,
    /// Reply `OK <version>` to set, set-sync, del and del-sync.
    #[arg(long)]
    reply_versions: bool,
    /// Time each event's journey into the metrics and log it at debug level.
    #[arg(long)]
    trace: bool,
    /// Negative caching: remember a missing key for this long (0: off).
    #[arg(long, default_value_t = 0)]
    absent_ttl_ms: u64,
    /// Value codec: `json` (the default), `binary` or `raw` (the value's UTF-8 bytes, as the C ABI
    /// stores them).
    #[arg(long, default_value = "json", value_parser = parse_codec)]
    codec: Codec,
}

fn parse_codec(name: &str) -> Result<Codec, String> {
    match name {
        "json" => Ok(Codec::Json),
        "binary" => Ok(Codec::Binary),
        "raw" => Ok(Codec::Raw),
        other => Err(format!("unknown codec {other:?} (json, binary or raw)")),
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stderr)
        .init();
    let args = Args::parse();
    let mut builder = DistributedCache::<String>::builder()
        .kafka_brokers(&args.brokers)
        .redis_url(&args.redis)
        .namespace(&args.namespace)
        .key_prefix(&args.prefix)
        .codec(args.codec)
        .trace(args.trace)
        .absent_ttl(Duration::from_millis(args.absent_ttl_ms));
    if let Some(id) = args.node_id {
        builder = builder.node_id(id);
    }
    let cache = match builder.build() {
        Ok(cache) => cache,
        Err(e) => {
            eprintln!("core node failed to start: {e}");
            std::process::exit(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "READY");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"quit") {
            let _ = writeln!(out, "OK");
            break;
        }
        let reply = run(&cache, &words, args.reply_versions);
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
    }
}

fn ttl(word: Option<&&str>) -> Result<Option<Duration>, String> {
    word.map(|w| {
        w.parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("bad TTL_MS {w:?}"))
    })
    .transpose()
}

fn value_reply(v: distcache::Result<Option<String>>) -> String {
    match v {
        Ok(Some(v)) => format!("VALUE {v}"),
        Ok(None) => "NIL".into(),
        Err(e) => format!("ERR {e}"),
    }
}

fn ok_reply<T>(r: distcache::Result<T>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(e) => format!("ERR {e}"),
    }
}

/// `OK <version>` with `--reply-versions`, else `OK`.
fn write_reply(r: distcache::Result<Version>, reply_versions: bool) -> String {
    match r {
        Ok(v) if reply_versions => format!("OK {}", v.to_hex()),
        other => ok_reply(other),
    }
}

fn run(cache: &DistributedCache<String>, words: &[&str], reply_versions: bool) -> String {
    let write = |r| write_reply(r, reply_versions);
    let parsed = match words {
        ["set", k, v, rest @ ..] if rest.len() <= 1 => {
            ttl(rest.first()).map(|t| write(cache.set_versioned(k, v.to_string(), t)))
        }
        ["set-sync", k, v, rest @ ..] if rest.len() <= 1 => {
            ttl(rest.first()).map(|t| write(cache.set_with_sync(k, v.to_string(), t, t)))
        }
        ["set-sync-wait", k, v] => Ok(
            match cache.set_with_sync_and_wait(k, v.to_string(), None, None) {
                Ok(WriteOutcome::Applied) => "OK applied".into(),
                Ok(WriteOutcome::Superseded) => "OK superseded".into(),
                Err(e) => format!("ERR {e}"),
            },
        ),
        ["get", k] => Ok(value_reply(cache.get(k))),
        ["get-sync", k] => Ok(value_reply(cache.get_with_sync(k, None))),
        ["get-or-load", k, v] => Ok(value_reply(
            cache.get_or_load(k, None, None, |_| Ok(Some(v.to_string()))),
        )),
        ["del", k] => Ok(write(cache.delete_versioned(k))),
        ["del-sync", k] => Ok(write(cache.delete_with_sync(k))),
        ["wait-for", k, version, timeout_ms] => wait_for(cache, k, version, timeout_ms),
        ["metrics"] => Ok(metrics_line(cache)),
        ["metrics", "table"] => {
            let table = cache.metrics().to_string();
            let table = table.trim_end();
            Ok(format!("TABLE {}\n{table}", table.lines().count()))
        }
        [] => Err("empty command".into()),
        _ => Err(format!("unknown command {:?}", words.join(" "))),
    };
    parsed.unwrap_or_else(|e| format!("ERR {e}"))
}

fn wait_for(
    cache: &DistributedCache<String>,
    key: &str,
    version: &str,
    timeout_ms: &str,
) -> Result<String, String> {
    let version = Version::from_hex(version).ok_or_else(|| format!("bad VERSION {version:?}"))?;
    let timeout = timeout_ms
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("bad TIMEOUT_MS {timeout_ms:?}"))?;
    Ok(match cache.wait_for(key, &version, timeout) {
        Ok(()) => "OK".into(),
        Err(distcache::Error::Timeout { what, after }) => {
            format!("ERR timeout after {after:?}: {what}")
        }
        Err(e) => format!("ERR {e}"),
    })
}

fn metrics_line(cache: &DistributedCache<String>) -> String {
    let m = cache.metrics();
    let l = m.local;
    format!(
        "hits={} misses={} entries={} inserts={} updates={} evictions={} expirations={} invalidations={} \
         writes={} write_failures={} events={} events_applied={} events_ignored={} malformed={} \
         undecodable={} resets={} redis_reads={} propagation_p50_us={} propagation_p99_us={} \
         future_versions={} duplicate_node_ids={} local_newer_reads={} \
         holes_reread={} loads={} negative_hits={}",
        l.hits, l.misses, l.entries, l.inserts, l.updates, l.evictions, l.expirations, l.invalidations,
        m.writes, m.write_failures, m.events, m.events_applied, m.events_ignored, m.malformed,
        m.undecodable, m.resets, m.redis_reads, m.propagation_us.p50, m.propagation_us.p99,
        m.future_versions, m.duplicate_node_ids, m.local_newer_reads, m.holes_reread, m.loads, m.negative_hits
    )
}
