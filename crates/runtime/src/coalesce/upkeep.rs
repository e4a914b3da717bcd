//! The periodic work of a coalesced-ack window: sending the prefix's ack,
//! asking the broker whether a fence can lift, and progress acks for handled
//! messages that wait for the prefix.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::AckWindow;
use crate::transport::AckPendingProbe;
use crate::Acker;

/// How often handled messages waiting in the window are acked.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// How often a fenced window asks the broker for its count, at most: a new
/// fence is checked at the next tick, then ever less often up to this. (A
/// fence that went up while deliveries flowed usually lifts within a tick or
/// two, once what was delivered has reached the window.)
const FENCE_CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long a fence check waits for the broker's answer.
const FENCE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps `window` going until `finish`, then acks what it holds once more.
/// `progress_every` is half the ack wait: handled messages waiting for the
/// prefix get a progress ack that often, so the broker does not redeliver them.
pub(crate) async fn keep<A: Acker>(
    window: Arc<AckWindow<A>>,
    probe: AckPendingProbe,
    progress_every: Duration,
    fence_warning_after: Duration,
    channel: Arc<str>,
    finish: CancellationToken,
) {
    let mut ticks = tokio::time::interval(FLUSH_EVERY);
    let mut next_fence_check = Instant::now();
    let mut fence_check_every = FLUSH_EVERY;
    let mut next_progress = Instant::now() + progress_every;
    let mut fenced_since: Option<Instant> = None;
    let mut warned = false;
    loop {
        let finished = tokio::select! {
            _ = finish.cancelled() => true,
            _ = ticks.tick() => false,
        };
        let now = Instant::now();
        // At `finish` too: what the app handled is acked before it stops.
        if window.is_fenced() && (now >= next_fence_check || finished) {
            if fenced_since.is_none() {
                fence_check_every = FLUSH_EVERY;
            }
            next_fence_check = now + fence_check_every;
            fence_check_every = (fence_check_every * 2).min(FENCE_CHECK_EVERY);
            let since = *fenced_since.get_or_insert(now);
            let listed = window.listed();
            let answer = tokio::time::timeout(FENCE_CHECK_TIMEOUT, probe())
                .await
                .unwrap_or_else(|_| {
                    Err(crate::Error::Broker(
                        format!("no answer within {FENCE_CHECK_TIMEOUT:?}").into(),
                    ))
                });
            match answer {
                Ok(broker_unacked) => {
                    if window.lift_fence(listed, broker_unacked) {
                        fenced_since = None;
                        warned = false;
                    }
                }
                Err(err) => {
                    tracing::debug!(channel = %channel, error = %err, "cannot read the consumer's unacked count; coalesced acks stay held back")
                }
            }
            if fenced_since.is_some() && !warned && now.duration_since(since) > fence_warning_after
            {
                warned = true;
                tracing::warn!(
                    channel = %channel,
                    "coalesced acks held back for {fence_warning_after:?}: the broker holds unacked messages this app never received (another instance on the same durable, or deliveries lost in transit that come again after the ack wait)"
                );
            }
        }
        if let Some(acker) = window.flush() {
            if let Err(err) = acker.ack().await {
                tracing::warn!(error = %err, "coalesced ack failed; it is sent again at the next flush");
                window.unsent(acker);
            }
        }
        if finished {
            return;
        }
        if now >= next_progress {
            next_progress = now + progress_every;
            let lent = window.lend_waiting();
            for (_, acker) in &lent {
                if let Err(err) = acker.in_progress().await {
                    tracing::debug!(error = %err, "progress ack of a handled message failed");
                }
            }
            window.give_back(lent);
        }
    }
}
