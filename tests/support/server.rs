//! One server process (redis-server, Apache Kafka or tansu) owned by a test: started on a loopback port in its own temporary
//! directory, with stdout and stderr appended to `<dir>/log`, probed until it serves, and killed on drop.
//! `kill` and `restart` take `&self`, so a chaos thread can restart a server that other threads are using.
//! `RedisServer`, `Broker` and `RedisCluster`'s nodes are each one of these with their protocol on top; the
//! first two reach its process handling (port, pid, kill, pause, resume, restart, log) through `Deref`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{free_port, tail_lines};

/// How long a server may take to answer its readiness probe, unless its starter says otherwise.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `restart` keeps retrying while the old port is still taken.
const RESTART_RETRY: Duration = Duration::from_secs(10);

type BuildCommand = Box<dyn Fn(u16, &Path) -> Command + Send + Sync>;
/// `(port, pid)` → is this process serving on this port?
type ReadyProbe = Box<dyn Fn(u16, u32) -> bool + Send + Sync>;

pub struct ServerProcess {
    name: &'static str,
    not_found: String,
    build: BuildCommand,
    ready: ReadyProbe,
    ready_timeout: Duration,
    port: u16,
    dir: TempDir,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    /// Set once a panic message carried the log, so `Drop` does not print it again.
    log_reported: AtomicBool,
}

enum StartError {
    /// The process exited during start-up: usually its port was taken.
    Exited(ExitStatus),
    TimedOut,
}

impl ServerProcess {
    /// Starts the server on a free port (a new one if a port turns out to be taken) and waits until it serves.
    /// `not_found` is the panic message when the program is missing.
    pub(crate) fn start(
        name: &'static str,
        not_found: String,
        build: BuildCommand,
        ready: ReadyProbe,
    ) -> ServerProcess {
        Self::start_within(name, not_found, build, ready, READY_TIMEOUT)
    }

    /// `start` for a server that may take up to `ready_timeout` to serve (a JVM on a busy machine).
    pub(crate) fn start_within(
        name: &'static str,
        not_found: String,
        build: BuildCommand,
        ready: ReadyProbe,
        ready_timeout: Duration,
    ) -> ServerProcess {
        let dir = tempfile::Builder::new()
            .prefix(&format!("distcache-{name}-"))
            .tempdir()
            .expect("create a temporary directory");
        let log = dir.path().join("log");
        let mut server = ServerProcess {
            name,
            not_found,
            build,
            ready,
            ready_timeout,
            port: 0,
            dir,
            log,
            child: Mutex::new(None),
            log_reported: AtomicBool::new(false),
        };
        for _attempt in 0..5 {
            server.port = free_port();
            match server.spawn_ready() {
                Ok(child) => {
                    *server.lock() = Some(child);
                    return server;
                }
                Err(StartError::Exited(_)) => continue,
                Err(StartError::TimedOut) => server.fail("did not become ready"),
            }
        }
        server.fail("exited during start-up on 5 different ports")
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(Child::id)
    }

    pub(crate) fn is_running(&self) -> bool {
        let mut guard = self.lock();
        match guard.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                *guard = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILL and reap; a no-op when not running.
    pub(crate) fn kill(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. "STOP", "CONT", "TERM") with kill(1). Returns whether it was delivered.
    pub(crate) fn signal(&self, signal: &str) -> bool {
        let Some(pid) = self.pid() else { return false };
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// SIGSTOP: the server keeps its port but answers nothing (a hung server) until `resume`.
    pub(crate) fn pause(&self) -> bool {
        self.signal("STOP")
    }

    /// SIGCONT after `pause`.
    pub(crate) fn resume(&self) -> bool {
        self.signal("CONT")
    }

    /// Kills the server if it runs, then starts it again on the same port and waits until it serves. Retries
    /// for a while if the port is still taken (e.g. by a client's connection that happened to get it).
    pub(crate) fn restart(&self) {
        self.kill();
        let deadline = Instant::now() + RESTART_RETRY;
        loop {
            match self.spawn_ready() {
                Ok(child) => {
                    *self.lock() = Some(child);
                    return;
                }
                Err(StartError::Exited(_)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(StartError::Exited(status)) => {
                    self.fail(&format!("could not restart on its port ({status})"))
                }
                Err(StartError::TimedOut) => self.fail("did not become ready after restart"),
            }
        }
    }

    /// The last `n` lines of the server's log (all its starts, separated by `--- start` lines).
    pub(crate) fn log_tail(&self, n: usize) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => tail_lines(&String::from_utf8_lossy(&bytes), n),
            Err(e) => format!("(no log at {}: {e})", self.log.display()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_log(&self) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).open(&self.log)
    }

    /// Spawns on `self.port` and waits until the probe passes for this very process.
    fn spawn_ready(&self) -> Result<Child, StartError> {
        let mut log = self.open_log().expect("open server log");
        let _ = writeln!(log, "--- start on port {}", self.port);
        let mut cmd = (self.build)(self.port, self.dir.path());
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!("{}", self.not_found),
            Err(e) => panic!("spawn {}: {e}", self.name),
        };
        let pid = child.id();
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StartError::Exited(status));
            }
            // A probe can succeed against someone else's listener on a taken port while our process is about to
            // fail to bind: the probes check identity where they can, and the process must still be alive after.
            if (self.ready)(self.port, pid) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(StartError::Exited(status));
                }
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::TimedOut);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn fail(&self, what: &str) -> ! {
        self.log_reported.store(true, Ordering::Relaxed);
        panic!(
            "{} on 127.0.0.1:{} {what}; log {}:\n{}",
            self.name,
            self.port,
            self.log.display(),
            self.log_tail(30)
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if thread::panicking() && !self.log_reported.load(Ordering::Relaxed) {
            eprintln!(
                "--- {} on 127.0.0.1:{} (test panicked), last log lines:\n{}",
                self.name,
                self.port,
                self.log_tail(20)
            );
        }
        self.kill();
    }
}
