//! A throwaway Kafka broker for one test, on free loopback ports: Apache Kafka (the default) or tansu, behind
//! one type so every test runs on either. `DISTCACHE_TEST_BROKER=tansu` switches `Broker::start()` to tansu
//! for a whole run; `start_kafka`/`start_tansu` pin one broker for a test that is about that broker.
//!
//! Apache Kafka 4 (KRaft, one combined broker+controller process, installed by `scripts/services.sh install`
//! from Maven Central): its log lives in the test's temporary directory, so `restart` keeps topics, records and
//! committed offsets. It starts from a KRaft log dir that was formatted once at install time (copying it saves a
//! JVM run per test) and takes several seconds to serve.
//!
//! tansu (see shared KAFKA.md): memory storage only, so a `restart` loses every topic, record and committed
//! offset; producing to a missing topic auto-creates it with 4 partitions, while subscribing to a missing one
//! fails, so create topics first (`create_topic`). A parked fetch is answered only after `fetch.wait.max.ms`,
//! so consumers in tests should set it low (5–10 ms).

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake};
use std::thread::{self, Thread};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::kafka_python::{self, RawRecord};
use super::server::ServerProcess;
use super::{free_port, tansu_bin, tools_dir};

/// How long one admin request (create, delete, list topics) may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// A JVM broker on a 2-core machine shared with other tests: seconds when idle, more under load.
const KAFKA_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The Apache Kafka heap: a test broker holds little data.
const KAFKA_HEAP: &str = "-Xmx512m";

/// Which broker a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// Apache Kafka 4.x (KRaft), what users run.
    Kafka,
    /// tansu, a light Kafka-protocol broker with known quirks (README "Brokers").
    Tansu,
}

impl BrokerKind {
    /// `DISTCACHE_TEST_BROKER`: `kafka` (or `apache`, or unset) → Apache Kafka, `tansu` → tansu.
    pub fn from_env() -> BrokerKind {
        match std::env::var("DISTCACHE_TEST_BROKER").as_deref() {
            Err(_) | Ok("") | Ok("kafka") | Ok("apache") => BrokerKind::Kafka,
            Ok("tansu") => BrokerKind::Tansu,
            Ok(other) => panic!("DISTCACHE_TEST_BROKER={other}: expected kafka or tansu"),
        }
    }

    /// Whether a restart keeps the log (topics, records, committed offsets).
    pub fn keeps_log_across_restarts(self) -> bool {
        self == BrokerKind::Kafka
    }
}

/// A broker process. Its process handling (`port`, `pid`, `is_running`, `kill`, `pause`, `resume`,
/// `restart`, `log_tail`) is [`ServerProcess`]'s, through `Deref`; after a `restart` Apache Kafka keeps its
/// log, tansu has lost every topic, record and committed offset (create the topics again): see
/// [`BrokerKind::keeps_log_across_restarts`].
pub struct Broker {
    server: ServerProcess,
    kind: BrokerKind,
}

impl Deref for Broker {
    type Target = ServerProcess;

    fn deref(&self) -> &ServerProcess {
        &self.server
    }
}

impl Broker {
    /// Starts the broker `DISTCACHE_TEST_BROKER` names (Apache Kafka by default).
    pub fn start() -> Broker {
        Broker::start_kind(BrokerKind::from_env())
    }

    /// Starts Apache Kafka whatever `DISTCACHE_TEST_BROKER` says.
    pub fn start_kafka() -> Broker {
        Broker::start_kind(BrokerKind::Kafka)
    }

    /// Starts tansu whatever `DISTCACHE_TEST_BROKER` says.
    pub fn start_tansu() -> Broker {
        Broker::start_kind(BrokerKind::Tansu)
    }

