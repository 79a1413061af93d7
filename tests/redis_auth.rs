//! Password and ACL-user authentication of the Redis tier against a real `redis-server` started with
//! `requirepass` and an ACL user: the right credentials serve, wrong ones fail fast with a clear error.

mod support;

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use distcache::{Cache, Error, RedisCache};
use tempfile::TempDir;

use support::{free_port, wait_until};

/// The bound for "fails fast, never hangs" assertions.
const FAIL_FAST: Duration = Duration::from_secs(3);

/// A `redis-server --requirepass` of our own: tests/support starts servers without extra flags.
struct PasswordRedis {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl PasswordRedis {
    fn start(password: &str) -> PasswordRedis {
        let dir = tempfile::Builder::new()
            .prefix("distcache-redis-auth-")
            .tempdir()
            .expect("temporary directory");
        let log = dir.path().join("log");
        for _attempt in 0..5 {
            let port = free_port();
            let out = File::create(&log).expect("create log");
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--requirepass", password])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("clone log"))
                .stderr(out)
                .spawn()
                .expect("redis-server not found: run scripts/services.sh install");
            let url = format!("redis://:{password}@127.0.0.1:{port}/");
            let mut exited = false;
            let ready = wait_until(Duration::from_secs(10), || {
                if !matches!(child.try_wait(), Ok(None)) {
                    exited = true;
                    return true;
                }
                ping(&url)
            });
            if exited || !matches!(child.try_wait(), Ok(None)) {
                // Most likely the port was taken meanwhile: try another.
                let _ = child.wait();
                continue;
            }
            if ready {
                return PasswordRedis { child, port, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("redis-server --requirepass did not become ready; log:\n{log}");
        }
        panic!("redis-server --requirepass exited on 5 different ports");
    }

    fn url(&self, credentials: &str) -> String {
        format!("redis://{credentials}@127.0.0.1:{}/", self.port)
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            eprintln!("--- redis-server --requirepass on {}:\n{log}", self.port);
        }
    }
}

fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

#[test]
fn password_and_acl_user_urls_authenticate() {
    let redis = PasswordRedis::start("s3cret");

    for credentials in [":s3cret", "default:s3cret"] {
        let cache: RedisCache<String> = RedisCache::builder(redis.url(credentials))
            .key_prefix("auth:")
            .build()
            .unwrap_or_else(|e| panic!("{credentials}: {e}"));
        cache.set(credentials, "ok".into(), None).expect("set");
        assert_eq!(cache.get(credentials).expect("get").as_deref(), Some("ok"));
        assert_eq!(cache.len().expect("len"), 1);
        cache.clear().expect("clear");
        // The handle's Debug output carries no credentials.
        assert!(!format!("{cache:?}").contains("s3cret"));
    }

    // Wrong or missing credentials: an error (not a panic, not a hang) that does not echo the password.
    for url in [
        redis.url(":wrong-pass"),
        redis.url("default:wrong-pass"),
        redis.url("nobody:s3cret"),
        format!("redis://127.0.0.1:{}/", redis.port),
    ] {
        let started = Instant::now();
        let built = RedisCache::<String>::builder(url.as_str()).build();
        assert!(
            started.elapsed() < FAIL_FAST,
            "{url} took {:?}",
            started.elapsed()
        );
        match built {
            Ok(_) => panic!("{url}: built without valid credentials"),
            Err(err) => {
                assert!(
                    matches!(err, Error::Config(_)),
                    "{url}: bad credentials are a configuration error, not retryable: {err:?}"
                );
                let message = err.to_string();
                assert!(
                    message.to_ascii_lowercase().contains("auth"),
                    "{url}: the error should say authentication failed: {message}"
                );
                assert!(!message.contains("wrong-pass"), "{url}: {message}");
                assert!(!message.contains("s3cret"), "{url}: {message}");
            }
        }
    }
}
