//! A program under test (a state node, a core-node example, a Python client) driven line by line: commands go
//! to its stdin, its stdout is read line by line with a time-out, its stderr is kept for failure messages.
//! Killed (SIGKILL) on drop; `terminate` sends SIGTERM for a graceful shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{tail_lines, wait_until};

/// Stderr kept per process; older output is dropped past this.
const STDERR_KEEP: usize = 256 * 1024;

pub struct ChildProcess {
    name: String,
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl ChildProcess {
    /// Spawns `cmd` with piped stdin, stdout and stderr (whatever `cmd` set for them is replaced). `name` labels
    /// messages. Panics if it cannot be spawned.
    pub fn spawn(name: &str, mut cmd: Command) -> ChildProcess {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        // Unbounded on purpose: the reader must never block the child; a test reads what it asked for.
        let (tx, rx) = crossbeam_channel::unbounded();
        thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn stdout reader");

        let kept = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&kept);
        thread::Builder::new()
            .name(format!("{name}-stderr"))
            .spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = reader.read(&mut buf) {
                    let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if text.len() > 2 * STDERR_KEEP {
                        let mut cut = text.len() - STDERR_KEEP;
                        while !text.is_char_boundary(cut) {
                            cut += 1;
                        }
                        text.drain(..cut);
                    }
                }
            })
            .expect("spawn stderr reader");

        ChildProcess {
            name: name.to_string(),
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            stdout: rx,
            stderr: kept,
        }
    }

    pub fn pid(&self) -> u32 {
        self.lock().id()
    }

    /// Writes `line` and a newline to its stdin and flushes.
    pub fn send_line(&self, line: &str) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stdin) = stdin.as_mut() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "stdin was closed",
            ));
        };
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()
    }

    /// Closes its stdin (EOF for the child).
    pub fn close_stdin(&self) {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The next stdout line (without the newline), or `None` after `timeout` or at end of output.
    pub fn read_line_timeout(&self, timeout: Duration) -> Option<String> {
        // Err is a time-out or the end of its output (the reader thread finished).
        self.stdout.recv_timeout(timeout).ok()
    }

    /// Reads stdout lines until one satisfies `pred` (returned) or `timeout` passes (`None`); the lines before
    /// it are discarded.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.read_line_timeout(left)?;
            if pred(&line) {
                return Some(line);
            }
        }
    }

    /// Everything it wrote to stderr so far (the last 256 KiB at least).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last `n` lines of its stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        tail_lines(&self.stderr(), n)
    }

    pub fn is_running(&self) -> bool {
        matches!(self.lock().try_wait(), Ok(None))
    }

    /// Sends SIGTERM (through kill(1)); returns whether it was delivered.
    pub fn terminate(&self) -> bool {
        self.signal("TERM")
    }

    /// Sends `signal` (e.g. "TERM", "INT", "STOP", "CONT") through kill(1).
    pub fn signal(&self, signal: &str) -> bool {
        if !self.is_running() {
            return false;
        }
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// SIGKILL and reap.
    pub fn kill(&self) {
        let mut child = self.lock();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Its exit status once it has exited within `timeout`, else `None` (it keeps running).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.lock().try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    fn lock(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- {} (test panicked), last stderr lines:\n{}",
                self.name,
                self.stderr_tail(20)
            );
        }
        self.kill();
    }
}
