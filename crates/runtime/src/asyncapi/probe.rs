//! Whether a payload type has a JSON Schema, asked without a bound: the
//! autoref specialisation `#[derive(flowgate::Event)]` expands to.
//!
//! ```text
//! (&Probe::<Self>::new()).json_schema()
//! ```
//!
//! Method lookup tries the receiver `&Probe<T>` first, where
//! [`HasJsonSchema`] is implemented for `Probe<T>` when `T:
//! schemars::JsonSchema` (with the `schemars` feature); only when that does
//! not apply does it take the autoref'd `&&Probe<T>`, where [`NoJsonSchema`]
//! answers `None` for every type. The choice is made at compile time, for
//! the concrete type the derive names, so no attribute is needed.

use std::marker::PhantomData;

use serde_json::Value;

/// Stands for the type `T` in method lookup.
pub struct Probe<T: ?Sized>(PhantomData<fn() -> PhantomData<T>>);

impl<T: ?Sized> Probe<T> {
    /// The probe of `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The JSON Schema of a type that has one.
pub trait HasJsonSchema {
    /// The type's JSON Schema (draft 07).
    fn json_schema(&self) -> Option<Value>;
}

/// The fallback: no schema.
pub trait NoJsonSchema {
    /// `None`.
    fn json_schema(&self) -> Option<Value>;
}

#[cfg(feature = "schemars")]
impl<T: schemars::JsonSchema + ?Sized> HasJsonSchema for Probe<T> {
    fn json_schema(&self) -> Option<Value> {
        Some(json_schema_of::<T>())
    }
}

impl<T: ?Sized> NoJsonSchema for &Probe<T> {
    fn json_schema(&self) -> Option<Value> {
        None
    }
}

/// The JSON Schema (draft 07) of what deserializes into `T`, its
/// definitions under `components/schemas` as the document keeps them.
#[cfg(feature = "schemars")]
pub fn json_schema_of<T: schemars::JsonSchema + ?Sized>() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;

    #[test]
    #[allow(clippy::needless_borrow)]
    fn a_type_without_json_schema_falls_back_to_none() {
        assert_eq!((&Probe::<Plain>::new()).json_schema(), None);
    }

    #[cfg(feature = "schemars")]
    #[test]
    fn a_type_with_json_schema_gets_it() {
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct Order {
            id: u64,
        }
        // The borrow is the point: it is what the derive expands to.
        #[allow(clippy::needless_borrow)]
        let schema = (&Probe::<Order>::new()).json_schema().expect("a schema");
        assert_eq!(schema["title"], "Order");
        assert_eq!(schema["properties"]["id"]["type"], "integer");
        assert!(schema.get("$schema").is_none(), "{schema}");
    }
}
