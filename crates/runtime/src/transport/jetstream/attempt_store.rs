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

use async_nats::jetstream::{self, kv, stream::StorageType};
use tokio::sync::OnceCell;

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

/// Opens [`ATTEMPTS_BUCKET`], creating it when it does not exist.
///
/// The bucket's stream is created directly, with the settings a key-value
/// bucket has: the client's `create_key_value` first reads the account's
/// info, whose shape differs on servers before 2.10.
async fn open_bucket(
    context: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, AttemptStoreError> {
    if let Ok(bucket) = context.get_key_value(ATTEMPTS_BUCKET).await {
        return Ok(bucket);
    }
    let created = context.create_stream(bucket_stream(replicas)).await;
    // Created here, or by another instance in the meantime: open it.
    let opened = context.get_key_value(ATTEMPTS_BUCKET).await;
    match (created, opened) {
        (Ok(_), Ok(bucket)) => {
            tracing::info!(
                bucket = ATTEMPTS_BUCKET,
                replicas,
                "created the key-value bucket that keeps failure budgets"
            );
            Ok(bucket)
        }
        (Err(_), Ok(bucket)) => Ok(bucket),
        (created, Err(open)) => {
            let source: BoxError = match created {
                Err(create) => Box::new(create),
                Ok(_) => Box::new(open),
            };
            let err = AttemptStoreError::Bucket { source };
            tracing::error!(error = %err, "failure budgets are per process for now");
            Err(err)
        }
    }
}

/// The stream behind [`ATTEMPTS_BUCKET`]: what a key-value bucket with
/// history 1 and [`MAX_AGE`] is made of.
fn bucket_stream(replicas: usize) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{ATTEMPTS_BUCKET}"),
        description: Some(
            "flowgate: attempts made on failing messages, by <stream>.<consumer>.<sequence>"
                .to_owned(),
        ),
        subjects: vec![format!("$KV.{ATTEMPTS_BUCKET}.>")],
        max_messages_per_subject: 1,
        max_age: MAX_AGE,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
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

/// A stream or consumer name as one token of a key: letters, digits, `-`
/// and `_` as they are; every other byte (`.` included, which would split
/// the token, and `=`, the escape) as `=XX`. Keys then match the bucket's
/// rule (`[-/_=.a-zA-Z0-9]+`, no dot at either end) and stay unique.
fn key_token(name: &str) -> String {
    let mut token = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("={byte:02X}"));
        }
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn keys_name_stream_consumer_and_sequence() {
        assert_eq!(key_token("orders_placed"), "orders_placed");
        assert_eq!(key_token("billing-v2"), "billing-v2");
        let key = format!("{}.{}.{}", key_token("ORDERS"), key_token("billing"), 42);
        assert_eq!(key, "ORDERS.billing.42");
        assert!(valid_key(&key));
    }

    #[test]
    fn names_outside_the_key_alphabet_are_escaped_without_collisions() {
        let odd = key_token("orders$v2.é=x");
        assert_eq!(odd, "orders=24v2=2E=C3=A9=3Dx");
        assert!(valid_key(&format!("{odd}.billing.1")));
        assert_ne!(key_token("a=2Eb"), key_token("a.b"));
    }

    #[test]
    fn the_bucket_keeps_one_value_per_key_on_disk_for_a_week() {
        let config = bucket_stream(3);
        assert_eq!(config.name, "KV_flowgate_attempts");
        assert_eq!(config.subjects, vec!["$KV.flowgate_attempts.>".to_owned()]);
        assert_eq!(config.max_messages_per_subject, 1);
        assert_eq!(config.storage, StorageType::File);
        assert_eq!(config.max_age, Duration::from_secs(604_800));
        assert_eq!(config.num_replicas, 3);
        assert!(config.allow_direct && config.allow_rollup);
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
