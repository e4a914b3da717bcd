//! The double's store: clients, channels, subscriptions grouped by what they
//! share (a durable, a queue group), and the delivery rules of
//! nats-streaming-server: max in flight, ack wait, redelivery, start positions.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use flowgate::transport::stan::proto::{MsgProto, StartPosition, SubscriptionRequest};
use prost::Message as _;

/// A message to send: subject and encoded payload.
pub(crate) type Outgoing = (String, Bytes);

#[derive(Debug, Clone)]
pub(crate) struct ClientRecord {
    pub(crate) conn_id: Vec<u8>,
    pub(crate) heartbeat_inbox: String,
    pub(crate) heartbeat_replies: u64,
    pub(crate) heartbeat_misses: u32,
}

#[derive(Debug)]
pub(crate) struct Stored {
    /// Shared by every delivery of the message (`MsgProto.data` is `Bytes`).
    pub(crate) data: bytes::Bytes,
    pub(crate) timestamp: i64,
}

#[derive(Debug)]
struct Pending {
    member: Option<u64>,
    deadline: Instant,
    redeliveries: u32,
}

#[derive(Debug)]
struct Member {
    id: u64,
    client_id: String,
    /// Where its messages go.
    inbox: String,
    /// Where its acks come (the server's answer to the subscription request).
    ack_inbox: String,
}

/// Subscriptions that share one position: a plain subscription (one
/// member), a durable (kept while offline) or a queue group.
#[derive(Debug)]
struct Group {
    channel: String,
    durable: bool,
    queue: bool,
    max_in_flight: usize,
    ack_wait: Duration,
    last_sent: u64,
    members: Vec<Member>,
    pending: BTreeMap<u64, Pending>,
    next_member: usize,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) clients: HashMap<String, ClientRecord>,
    pub(crate) channels: HashMap<String, Vec<Stored>>,
    groups: HashMap<String, Group>,
    /// Subscription id → group key.
    subs: HashMap<u64, String>,
    next_sub: u64,
    pub(crate) subscription_requests: Vec<SubscriptionRequest>,
    /// Redeliveries sent, per channel.
    pub(crate) redeliveries: HashMap<String, u64>,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

impl State {
    pub(crate) fn store(&mut self, channel: &str, data: Vec<u8>) -> u64 {
        let messages = self.channels.entry(channel.to_owned()).or_default();
        messages.push(Stored {
            data: data.into(),
            timestamp: now_nanos(),
        });
        messages.len() as u64
    }

    fn last_sequence(&self, channel: &str) -> u64 {
        self.channels.get(channel).map_or(0, |m| m.len() as u64)
    }

    fn group_key(request: &SubscriptionRequest) -> Option<String> {
        let channel = &request.subject;
        match (request.durable_name.as_str(), request.q_group.as_str()) {
            ("", "") => None,
            ("", queue) => Some(format!("queue:{queue}@{channel}")),
            (durable, "") => Some(format!("durable:{}:{durable}@{channel}", request.client_id)),
            (durable, queue) => Some(format!("durable-queue:{durable}:{queue}@{channel}")),
        }
    }

