//! The JetStream [`AttemptStore`]: one key-value bucket, [`ATTEMPTS_BUCKET`],
//! holds the attempts made on failing messages of every durable consumer, so
//! the failure budget holds across restarts and across the instances bound
//! to one consumer.
//!
//! | what | value |
//! | --- | --- |
//! | bucket | `flowgate_attempts` (stream `KV_flowgate_attempts`), file storage, history 1, entries expire after 7 days, replicas as [`JetStreamSettings::replicas`](super::JetStreamSettings::replicas) |
//! | key | `<stream>.<consumer>.<stream sequence>`, e.g. `orders_placed.billing.42` (a byte of a name outside letters, digits, `-` and `_` is written `=XX`) |
//! | value | the highest attempt started, in decimal |
//!
//! The bucket is created on first use (the first failure of a message), not
//! at start: an app whose handlers never fail never creates it. A record is
//! dropped (a delete marker, itself gone after the age limit) once its
//! message is acked or dead-lettered.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tokio::sync::OnceCell;

use super::bucket::{key_token, Bucket};
use crate::transport::{AttemptFuture, AttemptStore};
use crate::BoxError;

/// The key-value bucket that keeps failure budgets.
///
/// Inspect it with `nats kv ls flowgate_attempts` and `nats kv get
/// flowgate_attempts <stream>.<consumer>.<seq>`; drop one record with `nats kv
/// del flowgate_attempts <key>`, every record with `nats stream purge
/// KV_flowgate_attempts` (purge rather than delete the bucket while apps
/// run: they keep using the bucket they opened).
pub const ATTEMPTS_BUCKET: &str = "flowgate_attempts";

/// How long a record lives without being written again. A message that has
/// kept failing for longer (with long nak delays) continues from the
/// broker's delivery count.
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Why the bucket could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptStoreError {
    /// The bucket does not exist and could not be created.
    #[error("cannot open or create the key-value bucket `{bucket}` that keeps failure budgets across restarts and instances: {source}; until it can be, each process counts the budget itself (check that JetStream is enabled for the account, that its limits allow one more stream, and that this user may create stream `KV_{bucket}` and publish to `$KV.{bucket}.>`)", bucket = ATTEMPTS_BUCKET)]
    Bucket {
        /// The server's or the client's error.
        #[source]
        source: BoxError,
    },
    /// Reading or writing one record failed.
    #[error("{operation} of key `{key}` in bucket `{bucket}` failed: {source}", bucket = ATTEMPTS_BUCKET)]
    Access {
        /// `get`, `put` or `delete`.
        operation: &'static str,
        /// The record's key.
        key: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// A record holds something other than a count.
    #[error("key `{key}` in bucket `{bucket}` holds {value:?}, which is not an attempt count; delete it with `nats kv del {bucket} {key}`", bucket = ATTEMPTS_BUCKET)]
    NotACount {
        /// The record's key.
        key: String,
        /// What it holds.
        value: String,
    },
}

/// The records of one durable consumer in [`ATTEMPTS_BUCKET`].
pub(crate) struct KvAttemptStore {
    context: jetstream::Context,
    replicas: usize,
    bucket: OnceCell<kv::Store>,
    /// `<stream>.<consumer>.`
    prefix: String,
}

impl KvAttemptStore {
    /// The store of consumer `consumer` of stream `stream`; the bucket is
    /// opened (or created, with `replicas`) on first use.
    pub(crate) fn new(
        context: jetstream::Context,
        replicas: usize,
        stream: &str,
        consumer: &str,
    ) -> Self {
        Self {
            context,
            replicas,
            bucket: OnceCell::new(),
            prefix: format!("{}.{}.", key_token(stream), key_token(consumer)),
        }
    }

    fn key(&self, stream_sequence: u64) -> String {
        format!("{}{stream_sequence}", self.prefix)
    }

    /// The bucket, opened or created on the first call that succeeds.
    async fn bucket(&self) -> Result<&kv::Store, AttemptStoreError> {
        self.bucket
            .get_or_try_init(|| open_bucket(&self.context, self.replicas))
            .await
    }
}

/// [`ATTEMPTS_BUCKET`]: history 1, records expire after [`MAX_AGE`].
fn bucket_spec(replicas: usize) -> Bucket {
    Bucket {
        name: ATTEMPTS_BUCKET,
        description:
            "flowgate: attempts made on failing messages, by <stream>.<consumer>.<sequence>",
        max_age: MAX_AGE,
        replicas,
    }
}

/// Opens [`ATTEMPTS_BUCKET`], creating it when it does not exist.
async fn open_bucket(
    context: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, AttemptStoreError> {
    match bucket_spec(replicas).open_or_create(context).await {
        Ok((bucket, created)) => {
            if created {
                tracing::info!(
                    bucket = ATTEMPTS_BUCKET,
                    replicas,
                    "created the key-value bucket that keeps failure budgets"
                );
            }
            Ok(bucket)
        }
        Err(source) => {
            let err = AttemptStoreError::Bucket { source };
            tracing::error!(error = %err, "failure budgets are per process for now");
            Err(err)
        }
    }
}

impl AttemptStore for KvAttemptStore {
    fn load(&self, stream_sequence: u64) -> AttemptFuture<'_, Option<u32>> {
        Box::pin(async move {
            let key = self.key(stream_sequence);
            let bucket = self.bucket().await?;
            let value =
                bucket
                    .get(key.as_str())
                    .await
                    .map_err(|source| AttemptStoreError::Access {
                        operation: "get",
                        key: key.clone(),
                        source: Box::new(source),
                    })?;
            match value {
                None => Ok(None),
                Some(value) => Ok(Some(parse_count(&key, &value)?)),
            }
        })
    }

    fn save(&self, stream_sequence: u64, attempts: u32) -> AttemptFuture<'_, ()> {
        Box::pin(async move {
            let key = self.key(stream_sequence);
            let bucket = self.bucket().await?;
            bucket
                .put(key.as_str(), attempts.to_string().into())
                .await
                .map_err(|source| AttemptStoreError::Access {
                    operation: "put",
                    key,
                    source: Box::new(source),
                })?;
            Ok(())
        })
    }

    fn forget(&self, stream_sequence: u64) -> AttemptFuture<'_, ()> {
        Box::pin(async move {
            let key = self.key(stream_sequence);
            let bucket = self.bucket().await?;
            bucket
                .delete(key.as_str())
                .await
                .map_err(|source| AttemptStoreError::Access {
                    operation: "delete",
                    key,
                    source: Box::new(source),
                })?;
            Ok(())
        })
    }
}

/// A record's value as a count.
fn parse_count(key: &str, value: &[u8]) -> Result<u32, AttemptStoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| AttemptStoreError::NotACount {
            key: key.to_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_keeps_one_value_per_key_on_disk_for_a_week() {
        let config = bucket_spec(3).stream();
        assert_eq!(config.name, "KV_flowgate_attempts");
        assert_eq!(config.max_age, Duration::from_secs(604_800));
        assert_eq!(config.num_replicas, 3);
    }

    #[test]
    fn a_record_that_is_not_a_count_is_an_error_that_says_how_to_clear_it() {
        assert_eq!(parse_count("k", b"7").ok(), Some(7));
        let err = parse_count("s.c.9", b"seven").expect_err("not a count");
        assert!(
            err.to_string()
                .contains("nats kv del flowgate_attempts s.c.9"),
            "{err}"
        );
    }
}
