//! [`Document`]: an AsyncAPI 3.0 document, and how it is written out.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::collect::Contents;

/// An AsyncAPI 3.0 document of an app's registrations, made by
/// [`App::asyncapi`](crate::App::asyncapi).
///
/// It holds one channel per subscribed subject (wildcards as they are) and
/// per dead-letter subject, a `receive` operation per subscriber with its
/// durable, queue group and failure settings, a `send` operation for its
/// dead letters, and a message per payload type with its content type and
/// schema.
///
/// `info.title` is `"flowgate app"` and `info.version` `"0.0.0"` until
/// [`title`](Self::title) and [`version`](Self::version) say otherwise.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// #[event(channel = "orders.placed")]
/// struct OrderPlaced {
///     id: u64,
/// }
///
/// #[flowgate::subscriber(durable = "billing")]
/// async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
///     Ok(())
/// }
///
/// let app = flowgate::App::new().subscriber(bill::subscriber());
/// let doc = app
///     .asyncapi()
///     .title("shop")
///     .version("1.2.0")
///     .server("production", "nats://nats.example.com:4222");
/// let value = doc.to_json_value();
/// assert_eq!(value["asyncapi"], "3.0.0");
/// assert_eq!(value["info"]["title"], "shop");
/// assert_eq!(value["channels"]["orders.placed"]["address"], "orders.placed");
/// assert_eq!(value["operations"]["bill"]["action"], "receive");
/// assert_eq!(value["operations"]["bill"]["x-flowgate"]["durable"], "billing");
/// assert_eq!(value["components"]["messages"]["OrderPlaced"]["contentType"], "application/json");
/// assert_eq!(value["servers"]["production"]["host"], "nats.example.com:4222");
/// println!("{}", doc.to_yaml());
/// ```
#[derive(Debug, Clone)]
pub struct Document {
    title: String,
    version: String,
    description: Option<String>,
    servers: Map<String, Value>,
    contents: Contents,
}

/// The document's top level, in the order the specification lists it.
#[derive(Serialize)]
struct Wire<'a> {
    asyncapi: &'static str,
    info: Value,
    #[serde(skip_serializing_if = "Map::is_empty")]
    servers: &'a Map<String, Value>,
    channels: &'a Map<String, Value>,
    operations: &'a Map<String, Value>,
    components: Value,
}

impl Document {
    /// The title until [`title`](Self::title) sets one.
    pub const DEFAULT_TITLE: &'static str = "flowgate app";
    /// The version until [`version`](Self::version) sets one.
    pub const DEFAULT_VERSION: &'static str = "0.0.0";

    pub(crate) fn new(contents: Contents) -> Self {
        Self {
            title: Self::DEFAULT_TITLE.to_owned(),
            version: Self::DEFAULT_VERSION.to_owned(),
            description: None,
            servers: Map::new(),
            contents,
        }
    }

    /// The application's name (`info.title`).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// The version of the application's API (`info.version`), e.g. the
    /// crate's: `.version(env!("CARGO_PKG_VERSION"))`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// A longer description of the application (`info.description`,
    /// CommonMark).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Adds the NATS server `url` under `name` (`servers.<name>`): `host`
    /// is the url's host and port, `protocol` `nats` (`tls://` is NATS over
    /// TLS; `ws://` and `wss://` keep their scheme). User and password in
    /// the url are left out of the document.
    ///
    /// ```
    /// let doc = flowgate::App::new()
    ///     .asyncapi()
    ///     .server("eu", "tls://app:secret@nats-eu.example.com:4222");
    /// let server = &doc.to_json_value()["servers"]["eu"];
    /// assert_eq!(server["host"], "nats-eu.example.com:4222");
    /// assert_eq!(server["protocol"], "nats");
    /// assert!(!doc.to_json().contains("secret"));
    /// ```
    pub fn server(mut self, name: impl Into<String>, url: &str) -> Self {
        let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        let host = authority.rsplit('@').next().unwrap_or(authority);
        let mut server = json!({
            "host": host,
            "protocol": match scheme {
                "nats" | "tls" => "nats",
                other => other,
            },
        });
        if scheme == "tls" {
            server["description"] = json!("NATS over TLS.");
        }
        self.servers
            .insert(super::ids::component_id(&name.into()), server);
        self
    }

    /// The document as a JSON value.
    pub fn to_json_value(&self) -> Value {
        serde_json::to_value(self.wire()).unwrap_or(Value::Null)
    }

    /// The document as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Maps with string keys and JSON values always serialize.
        serde_json::to_string_pretty(&self.wire()).unwrap_or_default()
    }

    /// The document as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&self.wire()).unwrap_or_default()
    }

    fn wire(&self) -> Wire<'_> {
        let mut info = json!({ "title": self.title, "version": self.version });
        if let Some(description) = &self.description {
            info["description"] = Value::String(description.clone());
        }
        let mut components = Map::new();
        if !self.contents.messages.is_empty() {
            components.insert(
                "messages".into(),
                Value::Object(self.contents.messages.clone()),
            );
        }
        if !self.contents.schemas.is_empty() {
            components.insert(
                "schemas".into(),
                Value::Object(self.contents.schemas.clone()),
            );
        }
        Wire {
            asyncapi: "3.0.0",
            info,
            servers: &self.servers,
            channels: &self.contents.channels,
            operations: &self.contents.operations,
            components: Value::Object(components),
        }
    }
}

impl std::fmt::Display for Document {
    /// The document as pretty-printed JSON.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_json())
    }
}