    /// Starts `kind` on a free loopback port and waits until it answers a metadata request. Panics with its log
    /// if it does not.
    pub fn start_kind(kind: BrokerKind) -> Broker {
        let server = match kind {
            BrokerKind::Kafka => start_kafka_process(),
            BrokerKind::Tansu => start_tansu_process(),
        };
        Broker { server, kind }
    }

    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// Creates `name` with `partitions` partitions; panics if the broker refuses (an existing topic is refused
    /// too).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        if let Err(e) = self.try_create_topic(name, partitions) {
            panic!(
                "create topic {name}: {e}\nbroker log:\n{}",
                self.log_tail(20)
            );
        }
    }

    /// Creates `name` with `partitions` partitions (replication factor 1); `Err` with the broker's answer when it
    /// refuses, e.g. because the topic exists.
    pub fn try_create_topic(&self, name: &str, partitions: u32) -> Result<(), String> {
        let partitions = i32::try_from(partitions).map_err(|e| e.to_string())?;
        let admin = self.admin()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(CLI_TIMEOUT));
        let results = block_on(admin.create_topics([&topic], &opts)).map_err(|e| e.to_string())?;
        for result in results {
            result.map_err(|(topic, code)| format!("{topic}: {code}"))?;
        }
        // Kafka answers once the controller took the topic; wait until this broker serves it, as tansu does.
        self.wait_for_topic(name, true)
    }

    /// Grows topic `name` to `total` partitions; `Err` with the broker's answer when it refuses.
    pub fn add_partitions(&self, name: &str, total: usize) -> Result<(), String> {
        let admin = self.admin()?;
        let opts = AdminOptions::new().operation_timeout(Some(CLI_TIMEOUT));
        let grow = NewPartitions::new(name, total);
        let results =
            block_on(admin.create_partitions([&grow], &opts)).map_err(|e| e.to_string())?;
        for result in results {
            result.map_err(|(topic, code)| format!("{topic}: {code}"))?;
        }
        Ok(())
    }

    /// Deletes the topic `name`.
    pub fn delete_topic(&self, name: &str) -> Result<(), String> {
        let admin = self.admin()?;
        let opts = AdminOptions::new().operation_timeout(Some(CLI_TIMEOUT));
        let results = block_on(admin.delete_topics(&[name], &opts)).map_err(|e| e.to_string())?;
        for result in results {
            result.map_err(|(topic, code)| format!("{topic}: {code}"))?;
        }
        self.wait_for_topic(name, false)
    }

    /// The names of the broker's topics (internal ones such as `__consumer_offsets` excluded).
    pub fn topics(&self) -> Vec<String> {
        self.try_topics()
            .unwrap_or_else(|e| panic!("list topics: {e}"))
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

    fn try_topics(&self) -> Result<Vec<String>, String> {
        metadata_topics(self.port()).map(|topics| {
            topics
                .into_iter()
                .filter(|t| !t.starts_with("__"))
                .collect()
        })
    }

    fn wait_for_topic(&self, name: &str, present: bool) -> Result<(), String> {
        let served = super::wait_until(CLI_TIMEOUT, || {
            self.try_topics()
                .map(|t| t.iter().any(|t| t == name) == present)
                .unwrap_or(false)
        });
        if served {
            Ok(())
        } else {
            Err(format!(
                "topic {name} still {} after {CLI_TIMEOUT:?}",
                if present { "missing" } else { "listed" }
            ))
        }
    }

    fn admin(&self) -> Result<AdminClient<DefaultClientContext>, String> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("socket.timeout.ms", "10000")
            .create()
            .map_err(|e| format!("admin client: {e}"))
    }
}

