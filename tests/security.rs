//! Security basics, against real servers: Redis AUTH (password and ACL user) reaches the
//! connections of both builders, `rediss://` is accepted with the `tls` feature and refused with a
//! clear message without it, librdkafka security settings pass through the builders and the
//! `distcache-state-node` binary, and no secret shows in `Debug` output, error messages or logs.

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use distcache::{
    DistributedCache, Error, KafkaConfig, RedisCache, RedisConfig, StateNode, WriteOutcome,
};
use support::{free_port, state_node_command, unique_name, Broker, RedisServer};

/// Generous on a loaded machine, far below "hangs".
const QUICK: Duration = Duration::from_secs(20);

const REDIS_SECRET: &str = "redis-s3cret";
const ACL_SECRET: &str = "acl-s3cret";
const KAFKA_SECRET: &str = "kafka-s3cret";
const SECRETS: [&str; 3] = [REDIS_SECRET, ACL_SECRET, KAFKA_SECRET];

// ------------------------------------------------------------------------------------------------
// Every log line of the test process, to check that no secret is logged (librdkafka's own logs
// reach the `log` facade through rdkafka too).
// ------------------------------------------------------------------------------------------------

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        LOGS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

fn capture_logs() {
    if log::set_logger(&CAPTURE).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// Fails naming the secret and where it showed.
fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret:?}: {text}");
    }
}

fn assert_logs_hold_no_secret() {
    let logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(!logs.is_empty(), "the logger captured nothing");
    for line in logs.iter() {
        assert_no_secret("a log line", line);
    }
}