    /// Adds a subscription whose acks come on `<ack_prefix>.<id>`; returns
    /// its id, or the server's error string.
    pub(crate) fn subscribe(
        &mut self,
        request: &SubscriptionRequest,
        ack_prefix: &str,
    ) -> Result<u64, String> {
        self.subscription_requests.push(request.clone());
        if !self.clients.contains_key(&request.client_id) {
            return Err("stan: unknown clientID".to_owned());
        }
        if request.ack_wait_in_secs < 1 {
            return Err("stan: invalid ack wait time, should be >= 1s".to_owned());
        }
        if request.max_in_flight < 1 {
            return Err("stan: invalid max in flight, should be >= 1".to_owned());
        }
        self.next_sub += 1;
        let id = self.next_sub;
        let key = Self::group_key(request).unwrap_or_else(|| format!("ephemeral:{id}"));
        let start = self.start_after(request);
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            channel: request.subject.clone(),
            durable: !request.durable_name.is_empty(),
            queue: !request.q_group.is_empty(),
            max_in_flight: 0,
            ack_wait: Duration::ZERO,
            last_sent: start,
            members: Vec::new(),
            pending: BTreeMap::new(),
            next_member: 0,
        });
        if group.durable && !group.queue && !group.members.is_empty() {
            return Err("stan: duplicate durable registration".to_owned());
        }
        group.max_in_flight = usize::try_from(request.max_in_flight).unwrap_or(1);
        group.ack_wait = Duration::from_secs(u64::from(request.ack_wait_in_secs.unsigned_abs()));
        group.members.push(Member {
            id,
            client_id: request.client_id.clone(),
            inbox: request.inbox.clone(),
            ack_inbox: format!("{ack_prefix}.{id}"),
        });
        // A durable back online gets its unacked messages again.
        let now = Instant::now();
        for pending in group.pending.values_mut() {
            if pending.member.is_none() {
                pending.deadline = now;
            }
        }
        self.subs.insert(id, key);
        Ok(id)
    }

    /// The sequence a new subscription has "already sent" given its start.
    fn start_after(&self, request: &SubscriptionRequest) -> u64 {
        let last = self.last_sequence(&request.subject);
        match request.start_position() {
            StartPosition::NewOnly => last,
            StartPosition::LastReceived => last.saturating_sub(1),
            StartPosition::First => 0,
            StartPosition::SequenceStart => request.start_sequence.saturating_sub(1).min(last),
            StartPosition::TimeDeltaStart => {
                let since = now_nanos().saturating_sub(request.start_time_delta);
                self.channels
                    .get(&request.subject)
                    .and_then(|m| m.iter().position(|s| s.timestamp >= since))
                    .map_or(last, |index| index as u64)
            }
        }
    }

    /// Finds the subscription of `client_id` named by `inbox`: its ack inbox
    /// (what the reference client sends, and the only lookup of
    /// nats-streaming-server) or its delivery inbox. Says which one matched:
    /// `true` for the ack inbox.
    pub(crate) fn find_sub(&self, client_id: &str, inbox: &str) -> Option<(u64, bool)> {
        self.subs.iter().find_map(|(id, key)| {
            let group = self.groups.get(key)?;
            let member = group
                .members
                .iter()
                .find(|m| m.id == *id && m.client_id == client_id)?;
            if member.ack_inbox == inbox {
                Some((*id, true))
            } else if member.inbox == inbox {
                Some((*id, false))
            } else {
                None
            }
        })
    }

    /// Removes a subscription. `unsubscribe` deletes a durable (or a durable
    /// queue group once its last member leaves); closing keeps it.
    pub(crate) fn remove_sub(&mut self, id: u64, unsubscribe: bool) {
        let Some(key) = self.subs.remove(&id) else {
            return;
        };
        let Some(group) = self.groups.get_mut(&key) else {
            return;
        };
        group.members.retain(|m| m.id != id);
        let now = Instant::now();
        for pending in group.pending.values_mut() {
            if pending.member == Some(id) {
                pending.member = None;
                pending.deadline = now;
            }
        }
        let keep = group.durable && !unsubscribe;
        if group.members.is_empty() && !keep {
            self.groups.remove(&key);
        }
    }

    /// Closes every subscription of `client_id` and forgets it.
    pub(crate) fn remove_client(&mut self, client_id: &str) {
        self.clients.remove(client_id);
        let ids: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, key)| {
                self.groups
                    .get(*key)
                    .is_some_and(|g| g.members.iter().any(|m| m.client_id == client_id))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let owned = self.groups.get(&self.subs[&id]).is_some_and(|g| {
                g.members
                    .iter()
                    .any(|m| m.id == id && m.client_id == client_id)
            });
            if owned {
                self.remove_sub(id, false);
            }
        }
    }

    /// Settles `sequence` for subscription `id`. Returns false when the
    /// subscription is gone (closed, unsubscribed, its client replaced): the
    /// ack is dropped, as nats-streaming-server drops it, and the message
    /// stays unacked.
    pub(crate) fn ack(&mut self, id: u64, sequence: u64) -> bool {
        match self.subs.get(&id).and_then(|key| self.groups.get_mut(key)) {
            Some(group) => {
                group.pending.remove(&sequence);
                true
            }
            None => false,
        }
    }

    /// Messages of `channel` delivered and not acked, over every
    /// subscription (online or not).
    pub(crate) fn unacked(&self, channel: &str) -> usize {
        self.groups
            .values()
            .filter(|g| g.channel == channel)
            .map(|g| g.pending.len())
            .sum()
    }

    /// Whether a durable (plain or queue) exists for `channel`.
    pub(crate) fn has_durable(&self, channel: &str, durable: &str) -> bool {
        self.groups.iter().any(|(key, group)| {
            group.durable && group.channel == channel && key.contains(&format!(":{durable}"))
        })
    }

    /// Active subscriptions on `channel`.
    pub(crate) fn active_subscriptions(&self, channel: &str) -> usize {
        self.groups
            .values()
            .filter(|g| g.channel == channel)
            .map(|g| g.members.len())
            .sum()
    }

    /// Redeliveries due and new messages within max in flight.
    pub(crate) fn due(&mut self) -> Vec<Outgoing> {
        let now = Instant::now();
        let mut out = Vec::new();
        for group in self.groups.values_mut() {
            if group.members.is_empty() {
                continue;
            }
            let messages = self.channels.get(&group.channel);
            let due: Vec<u64> = group
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in due {
                let member = match group.pending.get(&seq).and_then(|p| p.member) {
                    Some(id) if group.members.iter().any(|m| m.id == id) => Some(id),
                    _ => group.pick(),
                };
                let Some(member) = member else { continue };
                let Some(pending) = group.pending.get_mut(&seq) else {
                    continue;
                };
                pending.member = Some(member);
                pending.redeliveries += 1;
                pending.deadline = now + group.ack_wait;
                let redeliveries = pending.redeliveries;
                if let Some(send) = group.message(messages, member, seq, redeliveries) {
                    out.push(send);
                    *self.redeliveries.entry(group.channel.clone()).or_default() += 1;
                }
            }
            let last = messages.map_or(0, |m| m.len() as u64);
            while group.last_sent < last {
                let Some(member) = group.pick_with_room() else {
                    break;
                };
                group.last_sent += 1;
                let seq = group.last_sent;
                group.pending.insert(
                    seq,
                    Pending {
                        member: Some(member),
                        deadline: now + group.ack_wait,
                        redeliveries: 0,
                    },
                );
                if let Some(send) = group.message(messages, member, seq, 0) {
                    out.push(send);
                }
            }
        }
        out
    }
}

impl Group {
    fn pick(&mut self) -> Option<u64> {
        if self.members.is_empty() {
            return None;
        }
        self.next_member = (self.next_member + 1) % self.members.len();
        Some(self.members[self.next_member].id)
    }

    fn pick_with_room(&mut self) -> Option<u64> {
        for _ in 0..self.members.len() {
            let id = self.pick()?;
            let held = self
                .pending
                .values()
                .filter(|p| p.member == Some(id))
                .count();
            if held < self.max_in_flight {
                return Some(id);
            }
        }
        None
    }

    fn message(
        &self,
        messages: Option<&Vec<Stored>>,
        member: u64,
        seq: u64,
        redeliveries: u32,
    ) -> Option<Outgoing> {
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        let stored = messages?.get(index)?;
        let inbox = &self.members.iter().find(|m| m.id == member)?.inbox;
        let msg = MsgProto {
            sequence: seq,
            subject: self.channel.clone(),
            data: stored.data.clone(),
            timestamp: stored.timestamp,
            redelivered: redeliveries > 0,
            redelivery_count: redeliveries,
            ..Default::default()
        };
        Some((inbox.clone(), msg.encode_to_vec().into()))
    }
}
