//! The app's state: values of distinct types that handlers take as [`State<T>`].

use std::any::{Any, TypeId};
use std::sync::Arc;

use super::{FromRequest, MissingState, Rejection};
use crate::Request;

/// Values handed to handlers, at most one of each type.
///
/// [`App::state`](crate::App::state) fills the app's; extractors read it
/// in [`FromRequest::from_request`].
///
/// ```
/// let state = flowgate::extract::StateMap::new().with(42u32).with("db-url");
/// assert_eq!(state.get::<u32>(), Some(&42));
/// assert_eq!(state.get::<&str>(), Some(&"db-url"));
/// assert!(state.get::<u64>().is_none());
/// ```
#[derive(Clone, Default)]
pub struct StateMap {
    entries: Arc<Vec<Entry>>,
}

#[derive(Clone)]
struct Entry {
    type_id: TypeId,
    type_name: &'static str,
    value: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for StateMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.entries.iter().map(|entry| entry.type_name))
            .finish()
    }
}

impl StateMap {
    /// No state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `value`, in place of any earlier value of its type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let entry = Entry {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
            value: Arc::new(value),
        };
        let entries = Arc::make_mut(&mut self.entries);
        match entries.iter_mut().find(|e| e.type_id == entry.type_id) {
            Some(existing) => *existing = entry,
            None => entries.push(entry),
        }
    }

    /// The same state with `value` kept too; see [`insert`](Self::insert).
    pub fn with<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.insert(value);
        self
    }

    /// The value of type `T`, if there is one.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        let type_id = TypeId::of::<T>();
        self.entries
            .iter()
            .find(|entry| entry.type_id == type_id)
            .and_then(|entry| entry.value.downcast_ref())
    }

    /// The value of type `T`, or the error that names what is missing.
    pub fn require<T: 'static>(&self) -> Result<&T, MissingState> {
        self.get().ok_or_else(MissingState::of::<T>)
    }
}

/// A clone of the app's state of type `T` (see
/// [`App::state`](crate::App::state)). Keep `T` cheap to clone: a pool
/// handle, or an `Arc`.
///
/// ```
/// use flowgate::extract::State;
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
///
/// #[derive(Clone)]
/// struct Prices { vat_percent: u32 }
///
/// #[flowgate::subscriber(durable = "billing")]
/// async fn bill(order: OrderPlaced, State(prices): State<Prices>) -> Result<(), std::io::Error> {
///     println!("order {} with {}% VAT", order.id, prices.vat_percent);
///     Ok(())
/// }
///
/// let app = flowgate::App::new()
///     .state(Prices { vat_percent: 20 })
///     .subscriber(bill::subscriber());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromRequest for State<T> {
    fn check(state: &StateMap) -> Result<(), MissingState> {
        state.require::<T>().map(drop)
    }

    fn from_request(_request: &Request, state: &StateMap) -> Result<Self, Rejection> {
        match state.get::<T>() {
            Some(value) => Ok(State(value.clone())),
            None => Err(Rejection::new(MissingState::of::<T>())),
        }
    }
}

impl<T> std::ops::Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_value_of_a_type_replaces_the_earlier_one() {
        let mut state = StateMap::new().with(1u8).with(String::from("a"));
        state.insert(2u8);
        assert_eq!(state.get::<u8>(), Some(&2));
        assert_eq!(state.get::<String>().map(String::as_str), Some("a"));
        assert_eq!(format!("{state:?}"), r#"{"u8", "alloc::string::String"}"#);
    }

    #[test]
    fn a_clone_taken_before_an_insert_keeps_what_it_had() {
        let before = StateMap::new().with(1u8);
        let mut after = before.clone();
        after.insert(2u16);
        assert!(before.get::<u16>().is_none());
        assert_eq!(after.get::<u16>(), Some(&2));
    }

    #[test]
    fn a_missing_state_names_its_type() {
        let err = State::<u64>::check(&StateMap::new()).expect_err("fails");
        assert_eq!(err.type_name(), "u64");
        assert!(State::<u64>::check(&StateMap::new().with(3u64)).is_ok());
    }
}
