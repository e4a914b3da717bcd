//! Runs the cases: a warm-up of each side, then rounds that alternate which
//! side goes first, then medians and ratios.

use async_nats::jetstream;
use flowgate::Transport;
use flowgate_testkit::InMemory;

use super::args::TransportKind;
use super::event::{CONSUME_CHANNEL, IO_CHANNEL, PUBLISH_CHANNEL};
use super::report::{self, JsonLines, RunLine, Summary};
use super::stan::StanEnv;
use super::stream::{fresh_stream, prepublish};
use super::{consume, publish, Args, BenchError, RunStats};

/// The connections a run uses.
#[derive(Debug)]
pub struct Env {
    /// The options.
    pub args: Args,
    /// The framework's JetStream transport (`None` on the in-memory broker).
    pub framework: Option<flowgate::JetStream>,
    /// The raw client, on its own connection (`None` on the in-memory broker).
    pub raw: Option<(async_nats::Client, jetstream::Context)>,
    /// Both NATS Streaming clients and the double (`--transport stan` only).
    pub stan: Option<StanEnv>,
}

/// Which side a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// flowgate.
    Framework,
    /// The bare async-nats client.
    Raw,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Framework => "flowgate",
            Side::Raw => "raw",
        }
    }
}

/// What case `case` measures on `transport`.
pub fn case_name(case: u8, transport: TransportKind) -> &'static str {
    match case {
        1 if transport == TransportKind::Stan => "pub+sub",
        1 => "consume",
        2 => "consume, 2 ms I/O",
        3 => "publish, window",
        _ => "publish, await each ack",
    }
}

impl Env {
    /// Messages per run of `case`.
    fn messages(&self, case: u8) -> u64 {
        if case == 4 {
            (self.args.n / 20).max(100)
        } else {
            self.args.n
        }
    }

    fn raw(&self) -> Result<&(async_nats::Client, jetstream::Context), BenchError> {
        self.raw
            .as_ref()
            .ok_or_else(|| "no raw client on this transport".into())
    }

    /// One run of one side, its backlog or stream prepared first (not measured).
    pub async fn run_once(
        &self,
        case: u8,
        side: Side,
        n: u64,
        size: usize,
    ) -> Result<RunStats, BenchError> {
        if let Some(stan) = &self.stan {
            let framework = side == Side::Framework;
            return stan
                .run_once(case, framework, n, size, self.args.window)
                .await;
        }
        let channel = match case {
            1 => CONSUME_CHANNEL,
            2 => IO_CHANNEL,
            _ => PUBLISH_CHANNEL,
        };
        let window = self.args.window;
        if let Some((_, context)) = &self.raw {
            fresh_stream(context, channel).await?;
            if case <= 2 {
                prepublish(context, channel, n, size, window).await?;
            }
        }
        let memory = InMemory::new();
        if self.framework.is_none() && case <= 2 {
            publish::window_to(&memory, channel, n, size, window).await?;
        }
        match (side, &self.framework) {
            (Side::Framework, Some(js)) => {
                let coalesced = self.args.coalesced;
                framework_run(js.clone(), case, n, size, window, coalesced).await
            }
            (Side::Framework, None) => framework_run(memory, case, n, size, window, false).await,
            (Side::Raw, _) => {
                let (client, context) = self.raw()?;
                match case {
                    1 | 2 => consume::raw(client, context, channel, case == 2, n).await,
                    3 => publish::raw_window(context, n, size, window).await,
                    _ => publish::raw_each(context, n, size).await,
                }
            }
        }
    }

