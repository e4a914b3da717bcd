//! The subscription request a [`SubscriptionSpec`] becomes.

use std::time::SystemTime;

use super::proto::{self, SubscriptionRequest};
use crate::{StartPosition, SubscriptionSpec};

/// The subscription request for `spec`; `resume_at` overrides the start.
pub(crate) fn subscription_request(
    spec: &SubscriptionSpec,
    client_id: &str,
    inbox: &str,
    resume_at: Option<u64>,
    now: SystemTime,
) -> SubscriptionRequest {
    let mut request = SubscriptionRequest {
        client_id: client_id.to_owned(),
        subject: spec.channel.clone(),
        q_group: spec.queue.clone().unwrap_or_default(),
        inbox: inbox.to_owned(),
        max_in_flight: i32::try_from(spec.max_in_flight).unwrap_or(i32::MAX),
        ack_wait_in_secs: i32::try_from(spec.ack_wait.as_secs_f64().ceil() as u64)
            .unwrap_or(i32::MAX)
            .max(1),
        durable_name: spec.durable.clone().unwrap_or_default(),
        ..Default::default()
    };
    let start = match resume_at {
        Some(sequence) => StartPosition::Sequence(sequence),
        None => spec.start,
    };
    let position = match start {
        StartPosition::New => proto::StartPosition::NewOnly,
        StartPosition::Last => proto::StartPosition::LastReceived,
        StartPosition::All => proto::StartPosition::First,
        StartPosition::Sequence(sequence) => {
            request.start_sequence = sequence;
            proto::StartPosition::SequenceStart
        }
        StartPosition::Time(at) => {
            let delta = now.duration_since(at).unwrap_or_default();
            request.start_time_delta = i64::try_from(delta.as_nanos()).unwrap_or(i64::MAX);
            proto::StartPosition::TimeDeltaStart
        }
    };
    request.set_start_position(position);
    request
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn spec_maps_to_the_subscription_request() {
        let mut spec = SubscriptionSpec::new("orders.placed").with_durable("billing");
        spec.queue = Some("workers".into());
        spec.max_in_flight = 32;
        spec.ack_wait = Duration::from_millis(1500);
        spec.start = StartPosition::Sequence(10);
        let request = subscription_request(&spec, "c1", "_INBOX.x", None, SystemTime::now());
        assert_eq!(request.q_group, "workers");
        assert_eq!(request.durable_name, "billing");
        assert_eq!(request.max_in_flight, 32);
        assert_eq!(request.ack_wait_in_secs, 2);
        assert_eq!(
            request.start_position(),
            proto::StartPosition::SequenceStart
        );
        assert_eq!(request.start_sequence, 10);
    }

    #[test]
    fn time_start_is_a_delta_from_now_and_resume_overrides() {
        let now = SystemTime::now();
        let mut spec = SubscriptionSpec::new("orders.placed");
        spec.start = StartPosition::Time(now - Duration::from_secs(3));
        let request = subscription_request(&spec, "c1", "i", None, now);
        assert_eq!(
            request.start_position(),
            proto::StartPosition::TimeDeltaStart
        );
        assert_eq!(request.start_time_delta, 3_000_000_000);
        let resumed = subscription_request(&spec, "c1", "i", Some(42), now);
        assert_eq!(
            resumed.start_position(),
            proto::StartPosition::SequenceStart
        );
        assert_eq!(resumed.start_sequence, 42);
        spec.start = StartPosition::All;
        let all = subscription_request(&spec, "c1", "i", None, now);
        assert_eq!(all.start_position(), proto::StartPosition::First);
    }
}
