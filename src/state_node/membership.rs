//! How a state node belongs to its consumer group: its static member id (`group.instance.id`),
//! its session timeout and its heartbeat interval. These decide how fast partitions move after a
//! state node dies or restarts:
//!
//! - **Static membership** (an instance id): a restarted node with the same id takes its old
//!   partitions back at once, without a rebalance and without waiting for its predecessor's
//!   session to expire. Without an id (the default), the restarted process is a new member and
//!   the group waits for the dead one's session to expire, then rebalances.
//! - **Session timeout**: how long the broker waits for a silent member before giving its
//!   partitions to the others; a dead node's partitions are taken over after about this long.
//!   Brokers refuse values outside `group.min.session.timeout.ms` (Apache Kafka's default 6 s)
//!   and `group.max.session.timeout.ms`.
//! - **Heartbeat interval**: how often a member tells the broker it is alive and learns of a
//!   rebalance; survivors rejoin within about one interval.
//!
//! A static member does not leave the group when it closes (the Kafka protocol's rule for static
//! members): its partitions wait for a restart with the same id or for the session to expire.

use std::time::Duration;

use crate::bus::KafkaConfig;
use crate::{Error, Result};

/// Default session timeout: Apache Kafka's default `group.min.session.timeout.ms`, the shortest
/// that an unmodified broker accepts.
pub(crate) const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// Default heartbeat interval: a sixth of the session timeout, so a survivor learns of a
/// rebalance within a second.
pub(crate) const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// librdkafka's upper bound for both settings (one hour).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The broker's limit for a `group.instance.id` (validated like a topic name).
const MAX_INSTANCE_ID_LEN: usize = 249;

/// Group-membership settings of a state node's consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Membership {
    /// `group.instance.id`; `None` = dynamic membership.
    pub instance_id: Option<String>,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            instance_id: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
        }
    }
}

impl Membership {
    /// Checks the settings; every failure is an [`Error::Config`] that names the setting.
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(id) = &self.instance_id {
            if id.is_empty() || id.len() > MAX_INSTANCE_ID_LEN {
                return Err(Error::Config(format!(
                    "instance id must be 1 to {MAX_INSTANCE_ID_LEN} characters long, got {}",
                    id.len()
                )));
            }
            if let Some(bad) = id
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(Error::Config(format!(
                    "instance id {id:?} may contain only ASCII letters, digits, '.', '_' and '-', \
                     not {bad:?}"
                )));
            }
        }
        for (name, value) in [
            ("session timeout", self.session_timeout),
            ("heartbeat interval", self.heartbeat_interval),
        ] {
            if value < Duration::from_millis(1) || value > MAX_TIMEOUT {
                return Err(Error::Config(format!(
                    "{name} must be between 1 ms and {MAX_TIMEOUT:?}, got {value:?}"
                )));
            }
        }
        if self.heartbeat_interval >= self.session_timeout {
            return Err(Error::Config(format!(
                "heartbeat interval ({:?}) must be shorter than the session timeout ({:?}); \
                 a third of it or less is usual",
                self.heartbeat_interval, self.session_timeout
            )));
        }
        if self.heartbeat_interval > self.session_timeout / 3 {
            log::warn!(target: "distcache::state_node",
                "heartbeat interval {:?} is more than a third of the session timeout {:?}: \
                 a member may be expired after a single lost heartbeat",
                self.heartbeat_interval, self.session_timeout);
        }
        Ok(())
    }

    /// The Kafka settings of the group consumer: `kafka` with these settings put before its own
    /// pass-through properties, so an explicit `kafka_config("session.timeout.ms", …)` still wins.
    pub(crate) fn consumer_config(&self, kafka: &KafkaConfig) -> KafkaConfig {
        let mut config = kafka.clone();
        let mut extra = vec![
            (
                "session.timeout.ms".to_string(),
                self.session_timeout.as_millis().to_string(),
            ),
            (
                "heartbeat.interval.ms".to_string(),
                self.heartbeat_interval.as_millis().to_string(),
            ),
        ];
        if let Some(id) = &self.instance_id {
            extra.push(("group.instance.id".to_string(), id.clone()));
        }
        extra.append(&mut config.extra);
        config.extra = extra;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(instance_id: Option<&str>, session_ms: u64, heartbeat_ms: u64) -> Result<()> {
        Membership {
            instance_id: instance_id.map(str::to_string),
            session_timeout: Duration::from_millis(session_ms),
            heartbeat_interval: Duration::from_millis(heartbeat_ms),
        }
        .validate()
    }

    #[test]
    fn defaults_are_valid_and_dynamic() {
        let m = Membership::default();
        assert_eq!(m.validate().ok(), Some(()));
        assert_eq!(m.instance_id, None);
        assert_eq!(m.session_timeout, Duration::from_secs(6));
        assert_eq!(m.heartbeat_interval, Duration::from_secs(1));
    }

    #[test]
    fn heartbeat_must_be_shorter_than_the_session() {
        for (session, heartbeat) in [(6000, 6000), (6000, 7000), (2, 2)] {
            match with(None, session, heartbeat) {
                Err(Error::Config(msg)) => assert!(msg.contains("heartbeat"), "{msg}"),
                other => panic!("{session}/{heartbeat}: {other:?}"),
            }
        }
        assert!(with(None, 6000, 5999).is_ok());
        assert!(with(None, 2000, 500).is_ok());
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(matches!(with(None, 0, 0), Err(Error::Config(_))));
        assert!(matches!(with(None, 6000, 0), Err(Error::Config(_))));
        assert!(matches!(with(None, 3_600_001, 1000), Err(Error::Config(_))));
        assert!(with(None, 3_600_000, 1000).is_ok());
    }

    #[test]
    fn instance_ids_are_checked_like_the_broker_does() {
        assert!(with(Some("state-node-0"), 6000, 1000).is_ok());
        assert!(with(Some("a.b_C-9"), 6000, 1000).is_ok());
        for bad in ["", "has space", "slash/y", "ü", &"x".repeat(250)] {
            assert!(
                matches!(with(Some(bad), 6000, 1000), Err(Error::Config(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn the_builder_refuses_bad_membership_before_connecting() {
        let builder = crate::StateNode::builder()
            .kafka_brokers("127.0.0.1:1")
            .redis_url("redis://127.0.0.1:1/");
        let bad = [
            builder
                .clone()
                .session_timeout(Duration::from_secs(2))
                .heartbeat_interval(Duration::from_secs(2)),
            builder.clone().instance_id("two words"),
            builder.clone().session_timeout(Duration::ZERO),
        ];
        for b in bad {
            match b.start() {
                Err(Error::Config(_)) => {}
                other => panic!("expected Error::Config, got {other:?}"),
            }
        }
    }

    #[test]
    fn settings_go_before_pass_through_properties() {
        let kafka = KafkaConfig::new("b:9092").set("session.timeout.ms", "9000");
        let m = Membership {
            instance_id: Some("n1".into()),
            ..Membership::default()
        };
        let extra = m.consumer_config(&kafka).extra;
        assert_eq!(
            extra,
            vec![
                ("session.timeout.ms".to_string(), "6000".to_string()),
                ("heartbeat.interval.ms".to_string(), "1000".to_string()),
                ("group.instance.id".to_string(), "n1".to_string()),
                ("session.timeout.ms".to_string(), "9000".to_string()),
            ]
        );
        let dynamic = Membership::default().consumer_config(&kafka).extra;
        assert!(!dynamic.iter().any(|(k, _)| k == "group.instance.id"));
    }
}
