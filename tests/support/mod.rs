//! Shared test machinery for every integration test: real `redis-server` and broker (Apache Kafka, or
//! tansu) processes on free loopback ports, each in its own temporary directory; one [`Deployment`] that starts
//! state and core nodes (in process or as child processes) on them and reads Redis back by its layout;
//! small helpers (free ports, polling, unique names, child processes with line-based stdin/stdout, a
//! kafka-python runner); and the scenario helpers some test families share (`writers`, `convergence`,
//! `faults`).
//!
//! Use it with `mod support;` at the top of a test file. Install the programs once with
//! `scripts/services.sh install`; nothing here touches the machine's own Redis on 6379.
//!
//! Every spawned process is killed when its handle drops, also when a test panics (then the tail of its log
//! is printed, which the test harness shows with the failure). A test binary killed from outside cannot run
//! `Drop`: scripts/test.sh kills what is left, found by the `DISTCACHE_TEST_RUN` marker children inherit.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code, unused_imports)]

mod broker;
mod cluster;
mod convergence;
mod core_node;
mod deployment;
mod events;
mod faults;
mod kafka_python;
mod proc_stat;
mod process;
mod redis;
mod redis_probe;
mod scrape;
mod server;
mod writers;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use broker::{Broker, BrokerKind};
pub use cluster::RedisCluster;
pub use convergence::{
    acked_version, check_winner, merge_writes, state_node_settled, two_core_nodes, warm_up,
    KeyWrites, NODE_A, NODE_B,
};
pub use core_node::{core_node_bin, CoreNodeProcess};
pub use deployment::{
    split_between, state_node_command, Deployment, NodeProcess, BATCHED_NODE_ARGS,
};
pub use events::{delete_event, produce_events, produce_records, set_event, DoneWatcher, Outgoing};
pub use faults::{final_metrics, terminate, terminate_signalled, written_final_metrics};
pub use kafka_python::RawRecord;
pub use proc_stat::{clock_ticks, process_ticks, stat_ticks};
pub use process::ChildProcess;
pub use redis::{redis_ping, RedisServer};
pub use redis_probe::{cluster_entries, entry_field, entry_json, entry_key, RedisProbe, Stored};
pub use scrape::{assigned_partitions, http_get, parse_exposition, scrape};
pub use writers::{expected, plans, WriteRecord, Writers};

/// The cap of the pipeline tests' waits: generous for a loaded 2-core machine; waits end as soon
/// as their condition holds.
pub const WAIT: Duration = Duration::from_secs(60);
/// The longest wait of the state-node fault tests (a group join takes ~3 s with tansu).
pub const PATIENCE: Duration = Duration::from_secs(40);
/// Partitions of both topics in the state-node fault tests.
pub const PARTITIONS: u32 = 8;

/// Logs of the library at `warn` and above unless `RUST_LOG` says otherwise, captured per test.
pub fn init_logs() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .is_test(true)
        .try_init();
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; another process could still take it
/// before the caller binds, which the server starters handle by retrying on a new port).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Polls `f` every 10 ms until it returns true (→ true) or `timeout` passes (→ false). `f` is called at least
/// once, and once more at the deadline.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10).min(deadline - now));
    }
}

/// Milliseconds since the Unix epoch by this machine's clock (0 before 1970): the physical part of a
/// version a test makes by hand, some way ahead of or behind what a cache would stamp now.
pub fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Polls `check` until it returns `Ok` (→ its value) or [`WAIT`] passes (→ panic with the last reason).
pub fn eventually<T>(
    what: &str,
    diagnostics: impl Fn() -> String,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let mut last = Err("never checked".to_string());
    let started = Instant::now();
    wait_until(WAIT, || {
        last = check();
        if last.is_err() {
            thread::sleep(Duration::from_millis(20));
        }
        last.is_ok()
    });
    match last {
        Ok(v) => {
            eprintln!("{what}: reached after {:?}", started.elapsed());
            v
        }
        Err(why) => panic!(
            "{what}: not reached within {WAIT:?}: {why}\n{}",
            diagnostics()
        ),
    }
}

/// A name no other test (in this or a concurrent test process) uses: `prefix-pid-counter-nanos`. Valid as a
/// Kafka topic or group name and as a cache namespace when `prefix` is.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// Where scripts/services.sh caches tools: `$DISTCACHE_TOOLS`, else `$HOME/.cache/distcache`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("DISTCACHE_TOOLS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/distcache")
        }
    }
}

/// The tansu binary: `$TANSU_BIN`, else `<tools_dir>/bin/tansu`. Panics, naming the install command, when
/// neither exists.
pub fn tansu_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TANSU_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "TANSU_BIN={} does not exist: run scripts/services.sh install",
            bin.display()
        );
        return bin;
    }
    let bin = tools_dir().join("bin/tansu");
    assert!(
        bin.is_file(),
        "tansu not found (TANSU_BIN unset, no {}): run scripts/services.sh install",
        bin.display()
    );
    bin
}

/// A `python3` command that can `import kafka` (kafka-python), also when scripts/services.sh had to install
/// it into `<tools_dir>/python` rather than the interpreter's own site-packages.
pub fn python3() -> Command {
    let mut cmd = Command::new("python3");
    let extra = tools_dir().join("python");
    if extra.is_dir() {
        let mut paths = vec![extra];
        if let Some(old) = std::env::var_os("PYTHONPATH") {
            paths.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("PYTHONPATH", joined);
        }
    }
    cmd
}

/// The last `n` lines of `text`.
pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` to completion with stdout and stderr captured, killing it after `timeout`. `Err` carries a
/// readable reason (spawn failure, time-out, or non-zero exit with its stderr).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    run_with_input(cmd, &[], timeout)
}

/// `run_with_timeout` that also writes `input` to the command's stdin, then closes it.
pub fn run_with_input(
    cmd: &mut Command,
    input: &[u8],
    timeout: Duration,
) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let stdin = if input.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    // Feed and drain the pipes on threads so neither side can block on a full pipe while we wait; a child
    // that exits without reading its input only ends the feeding early (its exit status tells).
    if let Some(mut pipe) = child.stdin.take() {
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{what} did not finish within {timeout:?}"));
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
