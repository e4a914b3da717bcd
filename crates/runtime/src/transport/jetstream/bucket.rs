//! The key-value buckets flowgate keeps (failure budgets, replayed dead
//! letters): opened, or created with the settings a bucket has, and the
//! tokens their keys are made of.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};

use crate::BoxError;

/// One of flowgate's buckets: history 1, file storage.
pub(crate) struct Bucket {
    /// The bucket's name (its stream is `KV_<name>`).
    pub(crate) name: &'static str,
    /// What the bucket's stream says it holds.
    pub(crate) description: &'static str,
    /// How long a record lives without being written again; zero keeps it.
    pub(crate) max_age: Duration,
    /// Replicas of its stream in a cluster.
    pub(crate) replicas: usize,
}

impl Bucket {
    /// Opens the bucket, creating it when it does not exist. `Ok(true)`
    /// beside the store when this call created it.
    ///
    /// The stream is created directly, with the settings a key-value bucket
    /// has: the client's `create_key_value` first reads the account's info,
    /// whose shape differs on servers before 2.10.
    pub(crate) async fn open_or_create(
        &self,
        context: &jetstream::Context,
    ) -> Result<(kv::Store, bool), BoxError> {
        if let Ok(bucket) = context.get_key_value(self.name).await {
            return Ok((bucket, false));
        }
        let created = context.create_stream(self.stream()).await;
        // Created here, or by another instance in the meantime: open it.
        let opened = context.get_key_value(self.name).await;
        match (created, opened) {
            (Ok(_), Ok(bucket)) => Ok((bucket, true)),
            (Err(_), Ok(bucket)) => Ok((bucket, false)),
            (Err(create), Err(_)) => Err(Box::new(create)),
            (Ok(_), Err(open)) => Err(Box::new(open)),
        }
    }

    /// The stream behind the bucket.
    pub(crate) fn stream(&self) -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: format!("KV_{}", self.name),
            description: Some(self.description.to_owned()),
            subjects: vec![format!("$KV.{}.>", self.name)],
            max_messages_per_subject: 1,
            max_age: self.max_age,
            storage: StorageType::File,
            num_replicas: self.replicas.max(1),
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        }
    }
}

/// A stream or consumer name as one token of a key: letters, digits, `-`
/// and `_` as they are; every other byte (`.` included, which would split
/// the token, and `=`, the escape) as `=XX`. Keys then match the bucket's
/// rule (`[-/_=.a-zA-Z0-9]+`, no dot at either end) and stay unique.
pub(crate) fn key_token(name: &str) -> String {
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

    pub(crate) fn valid_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn tokens_of_plain_names_are_the_names() {
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
    fn a_bucket_keeps_one_value_per_key_on_disk() {
        let config = Bucket {
            name: "flowgate_things",
            description: "things",
            max_age: Duration::from_secs(60),
            replicas: 3,
        }
        .stream();
        assert_eq!(config.name, "KV_flowgate_things");
        assert_eq!(config.subjects, vec!["$KV.flowgate_things.>".to_owned()]);
        assert_eq!(config.max_messages_per_subject, 1);
        assert_eq!(config.storage, StorageType::File);
        assert_eq!(config.max_age, Duration::from_secs(60));
        assert_eq!(config.num_replicas, 3);
        assert!(config.allow_direct && config.allow_rollup);
    }
}
