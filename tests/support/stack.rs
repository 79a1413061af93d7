//! A whole single-process deployment for tests that need one: a redis-server, a broker, an
//! in-process state node and core nodes built against them.

use std::time::Duration;

use distcache::{DistributedCache, StateNode, StateNodeBuilder};
use serde::{de::DeserializeOwned, Serialize};

use super::{unique_name, Broker, CoreNodeProcess, RedisServer};

/// redis-server + broker + a state node in its own consumer group. Dropping it stops all three.
pub struct Stack {
    pub node: StateNode,
    pub broker: Broker,
    pub redis: RedisServer,
}

impl Stack {
    pub fn start() -> Stack {
        Stack::start_with(|node| node)
    }

    /// Like [`start`](Self::start), with the state node's builder passed through `configure` first.
    pub fn start_with(configure: impl FnOnce(StateNodeBuilder) -> StateNodeBuilder) -> Stack {
        let _ = env_logger::builder().is_test(true).try_init();
        let redis = RedisServer::start();
        let broker = Broker::start();
        let node = configure(
            StateNode::builder()
                .kafka_brokers(broker.bootstrap())
                .redis_url(redis.url())
                .group(unique_name("group")),
        )
        .start()
        .expect("state node");
        Stack {
            node,
            broker,
            redis,
        }
    }

    /// A core node for namespace `ns` (waits of up to 30 s for `*_and_wait`).
    pub fn cache<T>(&self, ns: &str) -> DistributedCache<T>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        DistributedCache::<T>::builder()
            .kafka_brokers(self.broker.bootstrap())
            .redis_url(self.redis.url())
            .namespace(ns)
            .wait_timeout(Duration::from_secs(30))
            .build()
            .expect("core node")
    }

    /// `examples/core_node` in its own process on the stack's servers for namespace `ns`, with
    /// `extra` arguments (e.g. `--reply-versions`), ready for commands (waits of up to 30 s).
    pub fn core_node_process(&self, ns: &str, label: &str, extra: &[&str]) -> CoreNodeProcess {
        let mut args = vec![
            "--brokers".to_string(),
            self.broker.bootstrap(),
            "--redis".into(),
            self.redis.url(),
            "--namespace".into(),
            ns.to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        CoreNodeProcess::start(label, &args, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A blocking connection to the stack's redis-server.
    pub fn redis_connection(&self) -> redis::Connection {
        redis::Client::open(self.redis.url())
            .and_then(|c| c.get_connection())
            .expect("redis connection")
    }
}
