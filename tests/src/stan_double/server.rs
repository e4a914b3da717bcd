//! The double's request handlers, one NATS subscription each, and the
//! delivery pump and heartbeat loops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flowgate::transport::stan::proto::{
    Ack, CloseRequest, CloseResponse, ConnectRequest, ConnectResponse, Ping, PingResponse, PubAck,
    PubMsg, SubscriptionRequest, SubscriptionResponse, UnsubscribeRequest,
};
use futures::StreamExt;
use prost::Message as _;

use super::state::{ClientRecord, Outgoing};
use super::Shared;

/// Subscribes `subject` and runs `handle` on every message.
pub(crate) async fn serve<F>(shared: Arc<Shared>, subject: String, handle: F)
where
    F: Fn(&Arc<Shared>, async_nats::Message) -> Vec<Outgoing> + Send + 'static,
{
    let Ok(mut messages) = shared.nats.subscribe(subject).await else {
        return;
    };
    while let Some(message) = messages.next().await {
        let out = handle(&shared, message);
        send(&shared, out).await;
        shared.wake.notify_one();
    }
}

pub(crate) async fn send(shared: &Shared, out: Vec<Outgoing>) {
    for (subject, payload) in out {
        let _ = shared.nats.publish(subject, payload).await;
    }
}

fn reply(message: &async_nats::Message, payload: impl prost::Message) -> Vec<Outgoing> {
    match &message.reply {
        Some(reply) => vec![(reply.to_string(), payload.encode_to_vec().into())],
        None => Vec::new(),
    }
}

fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Connect requests: checks the id, and whether a client with the same id is
/// still alive by asking its heartbeat inbox.
pub(crate) async fn serve_connects(shared: Arc<Shared>) {
    let subject = format!("_STAN.discover.{}", shared.config.cluster_id);
    let Ok(mut messages) = shared.nats.subscribe(subject).await else {
        return;
    };
    while let Some(message) = messages.next().await {
        shared.connect_requests.fetch_add(1, Ordering::SeqCst);
        let response = connect(&shared, &message).await;
        send(&shared, reply(&message, response)).await;
    }
}

async fn connect(shared: &Arc<Shared>, message: &async_nats::Message) -> ConnectResponse {
    let refuse = |error: &str| ConnectResponse {
        error: error.to_owned(),
        ..Default::default()
    };
    let Ok(request) = ConnectRequest::decode(message.payload.as_ref()) else {
        return refuse("stan: invalid connect request");
    };
    if !valid_client_id(&request.client_id) {
        return refuse(
            "stan: invalid clientID: only alphanumeric and `-` or `_` characters allowed",
        );
    }
    let existing = shared.state().clients.get(&request.client_id).cloned();
    if let Some(existing) = existing {
        let check = shared.nats.request(existing.heartbeat_inbox, Bytes::new());
        let alive = matches!(
            tokio::time::timeout(shared.config.client_check_timeout, check).await,
            Ok(Ok(_))
        );
        if alive {
            shared.refused_duplicates.fetch_add(1, Ordering::SeqCst);
            return refuse("stan: clientID already registered");
        }
        shared.state().remove_client(&request.client_id);
    }
    shared.state().clients.insert(
        request.client_id.clone(),
        ClientRecord {
            conn_id: request.conn_id.clone(),
            heartbeat_inbox: request.heartbeat_inbox.clone(),
            heartbeat_replies: 0,
            heartbeat_misses: 0,
        },
    );
    let id = &shared.id;
    ConnectResponse {
        pub_prefix: format!("_STAN.pub.{id}"),
        sub_requests: format!("_STAN.sub.{id}"),
        unsub_requests: format!("_STAN.ctl.{id}.unsub"),
        close_requests: format!("_STAN.ctl.{id}.close"),
        sub_close_requests: format!("_STAN.ctl.{id}.subclose"),
        ping_requests: format!("_STAN.ping.{id}"),
        ping_interval: shared.config.ping_interval,
        ping_max_out: shared.config.ping_max_out,
        protocol: 1,
        ..Default::default()
    }
}

pub(crate) fn publish(shared: &Arc<Shared>, message: async_nats::Message) -> Vec<Outgoing> {
    let Ok(pub_msg) = PubMsg::decode(message.payload.as_ref()) else {
        return Vec::new();
    };
    let mut state = shared.state();
    let known = state
        .clients
        .get(&pub_msg.client_id)
        .is_some_and(|c| pub_msg.conn_id.is_empty() || c.conn_id == pub_msg.conn_id);
    let error = if known {
        state.store(&pub_msg.subject, pub_msg.data);
        String::new()
    } else {
        "stan: invalid publish request".to_owned()
    };
    drop(state);
    let ack = reply(
        &message,
        PubAck {
            guid: pub_msg.guid,
            error,
        },
    );
    let delay = *shared
        .pub_ack_delay
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match delay {
        None => ack,
        Some(delay) => {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                send(&shared, ack).await;
            });
            Vec::new()
        }
    }
}

