//! Migrating from NATS Streaming to JetStream: one handler, both transports,
//! side by side.
//!
//! ```text
//! nats-streaming-server -cid test-cluster -p 4223 &     # the legacy cluster
//! nats-server -js -p 4222 &                             # the JetStream target
//! STAN_URL=nats://127.0.0.1:4223 NATS_URL=nats://127.0.0.1:4222 \
//!     cargo run -p flowgate-examples --bin migrate
//! ... -- --keep-running                                 # until Ctrl-C
//! ```
//!
//! `STAN_URL` is the NATS URL of the server under the streaming server,
//! `STAN_CLUSTER_ID` its cluster id (`-cid`, default `test-cluster`),
//! `STAN_CLIENT_ID` the client id to register with (default
//! `flowgate-migrate`), `NATS_URL` a nats-server with JetStream enabled.
//! Without `STAN_URL` or `NATS_URL` it says what to start and exits with 2.
//!
//! The same `#[flowgate::subscriber]` fn, `bill`, is registered twice with
//! `bill::subscriber()`: once in an App on [`flowgate::NatsStreaming`] and
//! once in an App on [`flowgate::JetStream`]. Each side publishes a few
//! orders; each order is printed with the transport that delivered it, then
//! a summary checks that every order was handled exactly once, by the
//! transport it was published on, and the example exits (0 when so).
//!
//! The subscriber's settings mean the same thing on both transports:
//!
//! | `#[subscriber]` | NATS Streaming | JetStream |
//! | --- | --- | --- |
//! | channel `orders.placed` | channel `orders.placed` | stream `orders_placed` holding subject `orders.placed` |
//! | `durable = "billing"` | durable `billing` (of this client id) | durable pull consumer `billing` |
//! | `max_in_flight = 32` | max in flight 32 | max ack pending 32 |
//! | `ack_wait` (30 s default) | ack wait, in whole seconds | ack wait |
//! | `start` (`"new"` default) | start position (new only) | deliver policy (new) |
//! | `queue = "..."` (none here) | queue group | one durable consumer shared by every instance |
//!
//! NATS Streaming cannot extend an ack wait, so a handler's in-process
//! retries must end within one ack wait: `timeout = "5s"` keeps the worst
//! case (5 attempts × 5 s + backoff) under the 30 s ack wait, and the App
//! refuses to start on NATS Streaming when it would not.
//!
//! Each transport runs on its own Tokio runtime whose threads are named after
//! it; that is only so this demo can print which transport delivered an
//! order (the handler reads its thread's name). A real handler neither knows
//! nor cares, and one runtime serves both Apps. See
//! `docs/migrating-from-nats-streaming.md` for the whole procedure.

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowgate::{App, BoxError, Message, NatsStreaming, Publisher, StanOptions, Transport};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    /// Which run of this example published it (ms since the epoch), so the
    /// summary can tell orders left over from an earlier run.
    batch: u64,
    id: u64,
    customer: String,
    total_cents: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("order {0} has a negative total")]
struct BillingError(u64);

/// The one handler, whichever transport delivers.
#[flowgate::subscriber(durable = "billing", max_in_flight = 32, timeout = "5s")]
async fn bill(order: Message<OrderPlaced>) -> Result<(), BillingError> {
    if order.total_cents < 0 {
        return Err(BillingError(order.id));
    }
    let side = Side::current();
    println!(
        "{:<14}: order {:>3} for {:<6} {:>7.2} EUR (sequence {}, delivery {})",
        side.map_or("unknown", Side::label),
        order.id,
        order.customer,
        order.total_cents as f64 / 100.0,
        order.stream_sequence(),
        order.delivery_count(),
    );
    handled()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Handled {
            side,
            batch: order.batch,
            id: order.id,
        });
    Ok(())
}

