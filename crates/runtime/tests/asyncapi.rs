//! `App::asyncapi()` makes documents that the official AsyncAPI 3.0 JSON
//! Schema accepts (vendored in tests/fixtures, see its README), and says
//! what the registrations say. No broker is needed.

use std::sync::OnceLock;

use flowgate::{App, DeadLetter, Subscriber};
use serde_json::Value;

/// A JSON event; with the `schemars` feature, its JSON Schema is in the document.
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
    lines: Vec<Line>,
    note: Option<String>,
}

/// A nested type: a definition under `components.schemas`.
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Line {
    sku: String,
    quantity: u32,
}

/// A JSON event without a JSON Schema: named by its type only.
#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.cancelled")]
struct OrderCancelled {
    id: u64,
}

/// A protobuf event defined by proto/telemetry.proto.
#[derive(Clone, PartialEq, prost::Message, flowgate::Event)]
#[event(
    channel = "telemetry.readings",
    codec = "protobuf",
    proto = "../../proto/telemetry.proto"
)]
struct Reading {
    #[prost(string, tag = "1")]
    sensor_id: String,
    #[prost(double, tag = "2")]
    value: f64,
    #[prost(int64, tag = "3")]
    taken_at_unix_ms: i64,
}

/// A protobuf event with no .proto named.
#[derive(Clone, PartialEq, prost::Message, flowgate::Event)]
#[event(codec = "protobuf")]
struct Shipped {
    #[prost(uint64, tag = "1")]
    order_id: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("nope")]
struct Nope;

/// Discovered by `App::discover()`.
#[flowgate::subscriber(durable = "billing", max_deliver = 5, ack_wait = "1m", timeout = "10s")]
async fn bill(_order: OrderPlaced) -> Result<(), Nope> {
    Ok(())
}

/// A queue subscriber on a wildcard channel, dead letters off.
#[flowgate::subscriber(channel = "telemetry.>", queue = "recorders", dead_letter = false)]
async fn record(_reading: flowgate::Message<Reading>) -> Result<(), Nope> {
    Ok(())
}

async fn cancel(_order: OrderCancelled) -> Result<(), Nope> {
    Ok(())
}

async fn ship(_shipped: Shipped) -> Result<(), Nope> {
    Ok(())
}

/// The app of most tests: discovered subscribers and hand-built ones.
fn app() -> App {
    App::new()
        .discover()
        .subscriber(Subscriber::new("orders.cancelled", cancel).named("cancel"))
        .subscriber(
            Subscriber::new("orders.*.shipped", ship)
                .named("ship")
                .durable("shipping")
                .dead_letter(DeadLetter::Subject("orders.failed".into())),
        )
}

/// The validator of the vendored AsyncAPI 3.0.0 schema.
fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(include_str!("fixtures/asyncapi-3.0.0.json"))
            .expect("the fixture is JSON");
        jsonschema::validator_for(&schema).expect("the AsyncAPI schema compiles")
    })
}

/// Every validation error in `document`, as text.
fn errors(document: &Value) -> Vec<String> {
    validator()
        .iter_errors(document)
        .map(|err| format!("{} at {}", err, err.instance_path()))
        .collect()
}

#[track_caller]
fn assert_valid(document: &Value) {
    let errors = errors(document);
    assert!(
        errors.is_empty(),
        "invalid AsyncAPI document:\n{}\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(document).unwrap_or_default()
    );
}

#[test]
fn the_document_is_valid_asyncapi_3() {
    let doc = app()
        .asyncapi()
        .title("shop")
        .version("1.0.0")
        .description("Orders and telemetry.")
        .server("local", "nats://127.0.0.1:4222");
    assert_valid(&doc.to_json_value());
    // The text forms say the same.
    let from_json: Value = serde_json::from_str(&doc.to_json()).expect("JSON");
    assert_eq!(from_json, doc.to_json_value());
}

#[test]
fn an_empty_app_is_valid_with_the_default_info() {
    let value = App::new().asyncapi().to_json_value();
    assert_valid(&value);
    assert_eq!(value["info"]["title"], "flowgate app");
    assert_eq!(value["info"]["version"], "0.0.0");
}

#[test]
fn the_yaml_parses_back_to_the_same_document() {
    let doc = app().asyncapi();
    let from_yaml: Value = serde_yaml_ng::from_str(&doc.to_yaml()).expect("YAML");
    assert_eq!(from_yaml, doc.to_json_value());
    assert!(
        doc.to_yaml().starts_with("asyncapi: 3.0.0\n"),
        "{}",
        doc.to_yaml()
    );
}

