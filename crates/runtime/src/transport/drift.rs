//! Comparing a durable's settings on the broker with what the code asks for,
//! so every transport refuses drift with the same error.

use std::fmt::Debug;

use crate::Error;

/// Finds the first setting of an existing durable that differs from the
/// wanted one, as an [`Error::ConsumerMismatch`].
///
/// ```
/// use std::time::Duration;
/// use flowgate::transport::DriftCheck;
///
/// let ok = DriftCheck::new("orders_placed", "billing")
///     .field("ack_wait", &Duration::from_secs(30), &Duration::from_secs(30))
///     .finish();
/// assert!(ok.is_ok());
/// let drift = DriftCheck::new("orders_placed", "billing")
///     .field("ack_wait", &Duration::from_secs(30), &Duration::from_secs(60))
///     .field("max_deliver", &5, &10)
///     .finish()
///     .unwrap_err();
/// assert!(drift.to_string().contains("ack_wait = 30s"), "the first difference: {drift}");
/// ```
#[derive(Debug)]
#[must_use = "call finish() to get the result"]
pub struct DriftCheck {
    stream: String,
    durable: String,
    first: Option<Error>,
}

impl DriftCheck {
    /// A check of `durable` on `stream`.
    pub fn new(stream: impl Into<String>, durable: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            durable: durable.into(),
            first: None,
        }
    }

    /// Compares one setting (shown with `Debug`).
    pub fn field<T: PartialEq + Debug + ?Sized>(
        self,
        name: &'static str,
        existing: &T,
        wanted: &T,
    ) -> Self {
        self.field_shown(name, existing, wanted, |value| format!("{value:?}"))
    }

    /// Compares one setting, shown with `show`.
    pub fn field_shown<T: PartialEq + ?Sized>(
        mut self,
        name: &'static str,
        existing: &T,
        wanted: &T,
        show: impl Fn(&T) -> String,
    ) -> Self {
        if self.first.is_none() && existing != wanted {
            self.first = Some(Error::ConsumerMismatch {
                stream: self.stream.clone(),
                durable: self.durable.clone(),
                field: name,
                existing: show(existing),
                wanted: show(wanted),
            });
        }
        self
    }

    /// The first difference, if any.
    pub fn finish(self) -> Result<(), Error> {
        self.first.map_or(Ok(()), Err)
    }
}
