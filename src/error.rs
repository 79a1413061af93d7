//! The one error type of the crate.
//!
//! Every fallible call returns [`Result<T>`]. Variants say what a caller can do about the failure:
//! retry later ([`Error::Unavailable`], [`Error::Timeout`]), fix the data ([`Error::Codec`]), fix the
//! configuration ([`Error::Config`]) or accept that the operation was refused ([`Error::Rejected`]).

use std::error::Error as StdError;

/// A boxed error kept as the source of an [`Error`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Shorthand for `std::result::Result<T, distcache::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in distcache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A server (Redis or the Kafka broker) could not be reached or failed mid-request.
    /// Retrying later may succeed.
    #[error("{service} unavailable: {source}")]
    Unavailable {
        /// Which service: `"redis"` or `"kafka"`.
        service: &'static str,
        /// The underlying client error.
        #[source]
        source: BoxError,
    },
    /// An operation did not complete within its deadline. It may still complete later.
    #[error("timed out{}: {what}", describe_wait(after))]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long we waited (zero when the client library did not say).
        after: std::time::Duration,
    },
    /// A value or an event could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(#[source] BoxError),
    /// The configuration is invalid; the message says which setting and why.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The operation was refused: a server answered with an error, a bound was reached, or the
    /// request itself is invalid (for example a remote TTL shorter than the local TTL).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The cache or node has been shut down.
    #[error("shut down")]
    Shutdown,
}

impl Error {
    /// Wraps a Redis client error. Connection-level failures become [`Error::Unavailable`],
    /// timeouts [`Error::Timeout`], and errors answered by the server [`Error::Rejected`].
    pub(crate) fn from_redis(err: redis::RedisError) -> Self {
        let auth = err.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(err.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"));
        if auth {
            // Retrying with the same credentials cannot help: a configuration problem.
            Error::Config(format!("redis authentication failed: {err}"))
        } else if is_transient_server_state(&err) {
            Error::Unavailable {
                service: "redis",
                source: Box::new(err),
            }
        } else if err.is_timeout() {
            Error::Timeout {
                what: format!("redis: {err}"),
                after: std::time::Duration::ZERO,
            }
        } else if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error()
        {
            Error::Unavailable {
                service: "redis",
                source: Box::new(err),
            }
        } else {
            Error::Rejected(format!("redis: {err}"))
        }
    }

    /// Wraps a Kafka produce error: a message the broker will never take (too large, invalid)
    /// is [`Error::Rejected`], an authorization failure [`Error::Config`], anything else
    /// [`Error::Unavailable`].
    pub(crate) fn kafka_produce(err: rdkafka::error::KafkaError) -> Self {
        use rdkafka::types::RDKafkaErrorCode as Code;
        match err.rdkafka_error_code() {
            Some(Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::InvalidMessage) => {
                Error::Rejected(format!("kafka refused the event: {err}"))
            }
            Some(
                Code::TopicAuthorizationFailed
                | Code::ClusterAuthorizationFailed
                | Code::SaslAuthenticationFailed
                | Code::Authentication,
            ) => Error::Config(format!("kafka authorization failed: {err}")),
            _ => Error::kafka(err),
        }
    }

    /// Wraps a Kafka client error as [`Error::Unavailable`].
    pub(crate) fn kafka(err: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            service: "kafka",
            source: err.into(),
        }
    }

    /// Builds an [`Error::Codec`] from any error or message.
    pub(crate) fn codec(err: impl Into<BoxError>) -> Self {
        Error::Codec(err.into())
    }

    /// True when retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }
}

fn describe_wait(after: &std::time::Duration) -> String {
    if after.is_zero() {
        String::new()
    } else {
        format!(" after {after:?}")
    }
}

/// Server replies that describe a passing state (loading, failover, a busy script), not a bad
/// request: retrying later may succeed.
fn is_transient_server_state(err: &redis::RedisError) -> bool {
    use redis::ServerErrorKind as Kind;
    matches!(
        err.kind(),
        redis::ErrorKind::Server(
            Kind::BusyLoading
                | Kind::TryAgain
                | Kind::ClusterDown
                | Kind::MasterDown
                | Kind::ReadOnly
        )
    ) || matches!(err.code(), Some("BUSY" | "OOM"))
}
