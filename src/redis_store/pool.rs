//! A small bounded pool of blocking Redis connections, to a single server or a Redis Cluster.
//!
//! Why not r2d2: we want a dead server to fail fast (a refused connection is reported at once, not
//! after a pool-wide wait), connections with read/write timeouts so a hung server never hangs a
//! caller, and no background threads. A connection that saw an I/O error is dropped, not reused.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::{Error, Result};

/// Connection settings shared by every Redis user in the crate. Its `Debug` output hides the
/// password.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host:port[/db]`, or `rediss://…` with the `tls` feature. With
    /// `cluster`, a comma-separated list of seed nodes.
    pub url: String,
    /// Talk to a Redis Cluster through the seed nodes in `url`. Keys are routed by slot; an entry
    /// is one key, so every operation stays on one node.
    pub cluster: bool,
    /// Most connections open at once (default 16).
    pub pool_size: usize,
    /// Deadline for opening a connection (default 1 s).
    pub connect_timeout: Duration,
    /// Deadline for one request/response (default 2 s).
    pub io_timeout: Duration,
    /// Longest wait for a free pooled connection when all are busy (default 2 s).
    pub checkout_timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("cluster", &self.cluster)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("checkout_timeout", &self.checkout_timeout)
            .finish()
    }
}

impl RedisConfig {
    /// Settings with defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            cluster: false,
            pool_size: 16,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            checkout_timeout: Duration::from_secs(2),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.pool_size == 0 {
            return Err(Error::Config("redis pool_size must be at least 1".into()));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("io_timeout", self.io_timeout),
            ("checkout_timeout", self.checkout_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("redis {name} must be positive")));
            }
        }
        Ok(())
    }
}

/// Opens connections with the configured timeouts.
#[derive(Clone)]
pub(crate) struct Connector {
    backend: Backend,
    connect_timeout: Duration,
    io_timeout: Duration,
}

/// One connection for health checks (`PING`), opened on first use and again after an error, so
/// a check costs one round trip while Redis is up and one connection attempt while it is not.
pub(crate) struct PingProbe {
    connector: Connector,
    conn: parking_lot::Mutex<Option<Conn>>,
}

impl PingProbe {
    pub(crate) fn new(connector: Connector) -> Self {
        PingProbe {
            connector,
            conn: parking_lot::Mutex::new(None),
        }
    }

    /// `PING` within the connector's timeouts.
    pub(crate) fn ping(&self) -> Result<()> {
        let mut slot = self.conn.lock();
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(self.connector.connect()?),
        };
        match redis::cmd("PING").query::<String>(conn) {
            Ok(_) => Ok(()),
            Err(e) => {
                *slot = None;
                Err(Error::from_redis(e))
            }
        }
    }
}

#[derive(Clone)]
enum Backend {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

impl Connector {
    pub(crate) fn new(config: &RedisConfig) -> Result<Self> {
        config.validate()?;
        let bad_url = |e: redis::RedisError| {
            Error::Config(format!("redis url {:?}: {e}", redact(&config.url)))
        };
        if cfg!(not(feature = "tls")) && config.url.contains("rediss://") {
            return Err(Error::Config(format!(
                "redis url {:?}: rediss:// (TLS) needs distcache's `tls` cargo feature",
                redact(&config.url)
            )));
        }
        let backend = if config.cluster {
            cluster_backend(config).map_err(bad_url)?
        } else {
            Backend::Single(redis::Client::open(config.url.as_str()).map_err(bad_url)?)
        };
        Ok(Connector {
            backend,
            connect_timeout: config.connect_timeout,
            io_timeout: config.io_timeout,
        })
    }

    /// A new connection, not pooled (state-node workers own one each).
    pub(crate) fn connect(&self) -> Result<Conn> {
        match &self.backend {
            Backend::Single(client) => {
                let conn = client
                    .get_connection_with_timeout(self.connect_timeout)
                    .map_err(Error::from_redis)?;
                conn.set_read_timeout(Some(self.io_timeout))
                    .map_err(Error::from_redis)?;
                conn.set_write_timeout(Some(self.io_timeout))
                    .map_err(Error::from_redis)?;
                Ok(Conn::Single(conn))
            }
            Backend::Cluster(client) => client
                .get_connection()
                .map(|c| Conn::Cluster(Box::new(c)))
                .map_err(Error::from_redis),
        }
    }
}

fn cluster_backend(config: &RedisConfig) -> redis::RedisResult<Backend> {
    let seeds: Vec<&str> = config.url.split(',').map(str::trim).collect();
    redis::cluster::ClusterClientBuilder::new(seeds)
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.io_timeout)
        .build()
        .map(Backend::Cluster)
}

/// One connection: to a single server, or to a cluster (which routes each command by key).
pub(crate) enum Conn {
    Single(redis::Connection),
    // Boxed: a cluster connection is four times the size of a single one.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Conn {
    /// True for a cluster connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// The cluster connection, when this is one.
    pub(crate) fn as_cluster(&mut self) -> Option<&mut redis::cluster::ClusterConnection> {
        match self {
            Conn::Cluster(c) => Some(&mut **c),
            Conn::Single(_) => None,
        }
    }