#[test]
fn broken_documents_fail_validation() {
    let good = app().asyncapi().to_json_value();

    // At the top level.
    let mut no_title = good.clone();
    no_title["info"]
        .as_object_mut()
        .expect("info")
        .remove("title");
    assert!(
        !errors(&no_title).is_empty(),
        "a document without info.title passed"
    );

    // Deep inside: only a validator that follows the schema's references
    // (channels → channel → operation → ...) sees these.
    let mut bad_action = good.clone();
    bad_action["operations"]["bill"]["action"] = "push".into();
    assert!(
        !errors(&bad_action).is_empty(),
        "an operation with action `push` passed"
    );

    let mut bad_address = good.clone();
    bad_address["channels"]["orders.placed"]["address"] = 42.into();
    assert!(
        !errors(&bad_address).is_empty(),
        "a numeric channel address passed"
    );

    let mut bad_binding = good.clone();
    bad_binding["operations"]["record"]["bindings"]["nats"]["queue"] = "q".repeat(300).into();
    assert!(
        !errors(&bad_binding).is_empty(),
        "a NATS queue of 300 characters passed"
    );

    let mut bad_content_type = good;
    bad_content_type["components"]["messages"]["OrderPlaced"]["contentType"] = true.into();
    assert!(
        !errors(&bad_content_type).is_empty(),
        "a boolean contentType passed"
    );
}

#[test]
fn channels_have_the_subjects_and_dead_letter_subjects() {
    let value = app().asyncapi().to_json_value();
    let channels = value["channels"].as_object().expect("channels");
    let mut addresses: Vec<&str> = channels
        .values()
        .map(|c| c["address"].as_str().expect("an address"))
        .collect();
    addresses.sort_unstable();
    assert_eq!(
        addresses,
        [
            "dlq.orders.cancelled",
            "dlq.orders.placed",
            "orders.*.shipped",
            "orders.cancelled",
            "orders.failed",
            "orders.placed",
            "telemetry.>",
        ],
        "record has dead letters off: no dlq.telemetry.>"
    );
    // Wildcards stay in the address; the key is made valid.
    assert_eq!(channels["telemetry.rest"]["address"], "telemetry.>");
    assert_eq!(
        channels["orders.any.shipped"]["address"],
        "orders.*.shipped"
    );
    assert_eq!(
        channels["orders.placed"]["messages"]["OrderPlaced"]["$ref"],
        "#/components/messages/OrderPlaced"
    );
}

#[test]
fn operations_say_how_each_subscriber_subscribes() {
    let value = app().asyncapi().to_json_value();
    let operations = &value["operations"];

    let bill = &operations["bill"];
    assert_eq!(bill["action"], "receive");
    assert_eq!(bill["channel"]["$ref"], "#/channels/orders.placed");
    assert_eq!(
        bill["messages"][0]["$ref"],
        "#/channels/orders.placed/messages/OrderPlaced"
    );
    let settings = &bill["x-flowgate"];
    assert_eq!(settings["durable"], "billing");
    assert_eq!(settings["maxDeliver"], 5);
    assert_eq!(settings["ackWait"], "1m");
    assert_eq!(settings["timeout"], "10s");
    assert_eq!(settings["deadLetter"], "dlq.orders.placed");
    assert!(bill.get("bindings").is_none());

    let record = &operations["record"];
    assert_eq!(record["bindings"]["nats"]["queue"], "recorders");
    assert_eq!(record["x-flowgate"]["queue"], "recorders");
    assert_eq!(record["x-flowgate"]["deadLetter"], Value::Null);
    assert!(operations.get("record.dead_letter").is_none());

    let dead = &operations["bill.dead_letter"];
    assert_eq!(dead["action"], "send");
    assert_eq!(dead["channel"]["$ref"], "#/channels/dlq.orders.placed");
    assert_eq!(
        dead["messages"][0]["$ref"],
        "#/channels/dlq.orders.placed/messages/OrderPlacedDeadLetter"
    );
    assert_eq!(
        operations["ship.dead_letter"]["channel"]["$ref"],
        "#/channels/orders.failed"
    );
}

