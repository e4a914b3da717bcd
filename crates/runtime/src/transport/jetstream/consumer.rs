//! Making sure the stream and the consumer a subscriber needs exist, with the
//! settings it asks for.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, consumer::PullConsumer};

use super::covering::{self, Cover};
use super::JetStreamSettings;
use crate::transport::DriftCheck;
use crate::{AckMode, Error, StartPosition, SubscriptionSpec};

/// How long an ephemeral consumer outlives a lost connection.
const EPHEMERAL_INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);

pub(crate) async fn ensure_stream(
    context: &jetstream::Context,
    settings: &JetStreamSettings,
    channel: &str,
) -> Result<String, Error> {
    match covering::holding(context, channel).await? {
        Cover::Whole(name) => return Ok(name),
        Cover::Part(streams) => return Err(covering::partly_held(channel, &streams)),
        Cover::None => {}
    }
    let config = jetstream::stream::Config {
        name: crate::stream_name(channel),
        subjects: vec![channel.to_owned()],
        storage: settings.storage,
        num_replicas: settings.replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    match context.get_or_create_stream(config).await {
        Ok(stream) => {
            let config = &stream.cached_info().config;
            // A stream of that name that holds other subjects (`a_b` for
            // `a.b` when `a_b` was a subject) is not this channel's.
            if !config.subjects.iter().any(|s| crate::pattern_covers(s, channel)) {
                return Err(Error::Subscribe {
                    channel: channel.to_owned(),
                    source: format!(
                        "no stream holds `{channel}`, and stream `{}` exists with subjects {:?}: create a stream that holds `{channel}` yourself",
                        config.name, config.subjects
                    )
                    .into(),
                });
            }
            Ok(config.name.clone())
        }
        Err(err) => Err(Error::Subscribe {
            channel: channel.to_owned(),
            source: format!(
                "no stream holds `{channel}` and creating stream `{}` failed ({err}); create a stream with that subject yourself",
                crate::stream_name(channel)
            )
            .into(),
        }),
    }
}

/// The consumer name of a subscription: its durable, else its queue group.
pub(crate) fn consumer_name(spec: &SubscriptionSpec) -> Option<&str> {
    spec.durable.as_deref().or(spec.queue.as_deref())
}

/// The description of a durable flowgate recreated after the server lost it:
/// its deliver policy is where it resumed, not the code's `start`, and the
/// drift check does not compare it.
const RECREATED: &str = "flowgate: recreated after it vanished";

/// The consumer `spec` asks for; `resume_from` (a stream sequence) replaces
/// the start position when a lost consumer is recreated.
pub(crate) fn consumer_config(spec: &SubscriptionSpec, resume_from: Option<u64>) -> pull::Config {
    let name = consumer_name(spec).map(str::to_owned);
    let deliver_policy = match resume_from {
        Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        None => deliver_policy(spec.start),
    };
    let description = match (resume_from, &name) {
        (Some(from), Some(_)) => Some(format!("{RECREATED} (from stream sequence {from})")),
        _ => None,
    };
    pull::Config {
        durable_name: name.clone(),
        name,
        description,
        deliver_policy,
        ack_policy: match spec.ack {
            AckMode::Coalesced => AckPolicy::All,
            AckMode::Auto | AckMode::Manual => AckPolicy::Explicit,
        },
        ack_wait: spec.ack_wait,
        max_deliver: spec.max_deliver.map_or(-1, i64::from),
        filter_subject: spec.channel.clone(),
        max_ack_pending: i64::try_from(max_ack_pending(spec)).unwrap_or(i64::MAX),
        inactive_threshold: if consumer_name(spec).is_none() {
            EPHEMERAL_INACTIVE_THRESHOLD
        } else {
            Duration::ZERO
        },
        ..Default::default()
    }
}

/// The consumer's limit of unacked messages: `max_in_flight`, doubled with
/// coalesced acks, where handled messages wait for the prefix to be acked.
pub(crate) fn max_ack_pending(spec: &SubscriptionSpec) -> usize {
    match spec.ack {
        AckMode::Coalesced => spec.max_in_flight.saturating_mul(2),
        AckMode::Auto | AckMode::Manual => spec.max_in_flight,
    }
}

fn deliver_policy(start: StartPosition) -> DeliverPolicy {
    match start {
        StartPosition::New => DeliverPolicy::New,
        StartPosition::All => DeliverPolicy::All,
        StartPosition::Last => DeliverPolicy::Last,
        StartPosition::Sequence(start_sequence) => {
            DeliverPolicy::ByStartSequence { start_sequence }
        }
        StartPosition::Time(at) => {
            let since_epoch = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let start_time = time::OffsetDateTime::UNIX_EPOCH + since_epoch;
            DeliverPolicy::ByStartTime { start_time }
        }
    }
}

/// Binds the durable consumer of `spec` on `stream`, creating it when it does
/// not exist, refusing one whose settings differ.
///
/// `resume_from` is set when a running subscription reopens: an ephemeral is
/// then recreated from that stream sequence, and so is a durable that
/// vanished from the server (with an error log: messages before it that this
/// subscription never saw are not delivered again).
pub(crate) async fn bind(
    context: &jetstream::Context,
    stream: &str,
    spec: &SubscriptionSpec,
    resume_from: Option<u64>,
) -> Result<PullConsumer, Error> {
    let Some(name) = consumer_name(spec) else {
        return create(context, stream, spec, consumer_config(spec, resume_from)).await;
    };
    match context
        .get_consumer_from_stream::<pull::Config, _, _>(name, stream)
        .await
    {
        Ok(existing) => {
            let wanted = consumer_config(spec, None);
            check_unchanged(stream, name, &existing.cached_info().config, &wanted)?;
            Ok(existing)
        }
        Err(err) if is_not_found(&err) => {
            if let Some(from) = resume_from {
                tracing::error!(
                    stream,
                    durable = name,
                    resume_from = from,
                    "the durable consumer vanished from the server (deleted, or its node lost); recreating it from the lowest stream sequence this app has not settled"
                );
            }
            let wanted = consumer_config(spec, resume_from);
            match create(context, stream, spec, wanted).await {
                Ok(created) => Ok(created),
                // Another instance created it first: bind that one. Where
                // none exists, the server refused it: say why.
                Err(refused) => {
                    let existing = match context
                        .get_consumer_from_stream::<pull::Config, _, _>(name, stream)
                        .await
                    {
                        Ok(existing) => existing,
                        Err(err) if is_not_found(&err) => return Err(refused),
                        Err(err) => return Err(broker(&spec.channel, err)),
                    };
                    let wanted = consumer_config(spec, None);
                    check_unchanged(stream, name, &existing.cached_info().config, &wanted)?;
                    Ok(existing)
                }
            }
        }
        Err(err) => Err(broker(&spec.channel, err)),
    }
}

async fn create(
    context: &jetstream::Context,
    stream: &str,
    spec: &SubscriptionSpec,
    config: pull::Config,
) -> Result<PullConsumer, Error> {
    context
        .create_consumer_on_stream(config, stream)
        .await
        .map_err(|e| broker(&spec.channel, e))
}

pub(crate) fn is_not_found(err: &async_nats::jetstream::stream::ConsumerError) -> bool {
    matches!(err.kind(), ConsumerErrorKind::JetStream(e) if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}

pub(crate) fn check_unchanged(
    stream: &str,
    durable: &str,
    existing: &jetstream::consumer::Config,
    wanted: &pull::Config,
) -> Result<(), Error> {
    let plain = |value: &i64| value.to_string();
    let recreated = existing
        .description
        .as_deref()
        .is_some_and(|d| d.starts_with(RECREATED));
    let start = if recreated {
        &wanted.deliver_policy
    } else {
        &existing.deliver_policy
    };
    DriftCheck::new(stream, durable)
        .field_shown(
            "filter subject",
            &existing.filter_subject,
            &wanted.filter_subject,
            Clone::clone,
        )
        .field("deliver policy (start)", start, &wanted.deliver_policy)
        .field("ack policy", &existing.ack_policy, &wanted.ack_policy)
        .field("ack_wait", &existing.ack_wait, &wanted.ack_wait)
        .field_shown(
            "max_deliver",
            &existing.max_deliver,
            &wanted.max_deliver,
            plain,
        )
        .field_shown(
            "max_ack_pending (max_in_flight)",
            &existing.max_ack_pending,
            &wanted.max_ack_pending,
            plain,
        )
        .finish()
}

fn broker(channel: &str, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Subscribe {
        channel: channel.to_owned(),
        source: Box::new(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_spec_maps_to_an_explicit_ack_pull_consumer() {
        let mut spec = SubscriptionSpec::new("orders.placed").with_durable("billing");
        spec.max_in_flight = 32;
        spec.max_deliver = Some(5);
        spec.start = StartPosition::Sequence(10);
        let config = consumer_config(&spec, None);
        assert_eq!(config.durable_name.as_deref(), Some("billing"));
        assert_eq!(config.max_ack_pending, 32);
        assert_eq!(config.max_deliver, 5);
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        assert_eq!(
            config.deliver_policy,
            DeliverPolicy::ByStartSequence { start_sequence: 10 }
        );
    }

    #[test]
    fn a_recreated_consumer_starts_at_the_given_sequence() {
        let spec = SubscriptionSpec::new("orders.placed");
        let config = consumer_config(&spec, Some(42));
        assert_eq!(config.durable_name, None);
        assert_eq!(
            config.deliver_policy,
            DeliverPolicy::ByStartSequence { start_sequence: 42 }
        );
        assert_eq!(config.max_deliver, 10, "the default failure budget");
        assert_eq!(config.description, None);
        let durable = consumer_config(&spec.with_durable("billing"), Some(42));
        assert!(durable
            .description
            .is_some_and(|d| d.starts_with(RECREATED)));
    }
}
