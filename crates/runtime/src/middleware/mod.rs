//! The middleware flowgate puts around every handler, innermost first:
//! [`metrics`] (counts and times each attempt), a timeout
//! (`tower::timeout`, when the subscriber sets one: a timed-out attempt is a
//! retryable failure), and [`retry`] (in-process retries within the failure
//! budget). Your own layers (`App::layer`, `Subscriber::layer`) go outside.
//! Any `tower::Layer` over [`Request`](crate::Request) fits.

pub mod metrics;
pub mod retry;
