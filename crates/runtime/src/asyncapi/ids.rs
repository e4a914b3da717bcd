//! Keys of the document's maps (channels, operations, messages): AsyncAPI
//! allows letters, digits, `.`, `-` and `_` there.

use std::collections::BTreeMap;

/// `name` with every character AsyncAPI refuses in a key replaced: a
/// subject's wildcards by words (`orders.*` → `orders.any`, `orders.>` →
/// `orders.rest`), anything else by `_`.
pub(crate) fn component_id(name: &str) -> String {
    let mut id = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => id.push(c),
            '*' => id.push_str("any"),
            '>' => id.push_str("rest"),
            ':' if chars.peek() == Some(&':') => {
                chars.next();
                id.push('.');
            }
            _ => id.push('_'),
        }
    }
    if id.is_empty() {
        id.push('_');
    }
    id
}

/// Hands out one key per thing, distinct even where two things' names
/// make the same key.
#[derive(Debug, Default)]
pub(crate) struct Ids {
    /// Key by what it stands for.
    given: BTreeMap<String, String>,
    /// Keys taken.
    taken: std::collections::BTreeSet<String>,
}

impl Ids {
    /// The key of `thing`, made from `name` the first time `thing` is seen.
    /// The second bool says whether it is new.
    pub(crate) fn of(&mut self, thing: &str, name: &str) -> (String, bool) {
        if let Some(id) = self.given.get(thing) {
            return (id.clone(), false);
        }
        (self.fresh(thing, name), true)
    }

    /// A new key made from `name`, for a thing seen once.
    pub(crate) fn unique(&mut self, name: &str) -> String {
        let thing = format!("\u{0}{}", self.taken.len());
        self.fresh(&thing, name)
    }

    fn fresh(&mut self, thing: &str, name: &str) -> String {
        let base = component_id(name);
        let id = std::iter::once(base.clone())
            .chain((2..).map(|n| format!("{base}-{n}")))
            .find(|candidate| !self.taken.contains(candidate))
            .unwrap_or(base);
        self.taken.insert(id.clone());
        self.given.insert(thing.to_owned(), id.clone());
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_paths_become_valid_keys() {
        assert_eq!(component_id("orders.placed"), "orders.placed");
        assert_eq!(component_id("orders.*.eu"), "orders.any.eu");
        assert_eq!(component_id("orders.>"), "orders.rest");
        assert_eq!(component_id("shop::bill"), "shop.bill");
        assert_eq!(
            component_id("shop::main::{{closure}}"),
            "shop.main.__closure__"
        );
        assert_eq!(component_id(""), "_");
    }

    #[test]
    fn keys_are_distinct_and_stable() {
        let mut ids = Ids::default();
        assert_eq!(ids.of("a::Order", "Order"), ("Order".to_owned(), true));
        assert_eq!(ids.of("b::Order", "Order"), ("Order-2".to_owned(), true));
        assert_eq!(ids.of("a::Order", "Order"), ("Order".to_owned(), false));
        assert_eq!(ids.unique("bill"), "bill");
        assert_eq!(ids.unique("bill"), "bill-2");
    }
}