    /// Runs every selected case at every size; prints the table and returns
    /// the summaries.
    pub async fn run_all(&self, json: &mut JsonLines) -> Result<Vec<Summary>, BenchError> {
        let sides: Vec<Side> = [
            (Side::Framework, self.args.framework),
            (
                Side::Raw,
                self.args.raw && (self.raw.is_some() || self.stan.is_some()),
            ),
        ]
        .into_iter()
        .filter_map(|(side, wanted)| wanted.then_some(side))
        .collect();
        let mut summaries = Vec::new();
        for &case in &self.args.cases {
            for &size in &self.args.sizes {
                let n = self.messages(case);
                for &side in &sides {
                    eprintln!("warm-up: case {case}, {size} B, {}", side.label());
                    self.run_once(case, side, (n / 10).max(1000), size).await?;
                }
                let mut runs: [Vec<RunStats>; 2] = [Vec::new(), Vec::new()];
                for round in 0..self.args.rounds {
                    let mut order = sides.clone();
                    if round % 2 == 1 {
                        order.reverse();
                    }
                    for side in order {
                        let run = self.run_once(case, side, n, size).await?;
                        let allocs = run
                            .allocs_per_msg()
                            .map_or(String::new(), |a| format!(", {a:.2} allocs/msg"));
                        eprintln!(
                            "case {case}, {size} B, round {round}, {:<8}: {:>9.0} msgs/s, {:.2} µs CPU/msg{allocs}",
                            side.label(),
                            run.rate(),
                            run.cpu_us_per_msg()
                        );
                        json.write(&RunLine::new(case, side.label(), size, round, &run))?;
                        runs[usize::from(side == Side::Raw)].push(run);
                    }
                }
                let summary = self.summary(case, size, n, &runs);
                json.write(&summary)?;
                summaries.push(summary);
            }
        }
        Ok(summaries)
    }

    fn summary(&self, case: u8, size: usize, n: u64, runs: &[Vec<RunStats>; 2]) -> Summary {
        let a = report::summarise(&runs[0]);
        let b = (!runs[1].is_empty()).then(|| report::summarise(&runs[1]));
        let ratio = b.as_ref().map(|b| a.msgs_per_s / b.msgs_per_s);
        let cpu_ratio = b.as_ref().map(|b| a.cpu_us_per_msg / b.cpu_us_per_msg);
        let alloc_ratio = b
            .as_ref()
            .and_then(|b| Some(a.allocs_per_msg? / b.allocs_per_msg?));
        Summary {
            kind: "summary",
            case,
            name: case_name(case, self.args.transport),
            transport: self.args.transport.name(),
            size,
            n,
            rounds: self.args.rounds,
            a,
            b,
            ratio,
            cpu_ratio,
            alloc_ratio,
        }
    }
}

async fn framework_run<T: Transport>(
    transport: T,
    case: u8,
    n: u64,
    size: usize,
    window: usize,
    coalesced: bool,
) -> Result<RunStats, BenchError> {
    match case {
        1 | 2 => consume::framework(transport, case == 2, n, coalesced).await,
        3 => publish::framework_window(transport, n, size, window).await,
        _ => publish::framework_each(transport, n, size).await,
    }
}

/// Prints how the summaries compare with the targets.
pub fn print_targets(summaries: &[Summary]) {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for s in summaries {
        if s.transport == "stan" {
            if let (1, Some(ratio), Some(cpu)) = (s.case, s.ratio, s.cpu_ratio) {
                println!(
                    "case 1 (pub+sub), {:>4} B: rate {ratio:.3} × raw (≥ 1.0: {}), CPU/msg {cpu:.3} × raw (≤ 1.1: {})",
                    s.size,
                    verdict(ratio >= 1.0),
                    verdict(cpu <= 1.1)
                );
            }
            continue;
        }
        match (s.case, s.ratio, s.cpu_ratio) {
            (1, Some(ratio), Some(cpu)) => println!(
                "case 1, {:>4} B: rate {ratio:.3} × raw (≥ 0.97: {}), CPU/msg {cpu:.3} × raw (≤ 1.05: {})",
                s.size,
                verdict(ratio >= 0.97),
                verdict(cpu <= 1.05)
            ),
            (2, _, _) => {
                let case1 = summaries
                    .iter()
                    .find(|o| o.case == 1 && o.size == s.size)
                    .map(|o| o.a.msgs_per_s);
                if let Some(case1) = case1 {
                    let bound = case1.min(1024.0 / 0.002);
                    println!(
                        "case 2, {:>4} B: {:.0} msgs/s = {:.3} × min(case 1, 1024 / 2 ms) = {bound:.0} (≥ 0.9: {})",
                        s.size,
                        s.a.msgs_per_s,
                        s.a.msgs_per_s / bound,
                        verdict(s.a.msgs_per_s >= 0.9 * bound)
                    );
                }
            }
            (3, Some(ratio), _) => println!(
                "case 3, {:>4} B: rate {ratio:.3} × raw (≥ 0.97: {})",
                s.size,
                verdict(ratio >= 0.97)
            ),
            _ => {}
        }
    }
}
