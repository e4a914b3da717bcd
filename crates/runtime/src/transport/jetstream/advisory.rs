//! JetStream's max-deliveries advisory: the server announces each message a
//! consumer stopped delivering after `max_deliver` deliveries, and flowgate
//! fetches it from the stream so it can be dead-lettered.

use std::time::SystemTime;

use async_nats::jetstream;
use futures::StreamExt;

use crate::transport::{Exhausted, ExhaustedStream};
use crate::{Error, Metadata};

/// The advisory's fields flowgate reads.
#[derive(Debug, serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

/// The subject of the max-deliveries advisories of one consumer.
pub(crate) fn advisory_subject(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
}

/// Subscribes to the advisories of `consumer` on `stream` and turns each into
/// the message it names.
pub(crate) async fn exhausted(
    client: &async_nats::Client,
    context: jetstream::Context,
    stream: String,
    consumer: String,
) -> Result<ExhaustedStream, Error> {
    let advisories = client
        .subscribe(advisory_subject(&stream, &consumer))
        .await
        .map_err(|e| Error::Broker(Box::new(e)))?;
    let messages = advisories.filter_map(move |advisory| {
        let context = context.clone();
        let stream = stream.clone();
        async move {
            let notice: MaxDeliveries = match serde_json::from_slice(&advisory.payload) {
                Ok(notice) => notice,
                Err(err) => {
                    tracing::warn!(error = %err, "unreadable max-deliveries advisory");
                    return None;
                }
            };
            fetch(&context, &stream, notice).await
        }
    });
    Ok(messages.boxed())
}

async fn fetch(
    context: &jetstream::Context,
    stream: &str,
    notice: MaxDeliveries,
) -> Option<Exhausted> {
    let fetched = match context.get_stream_no_info(stream).await {
        Ok(handle) => handle.get_raw_message(notice.stream_seq).await.ok(),
        Err(_) => None,
    };
    let Some(message) = fetched else {
        tracing::warn!(
            stream,
            seq = notice.stream_seq,
            "a message exhausted its deliveries but is no longer in the stream; it cannot be dead-lettered"
        );
        return None;
    };
    let headers = (!message.headers.is_empty()).then_some(message.headers);
    Some(Exhausted {
        payload: message.payload,
        metadata: Metadata::new(
            message.subject,
            message.sequence,
            u32::try_from(notice.deliveries).unwrap_or(u32::MAX),
            SystemTime::from(message.time),
            headers,
        ),
    })
}
