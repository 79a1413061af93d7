//! The `distcache-state-node` binary as an operator runs it: `/metrics` and `/health` scraped over
//! HTTP against real Redis and a real broker, `--check` exit codes against reachable and
//! unreachable services, the precedence of flags, environment and config file, and JSON log
//! lines.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use support::final_metrics;
use support::{
    free_port, http_get, parse_exposition, state_node_command, unique_name, wait_until, Broker,
    ChildProcess, Deployment, RedisServer, PARTITIONS, PATIENCE,
};

/// Runs `cmd` to its end: exit status, stdout, stderr. Panics if it runs longer than `timeout`.
fn run(label: &str, cmd: Command, timeout: Duration) -> (ExitStatus, String, String) {
    let child = ChildProcess::spawn(label, cmd);
    child.close_stdin();
    let status = child.wait_timeout(timeout).unwrap_or_else(|| {
        panic!(
            "{label} still running after {timeout:?}:\n{}",
            child.stderr_tail(20)
        )
    });
    let mut stdout = String::new();
    while let Some(line) = child.read_line_timeout(Duration::from_millis(200)) {
        stdout.push_str(&line);
        stdout.push('\n');
    }
    // The stderr reader may lag the exit by a moment.
    std::thread::sleep(Duration::from_millis(100));
    (status, stdout, child.stderr())
}

/// Every sample of `text` belongs to a family with one HELP and one TYPE line, named `distcache_…`.
fn assert_well_formed(text: &str) {
    let mut typed = HashMap::new();
    let mut helped = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                typed.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice: {name}"
            );
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| typed.get(*f).is_some_and(|k| k == "summary"))
                .unwrap_or(name);
            assert!(typed.contains_key(family), "no TYPE for {name}:\n{text}");
            assert!(helped.iter().any(|h| h == family), "no HELP for {name}");
        }
    }
    for (name, kind) in &typed {
        assert!(name.starts_with("distcache_state_node_"), "{name}");
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}"
        );
    }
}

