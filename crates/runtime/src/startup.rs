//! Checks that refuse a configuration that cannot work, before anything
//! reaches the broker, with an error that says what to change.

use std::time::Duration;

use crate::{DeadLetter, Error, Subscriber};

/// Names, limits and the dead-letter subject of one subscriber.
/// Fails when the subscriber's extractors need a state `state` lacks.
pub(crate) fn check_state(
    subscriber: &Subscriber,
    state: &crate::extract::StateMap,
) -> Result<(), Error> {
    subscriber
        .handler()
        .check(state)
        .map_err(|missing| Error::MissingState {
            subscriber: subscriber.name().to_owned(),
            type_name: missing.type_name(),
        })
}

/// Fails unless the subscriber's handler takes exactly one payload
/// parameter. (`#[subscriber]` checks this at compile time; a handler given
/// to `Subscriber::new` is checked here.)
pub(crate) fn check_payloads(subscriber: &Subscriber) -> Result<(), Error> {
    match subscriber.handler().payloads() {
        1 => Ok(()),
        0 => Err(Error::Config(format!(
            "`{}` takes no payload parameter: add one, an event type (#[derive(flowgate::Event)]) or flowgate::Message<YourEvent>",
            subscriber.name()
        ))),
        n => Err(Error::Config(format!(
            "`{}` takes {n} payload parameters, and a message has one payload: keep one event (or flowgate::Message<YourEvent>) parameter",
            subscriber.name()
        ))),
    }
}

pub(crate) fn check_subscriber(subscriber: &Subscriber) -> Result<(), Error> {
    let spec = subscriber.spec();
    spec.validate()?;
    if let Some(dead_letter) = subscriber.dead_letter_subject() {
        // A wildcard channel's default dead letters go to `dlq.<subject>`
        // of each message: a pattern here, and concrete per message.
        if crate::is_pattern(&spec.channel)
            && dead_letter
                == DeadLetter::PerChannel
                    .subject_for(&spec.channel)
                    .unwrap_or_default()
        {
            crate::validate_channel_pattern(&dead_letter)?;
        } else {
            crate::validate_channel(&dead_letter)?;
        }
        if crate::patterns_overlap(&dead_letter, &spec.channel) {
            return Err(Error::Config(format!(
                "`{}` dead-letters to `{dead_letter}`, which its own channel `{}` matches: failed messages would loop; choose another dead-letter subject",
                subscriber.name(),
                spec.channel
            )));
        }
    }
    if spec.ack == crate::AckMode::Coalesced && spec.queue.is_some() {
        return Err(Error::Config(format!(
            "`{}` combines coalesced acks with queue group {:?}: one member's ack would settle messages another still holds; use ack = \"auto\" for queue groups",
            subscriber.name(),
            spec.queue.as_deref().unwrap_or_default()
        )));
    }
    if let Some(timeout) = subscriber.failure().timeout {
        if timeout.is_zero() {
            return Err(Error::Config(format!(
                "`{}` has a timeout of 0: every attempt would time out; set a positive timeout or none",
                subscriber.name()
            )));
        }
    }
    Ok(())
}

/// Coalesced acks need a failure budget: a failing message holds back the
/// acks of every message after it until it is handled or dead-lettered.
pub(crate) fn check_coalesced_budget(subscriber: &Subscriber) -> Result<(), Error> {
    let spec = subscriber.spec();
    if spec.ack == crate::AckMode::Coalesced && spec.max_deliver.is_none() {
        return Err(Error::Config(format!(
            "`{}` asks for coalesced acks with no failure budget: a message that keeps failing would hold back every ack after it forever; set max_deliver",
            subscriber.name()
        )));
    }
    Ok(())
}

/// Where progress acks cannot hold a message, every in-process attempt of one
/// delivery (timeout × attempts + the backoff between them) must end within
/// the ack wait, or the broker redelivers a message that is still being tried.
pub(crate) fn check_fits_ack_wait(
    subscriber: &Subscriber,
    supports_progress: bool,
) -> Result<(), Error> {
    if supports_progress {
        return Ok(());
    }
    let spec = subscriber.spec();
    let failure = subscriber.failure();
    let Some(timeout) = failure.timeout else {
        tracing::warn!(
            subscriber = subscriber.name(),
            ack_wait = ?spec.ack_wait,
            "no handler timeout, and this transport cannot extend the ack wait: while a handler runs past it, the broker redelivers its message every ack wait (NATS Streaming's transport holds those redeliveries back until the handler ends); set a timeout below the ack wait to bound a hung handler"
        );
        return Ok(());
    };
    let (attempts, waits) = in_process_attempts(subscriber);
    let worst = timeout * attempts + waits;
    if worst >= spec.ack_wait {
        return Err(Error::Config(format!(
            "`{}` may spend {worst:?} on one delivery ({attempts} attempt(s) × timeout {timeout:?} + {waits:?} backoff), but the ack wait is {:?} and this transport cannot extend it: raise ack_wait, lower the timeout, or lower the retry policy's in-process limit",
            subscriber.name(),
            spec.ack_wait
        )));
    }
    Ok(())
}

/// The most attempts one delivery makes in-process, and the longest total
/// backoff between them.
fn in_process_attempts(subscriber: &Subscriber) -> (u32, Duration) {
    let policy = &subscriber.failure().retry;
    let backoff = policy.backoff();
    let budget = subscriber.spec().max_deliver.unwrap_or(u32::MAX);
    let mut attempts = 1;
    let mut waits = Duration::ZERO;
    while attempts < budget && attempts < 64 {
        let longest = backoff.delay_ceiling(attempts);
        if longest > policy.in_process_wait_limit() {
            break;
        }
        waits += longest;
        attempts += 1;
    }
    (attempts, waits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ping;

    impl crate::Event for Ping {
        const CHANNEL: Option<&'static str> = Some("pings");
        fn encode(&self) -> Result<bytes::Bytes, crate::EncodeError> {
            crate::codec::json::encode(self)
        }
        fn decode(payload: &[u8]) -> Result<Self, crate::DecodeError> {
            crate::codec::json::decode(payload)
        }
    }

    async fn handle(_ping: Ping) -> Result<(), std::io::Error> {
        Ok(())
    }

    #[test]
    fn retries_that_outlast_the_ack_wait_are_refused_without_progress_acks() {
        let subscriber = Subscriber::new("pings", handle)
            .ack_wait(Duration::from_secs(2))
            .timeout(Duration::from_secs(1));
        assert!(check_fits_ack_wait(&subscriber, true).is_ok());
        let err = check_fits_ack_wait(&subscriber, false).expect_err("5 × 1 s > 2 s");
        assert!(err.to_string().contains("raise ack_wait"), "{err}");
        let fits = subscriber.ack_wait(Duration::from_secs(30));
        assert!(check_fits_ack_wait(&fits, false).is_ok());
    }

    #[test]
    fn dead_letters_into_the_own_channel_are_refused() {
        let subscriber = Subscriber::new("pings", handle)
            .dead_letter(crate::DeadLetter::Subject("pings".into()));
        assert!(check_subscriber(&subscriber).is_err());
        let everything = Subscriber::new(">", handle);
        let err = check_subscriber(&everything).expect_err("`>` matches `dlq.>`");
        assert!(err.to_string().contains("dlq.>"), "{err}");
        let wildcard = Subscriber::new("orders.*", handle);
        assert_eq!(
            wildcard.dead_letter_subject().as_deref(),
            Some("dlq.orders.*")
        );
        assert!(check_subscriber(&wildcard).is_ok());
    }
}