/// The error's `Display` and `Debug` (the source chain included) hold no secret.
fn assert_error_is_clean(what: &str, err: &Error) {
    assert_no_secret(what, &err.to_string());
    assert_no_secret(what, &format!("{err:?}"));
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        assert_no_secret(what, &s.to_string());
        source = s.source();
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

/// A running redis-server that now requires `REDIS_SECRET` for the default user and knows an ACL
/// user `app` with `ACL_SECRET`.
fn protect(redis: &RedisServer) {
    let mut conn = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("redis connection");
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(format!(">{ACL_SECRET}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query::<()>(&mut conn)
        .expect("ACL SETUSER");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(REDIS_SECRET)
        .query::<()>(&mut conn)
        .expect("CONFIG SET requirepass");
}

fn redis_url(redis: &RedisServer, credentials: &str) -> String {
    format!("redis://{credentials}@127.0.0.1:{}/", redis.port())
}

// ------------------------------------------------------------------------------------------------
// Redis AUTH and ACL users
// ------------------------------------------------------------------------------------------------

/// The password and an ACL user in the URL authenticate every connection of both builders (the
/// state node's Redis workers too); wrong or missing credentials are `Error::Config` at build time,
/// at once, naming authentication and not the password.
#[test]
fn redis_password_and_acl_user_reach_both_builders() {
    capture_logs();
    let redis = RedisServer::start();
    let broker = Broker::start();
    protect(&redis);

    let node = StateNode::builder()
        .kafka_brokers(broker.bootstrap())
        .redis_url(redis_url(&redis, &format!("app:{ACL_SECRET}")))
        .group(unique_name("group"))
        .start()
        .expect("state node with an ACL user");
    let cache: DistributedCache<String> = DistributedCache::builder()
        .kafka_brokers(broker.bootstrap())
        .redis_url(redis_url(&redis, &format!(":{REDIS_SECRET}")))
        .namespace(unique_name("auth"))
        .wait_timeout(Duration::from_secs(30))
        .build()
        .expect("core node with the default user's password");
    assert_eq!(
        cache
            .set_with_sync_and_wait("k", "v".into(), None, None)
            .unwrap(),
        WriteOutcome::Applied,
        "the state node's workers authenticated"
    );
    cache.local().clear().unwrap();
    assert_eq!(
        cache.get_with_sync("k", None).unwrap().as_deref(),
        Some("v")
    );
    assert_no_secret("DistributedCache Debug", &format!("{cache:?}"));
    assert_no_secret("StateNode Debug", &format!("{node:?}"));
    node.shutdown();

    for credentials in [
        ":wrong-pass".to_string(),
        "default:wrong-pass".to_string(),
        "app:wrong-pass".to_string(),
        format!("nobody:{REDIS_SECRET}"),
    ] {
        let url = redis_url(&redis, &credentials);
        let (built, took) = timed(|| {
            DistributedCache::<String>::builder()
                .kafka_brokers(broker.bootstrap())
                .redis_url(&url)
                .namespace(unique_name("bad-auth"))
                .build()
        });
        assert!(took < QUICK, "{credentials}: took {took:?}");
        let (started, took) = timed(|| {
            StateNode::builder()
                .kafka_brokers(broker.bootstrap())
                .redis_url(&url)
                .group(unique_name("group"))
                .start()
        });
        assert!(took < QUICK, "{credentials}: took {took:?}");
        for (what, err) in [("core node", built.err()), ("state node", started.err())] {
            let err = err.unwrap_or_else(|| panic!("{what} {credentials}: built without auth"));
            assert!(
                matches!(err, Error::Config(_)),
                "{what} {credentials}: {err:?}"
            );
            assert!(
                err.to_string().to_ascii_lowercase().contains("auth"),
                "{what} {credentials}: {err}"
            );
            assert!(!err.to_string().contains("wrong-pass"), "{err}");
            assert_error_is_clean(what, &err);
        }
    }
    // No credentials at all.
    let built = DistributedCache::<String>::builder()
        .kafka_brokers(broker.bootstrap())
        .redis_url(redis.url())
        .namespace(unique_name("no-auth"))
        .build();
    assert!(matches!(built, Err(Error::Config(_))), "{built:?}");
    assert_logs_hold_no_secret();
}

// ------------------------------------------------------------------------------------------------
// rediss://
// ------------------------------------------------------------------------------------------------

/// Without the `tls` feature a `rediss://` URL is refused at build time with a message that names
/// the feature (and not the password).
#[cfg(not(feature = "tls"))]
#[test]
fn rediss_without_the_tls_feature_is_a_clear_config_error() {
    let url = format!("rediss://app:{REDIS_SECRET}@127.0.0.1:{}/", free_port());
    let built = RedisCache::<String>::builder(url.as_str()).build();
    let err = built.expect_err("rediss:// without TLS support");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("tls"), "{err}");
    assert_error_is_clean("rediss error", &err);
    let built = DistributedCache::<String>::builder()
        .kafka_brokers("127.0.0.1:1")
        .redis_url(&url)
        .namespace(unique_name("rediss"))
        .build();
    assert!(matches!(built, Err(Error::Config(_))), "{built:?}");
    let started = StateNode::builder()
        .kafka_brokers("127.0.0.1:1")
        .redis_url(&url)
        .start();
    assert!(matches!(started, Err(Error::Config(_))), "{started:?}");
}

/// With the `tls` feature: a redis-server serving TLS only (self-signed certificate) is reached
/// through `rediss://…/#insecure` with a password; verification against the web PKI roots refuses
/// its certificate; a plain `redis://` URL against the TLS port fails. Each failure is quick and
/// names no secret.
#[cfg(feature = "tls")]
#[test]
fn rediss_reaches_a_tls_redis_server() {
    let tls = TlsRedis::start();
    let insecure = format!("rediss://:{REDIS_SECRET}@127.0.0.1:{}/#insecure", tls.port);
    let cache: RedisCache<String> = RedisCache::builder(insecure.as_str())
        .key_prefix("tls:")
        .build()
        .expect("rediss:// with the password");
    cache.set("k", "over tls".into(), None).unwrap();
    assert_eq!(cache.get("k").unwrap().as_deref(), Some("over tls"));

    for url in [
        format!("rediss://:{REDIS_SECRET}@127.0.0.1:{}/", tls.port),
        format!("redis://:{REDIS_SECRET}@127.0.0.1:{}/", tls.port),
    ] {
        let mut config = RedisConfig::new(url.as_str());
        config.io_timeout = Duration::from_secs(2);
        let (built, took) = timed(|| RedisCache::<String>::builder("").config(config).build());
        assert!(took < QUICK, "took {took:?}");
        let err = built.err().unwrap_or_else(|| panic!("{url} must fail"));
        assert_error_is_clean("tls error", &err);
    }
}

#[cfg(feature = "tls")]
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

#[cfg(feature = "tls")]
impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl not found");
        assert!(made.status.success(), "openssl: {made:?}");
        for _attempt in 0..5 {
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", "0"])
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&cert)
                .arg("--tls-key-file")
                .arg(&key)
                .args(["--tls-auth-clients", "no", "--requirepass", REDIS_SECRET])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server");
            let url = format!("rediss://:{REDIS_SECRET}@127.0.0.1:{port}/#insecure");
            let mut last = String::new();
            let up = support::wait_until(Duration::from_secs(10), || {
                if !matches!(child.try_wait(), Ok(None)) {
                    return false;
                }
                match redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                {
                    Ok(_) => true,
                    Err(e) => {
                        last = e.to_string();
                        false
                    }
                }
            });
            if up {
                return TlsRedis {
                    child,
                    port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("redis-server with TLS on {port} not reachable: {last}");
        }
        panic!("redis-server with TLS did not start (is it built with TLS?)");
    }
}

#[cfg(feature = "tls")]
impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------------------------
// librdkafka security settings
// ------------------------------------------------------------------------------------------------

fn sasl(config: KafkaConfig) -> KafkaConfig {
    config
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", "app")
        .set("sasl.password", KAFKA_SECRET)
}

/// Security settings reach librdkafka from both builders: SASL against a broker that does not
/// speak it fails the build within the request timeout (the same builders without them work:
/// every other test), SSL in this build (librdkafka without OpenSSL) and an unknown property are
/// `Error::Config` at once. No error or log line shows the SASL password.
#[test]
fn kafka_security_settings_pass_through_both_builders() {
    capture_logs();
    let redis = RedisServer::start();
    let broker = Broker::start();
    let mut base = KafkaConfig::new(broker.bootstrap());
    base.request_timeout = Duration::from_secs(3);

    let attempts: [(&str, KafkaConfig, bool); 3] = [
        ("sasl", sasl(base.clone()), false),
        ("ssl", base.clone().set("security.protocol", "SSL"), true),
        (
            "unknown property",
            base.clone().set("no.such.property", "1"),
            true,
        ),
    ];
    for (what, kafka, config_error) in attempts {
        assert_no_secret("KafkaConfig Debug", &format!("{kafka:?}"));
        let builder = DistributedCache::<String>::builder()
            .kafka(kafka.clone())
            .redis_url(redis.url())
            .namespace(unique_name("kafka-sec"));
        assert_no_secret("DistributedCacheBuilder Debug", &format!("{builder:?}"));
        let (built, took) = timed(|| builder.build());
        assert!(took < QUICK, "{what}: took {took:?}");
        let node = StateNode::builder()
            .kafka(kafka)
            .redis_url(redis.url())
            .group(unique_name("group"));
        assert_no_secret("StateNodeBuilder Debug", &format!("{node:?}"));
        let (started, took) = timed(|| node.start());
        assert!(took < QUICK, "{what}: took {took:?}");
        for (who, err) in [("core node", built.err()), ("state node", started.err())] {
            let err = err.unwrap_or_else(|| panic!("{who} {what}: must not start"));
            if config_error {
                assert!(matches!(err, Error::Config(_)), "{who} {what}: {err:?}");
            } else {
                assert!(
                    err.is_transient() || matches!(err, Error::Config(_)),
                    "{err:?}"
                );
            }
            assert_error_is_clean(who, &err);
        }
    }
    assert_logs_hold_no_secret();
}

/// The binary passes `--kafka-config` and `--kafka-config-file` through, exits non-zero on a
/// setting librdkafka refuses or a server it cannot reach, and prints no secret: not the Redis
/// password in the URL, not the SASL password, not a malformed argument.
#[test]
fn the_state_node_binary_passes_kafka_settings_and_keeps_secrets_out_of_its_output() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kafka.properties");
    std::fs::write(
        &file,
        format!(
            "# SASL settings\nsecurity.protocol=SSL\nsasl.mechanism = PLAIN\nsasl.password={KAFKA_SECRET}\n"
        ),
    )
    .unwrap();
    let secret_redis = format!("redis://:{REDIS_SECRET}@127.0.0.1:{}/", free_port());

    let run = |args: &[&str], redis_url: &str| -> String {
        let mut cmd = state_node_command();
        cmd.args(["--brokers", "127.0.0.1:1"])
            .env("DISTCACHE_REDIS", redis_url)
            .env("DISTCACHE_LOG_LEVEL", "debug")
            .args(args);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(cmd.output());
        });
        let out = rx
            .recv_timeout(2 * QUICK)
            .unwrap_or_else(|_| panic!("{args:?}: the binary did not exit within {:?}", 2 * QUICK))
            .expect("run distcache-state-node");
        assert!(!out.status.success(), "{args:?} must fail: {out:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_no_secret(&format!("{args:?} output"), &text);
        text
    };
    // Redis unreachable, its password in the URL (from the environment, not the command line).
    let out = run(&[], &secret_redis);
    assert!(out.contains("redis"), "{out}");
    // From the file: librdkafka refuses SSL in this build.
    let out = run(
        &["--kafka-config-file", file.to_str().unwrap()],
        &redis.url(),
    );
    assert!(out.contains("security.protocol"), "{out}");
    // Flags come after the file, so they override it: SASL instead of SSL, which librdkafka takes;
    // the node then fails to reach the broker that is not there.
    let out = run(
        &[
            "--kafka-config-file",
            file.to_str().unwrap(),
            "--kafka-config",
            "security.protocol=SASL_PLAINTEXT",
            "--kafka-config",
            &format!("sasl.password={KAFKA_SECRET}"),
        ],
        &redis.url(),
    );
    assert!(
        !out.contains("OpenSSL"),
        "the flag did not override the file: {out}"
    );
    assert!(out.contains("kafka"), "{out}");
    // A malformed flag is not echoed.
    let out = run(
        &["--kafka-config", &format!("sasl.password:{KAFKA_SECRET}")],
        &redis.url(),
    );
    assert!(out.contains("KEY=VALUE") && out.contains("#1"), "{out}");
    // A malformed file line is named by number, not content.
    std::fs::write(&file, format!("sasl.password {KAFKA_SECRET}\n")).unwrap();
    let out = run(
        &["--kafka-config-file", file.to_str().unwrap()],
        &redis.url(),
    );
    assert!(out.contains("line 1"), "{out}");
}