pub(crate) fn subscribe(shared: &Arc<Shared>, message: async_nats::Message) -> Vec<Outgoing> {
    let Ok(request) = SubscriptionRequest::decode(message.payload.as_ref()) else {
        return Vec::new();
    };
    let ack_prefix = format!("_STAN.ctl.{}.subacks", shared.id);
    let response = match shared.state().subscribe(&request, &ack_prefix) {
        Ok(id) => SubscriptionResponse {
            ack_inbox: format!("{ack_prefix}.{id}"),
            error: String::new(),
        },
        Err(error) => SubscriptionResponse {
            ack_inbox: String::new(),
            error,
        },
    };
    reply(&message, response)
}

/// Acks (`subacks.<subscription>`), subscription ends (`unsub`,
/// `subclose`) and client closes (`close`), in the order they arrive.
pub(crate) fn control(shared: &Arc<Shared>, message: async_nats::Message) -> Vec<Outgoing> {
    let prefix = format!("_STAN.ctl.{}.", shared.id);
    let Some(what) = message.subject.strip_prefix(prefix.as_str()) else {
        return Vec::new();
    };
    match what {
        "unsub" => end_subscription(shared, message, true),
        "subclose" => end_subscription(shared, message, false),
        "close" => close(shared, message),
        _ if what.starts_with("subacks.") => ack(shared, message),
        _ => Vec::new(),
    }
}

fn end_subscription(
    shared: &Arc<Shared>,
    message: async_nats::Message,
    unsubscribe: bool,
) -> Vec<Outgoing> {
    let Ok(request) = UnsubscribeRequest::decode(message.payload.as_ref()) else {
        return Vec::new();
    };
    let mut state = shared.state();
    let error = match state.find_sub(&request.client_id, &request.inbox) {
        Some((id, by_ack_inbox)) => {
            if !by_ack_inbox {
                shared.ends_by_delivery_inbox.fetch_add(1, Ordering::SeqCst);
            }
            state.remove_sub(id, unsubscribe);
            String::new()
        }
        None => "stan: invalid subscription".to_owned(),
    };
    drop(state);
    reply(
        &message,
        SubscriptionResponse {
            ack_inbox: String::new(),
            error,
        },
    )
}

fn ack(shared: &Arc<Shared>, message: async_nats::Message) -> Vec<Outgoing> {
    let id = message
        .subject
        .rsplit('.')
        .next()
        .and_then(|id| id.parse::<u64>().ok());
    if let (Some(id), Ok(ack)) = (id, Ack::decode(message.payload.as_ref())) {
        shared.acks.fetch_add(1, Ordering::SeqCst);
        if !shared.state().ack(id, ack.sequence) {
            shared.dropped_acks.fetch_add(1, Ordering::SeqCst);
        }
    }
    Vec::new()
}

fn close(shared: &Arc<Shared>, message: async_nats::Message) -> Vec<Outgoing> {
    let Ok(request) = CloseRequest::decode(message.payload.as_ref()) else {
        return Vec::new();
    };
    let mut state = shared.state();
    let error = if state.clients.contains_key(&request.client_id) {
        state.remove_client(&request.client_id);
        String::new()
    } else {
        "stan: unknown clientID".to_owned()
    };
    drop(state);
    shared.close_requests.fetch_add(1, Ordering::SeqCst);
    reply(&message, CloseResponse { error })
}

pub(crate) fn ping(shared: &Arc<Shared>, message: async_nats::Message) -> Vec<Outgoing> {
    if !shared.answer_pings.load(Ordering::SeqCst) {
        return Vec::new();
    }
    let Ok(ping) = Ping::decode(message.payload.as_ref()) else {
        return Vec::new();
    };
    let known = shared
        .state()
        .clients
        .values()
        .any(|c| c.conn_id == ping.conn_id);
    match (&message.reply, known) {
        (Some(reply), true) => {
            shared.pings_answered.fetch_add(1, Ordering::SeqCst);
            vec![(reply.to_string(), Bytes::new())]
        }
        (Some(_), false) => reply(
            &message,
            PingResponse {
                error: "client has been replaced or is no longer registered".to_owned(),
            },
        ),
        (None, _) => Vec::new(),
    }
}

/// Sends what is due whenever something happened, and at least every tick.
pub(crate) async fn pump(shared: Arc<Shared>) {
    loop {
        let out = shared.state().due();
        send(&shared, out).await;
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(25)) => {}
        }
    }
}

/// Heartbeats every client; a client that misses too many is forgotten.
pub(crate) async fn heartbeats(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.config.heartbeat_interval).await;
        let clients: Vec<(String, String)> = shared
            .state()
            .clients
            .iter()
            .map(|(id, c)| (id.clone(), c.heartbeat_inbox.clone()))
            .collect();
        for (id, inbox) in clients {
            let answer = tokio::time::timeout(
                shared.config.client_check_timeout,
                shared.nats.request(inbox.clone(), Bytes::new()),
            )
            .await;
            let mut state = shared.state();
            let Some(client) = state.clients.get_mut(&id) else {
                continue;
            };
            if client.heartbeat_inbox != inbox {
                continue;
            }
            if matches!(answer, Ok(Ok(_))) {
                client.heartbeat_replies += 1;
                client.heartbeat_misses = 0;
            } else {
                client.heartbeat_misses += 1;
                if client.heartbeat_misses >= shared.config.heartbeat_max_misses {
                    state.remove_client(&id);
                }
            }
        }
    }
}
