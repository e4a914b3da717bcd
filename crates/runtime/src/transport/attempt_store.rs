//! Where a subscriber's failure budget is kept between deliveries, so it
//! holds across restarts and app instances.

use std::future::Future;
use std::pin::Pin;

use crate::BoxError;

/// A boxed future of an [`AttemptStore`] call. Only failing messages reach
/// the store, so the box costs nothing on the happy path.
pub type AttemptFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'a>>;

/// The attempts made on messages of one consumer, by stream sequence, kept by
/// the broker (JetStream: a key-value bucket) so that every instance bound to
/// the consumer, and the next start of the app, continue the same count.
///
/// The runtime saves before each in-process retry and at each nak, loads on a
/// redelivery, and forgets once the message is settled for good.
pub trait AttemptStore: Send + Sync + 'static {
    /// The attempts recorded for `stream_sequence`, if any.
    fn load(&self, stream_sequence: u64) -> AttemptFuture<'_, Option<u32>>;
    /// Records that `attempts` attempts were made (or started) on `stream_sequence`.
    fn save(&self, stream_sequence: u64, attempts: u32) -> AttemptFuture<'_, ()>;
    /// Drops the record of `stream_sequence` (settled for good).
    fn forget(&self, stream_sequence: u64) -> AttemptFuture<'_, ()>;
}