    fn inner(&mut self) -> &mut dyn redis::ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => &mut **c,
        }
    }

    fn inner_ref(&self) -> &dyn redis::ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => &**c,
        }
    }
}

impl redis::ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        self.inner().req_packed_command(cmd)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        self.inner().req_packed_commands(cmd, offset, count)
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        self.inner().req_command(cmd)
    }

    fn get_db(&self) -> i64 {
        self.inner_ref().get_db()
    }

    fn supports_pipelining(&self) -> bool {
        self.inner_ref().supports_pipelining()
    }

    fn check_connection(&mut self) -> bool {
        self.inner().check_connection()
    }

    fn is_open(&self) -> bool {
        self.inner_ref().is_open()
    }
}

/// The bounded pool.
pub(crate) struct Pool {
    connector: Connector,
    max: usize,
    checkout_timeout: Duration,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Conn>,
    /// Connections checked out or idle; never above `max`.
    open: usize,
}

impl Pool {
    pub(crate) fn new(config: &RedisConfig) -> Result<Self> {
        Ok(Pool {
            connector: Connector::new(config)?,
            max: config.pool_size,
            checkout_timeout: config.checkout_timeout,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        })
    }

    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// An idle connection, or a new one when fewer than `max` are open. Waits at most
    /// `checkout_timeout` for a busy one to come back.
    pub(crate) fn get(&self) -> Result<PooledConnection<'_>> {
        let mut state = self.state.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(PooledConnection::new(self, conn));
            }
            if state.open < self.max {
                state.open += 1;
                break;
            }
            if self
                .freed
                .wait_for(&mut state, self.checkout_timeout)
                .timed_out()
            {
                return Err(Error::Timeout {
                    what: format!("all {} redis connections busy", self.max),
                    after: self.checkout_timeout,
                });
            }
        }
        drop(state);
        // Connect outside the lock: a slow server must not block other callers' checkouts.
        match self.connector.connect() {
            Ok(conn) => Ok(PooledConnection::new(self, conn)),
            Err(err) => {
                self.release(None);
                Err(err)
            }
        }
    }

    fn release(&self, conn: Option<Conn>) {
        let mut state = self.state.lock();
        match conn {
            Some(conn) => state.idle.push(conn),
            None => state.open -= 1,
        }
        drop(state);
        self.freed.notify_one();
    }
}

/// A checked-out connection; goes back to the pool on drop unless marked broken.
pub(crate) struct PooledConnection<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    broken: bool,
}

impl<'a> PooledConnection<'a> {
    fn new(pool: &'a Pool, conn: Conn) -> Self {
        PooledConnection {
            pool,
            conn: Some(conn),
            broken: false,
        }
    }

    /// Marks the connection as unusable (it saw an I/O error); it is closed on drop.
    pub(crate) fn mark_broken(&mut self) {
        self.broken = true;
    }
}

impl Deref for PooledConnection<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until drop")
    }
}

impl DerefMut for PooledConnection<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until drop")
    }
}

impl Drop for PooledConnection<'_> {
    fn drop(&mut self) {
        let conn = self.conn.take().filter(|_| !self.broken);
        self.pool.release(conn);
    }
}

/// `url` with any password replaced, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    // A list of cluster seeds, each of which may carry credentials; but a `,` inside a password
    // does not start a seed (every seed names its scheme).
    if url.contains(',') && url.split(',').all(|seed| seed.contains("://")) {
        return url.split(',').map(redact).collect::<Vec<_>>().join(",");
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        // Not a URL we can read (a missing or mistyped scheme): hide everything before the `@`.
        (None, Some(at)) => format!("***{}", &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://app:s3cret@host:6379/0"),
            "redis://app:***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            redact("redis://:pw@a:1,redis://:pw@b:2"),
            "redis://:***@a:1,redis://:***@b:2"
        );
        // A `,` in a password is not a seed separator.
        assert_eq!(
            redact("redis://app:s3c,r3t@host:6379/"),
            "redis://app:***@host:6379/"
        );
        assert_eq!(redact("app:s3cret@host:6379"), "***@host:6379");
        let debug = format!("{:?}", RedisConfig::new("redis://u:s3cret@h:1/"));
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn rejects_bad_config() {
        let mut c = RedisConfig::new("redis://127.0.0.1:1/");
        c.pool_size = 0;
        assert!(matches!(Connector::new(&c), Err(Error::Config(_))));
        assert!(matches!(
            Connector::new(&RedisConfig::new("not a url")),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn unreachable_server_fails_fast_and_frees_the_slot() {
        let mut c = RedisConfig::new("redis://127.0.0.1:1/");
        c.pool_size = 1;
        let pool = Pool::new(&c).unwrap();
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let err = pool.get().err().expect("nothing listens on port 1");
            assert!(matches!(err, Error::Unavailable { .. }), "{err}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    }
}
