//! Keeping a registration alive: the client pings the server as its connect
//! response asked, and counts the pings that got no answer.

use futures::StreamExt;
use prost::Message as _;

use super::proto::{Ping, PingResponse};
use super::session::Session;

/// Pings the server as the connect response asked; returns why the
/// registration counts as lost: too many pings without answer, or an error
/// answer ("client replaced", "not registered").
///
/// A ping counts as missed only when it was sent and no answer came before
/// the next one is due. The next ping is due one interval after the last was
/// sent, never earlier: after a pause of the process (SIGSTOP, a stalled VM)
/// the timer fires once, not once per interval missed, so a pause costs at
/// most one missed ping, as in the reference client.
pub(crate) async fn keep_alive(
    nats: &async_nats::Client,
    session: &Session,
    mut answers: async_nats::Subscriber,
) -> String {
    let Some(interval) = session.pings.interval else {
        session.lost.cancelled().await;
        return "registration ended".to_owned();
    };
    let ping = Ping {
        conn_id: session.conn_id.to_vec(),
    }
    .encode_to_vec();
    let inbox = session.pings.inbox.clone();
    let mut pings = PingCount::new(session.pings.max_out);
    let next = tokio::time::sleep(interval);
    tokio::pin!(next);
    loop {
        tokio::select! {
            _ = session.lost.cancelled() => return "registration ended".to_owned(),
            () = &mut next => {
                if let Some(missed) = pings.due() {
                    return format!("{missed} pings without answer");
                }
                if let Err(err) = nats.publish_with_reply(session.pings.subject.clone(), inbox.clone(), ping.clone().into()).await {
                    tracing::debug!(error = %err, "could not send a ping");
                }
                next.as_mut().reset(tokio::time::Instant::now() + interval);
            }
            answer = answers.next() => {
                let Some(answer) = answer else { return "ping inbox closed".to_owned() };
                if answer.status.is_some_and(|s| s == async_nats::StatusCode::NO_RESPONDERS) {
                    continue;
                }
                if !answer.payload.is_empty() {
                    match PingResponse::decode(answer.payload.as_ref()) {
                        Ok(response) if !response.error.is_empty() => return response.error,
                        Ok(_) => {}
                        Err(_) => continue,
                    }
                }
                pings.answered();
            }
        }
    }
}

/// Pings sent and not answered: the connection counts as lost when the
/// `max_out`-th unanswered ping is followed by no answer either.
#[derive(Debug)]
struct PingCount {
    max_out: u32,
    /// Pings in a row that got no answer before the next was due.
    missed: u32,
    /// Whether the last ping sent is still waiting for its answer.
    waiting: bool,
}

impl PingCount {
    fn new(max_out: u32) -> Self {
        Self {
            max_out,
            missed: 0,
            waiting: false,
        }
    }

    /// The next ping is due: `Some(missed)` when the connection counts as
    /// lost, else the ping may go out.
    fn due(&mut self) -> Option<u32> {
        if self.waiting {
            self.missed += 1;
            if self.missed >= self.max_out {
                return Some(self.missed);
            }
        }
        self.waiting = true;
        None
    }

    /// An answer came: every ping so far counts as answered.
    fn answered(&mut self) {
        self.missed = 0;
        self.waiting = false;
    }
}

#[cfg(test)]
mod tests {
    use super::PingCount;

    #[test]
    fn only_a_ping_sent_and_not_answered_counts_as_missed() {
        let mut pings = PingCount::new(3);
        assert_eq!(pings.due(), None, "the first ping goes out");
        pings.answered();
        assert_eq!(pings.due(), None);
        assert_eq!(pings.due(), None, "one missed");
        assert_eq!(pings.due(), None, "two missed");
        assert_eq!(pings.due(), Some(3), "three missed: lost");
        let mut pings = PingCount::new(3);
        assert_eq!(pings.due(), None);
        assert_eq!(pings.due(), None);
        pings.answered();
        assert_eq!(pings.due(), None, "an answer starts the count again");
        assert_eq!(pings.due(), None);
        assert_eq!(pings.due(), None);
        assert_eq!(pings.due(), Some(3));
    }
}
