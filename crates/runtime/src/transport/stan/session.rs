//! One registration with the server: the connect request and what it sets up
//! (heartbeat answers, the publish acks inbox, the ping subjects).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use super::proto::{ConnectRequest, ConnectResponse};
use super::pub_acks::PubAcks;
use super::publisher::PubSubjects;
use super::wire::Chunks;
use super::{StanError, StanOptions};

/// The protocol version this client speaks: connID in requests, client pings.
pub(crate) const PROTOCOL_ONE: i32 = 1;
/// The reference client's publish acks prefix.
const ACK_PREFIX: &str = "_STAN.acks";

/// What the server told one registration, and the token that ends it.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) conn_id: Bytes,
    /// Where publishes go: `<pub prefix>.<channel>`.
    pub(crate) pub_subjects: PubSubjects,
    /// Memory for the `PubMsg`s.
    pub(crate) pub_chunks: Chunks,
    pub(crate) sub_requests: String,
    pub(crate) unsub_requests: String,
    pub(crate) sub_close_requests: String,
    pub(crate) close_requests: String,
    pub(crate) pings: Pings,
    pub(crate) acks: Arc<PubAcks>,
    /// Cancelled when this registration ends (lost or closed).
    pub(crate) lost: CancellationToken,
}

/// The client pings the server asked for.
#[derive(Debug, Clone)]
pub(crate) struct Pings {
    pub(crate) subject: String,
    /// Where the answers come.
    pub(crate) inbox: String,
    /// `None` when the server wants no pings (protocol 0).
    pub(crate) interval: Option<Duration>,
    pub(crate) max_out: u32,
}

/// A unique id (a NUID), as the reference client uses for guids and connIDs.
pub(crate) fn unique_id(nats: &async_nats::Client) -> String {
    let inbox = nats.new_inbox();
    match inbox.rsplit_once('.') {
        Some((_, id)) => id.to_owned(),
        None => inbox,
    }
}

/// The ping interval of a connect response: seconds, or (a test convention of
/// the reference client and server) milliseconds when negative.
pub(crate) fn ping_interval(value: i32) -> Option<Duration> {
    match value {
        0 => None,
        v if v < 0 => Some(Duration::from_millis(u64::from(v.unsigned_abs()))),
        v => Some(Duration::from_secs(u64::from(v.unsigned_abs()))),
    }
}

/// Registers `options.client_id` with the server: sends the connect request
/// and, once accepted, answers heartbeats and collects publish acks until the
/// session's `lost` token is cancelled. Returns the session and the inbox
/// subscription its ping answers arrive on.
pub(crate) async fn register(
    nats: &async_nats::Client,
    options: &StanOptions,
) -> Result<(Arc<Session>, async_nats::Subscriber), StanError> {
    let failed = |what: &'static str| {
        move |err: Box<dyn std::error::Error + Send + Sync>| StanError::Request {
            what,
            reason: err.to_string(),
        }
    };
    let heartbeat_inbox = nats.new_inbox();
    let heartbeats = nats
        .subscribe(heartbeat_inbox.clone())
        .await
        .map_err(|e| failed("subscribing the heartbeat inbox")(e.into()))?;
    let ping_inbox = nats.new_inbox();
    let ping_answers = nats
        .subscribe(ping_inbox.clone())
        .await
        .map_err(|e| failed("subscribing the ping inbox")(e.into()))?;
    let conn_id = Bytes::from(unique_id(nats));
    let request = ConnectRequest {
        client_id: options.client_id.clone(),
        heartbeat_inbox,
        protocol: PROTOCOL_ONE,
        conn_id: conn_id.to_vec(),
        ping_interval: options.ping_interval_secs,
        ping_max_out: options.ping_max_out,
    };
    let subject = options.discover_subject();
    let timeout = || StanError::ConnectTimeout {
        subject: subject.clone(),
        wait: options.connect_wait,
    };
    let reply = tokio::time::timeout(
        options.connect_wait,
        nats.request(subject.clone(), request.encode_to_vec().into()),
    )
    .await
    .map_err(|_| timeout())?
    .map_err(|err| match err.kind() {
        async_nats::RequestErrorKind::TimedOut => timeout(),
        async_nats::RequestErrorKind::NoResponders => StanError::NoResponders {
            subject: subject.clone(),
        },
        _ => failed("the connect request")(err.into()),
    })?;
    let response = ConnectResponse::decode(reply.payload.as_ref())
        .map_err(|e| failed("decoding the connect response")(e.into()))?;
    if !response.error.is_empty() {
        return Err(StanError::ConnectRefused {
            client_id: options.client_id.clone(),
            reason: response.error,
        });
    }
    let acks_inbox = format!("{ACK_PREFIX}.{}", unique_id(nats));
    let acks_subscription = nats
        .subscribe(acks_inbox.clone())
        .await
        .map_err(|e| failed("subscribing the publish acks inbox")(e.into()))?;
    let lost = CancellationToken::new();
    let acks = Arc::new(PubAcks::new(
        acks_inbox,
        unique_id(nats),
        options.pub_ack_wait,
    ));
    tokio::spawn(acks.clone().run(acks_subscription, lost.clone()));
    tokio::spawn(acks.clone().sweep(lost.clone()));
    tokio::spawn(answer_heartbeats(nats.clone(), heartbeats, lost.clone()));
    let pings = Pings {
        subject: response.ping_requests,
        inbox: ping_inbox,
        interval: if response.protocol >= PROTOCOL_ONE {
            ping_interval(response.ping_interval)
        } else {
            None
        },
        max_out: u32::try_from(response.ping_max_out).unwrap_or(0).max(1),
    };
    let session = Session {
        conn_id,
        pub_subjects: PubSubjects::new(response.pub_prefix),
        pub_chunks: Chunks::default(),
        sub_requests: response.sub_requests,
        unsub_requests: response.unsub_requests,
        sub_close_requests: response.sub_close_requests,
        close_requests: response.close_requests,
        pings,
        acks,
        lost,
    };
    Ok((Arc::new(session), ping_answers))
}

/// Replies (empty) to every server heartbeat until the session ends; the
/// subscription is dropped then, so a later registration's id check does not
/// find this one alive.
async fn answer_heartbeats(
    nats: async_nats::Client,
    mut heartbeats: async_nats::Subscriber,
    lost: CancellationToken,
) {
    loop {
        let heartbeat = tokio::select! {
            _ = lost.cancelled() => break,
            heartbeat = heartbeats.next() => heartbeat,
        };
        let Some(heartbeat) = heartbeat else { break };
        if let Some(reply) = heartbeat.reply {
            if let Err(err) = nats.publish(reply, Bytes::new()).await {
                tracing::debug!(error = %err, "could not answer a server heartbeat");
            }
        }
    }
    let _ = heartbeats.unsubscribe().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_interval_is_seconds_or_negative_milliseconds() {
        assert_eq!(ping_interval(5), Some(Duration::from_secs(5)));
        assert_eq!(ping_interval(-200), Some(Duration::from_millis(200)));
        assert_eq!(ping_interval(0), None);
    }
}
