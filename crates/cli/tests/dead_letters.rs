//! An operator's loop on a real nats-server, through the `flowgate` binary
//! and the library API: find why messages were dead-lettered, send them
//! back once the bug is fixed (each replay a fresh failure budget, a second
//! replay refused unless forced), then purge what is left.

use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::dead_letter::{ATTEMPTS, REPLAY_OF};
use flowgate::dlq::{DeadLetters, ReplayOptions, ReplayOutcome, Selection};
use flowgate::extract::Attempt;
use flowgate::middleware::retry::{Backoff, RetryPolicy};
use flowgate::{App, Headers, Publisher, Subscriber};
use flowgate_tests::{eventually, init_tracing, lock, NatsServer};
use serde::{Deserialize, Serialize};

const CHANNEL: &str = "cli.orders";
const BUDGET: u32 = 2;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "cli.orders")]
struct Order {
    id: u64,
}

/// One run of the handler: the order, its attempt, and the dead letter it
/// was replayed from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    id: u64,
    attempt: u32,
    replay_of: Option<String>,
}

#[derive(Clone, Default)]
struct Shop {
    runs: Arc<Mutex<Vec<Run>>>,
    /// Orders the handler fails, with the error it fails them with.
    broken: Arc<Mutex<Vec<(u64, &'static str)>>>,
}

impl Shop {
    fn runs_of(&self, id: u64) -> Vec<Run> {
        lock(&self.runs)
            .iter()
            .filter(|run| run.id == id)
            .cloned()
            .collect()
    }

