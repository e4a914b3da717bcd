//! What an operator reads in the log when handlers fail, on the in-memory
//! broker under paused time: the first failure of each message at WARN with
//! where it came from, no more than ten such lines a second, the retries at
//! DEBUG, each dead letter, a success at DEBUG with its duration, and never
//! a payload.

use std::io::Write;
use std::sync::{Arc, Mutex};

use flowgate::{App, PublishOptions, Publisher, Subscriber};
use flowgate_testkit::InMemory;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct Payment {
    id: u64,
    card: String,
}

/// The log, as the fmt subscriber writes it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Captures this thread's log, at DEBUG and above, until the guard drops.
    fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const FAILING: &str = "logs.failing";
const FINE: &str = "logs.fine";
const MESSAGES: u64 = 30;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn first_failures_are_warnings_within_a_budget_and_payloads_never_show() {
    let (captured, _log) = Captured::install();

    let broker = InMemory::new();
    let failing = Subscriber::new(FAILING, |payment: Payment| async move {
        Err::<(), _>(std::io::Error::other(format!(
            "bank down for payment {}",
            payment.id
        )))
    })
    .durable("charging")
    .max_deliver(3);
    let fine = Subscriber::new(FINE, |_payment: Payment| async move {
        Ok::<(), std::io::Error>(())
    })
    .durable("receipts");
    let app = App::new()
        .subscriber(failing)
        .subscriber(fine)
        .start(broker.clone())
        .await
        .expect("started");
    let publisher = Publisher::new(broker.clone());
    for (channel, ids) in [(FAILING, 1..=MESSAGES), (FINE, 1..=1)] {
        for id in ids {
            let payment = Payment {
                id,
                card: "secret-card-4242".into(),
            };
            publisher
                .publish_with(&payment, PublishOptions::new().channel(channel))
                .await
                .expect("published");
        }
    }
    broker.wait_idle().await;
    app.shutdown().await.expect("shut down");

    let lines = captured.lines();
    let first_failures: Vec<_> = lines
        .iter()
        .filter(|l| l.contains(" WARN ") && l.contains("handler failed; it is retried"))
        .collect();
    assert_eq!(
        first_failures.len(),
        10,
        "the first failures of {MESSAGES} messages in one second, within the budget"
    );
    let first = first_failures[0];
    for field in [
        "channel=logs.failing",
        "subject=\"logs.failing\"",
        "attempt=1",
        "error=handler failed: bank down for payment",
        "seq=",
    ] {
        assert!(first.contains(field), "{field} missing from: {first}");
    }
    let retries = lines
        .iter()
        .filter(|l| {
            l.contains("DEBUG") && l.contains("retrying in-process") && l.contains("attempt=2")
        })
        .count();
    assert_eq!(
        retries as u64, MESSAGES,
        "each message's second attempt, at DEBUG"
    );
    let dead_letters: Vec<_> = lines
        .iter()
        .filter(|l| l.contains(" WARN ") && l.contains("message dead-lettered"))
        .collect();
    assert_eq!(
        dead_letters.len() as u64,
        MESSAGES,
        "each dead letter is logged at WARN"
    );
    for field in [
        "channel=logs.failing",
        "subject=\"logs.failing\"",
        "seq=",
        "attempts=",
        "reason=failure budget spent",
        "error=",
    ] {
        assert!(
            dead_letters[0].contains(field),
            "{field} missing from: {}",
            dead_letters[0]
        );
    }
    let handled = lines
        .iter()
        .find(|l| l.contains("DEBUG") && l.contains("handled") && l.contains("channel=logs.fine"))
        .unwrap_or_else(|| panic!("no success line in {lines:#?}"));
    assert!(handled.contains("duration="), "{handled}");
    assert!(
        !lines.iter().any(|l| l.contains("secret-card-4242")),
        "a payload reached the log"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_permanent_failure_is_not_announced_as_retried() {
    let (captured, _log) = Captured::install();

    let broker = InMemory::new();
    let refusing = Subscriber::new(FAILING, |payment: Payment| async move {
        Err::<(), _>(flowgate::Failure::permanent(std::io::Error::other(
            format!("payment {} is for a closed account", payment.id),
        )))
    })
    .durable("charging");
    let app = App::new()
        .subscriber(refusing)
        .start(broker.clone())
        .await
        .expect("started");
    let payment = Payment {
        id: 1,
        card: "secret-card-4242".into(),
    };
    Publisher::new(broker.clone())
        .publish_with(&payment, PublishOptions::new().channel(FAILING))
        .await
        .expect("published");
    broker.wait_idle().await;
    app.shutdown().await.expect("shut down");

    let lines = captured.lines();
    let warned: Vec<_> = lines
        .iter()
        .filter(|l| l.contains(" WARN ") && l.contains("flowgate::attempt: handler failed"))
        .collect();
    assert_eq!(warned.len(), 1, "{lines:#?}");
    assert!(
        warned[0].contains("the failure is permanent: it goes to the dead letters without a retry"),
        "{}",
        warned[0]
    );
    assert!(!warned[0].contains("it is retried"), "{}", warned[0]);
    assert_eq!(
        broker.settlements(FAILING).dead_lettered(),
        vec![1],
        "dead-lettered at once"
    );
}
