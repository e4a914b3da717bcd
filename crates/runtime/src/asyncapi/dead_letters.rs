//! The dead-letter message: the original payload, and headers that say
//! where it came from and why it failed (see [`crate::dead_letter`]).

use serde_json::{json, Value};

use crate::dead_letter::{
    ATTEMPTS, DURABLE, FAILED_AT, LAST_ERROR, ORIGINAL_SEQUENCE, ORIGINAL_SUBJECT,
};

/// The key of the dead-letter headers' schema in `components.schemas`.
pub(crate) const HEADERS_SCHEMA: &str = "FlowgateDeadLetterHeaders";

/// The schema of the headers every dead letter carries.
pub(crate) fn headers_schema() -> Value {
    let string = |description: &str| json!({ "type": "string", "description": description });
    let integer = |description: &str| json!({ "type": "string", "pattern": "^[0-9]+$", "description": description });
    json!({
        "type": "object",
        "title": "Flowgate dead-letter headers",
        "description": "NATS headers of a dead letter: where the message came from and why it \
                        could not be handled. `traceparent` and `tracestate` carry its trace \
                        context when it had one.",
        "required": [ORIGINAL_SUBJECT, ORIGINAL_SEQUENCE, ATTEMPTS, LAST_ERROR, FAILED_AT, DURABLE],
        "properties": {
            ORIGINAL_SUBJECT: string("The subject the message was first published on."),
            ORIGINAL_SEQUENCE: integer("Its sequence in the original stream."),
            ATTEMPTS: integer("The attempts made at handling it."),
            LAST_ERROR: string("The last error, as one line of text."),
            FAILED_AT: {
                "type": "string",
                "format": "date-time",
                "description": "When it was dead-lettered (RFC 3339, UTC)."
            },
            DURABLE: string("The durable (or queue group) that gave up on it."),
            "traceparent": string("W3C trace context of the original message, when it had one."),
            "tracestate": string("W3C trace state of the original message, when it had one."),
        }
    })
}

/// The dead-letter message for messages described by `original` (a
/// message object of the document).
pub(crate) fn message(original_key: &str, original: &Value) -> Value {
    let mut payload = original
        .get("payload")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let note = "The original message's bytes, unchanged: they may not decode (see \
                Flowgate-Last-Error).";
    match payload.as_object_mut() {
        // A multi-format schema takes no description beside its format.
        Some(object) if !object.contains_key("schemaFormat") && !object.contains_key("$ref") => {
            object
                .entry("description")
                .or_insert_with(|| Value::String(note.to_owned()));
        }
        _ => {}
    }
    let mut message = json!({
        "name": format!("{original_key}DeadLetter"),
        "title": format!("Dead letter of {original_key}"),
        "summary": "A message its subscriber could not handle: its failure budget was spent, \
                    its error was permanent, or its payload did not decode.",
        "headers": { "$ref": format!("#/components/schemas/{HEADERS_SCHEMA}") },
        "payload": payload,
    });
    if let Some(content_type) = original.get("contentType") {
        message["contentType"] = content_type.clone();
    }
    message
}
