//! Handlers with state and extractors, on the in-memory broker: every
//! parameter is built for each attempt, a missing state fails start, and an
//! extractor's rejection settles the message like an undecodable payload.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::extract::{Attempt, FromRequest, Publisher, Rejection, State, StateMap, Subject};
use flowgate::{App, Error, Failure, Headers, Request, Subscriber};
use flowgate_testkit::{call, InMemory, Outcome};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "extract.orders")]
struct Order {
    id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "extract.invoices")]
struct Invoice {
    order_id: u64,
    attempt: u32,
}

/// What a handler saw of one attempt: order id, where, attempt, trace header.
type Row = (u64, String, u32, Option<String>);

/// A fake database: what the handler wrote, seen by the test.
#[derive(Clone, Default)]
struct Db(Arc<Mutex<Vec<Row>>>);

impl Db {
    fn insert(&self, row: Row) {
        self.0.lock().expect("not poisoned").push(row);
    }

    fn rows(&self) -> Vec<Row> {
        self.0.lock().expect("not poisoned").clone()
    }
}

/// A second state type, so the app holds more than one.
#[derive(Clone)]
struct Region(&'static str);

/// The tenant a message belongs to, from its `tenant` header; a message
/// without one is rejected.
struct Tenant(String);

impl FromRequest for Tenant {
    fn from_request(request: &Request, _state: &StateMap) -> Result<Self, Rejection> {
        request
            .metadata()
            .headers()
            .and_then(|headers| headers.get("tenant"))
            .map(|tenant| Tenant(tenant.as_str().to_owned()))
            .ok_or_else(|| Rejection::new("the message has no `tenant` header"))
    }
}

/// A tenant directory that is down: its rejection asks for a retry.
struct FlakyTenant;

impl FromRequest for FlakyTenant {
    fn from_request(_request: &Request, _state: &StateMap) -> Result<Self, Rejection> {
        Err(Rejection::new(Failure::retry_after(
            Duration::from_secs(7),
            "tenant directory unavailable",
        )))
    }
}

#[flowgate::subscriber(durable = "billing", max_deliver = 3)]
async fn bill(
    Attempt(attempt): Attempt,
    State(db): State<Db>,
    order: Order,
    invoices: Publisher<Invoice>,
    Subject(subject): Subject,
    headers: Headers,
    State(region): State<Region>,
) -> Result<(), flowgate::BoxError> {
    let trace = headers.get("trace").map(|v| v.as_str().to_owned());
    db.insert((order.id, format!("{subject}@{}", region.0), attempt, trace));
    if attempt == 1 {
        return Err(Failure::retry_after(Duration::from_secs(1), "first attempt fails").into());
    }
    invoices
        .publish(&Invoice {
            order_id: order.id,
            attempt,
        })
        .await?;
    Ok(())
}

#[flowgate::subscriber(channel = "extract.tenants", durable = "tenants")]
async fn per_tenant(
    Tenant(tenant): Tenant,
    order: Order,
    State(db): State<Db>,
) -> Result<(), std::io::Error> {
    db.insert((order.id, tenant, 1, None));
    Ok(())
}

#[flowgate::subscriber(channel = "extract.flaky", durable = "flaky")]
async fn flaky(order: Order, _tenant: FlakyTenant) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn every_parameter_is_built_for_each_attempt_in_any_order() {
    let broker = InMemory::new();
    let db = Db::default();
    let app = App::new()
        .state(db.clone())
        .state(Region("eu"))
        .subscriber(bill::subscriber())
        .start(broker.clone())
        .await
        .expect("started");
    let mut headers = Headers::new();
    headers.insert("trace", "t-1");
    broker
        .publish_event_with(
            &Order { id: 4 },
            flowgate::PublishOptions::new().headers(headers),
        )
        .await
        .expect("published");
    broker
        .wait_until(|broker| !broker.channel_messages("extract.invoices").is_empty())
        .await;
    app.shutdown().await.expect("shut down");

    let seen = db.rows();
    let expected = |attempt| {
        (
            4,
            "extract.orders@eu".to_owned(),
            attempt,
            Some("t-1".to_owned()),
        )
    };
    assert_eq!(seen, [expected(1), expected(2)]);
    assert_eq!(
        broker.published::<Invoice>().expect("decodes"),
        [Invoice {
            order_id: 4,
            attempt: 2
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_state_fails_start_naming_the_handler_and_the_type() {
    let err = App::new()
        .state(Db::default())
        .subscriber(bill::subscriber())
        .start(InMemory::new())
        .await
        .expect_err("Region is missing");
    match &err {
        Error::MissingState {
            subscriber,
            type_name,
        } => {
            assert_eq!(subscriber, "bill");
            assert!(type_name.ends_with("Region"), "{type_name}");
        }
        other => panic!("not a missing state: {other:?}"),
    }
    assert!(err.to_string().contains("add `.state(value)`"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn call_takes_the_state_a_handler_needs() {
    let db = Db::default();
    let broker = InMemory::new();
    let outcome = call(bill::subscriber(), &Order { id: 9 })
        .state(db.clone())
        .state(Region("us"))
        .on(&broker)
        .await;
    assert_eq!(outcome, Outcome::Acked, "the in-process retry succeeds");
    let seen = db.rows();
    let attempts: Vec<_> = seen
        .iter()
        .map(|(_, at, attempt, _)| (at.as_str(), *attempt))
        .collect();
    assert_eq!(
        attempts,
        [("extract.orders@us", 1), ("extract.orders@us", 2)]
    );
    assert_eq!(broker.published::<Invoice>().expect("decodes").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_extractor_that_rejects_dead_letters_the_message_and_loses_nothing() {
    let db = Db::default();
    let broker = InMemory::new();
    let outcome = call(per_tenant::subscriber(), &Order { id: 5 })
        .state(db.clone())
        .on(&broker)
        .await;
    assert_eq!(outcome, Outcome::DeadLettered);
    assert!(db.rows().is_empty(), "the handler never ran");
    let dead = broker.channel_messages("dlq.extract.tenants");
    assert_eq!(dead.len(), 1, "dead-lettered, not dropped");
    let error = dead[0]
        .headers
        .as_ref()
        .and_then(|h| h.get(flowgate::dead_letter::LAST_ERROR))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(error.contains("no `tenant` header"), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn an_extractor_may_ask_for_a_retry() {
    assert_eq!(
        call(flaky::subscriber(), &Order { id: 6 }).await,
        Outcome::Nakked {
            delay: Some(Duration::from_secs(7))
        }
    );
}

/// Why an app of `app`'s subscribers does not start.
async fn start_error(app: App) -> String {
    app.start(InMemory::new())
        .await
        .expect_err("the app must not start")
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn a_closure_with_two_payloads_fails_start() {
    let twice = Subscriber::new("extract.twice", |a: Order, b: Order| async move {
        let _ = (a, b);
        Ok::<(), std::io::Error>(())
    })
    .named("twice");
    let err = start_error(App::new().subscriber(twice)).await;
    assert!(err.contains("`twice` takes 2 payload parameters"), "{err}");

    let none = Subscriber::new("extract.none", |Attempt(_): Attempt| async move {
        Ok::<(), std::io::Error>(())
    })
    .named("none");
    let err = start_error(App::new().subscriber(none)).await;
    assert!(err.contains("`none` takes no payload parameter"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_registered_twice_is_reported_as_such() {
    let app = App::new()
        .state(Db::default())
        .subscriber(per_tenant::subscriber())
        .subscriber(per_tenant::subscriber());
    let err = start_error(app).await;
    assert!(err.contains("`per_tenant` is registered twice"), "{err}");
}
