//! Run-time settings of declared subscribers: overrides by name reach the
//! subscribers `discover()` finds, from code and from a deserialized
//! settings value, and a name no subscriber has fails the start.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{publish_orders, within, Order, CHANNEL};
use flowgate::{App, Error, Failure, SubscriberSettings};
use flowgate_testkit::InMemory;

static ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// Always fails: each attempt is counted, so the budget shows.
#[flowgate::subscriber(channel = "orders.placed", durable = "billing", max_deliver = 5)]
async fn bill(_order: Order) -> Result<(), Failure> {
    ATTEMPTS.fetch_add(1, Ordering::SeqCst);
    Err(Failure::retryable(std::io::Error::other("card declined")))
}

fn from_json(text: &str) -> BTreeMap<String, SubscriberSettings> {
    serde_json::from_str(text).expect("valid settings")
}

#[tokio::test(start_paused = true)]
async fn deserialized_settings_override_a_discovered_subscriber_at_run_time() {
    let broker = InMemory::new();
    let settings = from_json(
        r#"{ "bill": { "durable": "billing-eu", "max_deliver": 2, "ack_wait": "2s",
                       "dead_letter": "orders.failed" } }"#,
    );
    // Settings first, discovery after: the order does not matter.
    let app = App::new()
        .settings(settings)
        .discover()
        .start(broker.clone())
        .await
        .expect("app starts");
    publish_orders(&broker, [1]).await;
    within(broker.wait_until(|b| !b.channel_messages("orders.failed").is_empty())).await;

    assert_eq!(
        ATTEMPTS.load(Ordering::SeqCst),
        2,
        "the budget is the settings' max_deliver, not the attribute's 5"
    );
    assert!(
        broker.consumer_info(CHANNEL, "billing-eu").is_some(),
        "the durable is the settings' name"
    );
    assert!(broker.consumer_info(CHANNEL, "billing").is_none());
    assert!(broker.channel_messages("dlq.orders.placed").is_empty());
    app.shutdown().await.expect("clean shutdown");
}

#[test]
fn settings_from_code_reach_the_spec_and_later_ones_win_per_field() {
    let app = App::new()
        .configure(
            "bill",
            SubscriberSettings {
                max_in_flight: Some(4),
                durable: Some("billing-us".into()),
                ..Default::default()
            },
        )
        .discover()
        .configure(
            "bill",
            SubscriberSettings {
                max_in_flight: Some(16),
                ..Default::default()
            },
        );
    let bill = app
        .subscribers()
        .iter()
        .find(|s| s.name() == "bill")
        .expect("discovered");
    assert_eq!(bill.spec().max_in_flight, 16);
    assert_eq!(bill.spec().durable.as_deref(), Some("billing-us"));
    assert_eq!(bill.spec().max_deliver, Some(5), "kept from the attribute");
}

#[tokio::test]
async fn settings_naming_no_subscriber_fail_the_start_with_the_known_names() {
    let err = App::new()
        .discover()
        .settings(from_json(r#"{ "bil": { "max_in_flight": 8 } }"#))
        .start(InMemory::new())
        .await
        .expect_err("a typo in the settings is refused");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("`bil`") && message.contains("bill"),
        "{message}"
    );
}

#[test]
fn bad_settings_values_are_refused_when_deserialized() {
    for (text, expected) in [
        (r#"{ "bill": { "ack_wait": "soon" } }"#, "not a duration"),
        (r#"{ "bill": { "max_inflight": 8 } }"#, "unknown field"),
        (r#"{ "bill": { "max_in_flight": -1 } }"#, "invalid value"),
    ] {
        let err = serde_json::from_str::<BTreeMap<String, SubscriberSettings>>(text)
            .expect_err(text)
            .to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[tokio::test]
async fn settings_pass_the_checks_the_attribute_does() {
    for (text, expected) in [
        (r#"{ "bill": { "max_in_flight": 0 } }"#, "max_in_flight"),
        (r#"{ "bill": { "durable": "billing eu" } }"#, "billing eu"),
    ] {
        let err = App::new()
            .discover()
            .settings(from_json(text))
            .start(InMemory::new())
            .await
            .expect_err(text);
        assert!(err.to_string().contains(expected), "{text}: {err}");
    }
}