// ------------------------------------------------------------------------------------------------
// Debug output and errors
// ------------------------------------------------------------------------------------------------

/// Configs and builders print no credentials, and neither do the errors of a bad or unreachable
/// Redis URL carrying a password.
#[test]
fn debug_output_and_errors_hold_no_secret() {
    capture_logs();
    let kafka = KafkaConfig::new("127.0.0.1:1")
        .set("sasl.password", KAFKA_SECRET)
        .set("ssl.key.password", KAFKA_SECRET)
        .set("sasl.oauthbearer.client.secret", KAFKA_SECRET)
        .set(
            "sasl.oauthbearer.config",
            format!("principal=app secret={KAFKA_SECRET}"),
        );
    let debug = format!("{kafka:?}");
    assert_no_secret("KafkaConfig Debug", &debug);
    assert!(
        debug.contains("sasl.password"),
        "the key itself is shown: {debug}"
    );

    let urls = [
        format!("redis://app:{REDIS_SECRET}@127.0.0.1:{}/", free_port()),
        format!("redis://:{REDIS_SECRET}@127.0.0.1:{}/", free_port()),
        // A `,` in the password is not a cluster seed separator.
        format!(
            "redis://app:{REDIS_SECRET},{ACL_SECRET}@127.0.0.1:{}/",
            free_port()
        ),
        // Malformed URLs with credentials.
        format!("redis://app:{REDIS_SECRET}@127.0.0.1:notaport/"),
        format!("app:{REDIS_SECRET}@127.0.0.1:6379"),
        format!("redis:/app:{REDIS_SECRET}@127.0.0.1:6379"),
    ];
    for url in &urls {
        let config = RedisConfig::new(url.as_str());
        assert_no_secret("RedisConfig Debug", &format!("{config:?}"));
        let builder = DistributedCache::<String>::builder()
            .kafka(kafka.clone())
            .redis_url(url.as_str())
            .namespace(unique_name("debug"));
        assert_no_secret("DistributedCacheBuilder Debug", &format!("{builder:?}"));
        let (built, took) = timed(|| builder.build());
        assert!(took < QUICK, "{url}: took {took:?}");
        assert_error_is_clean("core node build", &built.expect_err("nothing listens"));
        let node = StateNode::builder()
            .kafka(kafka.clone())
            .redis_url(url.as_str());
        assert_no_secret("StateNodeBuilder Debug", &format!("{node:?}"));
        assert_error_is_clean(
            "state node start",
            &node.start().expect_err("nothing listens"),
        );
        let cache = RedisCache::<String>::builder(url.as_str()).build();
        assert_error_is_clean("RedisCache build", &cache.expect_err("nothing listens"));
    }
    let logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    for line in logs.iter() {
        assert_no_secret("a log line", line);
    }
}
