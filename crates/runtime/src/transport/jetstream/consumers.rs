//! What the server says of durable consumers, for operators: their backlog,
//! and whether their settings are still the ones the code asks for (the
//! drift check a start makes, from the outside).

use async_nats::jetstream::consumer;
use futures::TryStreamExt;

use super::consumer::{check_unchanged, consumer_config, consumer_name, is_not_found};
use super::covering::{self, Cover};
use super::JetStream;
use crate::{Error, SubscriptionSpec};

/// One durable consumer on the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerReport {
    /// Its stream.
    pub stream: String,
    /// Its name: the durable or the queue group.
    pub name: String,
    /// Its backlog, when it exists.
    pub counts: Option<ConsumerCounts>,
    /// How its settings compare with the code's.
    pub config: ConfigCheck,
}

/// A consumer's backlog, as the server counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerCounts {
    /// Messages in its stream it has not delivered yet.
    pub pending: u64,
    /// Messages delivered and not acked yet.
    pub ack_pending: usize,
    /// Messages delivered more than once and not acked yet.
    pub redelivered: usize,
}

/// How a consumer's settings on the server compare with a subscriber's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigCheck {
    /// Not compared: no subscriber of the code reads it.
    NotCompared,
    /// The server's settings are the code's.
    Matches,
    /// They differ: the app refuses to start until they agree. The text
    /// names the first setting that differs and what to do.
    Differs(String),
    /// The consumer (or its stream) does not exist yet: the app creates it
    /// at start.
    Missing,
}

impl From<consumer::Info> for ConsumerCounts {
    fn from(info: consumer::Info) -> Self {
        Self {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
        }
    }
}

impl JetStream {
    /// Every durable consumer on the server (of every stream but the
    /// key-value and object stores'), with its backlog.
    pub async fn consumer_reports(&self) -> Result<Vec<ConsumerReport>, Error> {
        let broker = |e: Box<dyn std::error::Error + Send + Sync>| Error::Broker(e);
        let mut streams = self.context().streams();
        let mut reports = Vec::new();
        while let Some(stream) = streams.try_next().await.map_err(|e| broker(Box::new(e)))? {
            let name = stream.config.name;
            if name.starts_with("KV_") || name.starts_with("OBJ_") {
                continue;
            }
            let stream = self
                .context()
                .get_stream_no_info(&name)
                .await
                .map_err(|e| broker(Box::new(e)))?;
            let mut consumers = stream.consumers();
            while let Some(info) = consumers.try_next().await.map_err(|e| broker(e.into()))? {
                if info.config.durable_name.is_none() {
                    continue;
                }
                reports.push(ConsumerReport {
                    stream: name.clone(),
                    name: info.name.clone(),
                    counts: Some(info.into()),
                    config: ConfigCheck::NotCompared,
                });
            }
        }
        Ok(reports)
    }

    /// The durable consumer a subscriber of `spec` binds, compared with
    /// what `spec` asks for; `None` for an ephemeral subscriber. Creates
    /// nothing.
    pub async fn consumer_report(
        &self,
        spec: &SubscriptionSpec,
    ) -> Result<Option<ConsumerReport>, Error> {
        let Some(name) = consumer_name(spec) else {
            return Ok(None);
        };
        let missing = |stream: String| ConsumerReport {
            stream,
            name: name.to_owned(),
            counts: None,
            config: ConfigCheck::Missing,
        };
        let Cover::Whole(stream) = covering::holding(self.context(), &spec.channel).await? else {
            return Ok(Some(missing(crate::stream_name(&spec.channel))));
        };
        let info = match self
            .context()
            .get_consumer_from_stream::<consumer::pull::Config, _, _>(name, &stream)
            .await
        {
            Ok(consumer) => consumer.cached_info().clone(),
            Err(err) if is_not_found(&err) => return Ok(Some(missing(stream))),
            Err(err) => return Err(Error::Broker(Box::new(err))),
        };
        let config =
            match check_unchanged(&stream, name, &info.config, &consumer_config(spec, None)) {
                Ok(()) => ConfigCheck::Matches,
                Err(drift) => ConfigCheck::Differs(drift.to_string()),
            };
        Ok(Some(ConsumerReport {
            stream,
            name: name.to_owned(),
            counts: Some(info.into()),
            config,
        }))
    }
}