/// Apache Kafka's jars and formatted log dir: `$DISTCACHE_KAFKA_HOME`, else `<tools_dir>/kafka`. Panics, naming
/// the install command, when missing.
pub fn kafka_home() -> PathBuf {
    let home = std::env::var_os("DISTCACHE_KAFKA_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_dir().join("kafka"));
    assert!(
        home.join("template/data/meta.properties").is_file() && home.join("lib").is_dir(),
        "Apache Kafka not found in {} (DISTCACHE_KAFKA_HOME): run scripts/services.sh install",
        home.display()
    );
    home
}

fn start_kafka_process() -> ServerProcess {
    let home = kafka_home();
    // The controller listens on a second port, chosen with the first start and kept across restarts (the
    // broker port is kept by `ServerProcess`); a retry on a new broker port picks a new controller port too.
    let ports: Mutex<Option<(u16, u16)>> = Mutex::new(None);
    ServerProcess::start_within(
        "kafka",
        "java not found: run scripts/services.sh install (Apache Kafka needs Java 17+)".into(),
        Box::new(move |port: u16, dir: &Path| {
            let controller = {
                let mut ports = ports.lock().unwrap_or_else(|e| e.into_inner());
                match *ports {
                    Some((p, c)) if p == port => c,
                    _ => {
                        let c = free_port();
                        *ports = Some((port, c));
                        c
                    }
                }
            };
            let data = dir.join("data");
            if !data.join("meta.properties").is_file() {
                copy_dir(&home.join("template/data"), &data)
                    .unwrap_or_else(|e| panic!("copy the formatted KRaft log dir: {e}"));
            }
            let props = dir.join("server.properties");
            std::fs::write(&props, kafka_properties(&data, port, controller))
                .unwrap_or_else(|e| panic!("write {}: {e}", props.display()));
            let mut cmd = Command::new("java");
            cmd.arg(KAFKA_HEAP)
                .arg("-Xms128m")
                .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=info")
                .arg("-Dorg.slf4j.simpleLogger.showDateTime=true")
                .arg("-cp")
                .arg(format!("{}/lib/*", home.display()))
                .arg("kafka.Kafka")
                .arg(&props);
            cmd
        }),
        Box::new(|port, _pid| metadata_topics(port).is_ok()),
        KAFKA_READY_TIMEOUT,
    )
}

/// A single-node KRaft broker on loopback, set up as a test cluster needs: replication factor 1 for the internal
/// topics, no initial rebalance delay, session timeouts down to 1 s allowed.
fn kafka_properties(data: &Path, port: u16, controller: u16) -> String {
    format!(
        "process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.voters=1@127.0.0.1:{controller}\n\
         listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
         log.dirs={}\n\
         num.partitions=8\n\
         offsets.topic.replication.factor=1\n\
         offsets.topic.num.partitions=8\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         share.coordinator.state.topic.replication.factor=1\n\
         share.coordinator.state.topic.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n\
         group.min.session.timeout.ms=1000\n",
        data.display()
    )
}

fn start_tansu_process() -> ServerProcess {
    let tansu = tansu_bin();
    ServerProcess::start(
        "tansu",
        format!(
            "tansu not found at {}: run scripts/services.sh install",
            tansu.display()
        ),
        Box::new(move |port: u16, _dir: &Path| {
            let url = format!("tcp://127.0.0.1:{port}");
            let mut cmd = Command::new(&tansu);
            cmd.arg("broker")
                .args(["--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"])
                // tansu also reads its settings from the environment; flags win, and the OTLP exporter stays
                // off. A test's RUST_LOG is meant for our code, not the broker's.
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .env_remove("RUST_LOG");
            cmd
        }),
        Box::new(|port, _pid| metadata_topics(port).is_ok()),
    )
}

/// Every topic the broker on `port` lists in a metadata answer. Connects first (cheap), so a probe of a port
/// nobody serves fails at once.
fn metadata_topics(port: u16) -> Result<Vec<String>, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).map_err(|e| e.to_string())?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("log_level", "0")
        .create()
        .map_err(|e| e.to_string())?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name().to_string())
        .collect())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            // The formatted checkpoint is read-only; the broker must be able to replace its own copy.
            let mut perms = std::fs::metadata(&target)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms)?;
        }
    }
    Ok(())
}

/// Drives one rdkafka admin future on this thread: the admin client's own thread completes it and wakes us.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark()
        }
    }
    let waker = Arc::new(Unpark(thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}