/// Orders each side publishes.
const ORDERS: u64 = 5;
/// How long the demo waits for its orders to be handled.
const DEMO_DEADLINE: Duration = Duration::from_secs(30);
/// How long connecting to a server may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// A transport, as the thread running its App is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    NatsStreaming,
    JetStream,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::NatsStreaming => "NATS Streaming",
            Side::JetStream => "JetStream",
        }
    }

    fn thread_name(self) -> &'static str {
        match self {
            Side::NatsStreaming => "nats-streaming",
            Side::JetStream => "jetstream",
        }
    }

    /// The side whose runtime runs the current thread.
    fn current() -> Option<Side> {
        let thread = std::thread::current();
        [Side::NatsStreaming, Side::JetStream]
            .into_iter()
            .find(|side| thread.name() == Some(side.thread_name()))
    }

    /// The order ids this side publishes: 1.. on NATS Streaming, 101.. on JetStream.
    fn ids(self) -> std::ops::RangeInclusive<u64> {
        let first = match self {
            Side::NatsStreaming => 1,
            Side::JetStream => 101,
        };
        first..=first + ORDERS - 1
    }
}

/// One handler call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handled {
    side: Option<Side>,
    batch: u64,
    id: u64,
}

fn handled() -> &'static Mutex<Vec<Handled>> {
    static HANDLED: Mutex<Vec<Handled>> = Mutex::new(Vec::new());
    &HANDLED
}

/// Where the two servers are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    stan_url: String,
    cluster_id: String,
    client_id: String,
    nats_url: String,
}

/// The environment variables that are not set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Missing(Vec<&'static str>);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "migrate runs one handler on NATS Streaming and on JetStream side by side;"
        )?;
        writeln!(f, "it needs both servers. Not set: {}", self.0.join(", "))?;
        writeln!(f)?;
        writeln!(f, "Start them, for example:")?;
        writeln!(
            f,
            "  nats-streaming-server -cid test-cluster -p 4223 &   # NATS Streaming (legacy)"
        )?;
        writeln!(
            f,
            "  nats-server -js -p 4222 &                           # JetStream (the target)"
        )?;
        writeln!(f, "then run:")?;
        writeln!(
            f,
            "  STAN_URL=nats://127.0.0.1:4223 STAN_CLUSTER_ID=test-cluster \\"
        )?;
        writeln!(f, "  NATS_URL=nats://127.0.0.1:4222 \\")?;
        write!(f, "  cargo run -p flowgate-examples --bin migrate")
    }
}

