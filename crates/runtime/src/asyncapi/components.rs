//! JSON Schema definitions shared through `components.schemas`.
//!
//! A payload's JSON Schema refers to its nested types as
//! `#/components/schemas/<Name>`; the document holds one copy of each. Two
//! payloads whose definitions share a name but differ get the second one
//! renamed (`Name2`), their references rewritten to match.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Where the document keeps JSON Schema definitions.
const PREFIX: &str = "#/components/schemas/";

/// Splits a generated root schema into the payload schema and its
/// definitions. A root that refers to itself (`"$ref": "#"`, a recursive
/// type) becomes a definition of its own, the payload a reference to it.
pub(crate) fn split_definitions(mut schema: Value) -> (Value, Map<String, Value>) {
    let mut definitions = Map::new();
    if let Some(root) = schema.as_object_mut() {
        root.remove("$schema");
        if let Some(Value::Object(mut components)) = root.remove("components") {
            if let Some(Value::Object(schemas)) = components.remove("schemas") {
                definitions = schemas;
            }
        }
    }
    let mut recursive = false;
    visit_refs(&mut schema, &mut |reference| {
        if reference == "#" {
            recursive = true;
        }
    });
    if recursive {
        let name = schema
            .get("title")
            .and_then(Value::as_str)
            .map(super::ids::component_id)
            .unwrap_or_else(|| "Payload".to_owned());
        let target = format!("{PREFIX}{name}");
        visit_refs(&mut schema, &mut |reference| {
            if reference == "#" {
                *reference = target.clone();
            }
        });
        definitions.insert(name, schema);
        schema = serde_json::json!({ "$ref": target });
    }
    (schema, definitions)
}

/// Adds `definitions` to `schemas`, renaming those whose name is taken by a
/// different schema, and rewrites the references in `payload` and in the
/// definitions themselves to the names they got.
pub(crate) fn merge(
    schemas: &mut Map<String, Value>,
    payload: &mut Value,
    definitions: Map<String, Value>,
) {
    let mut renamed = BTreeMap::new();
    for (name, schema) in &definitions {
        if schemas.get(name).is_some_and(|known| known != schema) {
            let free = (2..)
                .map(|n| format!("{name}{n}"))
                .find(|candidate| {
                    !schemas.contains_key(candidate) && !definitions.contains_key(candidate)
                })
                .unwrap_or_else(|| name.clone());
            renamed.insert(format!("{PREFIX}{name}"), free);
        }
    }
    let rewrite = |value: &mut Value| {
        visit_refs(value, &mut |reference| {
            if let Some(name) = renamed.get(reference.as_str()) {
                *reference = format!("{PREFIX}{name}");
            }
        });
    };
    rewrite(payload);
    for (name, mut schema) in definitions {
        rewrite(&mut schema);
        let name = renamed
            .get(&format!("{PREFIX}{name}"))
            .cloned()
            .unwrap_or(name);
        schemas.entry(name).or_insert(schema);
    }
}

/// Calls `f` on every `$ref` string in `value`.
fn visit_refs(value: &mut Value, f: &mut impl FnMut(&mut String)) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(reference) if key == "$ref" => f(reference),
                    other => visit_refs(other, f),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| visit_refs(item, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn definitions_leave_the_payload() {
        let (payload, definitions) = split_definitions(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "Order",
            "properties": { "line": { "$ref": "#/components/schemas/Line" } },
            "components": { "schemas": { "Line": { "type": "object" } } }
        }));
        assert_eq!(
            payload,
            json!({"title": "Order", "properties": {"line": {"$ref": "#/components/schemas/Line"}}})
        );
        assert_eq!(definitions["Line"], json!({"type": "object"}));
    }

    #[test]
    fn a_recursive_root_becomes_a_definition() {
        let (payload, definitions) = split_definitions(json!({
            "title": "Tree",
            "properties": { "children": { "items": { "$ref": "#" } } }
        }));
        assert_eq!(payload, json!({"$ref": "#/components/schemas/Tree"}));
        assert_eq!(
            definitions["Tree"]["properties"]["children"]["items"]["$ref"],
            "#/components/schemas/Tree"
        );
    }

    #[test]
    fn a_clashing_definition_is_renamed_and_its_references_follow() {
        let mut schemas = Map::new();
        schemas.insert("Line".into(), json!({"type": "object"}));
        let mut payload = json!({"items": {"$ref": "#/components/schemas/Line"}});
        let mut definitions = Map::new();
        definitions.insert("Line".into(), json!({"type": "string"}));
        merge(&mut schemas, &mut payload, definitions);
        assert_eq!(payload["items"]["$ref"], "#/components/schemas/Line2");
        assert_eq!(schemas["Line2"], json!({"type": "string"}));
        assert_eq!(schemas["Line"], json!({"type": "object"}));

        // The same definition again is kept once.
        let mut again = json!({"$ref": "#/components/schemas/Line"});
        let mut same = Map::new();
        same.insert("Line".into(), json!({"type": "object"}));
        merge(&mut schemas, &mut again, same);
        assert_eq!(again["$ref"], "#/components/schemas/Line");
        assert_eq!(schemas.len(), 2);
    }
}