#[test]
fn messages_carry_content_types_and_payloads() {
    let value = app().asyncapi().to_json_value();
    let messages = &value["components"]["messages"];

    let placed = &messages["OrderPlaced"];
    assert_eq!(placed["contentType"], "application/json");
    if cfg!(feature = "schemars") {
        assert_eq!(placed["payload"]["type"], "object");
        assert_eq!(placed["payload"]["properties"]["id"]["type"], "integer");
        assert_eq!(
            placed["payload"]["properties"]["lines"]["items"]["$ref"],
            "#/components/schemas/Line"
        );
        assert_eq!(
            value["components"]["schemas"]["Line"]["properties"]["sku"]["type"],
            "string"
        );
    } else {
        assert_eq!(placed["payload"]["title"], "OrderPlaced");
        assert!(placed["payload"].get("properties").is_none());
    }

    // No JsonSchema: the type's name only, with or without the feature.
    let cancelled = &messages["OrderCancelled"];
    assert_eq!(cancelled["contentType"], "application/json");
    assert_eq!(cancelled["payload"]["title"], "OrderCancelled");
    assert!(cancelled["payload"].get("properties").is_none());
    assert!(cancelled["x-flowgate-type"]
        .as_str()
        .is_some_and(|t| t.ends_with("::OrderCancelled")));

    // Protobuf, with its .proto source as a multi-format schema.
    let reading = &messages["Reading"];
    assert_eq!(reading["contentType"], "application/x-protobuf");
    assert_eq!(
        reading["payload"]["schemaFormat"],
        "application/vnd.google.protobuf;version=3"
    );
    assert_eq!(
        reading["payload"]["schema"],
        include_str!("../../../proto/telemetry.proto")
    );
    assert_eq!(reading["payload"]["x-flowgate-proto-message"], "Reading");
    let shipped = &messages["Shipped"];
    assert_eq!(shipped["contentType"], "application/x-protobuf");
    assert_eq!(shipped["payload"]["title"], "Shipped");

    // Dead letters: the Flowgate-* headers, the original's content type.
    let dead = &messages["OrderPlacedDeadLetter"];
    assert_eq!(dead["contentType"], "application/json");
    assert_eq!(
        dead["headers"]["$ref"],
        "#/components/schemas/FlowgateDeadLetterHeaders"
    );
    let headers = &value["components"]["schemas"]["FlowgateDeadLetterHeaders"];
    for header in [
        flowgate::dead_letter::ORIGINAL_SUBJECT,
        flowgate::dead_letter::ORIGINAL_SEQUENCE,
        flowgate::dead_letter::ATTEMPTS,
        flowgate::dead_letter::LAST_ERROR,
        flowgate::dead_letter::FAILED_AT,
        flowgate::dead_letter::DURABLE,
    ] {
        assert!(headers["properties"].get(header).is_some(), "{header}");
        assert!(
            headers["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|h| h == header)),
            "{header}"
        );
    }
}

#[test]
fn subscribers_of_one_channel_share_it() {
    let doc = App::new()
        .subscriber(
            Subscriber::new("orders.placed", bill)
                .named("bill")
                .durable("billing"),
        )
        .subscriber(
            Subscriber::new("orders.placed", bill)
                .named("audit")
                .durable("audit"),
        )
        .asyncapi();
    let value = doc.to_json_value();
    assert_valid(&value);
    assert_eq!(value["channels"].as_object().map(|c| c.len()), Some(2));
    assert_eq!(
        value["operations"]["audit"]["x-flowgate"]["durable"],
        "audit"
    );
    assert_eq!(
        value["operations"]["audit"]["channel"],
        value["operations"]["bill"]["channel"]
    );
    assert_eq!(
        value["operations"]["audit.dead_letter"]["channel"]["$ref"],
        "#/channels/dlq.orders.placed"
    );
}

#[test]
fn a_wildcard_channel_dead_letters_on_a_pattern() {
    let value = App::new()
        .subscriber(Subscriber::new("orders.*", bill).named("bill"))
        .asyncapi()
        .to_json_value();
    assert_valid(&value);
    let channel = &value["channels"]["dlq.orders.any"];
    assert_eq!(channel["address"], "dlq.orders.*");
    assert!(channel["description"]
        .as_str()
        .is_some_and(|d| d.contains("dlq.<its original subject>")));
    // Settings left at their defaults, and the unset ones left out.
    let settings = &value["operations"]["bill"]["x-flowgate"];
    assert_eq!(settings["maxDeliver"], 10);
    assert_eq!(settings["ackWait"], "30s");
    assert!(settings.get("durable").is_none() && settings.get("timeout").is_none());
}
