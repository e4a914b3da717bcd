//! [`EventSchema`]: what a document says about one payload type.

use serde_json::{json, Value};

/// What an AsyncAPI document says about one payload type: its Rust name, the
/// content type of its codec, and its schema when one is known.
///
/// `#[derive(flowgate::Event)]` fills it in through
/// [`Event::asyncapi_schema`](crate::Event::asyncapi_schema): the codec's
/// content type, a JSON Schema when the type also derives
/// `schemars::JsonSchema` (with flowgate's `schemars` feature), or the `.proto`
/// file named by `#[event(proto = "...")]`. A hand-written `Event` names its
/// type only, unless it says more with these builders.
///
/// ```
/// use flowgate::asyncapi::EventSchema;
///
/// let schema = EventSchema::named("shop::OrderPlaced")
///     .with_content_type("application/json")
///     .with_json_schema(serde_json::json!({"type": "object"}));
/// assert_eq!(schema.name(), "OrderPlaced");
/// assert_eq!(schema.type_name(), "shop::OrderPlaced");
/// assert_eq!(schema.content_type(), Some("application/json"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EventSchema {
    type_name: &'static str,
    content_type: Option<&'static str>,
    payload: Payload,
}

/// What is known of the payload's shape.
#[derive(Debug, Clone, PartialEq)]
enum Payload {
    /// The type's name only.
    Named,
    /// A JSON Schema (draft 07), its `$ref`s pointing into
    /// `#/components/schemas/`.
    Json(Value),
    /// The source of the `.proto` file that defines the message.
    Proto {
        path: &'static str,
        source: &'static str,
    },
}

/// The content type of the JSON codec.
pub const JSON: &str = "application/json";
/// The content type of the protobuf codec.
pub const PROTOBUF: &str = "application/x-protobuf";

impl EventSchema {
    /// The type called `type_name` (as `std::any::type_name` spells it),
    /// nothing else known.
    pub fn named(type_name: &'static str) -> Self {
        Self {
            type_name,
            content_type: None,
            payload: Payload::Named,
        }
    }

    /// Its payload's media type (`application/json`, `application/x-protobuf`).
    pub fn with_content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = Some(content_type);
        self
    }

    /// Its JSON Schema (draft 07). `$ref`s into `#/components/schemas/` are
    /// kept: the document holds those schemas under that path.
    pub fn with_json_schema(mut self, schema: Value) -> Self {
        self.payload = Payload::Json(schema);
        self
    }

    /// The `.proto` file at `path` defines it; `source` is that file's text.
    pub fn with_proto(mut self, path: &'static str, source: &'static str) -> Self {
        self.payload = Payload::Proto { path, source };
        self
    }

    /// The full Rust type name.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The type's name without its module path (`OrderPlaced`).
    pub fn name(&self) -> &'static str {
        short_name(self.type_name)
    }

    /// The payload's media type, when it is known.
    pub fn content_type(&self) -> Option<&'static str> {
        self.content_type
    }

    /// The payload as an AsyncAPI (multi-format) schema object, and the JSON
    /// Schema definitions it refers to, for `components.schemas`.
    pub(crate) fn payload(&self) -> (Value, serde_json::Map<String, Value>) {
        match &self.payload {
            Payload::Named => (
                json!({ "title": self.name(), "x-flowgate-type": self.type_name }),
                serde_json::Map::new(),
            ),
            Payload::Json(schema) => super::components::split_definitions(schema.clone()),
            Payload::Proto { path, source } => (
                json!({
                    "schemaFormat": format!(
                        "application/vnd.google.protobuf;version={}",
                        proto_version(source)
                    ),
                    "schema": source,
                    "x-flowgate-proto-file": path,
                    "x-flowgate-proto-message": self.name(),
                }),
                serde_json::Map::new(),
            ),
        }
    }
}

/// `a::b::C` → `C`; generic arguments are kept (`Wrapper<a::C>` → `Wrapper<a::C>`).
fn short_name(type_name: &str) -> &str {
    let plain = type_name.split('<').next().unwrap_or(type_name);
    match plain.rfind("::") {
        Some(at) => &type_name[at + 2..],
        None => type_name,
    }
}

/// The protobuf version of a `.proto` source: 2 when it says
/// `syntax = "proto2"`, 3 otherwise (editions read as proto3 here).
fn proto_version(source: &str) -> u8 {
    let proto2 = source.lines().any(|line| {
        let line: String = line
            .split("//")
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        line.starts_with("syntax=\"proto2\"") || line.starts_with("syntax='proto2'")
    });
    if proto2 {
        2
    } else {
        3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_name_drops_the_module_path() {
        assert_eq!(short_name("shop::orders::OrderPlaced"), "OrderPlaced");
        assert_eq!(short_name("OrderPlaced"), "OrderPlaced");
        assert_eq!(short_name("shop::W<shop::X>"), "W<shop::X>");
    }

    #[test]
    fn the_proto_version_comes_from_its_syntax_line() {
        assert_eq!(proto_version("syntax = \"proto2\";\nmessage A {}"), 2);
        assert_eq!(proto_version("syntax = \"proto3\";"), 3);
        assert_eq!(proto_version("// syntax = \"proto2\"\nmessage A {}"), 3);
    }

    #[test]
    fn a_type_without_schema_is_named() {
        let (payload, defs) = EventSchema::named("shop::Order").payload();
        assert_eq!(payload["title"], "Order");
        assert_eq!(payload["x-flowgate-type"], "shop::Order");
        assert!(defs.is_empty());
    }
}
