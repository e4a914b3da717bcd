//! The publish window on the in-memory broker, whose acks are settled before
//! the window first polls them: a failed ack is still reported in order, when
//! its event is the oldest, and a channel option is checked on every change.

use flowgate::{PublishError, PublishOptions, Publisher};
use flowgate_testkit::InMemory;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "window.jobs")]
struct Job {
    id: u64,
}

fn stored_ids(broker: &InMemory, channel: &str) -> Vec<u64> {
    broker
        .channel_messages(channel)
        .iter()
        .map(|m| serde_json::from_slice::<Job>(&m.payload).expect("a job").id)
        .collect()
}

#[tokio::test]
async fn an_ack_that_failed_at_once_is_reported_when_its_event_is_the_oldest() {
    let broker = InMemory::new();
    let mut window = Publisher::new(broker.clone()).window(2);
    assert_eq!(window.publish(&Job { id: 0 }).await.expect("sent"), 0);
    broker.fail_next_publish("window.jobs");
    // Refused at once, but #0 is still ahead of it.
    assert_eq!(window.publish(&Job { id: 1 }).await.expect("sent"), 1);
    // Full: #0 (stored) leaves the window.
    assert_eq!(window.publish(&Job { id: 2 }).await.expect("sent"), 2);
    // Full: #1 leaves the window, and is reported; #3 is sent all the same.
    let failures = match window.publish(&Job { id: 3 }).await {
        Err(PublishError::NotStored { failures }) => failures,
        other => panic!("expected #1 not stored, got {other:?}"),
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].number, 1);
    assert_eq!(failures[0].payload.as_ref(), br#"{"id":1}"#);
    assert_eq!(window.outstanding(), 2);
    window.flush().await.expect("#2 and #3 stored");
    assert_eq!(window.outstanding(), 0);
    assert_eq!(stored_ids(&broker, "window.jobs"), vec![0, 2, 3]);
}

#[tokio::test]
async fn a_channel_option_is_checked_whenever_it_changes() {
    let broker = InMemory::new();
    let mut window = Publisher::new(broker.clone()).window(8);
    let to = |channel: &str| PublishOptions::new().channel(channel);
    window
        .publish_with(&Job { id: 0 }, to("window.a"))
        .await
        .expect("a valid channel");
    window
        .publish_with(&Job { id: 1 }, to("window.a"))
        .await
        .expect("the same channel");
    for refused in ["window..a", "window.*", "window.a "] {
        let err = window
            .publish_with(&Job { id: 9 }, to(refused))
            .await
            .expect_err("an invalid channel after a valid one");
        assert!(
            matches!(err, PublishError::Name(_)),
            "`{refused}`: expected a name error, got {err:?}"
        );
    }
    window
        .publish_with(&Job { id: 2 }, to("window.a"))
        .await
        .expect("the valid channel again");
    window.flush().await.expect("all stored");
    assert_eq!(stored_ids(&broker, "window.a"), vec![0, 1, 2]);
    assert!(broker.channel_messages("window..a").is_empty());
}