impl Config {
    /// Reads the configuration through `var` (`std::env::var`, in `main`);
    /// an empty value counts as not set.
    fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, Missing> {
        let get = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let stan_url = get("STAN_URL");
        let nats_url = get("NATS_URL");
        match (stan_url, nats_url) {
            (Some(stan_url), Some(nats_url)) => Ok(Self {
                stan_url,
                cluster_id: get("STAN_CLUSTER_ID")
                    .unwrap_or_else(|| StanOptions::DEFAULT_CLUSTER_ID.to_owned()),
                client_id: get("STAN_CLIENT_ID").unwrap_or_else(|| "flowgate-migrate".to_owned()),
                nats_url,
            }),
            (stan_url, nats_url) => {
                let mut missing = Vec::new();
                if stan_url.is_none() {
                    missing.push("STAN_URL");
                }
                if nats_url.is_none() {
                    missing.push("NATS_URL");
                }
                Err(Missing(missing))
            }
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Publish, handle, print the summary, exit.
    Demo,
    /// The same, then keep handling until Ctrl-C.
    KeepRunning,
    /// Print the usage.
    Help,
}

const USAGE: &str = "usage: migrate [--keep-running]
  env: STAN_URL, STAN_CLUSTER_ID (default test-cluster), STAN_CLIENT_ID (default
  flowgate-migrate), NATS_URL (a nats-server with -js)";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Mode, String> {
    let mut mode = Mode::Demo;
    for arg in args {
        match arg.as_str() {
            "--keep-running" => mode = Mode::KeepRunning,
            "-h" | "--help" => return Ok(Mode::Help),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(mode)
}

fn main() -> ExitCode {
    flowgate_examples::init_logging();
    let mode = match parse_args(std::env::args().skip(1)) {
        Ok(Mode::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(mode) => mode,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env(|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(missing) => {
            eprintln!("{missing}");
            return ExitCode::from(2);
        }
    };
    match run(&config, mode == Mode::KeepRunning) {
        Ok(summary) => {
            print!("{summary}");
            if summary.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("migrate: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs both sides, each on its own runtime, and sums up what was handled.
fn run(config: &Config, keep_running: bool) -> Result<Summary, BoxError> {
    let batch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        });
    println!(
        "NATS Streaming: {} (cluster {}, client {})",
        config.stan_url, config.cluster_id, config.client_id
    );
    println!("JetStream     : {}", config.nats_url);
    let stan_runtime = side_runtime(Side::NatsStreaming)?;
    let jetstream_runtime = side_runtime(Side::JetStream)?;
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, _) = watch::channel(false);
    let stop = Arc::new(stop);
    let outcome = control.block_on(async {
        let legacy =
            stan_runtime.spawn(stan_side(config.clone(), batch, keep_running, stop.clone()));
        let modern = jetstream_runtime.spawn(jetstream_side(
            config.clone(),
            batch,
            keep_running,
            stop.clone(),
        ));
        let both = async { (legacy.await, modern.await) };
        tokio::pin!(both);
        if keep_running {
            tokio::select! {
                outcomes = &mut both => return outcomes,
                () = flowgate::shutdown_signal() => stop.send_replace(true),
            };
            println!("shutting down");
        }
        both.await
    });
    let joined = |side: Side, outcome: Result<Result<(), BoxError>, tokio::task::JoinError>| {
        outcome
            .map_err(|err| format!("{}: {err}", side.label()))?
            .map_err(|err| format!("{}: {err}", side.label()))
    };
    let (legacy, modern) = outcome;
    let legacy = joined(Side::NatsStreaming, legacy);
    let modern = joined(Side::JetStream, modern);
    match (legacy, modern) {
        (Ok(()), Ok(())) => {}
        (Err(err), Ok(())) | (Ok(()), Err(err)) => return Err(err.into()),
        (Err(legacy), Err(modern)) => return Err(format!("{legacy}; {modern}").into()),
    }
    let calls = handled().lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Summary::new(batch, &calls))
}

fn side_runtime(side: Side) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(side.thread_name())
        .enable_all()
        .build()
}

async fn stan_side(
    config: Config,
    batch: u64,
    keep_running: bool,
    stop: Arc<watch::Sender<bool>>,
) -> Result<(), BoxError> {
    let options =
        StanOptions::new(config.client_id.as_str()).cluster_id(config.cluster_id.as_str());
    let connect = NatsStreaming::connect(&config.stan_url, options);
    let stan = connected(&config.stan_url, connect, &stop).await?;
    let served = serve(
        stan.clone(),
        Side::NatsStreaming,
        batch,
        keep_running,
        &stop,
    )
    .await;
    // Closing keeps the durable: the next run resumes where this one stopped.
    let closed = stan.close().await;
    served?;
    Ok(closed?)
}

async fn jetstream_side(
    config: Config,
    batch: u64,
    keep_running: bool,
    stop: Arc<watch::Sender<bool>>,
) -> Result<(), BoxError> {
    let connect = flowgate::JetStream::connect(&config.nats_url);
    let jetstream = connected(&config.nats_url, connect, &stop).await?;
    serve(jetstream, Side::JetStream, batch, keep_running, &stop).await
}

/// Waits for `connect` to `url`, at most [`CONNECT_DEADLINE`]; a failure
/// stops the other side too.
async fn connected<T>(
    url: &str,
    connect: impl std::future::Future<Output = Result<T, flowgate::Error>>,
    stop: &watch::Sender<bool>,
) -> Result<T, BoxError> {
    let outcome = match tokio::time::timeout(CONNECT_DEADLINE, connect).await {
        Ok(Ok(transport)) => return Ok(transport),
        Ok(Err(err)) => err.into(),
        Err(_) => format!("no answer from {url} within {CONNECT_DEADLINE:?}").into(),
    };
    stop.send_replace(true);
    Err(outcome)
}

/// Starts `bill` on `transport`, publishes this side's orders, waits until
/// they are handled, then (with `--keep-running`) until told to stop.
/// Whatever fails stops the other side too.
async fn serve<T: Transport>(
    transport: T,
    side: Side,
    batch: u64,
    keep_running: bool,
    stop: &watch::Sender<bool>,
) -> Result<(), BoxError> {
    let app = match App::new()
        .subscriber(bill::subscriber())
        .start(transport.clone())
        .await
    {
        Ok(app) => app,
        Err(err) => {
            stop.send_replace(true);
            return Err(err.into());
        }
    };
    let outcome = demo(&transport, side, batch, stop).await;
    match &outcome {
        Ok(()) if keep_running => {
            println!(
                "{:<14}: demo orders handled; running until Ctrl-C",
                side.label()
            );
            let _ = stop.subscribe().wait_for(|stopped| *stopped).await;
        }
        Ok(()) => {}
        Err(_) => {
            stop.send_replace(true);
        }
    }
    let shutdown = app.shutdown().await;
    outcome?;
    Ok(shutdown?)
}

async fn demo<T: Transport>(
    transport: &T,
    side: Side,
    batch: u64,
    stop: &watch::Sender<bool>,
) -> Result<(), BoxError> {
    let publisher = Publisher::new(transport.clone());
    let customers = ["ada", "brian", "grace", "linus"];
    for id in side.ids() {
        let order = OrderPlaced {
            batch,
            id,
            customer: customers[(id % 4) as usize].to_owned(),
            total_cents: 1000 + 250 * i64::try_from(id % 100).unwrap_or(0),
        };
        publisher.publish(&order).await?; // waits for the broker's ack
    }
    let deadline = tokio::time::Instant::now() + DEMO_DEADLINE;
    let mut stopped = stop.subscribe();
    loop {
        let done = side.ids().all(|id| {
            handled()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|h| h.batch == batch && h.id == id)
        });
        if done {
            return Ok(());
        }
        if *stopped.borrow_and_update() {
            return Err("stopped before its orders were handled".into());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("its orders were not all handled within {DEMO_DEADLINE:?}").into());
        }
        tokio::select! {
            _ = stopped.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// What each side's orders went through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Summary {
    /// What became of the orders each side published.
    sides: BTreeMap<Side, SideSummary>,
    /// Orders of an earlier run (left unacked then) handled now.
    earlier: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct SideSummary {
    published: u64,
    handled: u64,
    duplicates: u64,
    by_other: u64,
}

impl Summary {
    fn new(batch: u64, calls: &[Handled]) -> Self {
        let mut summary = Summary::default();
        for side in [Side::NatsStreaming, Side::JetStream] {
            let mut entry = SideSummary {
                published: ORDERS,
                ..SideSummary::default()
            };
            for id in side.ids() {
                let times = calls
                    .iter()
                    .filter(|h| h.batch == batch && h.id == id)
                    .collect::<Vec<_>>();
                if times.iter().any(|h| h.side == Some(side)) {
                    entry.handled += 1;
                }
                entry.duplicates += (times.len() as u64).saturating_sub(1);
                entry.by_other += times.iter().filter(|h| h.side != Some(side)).count() as u64;
            }
            summary.sides.insert(side, entry);
        }
        summary.earlier = calls.iter().filter(|h| h.batch != batch).count();
        summary
    }

    /// Every order handled once, by the transport it was published on.
    fn is_clean(&self) -> bool {
        self.sides.values().all(|side| {
            side.handled == side.published && side.duplicates == 0 && side.by_other == 0
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "summary:")?;
        for (side, s) in &self.sides {
            writeln!(
                f,
                "  {:<14}: {} published, {} handled by it, {} duplicate(s), {} handled by the other transport",
                side.label(),
                s.published,
                s.handled,
                s.duplicates,
                s.by_other
            )?;
        }
        if self.earlier > 0 {
            writeln!(
                f,
                "  {} order(s) left unacked by an earlier run were handled too",
                self.earlier
            )?;
        }
        let verdict = if self.is_clean() {
            "every order handled exactly once, by the transport it was published on"
        } else {
            "orders were lost, duplicated or mixed up"
        };
        writeln!(f, "  {verdict}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn both_urls_are_required_and_the_rest_has_defaults() {
        let config = Config::from_env(env(&[
            ("STAN_URL", "nats://127.0.0.1:4223"),
            ("NATS_URL", "nats://127.0.0.1:4222"),
        ]))
        .expect("complete");
        assert_eq!(config.cluster_id, "test-cluster");
        assert_eq!(config.client_id, "flowgate-migrate");
        assert_eq!(config.stan_url, "nats://127.0.0.1:4223");

        let config = Config::from_env(env(&[
            ("STAN_URL", "nats://a:4223"),
            ("NATS_URL", "nats://b:4222"),
            ("STAN_CLUSTER_ID", "prod"),
            ("STAN_CLIENT_ID", "billing-1"),
        ]))
        .expect("complete");
        assert_eq!(
            (config.cluster_id.as_str(), config.client_id.as_str()),
            ("prod", "billing-1")
        );
    }

    #[test]
    fn a_missing_url_names_what_to_start() {
        let missing = Config::from_env(env(&[("STAN_URL", "nats://a:4223"), ("NATS_URL", " ")]))
            .expect_err("NATS_URL is blank");
        assert_eq!(missing, Missing(vec!["NATS_URL"]));
        let missing = Config::from_env(env(&[])).expect_err("nothing set");
        assert_eq!(missing, Missing(vec!["STAN_URL", "NATS_URL"]));
        let help = missing.to_string();
        assert!(
            help.contains("nats-streaming-server -cid test-cluster"),
            "{help}"
        );
        assert!(help.contains("nats-server -js"), "{help}");
    }

    #[test]
    fn arguments() {
        let args = |list: &[&str]| parse_args(list.iter().map(|s| (*s).to_owned()));
        assert_eq!(args(&[]), Ok(Mode::Demo));
        assert_eq!(args(&["--keep-running"]), Ok(Mode::KeepRunning));
        assert_eq!(args(&["--help"]), Ok(Mode::Help));
        assert!(args(&["--keep"]).is_err_and(|err| err.contains("unknown argument `--keep`")));
    }

    #[test]
    fn the_summary_flags_loss_duplicates_and_mix_ups() {
        let call = |side, id| Handled {
            side: Some(side),
            batch: 7,
            id,
        };
        let mut calls: Vec<Handled> = Side::NatsStreaming
            .ids()
            .map(|id| call(Side::NatsStreaming, id))
            .chain(Side::JetStream.ids().map(|id| call(Side::JetStream, id)))
            .collect();
        assert!(Summary::new(7, &calls).is_clean());

        calls.push(Handled {
            batch: 6,
            ..calls[0]
        });
        let earlier = Summary::new(7, &calls);
        assert!(
            earlier.is_clean(),
            "an earlier run's order is no fault of this one"
        );
        assert_eq!(earlier.earlier, 1);

        calls.push(calls[0]);
        let twice = Summary::new(7, &calls);
        assert!(!twice.is_clean());
        assert_eq!(twice.sides[&Side::NatsStreaming].duplicates, 1);

        calls.pop();
        calls[0].side = Some(Side::JetStream);
        let mixed = Summary::new(7, &calls);
        assert!(!mixed.is_clean());
        assert_eq!(mixed.sides[&Side::NatsStreaming].by_other, 1);
        assert_eq!(mixed.sides[&Side::NatsStreaming].handled, ORDERS - 1);

        calls.remove(0);
        assert!(!Summary::new(7, &calls).is_clean(), "a lost order");
    }
}
