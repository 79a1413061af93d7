//! A throwaway tansu broker (Kafka wire protocol) for one test, on a free loopback port with in-memory storage.
//!
//! tansu facts that shape the tests (see shared KAFKA.md): memory storage only, so a `restart` loses every
//! topic, record and committed offset; producing to a missing topic auto-creates it with 4 partitions, while
//! subscribing to a missing one fails, so create topics first (`create_topic`). A parked fetch is answered only
//! after `fetch.wait.max.ms`, so consumers in tests should set it low (5–10 ms).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::kafka_python::{self, RawRecord};
use super::server::ServerProcess;
use super::{run_with_timeout, tansu_bin};

/// How long one `tansu topic …` command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Broker {
    server: ServerProcess,
    tansu: PathBuf,
}

impl Broker {
    /// Starts tansu (`$TANSU_BIN`, else the one scripts/services.sh installed) on a free loopback port and waits
    /// until it accepts connections and answers a metadata request. Panics with its log if it does not.
    pub fn start() -> Broker {
        let tansu = tansu_bin();
        let bin = tansu.clone();
        let probe_bin = tansu.clone();
        let server = ServerProcess::start(
            "tansu",
            format!(
                "tansu not found at {}: run scripts/services.sh install",
                tansu.display()
            ),
            Box::new(move |port: u16, _dir: &Path| {
                let url = format!("tcp://127.0.0.1:{port}");
                let mut cmd = Command::new(&bin);
                cmd.arg("broker")
                    .args(["--listener-url", &url, "--advertised-listener-url", &url])
                    .args(["--storage-engine", "memory://tansu/"])
                    // tansu also reads its settings from the environment; flags win, and the OTLP exporter
                    // stays off. A test's RUST_LOG is meant for our code, not the broker's.
                    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .env_remove("RUST_LOG");
                cmd
            }),
            Box::new(move |port, _pid| {
                // Connect first (cheap), then one real request so clients never race the start-up.
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    && run_with_timeout(
                        Command::new(&probe_bin)
                            .args(["topic", "list", "--broker"])
                            .arg(format!("tcp://127.0.0.1:{port}")),
                        Duration::from_secs(2),
                    )
                    .is_ok()
            }),
        );
        Broker { server, tansu }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// `tcp://127.0.0.1:PORT`, the form tansu's own CLI wants.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port())
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// SIGKILL: every connection drops.
    pub fn kill(&self) {
        self.server.kill()
    }

    /// SIGSTOP: the port stays open but nothing is answered (a hung broker) until `resume`.
    pub fn pause(&self) -> bool {
        self.server.signal("STOP")
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) -> bool {
        self.server.signal("CONT")
    }

    /// Kills it if running and starts it again on the same port. Memory storage: topics, records and committed
    /// offsets are all gone afterwards; create the topics again.
    pub fn restart(&self) {
        self.server.restart()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        self.server.log_tail(n)
    }

    /// Creates `name` with `partitions` partitions; panics if tansu refuses (an existing topic is refused too).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        if let Err(e) = self.try_create_topic(name, partitions) {
            panic!(
                "create topic {name}: {e}\nbroker log:\n{}",
                self.log_tail(20)
            );
        }
    }

    /// `tansu topic create --broker tcp://… --partitions N NAME`; `Err` (with tansu's message) when it fails,
    /// e.g. "Topic with this name already exists.".
    pub fn try_create_topic(&self, name: &str, partitions: u32) -> Result<(), String> {
        self.tansu_cli(&[
            "topic",
            "create",
            "--partitions",
            &partitions.to_string(),
            name,
        ])
        .map(drop)
    }

    /// `tansu topic delete --broker tcp://… NAME`.
    pub fn delete_topic(&self, name: &str) -> Result<(), String> {
        self.tansu_cli(&["topic", "delete", name]).map(drop)
    }

    /// The names of the broker's topics (`tansu topic list` prints its metadata as JSON).
    pub fn topics(&self) -> Vec<String> {
        let out = self
            .tansu_cli(&["topic", "list"])
            .unwrap_or_else(|e| panic!("list topics: {e}"));
        let json: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("tansu topic list printed no JSON ({e}): {out}"));
        json.as_array()
            .map(|topics| {
                topics
                    .iter()
                    .filter_map(|t| t.get("name")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Produces `records` to `topic` byte for byte through kafka-python, a client independent of ours, and
    /// waits for every acknowledgement: for malformed, foreign or hand-made messages. Panics on failure.
    pub fn produce_raw(&self, topic: &str, records: &[RawRecord]) {
        kafka_python::produce(&self.bootstrap(), topic, records)
    }

    /// Reads `topic` from the beginning of every partition through kafka-python (no group, nothing committed)
    /// until `count` records arrived or `timeout` passed, and returns what it got: to check from outside what
    /// our producers wrote. Records come partition by partition in offset order.
    pub fn consume_raw(&self, topic: &str, count: usize, timeout: Duration) -> Vec<RawRecord> {
        kafka_python::consume(&self.bootstrap(), topic, count, timeout)
    }

    /// Runs the tansu CLI against this broker (`--broker` is appended) and returns its stdout.
    pub fn tansu_cli(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.tansu);
        cmd.args(args).arg("--broker").arg(self.url());
        let out = run_with_timeout(&mut cmd, CLI_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