    fn subscriber(&self) -> Subscriber {
        let shop = self.clone();
        let handler = move |order: Order, Attempt(attempt): Attempt, headers: Headers| {
            let shop = shop.clone();
            async move {
                let replay_of = headers.get(REPLAY_OF).map(|v| v.as_str().to_owned());
                lock(&shop.runs).push(Run {
                    id: order.id,
                    attempt,
                    replay_of,
                });
                let broken = lock(&shop.broken)
                    .iter()
                    .find(|(id, _)| *id == order.id)
                    .map(|(_, why)| *why);
                match broken {
                    Some(why) => Err(std::io::Error::other(why)),
                    None => Ok(()),
                }
            }
        };
        Subscriber::new(CHANNEL, handler)
            .durable("billing")
            .max_deliver(BUDGET)
            .ack_wait(Duration::from_secs(2))
            .retry(RetryPolicy::default().backoff_with(Backoff {
                initial: Duration::from_millis(20),
                multiplier: 1.0,
                max: Duration::from_millis(20),
                jitter: 0.0,
            }))
    }
}

/// Runs the `flowgate` binary against `server`.
async fn flowgate(server: &NatsServer, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowgate"));
    command.args(args).env("NATS_URL", server.url());
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the command's thread")
        .expect("the flowgate binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn said(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether `count` dead letters are stored for the channel.
async fn dead_letters_are(nats: &flowgate::JetStream, count: usize) -> bool {
    let Ok(letters) = DeadLetters::of_channel(nats, CHANNEL).await else {
        return false;
    };
    letters
        .list(&Selection::all())
        .await
        .is_ok_and(|listed| listed.len() == count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_why_replays_once_and_purges() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let shop = Shop::default();
    lock(&shop.broken).extend([(2, "card declined by the bank"), (3, "no such address")]);
    let app = App::new()
        .subscriber(shop.subscriber())
        .start(nats.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(nats.clone());
    for id in 1..=3 {
        publisher.publish(&Order { id }).await.expect("stored");
    }
    let dead = eventually(Duration::from_secs(20), || dead_letters_are(&nats, 2)).await;
    assert!(dead, "orders 2 and 3 dead-lettered: {:?}", lock(&shop.runs));
    assert_eq!(
        shop.runs_of(2).len(),
        BUDGET as usize,
        "the whole budget was spent on order 2"
    );

    // Why: the table names the original message, the durable and the error.
    let listed = flowgate(&server, &["dlq", "list", CHANNEL]).await;
    assert!(listed.status.success(), "{}", said(&listed));
    let table = stdout(&listed);
    assert!(
        table.contains("2 dead letters on dlq.cli.orders"),
        "{table}"
    );
    for wanted in [
        "SEQ",
        "ORIGINAL SUBJECT",
        "LAST ERROR",
        "billing",
        "card declined by the bank",
        "no such address",
    ] {
        assert!(table.contains(wanted), "`{wanted}` in\n{table}");
    }
    let letters = DeadLetters::of_channel(&nats, CHANNEL)
        .await
        .expect("the dead-letter stream");
    let all = letters.list(&Selection::all()).await.expect("listed");
    let declined = all
        .iter()
        .find(|l| {
            l.last_error
                .as_deref()
                .is_some_and(|e| e.contains("declined"))
        })
        .expect("order 2's dead letter");
    let unknown = all
        .iter()
        .find(|l| {
            l.last_error
                .as_deref()
                .is_some_and(|e| e.contains("address"))
        })
        .expect("order 3's dead letter");
    assert_eq!(declined.original_subject.as_deref(), Some(CHANNEL));
    assert_eq!(declined.durable.as_deref(), Some("billing"));
    assert_eq!(declined.attempts, Some(BUDGET));
    assert!(declined.failed_at.is_some() && declined.replayed.is_none());

    let shown = flowgate(
        &server,
        &["dlq", "show", CHANNEL, &declined.sequence.to_string()],
    )
    .await;
    assert!(shown.status.success(), "{}", said(&shown));
    let shown = stdout(&shown);
    assert!(
        shown.contains(
            "Flowgate-Last-Error: attempt 2 failed: handler failed: card declined by the bank"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("payload (8 bytes, JSON):\n{\n  \"id\": 2\n}"),
        "{shown}"
    );
    let missing = flowgate(&server, &["dlq", "show", CHANNEL, "999"]).await;
    assert!(!missing.status.success(), "{}", said(&missing));
    assert!(
        said(&missing).contains("no dead letter"),
        "{}",
        said(&missing)
    );

    // The bug is fixed for order 2. A dry run says what would go, sends nothing.
    lock(&shop.broken).retain(|(id, _)| *id != 2);
    let dry = flowgate(
        &server,
        &["dlq", "replay", CHANNEL, "--error", "DECLINED", "--dry-run"],
    )
    .await;
    assert!(dry.status.success(), "{}", said(&dry));
    assert!(
        stdout(&dry).contains(&format!(
            "{}: would be replayed to {CHANNEL}",
            declined.id()
        )),
        "{}",
        said(&dry)
    );
    let nothing_chosen = flowgate(&server, &["dlq", "replay", CHANNEL]).await;
    assert!(
        !nothing_chosen.status.success(),
        "{}",
        said(&nothing_chosen)
    );
    assert!(
        said(&nothing_chosen).contains("no dead letters chosen"),
        "{}",
        said(&nothing_chosen)
    );

    let replayed = flowgate(&server, &["dlq", "replay", CHANNEL, "--error", "declined"]).await;
    assert!(replayed.status.success(), "{}", said(&replayed));
    assert!(
        stdout(&replayed).contains("replayed to cli.orders"),
        "{}",
        said(&replayed)
    );
    let handled = eventually(Duration::from_secs(10), || async {
        shop.runs_of(2).len() == BUDGET as usize + 1
    })
    .await;
    assert!(handled, "order 2 handled again: {:?}", shop.runs_of(2));
    let last = shop.runs_of(2).pop().expect("a run");
    assert_eq!(last.attempt, 1, "a replay starts a fresh budget");
    assert_eq!(last.replay_of.as_deref(), Some(declined.id().as_str()));

    // Twice is refused; forced, it goes again.
    let again = flowgate(
        &server,
        &[
            "dlq",
            "replay",
            CHANNEL,
            "--seq",
            &declined.sequence.to_string(),
        ],
    )
    .await;
    assert!(!again.status.success(), "{}", said(&again));
    assert!(
        stdout(&again).contains("refused, replayed before"),
        "{}",
        said(&again)
    );
    let forced = letters
        .replay(
            &Selection::new().sequence(declined.sequence),
            &ReplayOptions::new().force(),
        )
        .await
        .expect("forced replay");
    assert!(
        matches!(forced[0].outcome, ReplayOutcome::Replayed { .. }),
        "{forced:?}"
    );
    let handled = eventually(Duration::from_secs(10), || async {
        shop.runs_of(2).len() == BUDGET as usize + 2
    })
    .await;
    assert!(
        handled,
        "order 2 handled a third time: {:?}",
        shop.runs_of(2)
    );
    let record = letters
        .get(declined.sequence)
        .await
        .expect("listed")
        .replayed
        .expect("recorded");
    assert_eq!(record.count, 2);

    // Order 3 still fails: its replay gets the whole budget again, and its
    // second dead letter names the first.
    let replayed = letters
        .replay(
            &Selection::new().sequence(unknown.sequence),
            &ReplayOptions::new(),
        )
        .await
        .expect("replay of order 3");
    assert!(
        matches!(replayed[0].outcome, ReplayOutcome::Replayed { .. }),
        "{replayed:?}"
    );
    let dead_again = eventually(Duration::from_secs(20), || dead_letters_are(&nats, 3)).await;
    assert!(
        dead_again,
        "order 3 dead-lettered again: {:?}",
        shop.runs_of(3)
    );
    let attempts: Vec<u32> = shop.runs_of(3).iter().map(|run| run.attempt).collect();
    assert_eq!(attempts, [1, 2, 1, 2], "a fresh budget for the replay");
    let second = letters
        .list(&Selection::all())
        .await
        .expect("listed")
        .pop()
        .expect("the newest");
    assert_eq!(
        second.headers.get(REPLAY_OF).map(|v| v.as_str()),
        Some(unknown.id().as_str())
    );
    assert_eq!(second.headers.get(ATTEMPTS).map(|v| v.as_str()), Some("2"));

    // Purge: a dry run deletes nothing; then the replayed one goes.
    let dry = flowgate(&server, &["dlq", "purge", CHANNEL, "--all", "--dry-run"]).await;
    assert!(
        dry.status.success() && stdout(&dry).matches("would be deleted").count() == 3,
        "{}",
        said(&dry)
    );
    let purged = flowgate(
        &server,
        &[
            "dlq",
            "purge",
            CHANNEL,
            "--seq",
            &declined.sequence.to_string(),
        ],
    )
    .await;
    assert!(purged.status.success(), "{}", said(&purged));
    let left: Vec<u64> = letters
        .list(&Selection::all())
        .await
        .expect("listed")
        .iter()
        .map(|l| l.sequence)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&declined.sequence), "{left:?}");
    let json = flowgate(&server, &["dlq", "list", CHANNEL, "--json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    assert!(
        rows[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("address")),
        "{rows}"
    );

    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_show_the_backlog_and_whether_the_code_still_agrees() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let shop = Shop::default();
    let app = App::new()
        .subscriber(shop.subscriber())
        .start(nats.clone())
        .await
        .expect("app starts");
    app.shutdown().await.expect("clean shutdown");
    let publisher = Publisher::new(nats.clone());
    for id in 1..=3 {
        publisher.publish(&Order { id }).await.expect("stored");
    }

    let listed = flowgate(&server, &["consumers"]).await;
    assert!(listed.status.success(), "{}", said(&listed));
    let table = stdout(&listed);
    let row = table
        .lines()
        .find(|line| line.contains("billing"))
        .unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells.get(..3),
        Some(&["cli_orders", "billing", "3"][..]),
        "{table}"
    );
    assert!(table.contains("config not compared"), "{table}");

    // From the app's own binary, the code is compared too.
    let same = App::new().subscriber(shop.subscriber());
    let changed = App::new().subscriber(shop.subscriber().ack_wait(Duration::from_secs(5)));
    let elsewhere = App::new().subscriber(shop.subscriber().durable("shipping"));
    let args = |command: &[&str]| {
        let url = server.url();
        let mut all = vec!["flowgate", "--server", url.as_str()];
        all.extend_from_slice(command);
        <flowgate_cli::Cli as clap::Parser>::try_parse_from(all).expect("arguments")
    };
    let mut out = String::new();
    flowgate_cli::run(&args(&["consumers"]), Some(&same), &mut out)
        .await
        .expect("the code agrees");
    assert!(
        out.lines()
            .any(|l| l.contains("billing") && l.ends_with("matches")),
        "{out}"
    );
    let mut out = String::new();
    let drift = flowgate_cli::run(&args(&["consumers"]), Some(&changed), &mut out).await;
    assert!(drift.is_err(), "a drift is an error: {out}");
    assert!(out.contains("DIFFERS") && out.contains("ack_wait"), "{out}");
    let mut out = String::new();
    flowgate_cli::run(&args(&["consumers", "--json"]), Some(&elsewhere), &mut out)
        .await
        .expect("nothing differs");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(rows[0]["consumer"], "shipping");
    assert_eq!(rows[0]["config"], "missing (created at start)");
}

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "cli.shipments.*")]
struct Shipment {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_channels_dead_letters_are_named_by_subject_and_replayed_elsewhere() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let handled: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let handler = {
        let handled = handled.clone();
        move |shipment: Shipment,
              flowgate::extract::Subject(subject): flowgate::extract::Subject| {
            let handled = handled.clone();
            async move {
                lock(&handled).push((shipment.id, subject.clone()));
                match subject.as_str() {
                    "cli.shipments.retry" => Ok(()),
                    _ => Err(flowgate::Failure::permanent(std::io::Error::other(
                        "carrier unknown",
                    ))),
                }
            }
        }
    };
    let app = App::new()
        .subscriber(Subscriber::new("cli.shipments.*", handler).durable("carrier"))
        .start(nats.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(nats.clone());
    for (id, region) in [(1, "eu"), (2, "us")] {
        publisher
            .publish_to(&format!("cli.shipments.{region}"), &Shipment { id })
            .await
            .expect("stored");
    }
    let both = eventually(Duration::from_secs(10), || async {
        let mut stored = 0;
        for region in ["eu", "us"] {
            if let Ok(letters) =
                DeadLetters::on_subject(&nats, format!("dlq.cli.shipments.{region}")).await
            {
                stored += letters.list(&Selection::all()).await.map_or(0, |l| l.len());
            }
        }
        stored == 2
    })
    .await;
    assert!(
        both,
        "each region's shipment dead-lettered: {:?}",
        lock(&handled)
    );

    // The pattern spans a stream per subject: the tool names one to pick.
    let spread = flowgate(&server, &["dlq", "list", "cli.shipments.*"]).await;
    assert!(!spread.status.success(), "{}", said(&spread));
    assert!(
        said(&spread).contains("in several streams")
            && said(&spread).contains("dlq.cli.shipments."),
        "{}",
        said(&spread)
    );
    let listed = flowgate(
        &server,
        &["dlq", "list", "--subject", "dlq.cli.shipments.eu"],
    )
    .await;
    assert!(listed.status.success(), "{}", said(&listed));
    assert!(
        stdout(&listed).contains("cli.shipments.eu"),
        "{}",
        said(&listed)
    );

    // Sent to another subject the channel covers, where it succeeds.
    let replayed = flowgate(
        &server,
        &[
            "dlq",
            "replay",
            "--subject",
            "dlq.cli.shipments.eu",
            "--all",
            "--to",
            "cli.shipments.retry",
        ],
    )
    .await;
    assert!(replayed.status.success(), "{}", said(&replayed));
    assert!(
        stdout(&replayed).contains("replayed to cli.shipments.retry"),
        "{}",
        said(&replayed)
    );
    let handled_there = eventually(Duration::from_secs(10), || async {
        lock(&handled).contains(&(1, "cli.shipments.retry".to_owned()))
    })
    .await;
    assert!(handled_there, "{:?}", lock(&handled));
    app.shutdown().await.expect("clean shutdown");
}
