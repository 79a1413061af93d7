//! Creates the topics distcache uses when they are missing, and waits until the broker serves them.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaConfig;
use crate::{Error, Result};

/// How often a topic that is not served yet is asked for again.
const SERVED_POLL: Duration = Duration::from_millis(50);

/// Creates each topic with `config.partitions` partitions unless it already exists, then waits (at most
/// `config.request_timeout`) until every partition of each answers an offsets request.
///
/// Apache Kafka acknowledges a new topic once its controller recorded it; the broker loads the partitions
/// moments later and meanwhile answers `NotLeaderForPartition`. Waiting here means a node that just created
/// (or raced another node creating) the topics starts like one that found them.
pub(crate) fn ensure_topics(config: &KafkaConfig, topics: &[&str]) -> Result<()> {
    // librdkafka refuses to create a client only over its settings (an unknown property, a value it
    // does not take, SSL in a build without it): a configuration error, not an outage.
    let admin: AdminClient<DefaultClientContext> = config
        .admin()
        .create()
        .map_err(|e| Error::Config(format!("kafka admin client: {e}")))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, config.partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(config.request_timeout))
        .request_timeout(Some(config.request_timeout));
    let results = block_on(admin.create_topics(&new, &opts)).map_err(Error::kafka)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::kafka(format!("creating topic {topic}: {code}")));
            }
        }
    }
    let deadline = Instant::now() + config.request_timeout;
    for topic in topics {
        wait_until_served(admin.inner(), topic, deadline)?;
    }
    Ok(())
}

/// Asks the brokers for their metadata (within `config.request_timeout`): they are reachable
/// and accept this client's settings. Creates nothing.
pub(crate) fn check_brokers(config: &KafkaConfig) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config
        .admin()
        .create()
        .map_err(|e| Error::Config(format!("kafka admin client: {e}")))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, config.request_timeout)
        .map_err(Error::kafka)?;
    if metadata.brokers().is_empty() {
        return Err(Error::kafka("the metadata lists no broker"));
    }
    Ok(())
}

/// Polls until every partition of `topic` has a leader that answers a watermark (offsets) request.
fn wait_until_served<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    deadline: Instant,
) -> Result<()> {
    let mut pending: Option<Vec<i32>> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt: std::result::Result<(), String> = (|| {
            let partitions = match &pending {
                Some(p) => p.clone(),
                None => {
                    let metadata = client
                        .fetch_metadata(Some(topic), left.max(SERVED_POLL))
                        .map_err(|e| e.to_string())?;
                    let t = metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == topic)
                        .ok_or_else(|| format!("topic {topic} not in the metadata"))?;
                    if let Some(e) = t.error() {
                        return Err(format!("topic {topic}: {:?}", RDKafkaErrorCode::from(e)));
                    }
                    if t.partitions().is_empty() {
                        return Err(format!("topic {topic} has no partitions yet"));
                    }
                    t.partitions().iter().map(|p| p.id()).collect()
                }
            };
            let mut waiting = Vec::new();
            let mut last = String::new();
            for p in partitions {
                if let Err(e) = client.fetch_watermarks(topic, p, left.max(SERVED_POLL)) {
                    last = format!("{topic}/{p}: {e}");
                    waiting.push(p);
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            pending = Some(waiting);
            Err(last)
        })();
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::kafka(format!("topic not served in time: {e}")));
            }
            Err(e) => {
                log::debug!(target: "distcache::bus", "waiting for {topic} to be served: {e}");
                std::thread::sleep(SERVED_POLL);
            }
        }
    }
}

/// Runs a future to completion on this thread. rdkafka's admin API returns futures; we have no
/// async runtime and need none for a one-off request.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct ThreadWaker(Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