#[test]
fn metrics_and_health_are_served_and_follow_writes_and_redis() {
    let dep = Deployment::start().with_topics(PARTITIONS);
    let (redis, broker) = (&dep.redis, &dep.broker);
    let addr = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let final_metrics_file = dir.path().join("final.json");
    // A file of an earlier run must not pass for this one's.
    std::fs::write(&final_metrics_file, "{}").expect("write a stale file");
    // Started by hand rather than by `dep.state_node_process`: this test gives the file through
    // the environment variable, which the launcher's own `--final-metrics-file` would override.
    let mut cmd = state_node_command();
    cmd.args(["--brokers", &broker.bootstrap()])
        .args(["--redis", &redis.url()])
        .args(["--group", &unique_name("ops-group")])
        .args(["--metrics-addr", &addr])
        .arg("--trace")
        .env("DISTCACHE_FINAL_METRICS_FILE", &final_metrics_file);
    let node = ChildProcess::spawn("state-node", cmd);

    let mut health = None;
    assert!(
        wait_until(PATIENCE, || {
            health = http_get(&addr, "/health");
            health.as_ref().is_some_and(|(code, _)| *code == 200)
        }),
        "no healthy /health within {PATIENCE:?} (last: {health:?}):\n{}",
        node.stderr_tail(30)
    );
    let (_, body) = health.unwrap();
    assert!(
        body.contains("holds 8 partitions") && body.contains("redis answers PING"),
        "{body}"
    );

    let (code, page) = http_get(&addr, "/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    assert_well_formed(&page);
    let before = parse_exposition(&page);
    assert_eq!(before["distcache_state_node_assigned_partitions"], 8.0);
    assert_eq!(before["distcache_state_node_applied_total"], 0.0);
    assert_eq!(http_get(&addr, "/nothing").map(|r| r.0), Some(404));

    let ns = unique_name("ops");
    let cache = dep.cache::<String>(&ns);
    for i in 0..5 {
        cache
            .set_with_sync(&format!("k{i}"), format!("v{i}"), None, None)
            .expect("write");
    }
    let mut after = HashMap::new();
    assert!(
        wait_until(PATIENCE, || {
            after = support::scrape(&addr).unwrap_or_default();
            after.get("distcache_state_node_applied_total") >= Some(&5.0)
                && after.get("distcache_state_node_published_total") >= Some(&5.0)
        }),
        "counters did not move: {after:?}"
    );
    assert!(after["distcache_state_node_consumed_total"] >= 5.0);
    assert!(after["distcache_state_node_batches_total"] >= 1.0);
    assert!(after["distcache_state_node_apply_duration_seconds_count"] >= 1.0);
    // --trace: every applied write was timed from its production to being taken for applying.
    assert!(
        after["distcache_state_node_trace_consumed_seconds_count"] >= 5.0,
        "{after:?}"
    );
    let p99 = after["distcache_state_node_apply_duration_seconds{quantile=\"0.99\"}"];
    assert!(p99 > 0.0 && p99 < 60.0, "apply p99 in seconds: {p99}");

    redis.kill();
    let mut down = None;
    assert!(
        wait_until(PATIENCE, || {
            down = http_get(&addr, "/health");
            down.as_ref().is_some_and(|(code, _)| *code == 503)
        }),
        "/health still {down:?} with Redis killed"
    );
    let (_, reason) = down.unwrap();
    assert!(reason.contains("redis does not answer PING"), "{reason}");

    redis.restart();
    assert!(
        wait_until(PATIENCE, || http_get(&addr, "/health")
            .is_some_and(|(c, _)| c == 200)),
        "/health not 200 again after Redis came back: {:?}",
        http_get(&addr, "/health")
    );

    let last = support::scrape(&addr).expect("metrics answer");
    assert!(node.terminate());
    let status = node.wait_timeout(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        node.stderr_tail(20)
    );
    assert!(
        http_get(&addr, "/metrics").is_none(),
        "still serving after exit"
    );

    // SIGTERM wrote the final counters: the five writes, and at least what the last scrape showed.
    let m = final_metrics(&final_metrics_file)
        .unwrap_or_else(|| panic!("no final metrics file; stderr:\n{}", node.stderr_tail(20)));
    assert_eq!(
        (m["consumed"], m["applied"], m["published"], m["malformed"]),
        (5, 5, 5, 0),
        "{m:?}"
    );
    for (name, family) in [("batches", "batches_total"), ("commits", "commits_total")] {
        let scraped = last[&format!("distcache_state_node_{family}")];
        assert!(
            m[name] as f64 >= scraped,
            "{name}: scraped {scraped}, file {m:?}"
        );
    }
    assert_eq!(m["trace_consumed_us.count"], 5, "{m:?}");
    assert!(m["apply_latency_us.count"] >= 1, "{m:?}");
    // The stderr reader may lag the exit by a moment.
    assert!(
        wait_until(Duration::from_secs(5), || node
            .stderr()
            .contains("final metrics: applied=5 ")),
        "the readable final line:\n{}",
        node.stderr_tail(5)
    );
}

#[test]
fn check_exits_with_a_code_per_failure_class() {
    let redis = RedisServer::start();
    let broker = Broker::start();
    let closed = format!("127.0.0.1:{}", free_port());
    let check = |label: &str, brokers: &str, redis_url: &str, extra: &[&str]| {
        let mut cmd = state_node_command();
        cmd.arg("--check")
            .args(["--brokers", brokers])
            .args(["--redis", redis_url])
            .args(extra);
        run(label, cmd, Duration::from_secs(60))
    };

    let (status, out, err) = check("check-ok", &broker.bootstrap(), &redis.url(), &[]);
    assert_eq!(status.code(), Some(0), "{out}{err}");
    assert!(out.starts_with("ok:"), "{out}");

    let dead_redis = format!("redis://{closed}/");
    let (status, out, err) = check("check-redis", &broker.bootstrap(), &dead_redis, &[]);
    assert_eq!(status.code(), Some(3), "{out}{err}");
    assert!(out.starts_with("redis unreachable"), "{out}");

    let (status, out, err) = check("check-kafka", &closed, &redis.url(), &[]);
    assert_eq!(status.code(), Some(4), "{out}{err}");
    assert!(out.starts_with("kafka unreachable"), "{out}");

    let (status, out, err) = check(
        "check-config",
        &broker.bootstrap(),
        &redis.url(),
        &["--batch-size", "0"],
    );
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert!(out.starts_with("invalid configuration"), "{out}");

    // Starting (not --check) fails the same way, with the same codes.
    let start = |label: &str, brokers: &str, redis_url: &str| {
        let mut cmd = state_node_command();
        cmd.args(["--brokers", brokers])
            .args(["--redis", redis_url]);
        run(label, cmd, Duration::from_secs(60))
    };
    let (status, _, err) = start("start-redis", &broker.bootstrap(), &dead_redis);
    assert_eq!(status.code(), Some(3), "{err}");
    let (status, _, err) = start("start-kafka", &closed, &redis.url());
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(err.contains("state node failed to start"), "{err}");

    // A node that started and then stops on an error still writes its final metrics: here its
    // metrics address is taken (exit 2).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("temp dir");
    let final_metrics_file = dir.path().join("final.json");
    let mut cmd = state_node_command();
    cmd.args(["--brokers", &broker.bootstrap()])
        .args(["--redis", &redis.url()])
        .args(["--metrics-addr", &taken.local_addr().unwrap().to_string()])
        .arg("--final-metrics-file")
        .arg(&final_metrics_file);
    let (status, _, err) = run("start-metrics-addr-taken", cmd, Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{err}");
    let m = final_metrics(&final_metrics_file)
        .unwrap_or_else(|| panic!("no final metrics file after exit 2:\n{err}"));
    assert_eq!(m["applied"], 0, "{m:?}");

    // Usage and configuration errors before any connection: exit 2 too.
    let mut cmd = state_node_command();
    cmd.args(["--check", "--redis", &redis.url()]);
    let (status, _, err) = run("check-no-brokers", cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("brokers is required"), "{err}");
    let mut cmd = state_node_command();
    cmd.args(["--check", "--no-such-flag"]);
    assert_eq!(
        run("check-bad-flag", cmd, Duration::from_secs(30)).0.code(),
        Some(2)
    );
}

/// `--print-config`'s `key = value` lines.
fn effective(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config file");
    path.display().to_string()
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "node.toml",
        r#"
brokers = "file-broker:9092"
redis = "redis://user:file-secret@file-redis:6379/"
redis_cluster = true
partitions = 3
batch_size = 10
threads = 2
group = "from-file"
log_format = "json"
final_metrics_file = "/tmp/from-file.json"

[kafka_config]
"client.id" = "from-file"
"#,
    );
    let mut cmd = state_node_command();
    cmd.args(["--print-config", "--config", &file, "--partitions", "7"])
        .env("DISTCACHE_PARTITIONS", "5")
        .env("DISTCACHE_BATCH_SIZE", "20")
        .env("DISTCACHE_BROKERS", "env-broker:9092");
    let (status, out, err) = run("print-config", cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{err}");
    let got = effective(&out);
    assert_eq!(got["partitions"], "7", "flag over env and file:\n{out}");
    assert_eq!(got["batch_size"], "20", "env over file");
    assert_eq!(got["brokers"], "\"env-broker:9092\"", "env over file");
    assert_eq!(got["threads"], "2", "file over default");
    assert_eq!(got["group"], "\"from-file\"");
    assert_eq!(got["redis_cluster"], "true");
    assert_eq!(got["log_format"], "\"json\"");
    assert_eq!(got["final_metrics_file"], "\"/tmp/from-file.json\"");
    assert_eq!(got["batch_wait_ms"], "0", "default");
    assert_eq!(got["session_timeout_ms"], "6000", "default");
    assert!(got["kafka_config_keys"].contains("client.id"), "{out}");
    assert!(
        !out.contains("file-secret"),
        "the password is shown:\n{out}"
    );
    assert!(got["redis"].contains("file-redis"), "{out}");

    // Without the file, the environment and the defaults alone (existing deployments).
    let mut cmd = state_node_command();
    cmd.arg("--print-config")
        .env("DISTCACHE_BROKERS", "b:1")
        .env("DISTCACHE_REDIS", "redis://r:2/")
        .env("DISTCACHE_THREADS", "9");
    let (status, out, err) = run("print-config-env", cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{err}");
    let got = effective(&out);
    assert_eq!(got["threads"], "9");
    assert_eq!(got["partitions"], "8");
    assert_eq!(got["group"], "\"core-distributed-cache-set-del\"");

    // A typo in the file is an error naming the key, exit 2; so is a file that is not there.
    let typo = write(
        dir.path(),
        "typo.toml",
        "brokers = \"b:1\"\nredis = \"redis://r/\"\nbatch_sise = 4\n",
    );
    let mut cmd = state_node_command();
    cmd.args(["--print-config", "--config", &typo]);
    let (status, _, err) = run("config-typo", cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("batch_sise") && err.contains("line 3"),
        "{err}"
    );
    let mut cmd = state_node_command();
    cmd.args(["--print-config"])
        .env("DISTCACHE_CONFIG", dir.path().join("missing.toml"));
    assert_eq!(
        run("config-missing", cmd, Duration::from_secs(30)).0.code(),
        Some(2)
    );

    // A final metrics file the node could never write is refused before anything starts.
    let mut cmd = state_node_command();
    cmd.args(["--check", "--brokers", "b:1", "--redis", "redis://r/"])
        .arg("--final-metrics-file")
        .arg(dir.path().join("missing").join("final.json"));
    let (status, out, err) = run("final-metrics-dir-missing", cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("--final-metrics-file") && err.contains("does not exist"),
        "{err}"
    );
    let mut cmd = state_node_command();
    cmd.args(["--check", "--brokers", "b:1", "--redis", "redis://r/"])
        .env("DISTCACHE_FINAL_METRICS_FILE", dir.path());
    let (status, _, err) = run("final-metrics-is-dir", cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("is a directory"), "{err}");
}

#[test]
fn json_log_lines_are_one_object_each() {
    let closed = free_port();
    let mut cmd = state_node_command();
    cmd.args(["--check", "--log-format", "json", "--log-level", "debug"])
        .args(["--brokers", "127.0.0.1:1"])
        .args(["--redis", &format!("redis://127.0.0.1:{closed}/")]);
    let (status, _, err) = run("json-logs", cmd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["ts", "level", "target", "msg"] {
            assert!(v[field].is_string(), "{field} missing: {line}");
        }
        assert!(v["ts"].as_str().unwrap().ends_with('Z'), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("check failed")),
        "{err}"
    );
}
