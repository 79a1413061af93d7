//! `examples/core_node` as a child process: a core node in a process of its own, driven by its stdin
//! protocol (one command a line, one reply line each; see the example's module docs).
//!
//! The example is built on first use with `cargo build --example core_node` (a no-op when it is fresh); set
//! `DISTCACHE_CORE_NODE_BIN` to use a prebuilt binary instead.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use distcache::Version;

use super::{run_with_timeout, ChildProcess};

/// `examples/core_node`, built on first use (fresh with the sources this test was built from).
pub fn core_node_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("DISTCACHE_CORE_NODE_BIN").filter(|b| !b.is_empty()) {
            return Ok(PathBuf::from(bin));
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--example", "core_node", "--message-format=json-render-diagnostics"])
            .args(["--manifest-path", manifest]);
        // The features this test was built with, so the build reuses its library.
        if cfg!(feature = "ffi") {
            cmd.args(["--features", "ffi"]);
        }
        let out = run_with_timeout(&mut cmd, Duration::from_secs(900)).map_err(|e| {
            format!(
                "cannot build examples/core_node ({e}); build it with `cargo build --example core_node` \
                 and/or set DISTCACHE_CORE_NODE_BIN to its path"
            )
        })?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "core_node")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .ok_or_else(|| {
                "`cargo build --example core_node` named no executable; set DISTCACHE_CORE_NODE_BIN".into()
            })
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A core node in a child process (`examples/core_node`), one command and one reply line at a time.
pub struct CoreNodeProcess {
    child: ChildProcess,
    label: String,
    /// How long a reply may take.
    wait: Duration,
}

impl CoreNodeProcess {
    /// Starts `examples/core_node` with `args` and waits (at most `wait`) until it prints `READY`. `Err` carries
    /// the reason and the tail of its stderr.
    pub fn start<S: AsRef<OsStr>>(
        label: &str,
        args: &[S],
        wait: Duration,
    ) -> Result<CoreNodeProcess, String> {
        let mut cmd = Command::new(core_node_bin());
        cmd.args(args);
        CoreNodeProcess::start_command(label, cmd, wait)
    }

    /// Like [`start`](Self::start) for any program that speaks the same stdin protocol (the C and
    /// Python core nodes of the C API).
    pub fn start_command(
        label: &str,
        cmd: Command,
        wait: Duration,
    ) -> Result<CoreNodeProcess, String> {
        let child = ChildProcess::spawn(label, cmd);
        if child.wait_for_line(wait, |l| l == "READY").is_none() {
            return Err(format!(
                "{label} did not print READY within {wait:?}; stderr:\n{}",
                child.stderr_tail(30)
            ));
        }
        Ok(CoreNodeProcess {
            child,
            label: label.to_string(),
            wait,
        })
    }

    /// The process, for signals and its stderr.
    pub fn child(&self) -> &ChildProcess {
        &self.child
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn request(&self, line: &str) -> String {
        self.send(line);
        self.reply(line)
    }

    /// Sends a write to a node started with `--reply-versions` and returns the version of its
    /// `OK <version>` reply (panics on any other reply).
    pub fn write_version(&self, line: &str) -> Version {
        super::acked_version(line, &self.request(line))
    }

    /// Sends one command without waiting for its reply (read it later with [`reply`](Self::reply)).
    pub fn send(&self, line: &str) {
        if let Err(e) = self.child.send_line(line) {
            panic!(
                "{}: cannot send {line:?}: {e}\n{}",
                self.label,
                self.child.stderr_tail(30)
            );
        }
    }

    /// The next reply line; panics when none arrives in time.
    pub fn reply(&self, line: &str) -> String {
        self.child.read_line_timeout(self.wait).unwrap_or_else(|| {
            let state = match self.child.wait_timeout(Duration::ZERO) {
                Some(status) => format!("exited: {status}"),
                None => "still running".into(),
            };
            panic!(
                "{}: no reply to {line:?} within {:?} ({state}); stderr:\n{}",
                self.label,
                self.wait,
                self.child.stderr_tail(30)
            )
        })
    }

    pub fn ok(&self, line: &str) {
        let reply = self.request(line);
        assert_eq!(reply, "OK", "{}: {line:?}", self.label);
    }

    /// Sends every line, then reads one reply per line (the node works through them in order).
    pub fn run_all(&self, lines: &[String]) -> Vec<String> {
        for line in lines {
            self.send(line);
        }
        lines.iter().map(|l| self.reply(l)).collect()
    }

    /// `get` (local only).
    pub fn get(&self, key: &str) -> Option<String> {
        self.value(&format!("get {key}"))
    }

    /// `get-sync` (local, then Redis).
    pub fn get_sync(&self, key: &str) -> Option<String> {
        self.value(&format!("get-sync {key}"))
    }

    fn value(&self, line: &str) -> Option<String> {
        let reply = self.request(line);
        if reply == "NIL" {
            return None;
        }
        match reply.strip_prefix("VALUE ") {
            Some(v) => Some(v.to_string()),
            None => panic!("{}: {line:?} answered {reply:?}", self.label),
        }
    }

    /// The `metrics` line as numbers by name.
    pub fn metrics(&self) -> HashMap<String, u64> {
        let reply = self.request("metrics");
        reply
            .split_whitespace()
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }
}
