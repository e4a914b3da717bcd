//! The command line of `bench`.

use std::path::PathBuf;

/// Which broker the framework side runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// A real nats-server; the raw async-nats client runs beside it.
    JetStream,
    /// `flowgate_testkit::InMemory`; framework side only.
    Memory,
    /// NATS Streaming: the project's protocol double over a real nats-server;
    /// a raw stan.go-like client runs beside it.
    Stan,
}

impl TransportKind {
    /// The name on the command line and in the JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::JetStream => "jetstream",
            TransportKind::Memory => "memory",
            TransportKind::Stan => "stan",
        }
    }
}

/// Parsed options.
#[derive(Debug, Clone)]
pub struct Args {
    /// Messages per run (case 4 uses `n / 20`).
    pub n: u64,
    /// Measured rounds per case and payload size.
    pub rounds: usize,
    /// Cases to run, 1 to 4.
    pub cases: Vec<u8>,
    /// Payload sizes in bytes.
    pub sizes: Vec<usize>,
    /// Outstanding publish acks in case 3 (both sides), and in pre-publishing.
    pub window: usize,
    /// The framework's transport.
    pub transport: TransportKind,
    /// Where to append JSON lines.
    pub json: Option<PathBuf>,
    /// Where to draw published / received / acked per second.
    pub plot: Option<PathBuf>,
    /// Backlog mode: consume a backlog of this many messages, report RSS.
    pub backlog: Option<u64>,
    /// Run the framework side (A).
    pub framework: bool,
    /// Run the raw side (B).
    pub raw: bool,
    /// The framework side acks with `ack = "coalesced"` (JetStream's ack-all).
    pub coalesced: bool,
    /// Instead of the cases: instructions per message of the framework's
    /// consume path, under callgrind.
    pub instructions: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            n: 200_000,
            rounds: 3,
            cases: vec![1, 2, 3, 4],
            sizes: vec![128, 1024],
            window: 1024,
            transport: TransportKind::JetStream,
            json: None,
            plot: None,
            backlog: None,
            framework: true,
            raw: true,
            coalesced: false,
            instructions: false,
        }
    }
}

/// The usage text.
pub const USAGE: &str = "\
usage: bench [--n N] [--rounds R] [--cases 1,2,3,4] [--sizes 128,1024] [--window W]
             [--transport jetstream|memory|stan] [--json FILE] [--plot FILE.png] [--backlog N]
             [--sides ab|a|b] [--ack auto|coalesced]
       bench --instructions [--json FILE]

Starts its own nats-server (-js, temp store, free port) unless NATS_URL is set.
  case 1  consume: #[subscriber] handler, default stack  vs  raw pull consume + ack
  case 2  consume, handler awaits 2 ms, max_in_flight 1024  vs  raw task per message
  case 3  publish through Publisher::window(W)  vs  raw pipelined publish, W acks outstanding
  case 4  publish awaiting each ack (n/20 messages): p50 / p99 latency
  --transport stan  NATS Streaming (the protocol double over the bench's nats-server)
               vs a raw stan.go-like client; cases 1, 3, 4 (default 1,3,4), case 1 being
               pub+sub: one publisher and one subscriber at once, until all are acked
  --backlog N  consume a backlog of N with max_in_flight 1024; RSS at 10k and at N
  --sides      a = flowgate only, b = raw only (for profiling); default ab
  --ack        coalesced: the framework side acks with ack = \"coalesced\" (JetStream)
  --instructions  instructions per message of flowgate's consume path (in-memory broker,
               no-op #[subscriber], default stack, 128 B): the bench runs itself twice under
               valgrind --tool=callgrind, 5k and 25k messages, counting only while consuming;
               (big - small) / 20k, and the top functions of the big run
Every run also reports heap allocations per message, counted by the bench's allocator.";

impl Args {
    /// Parses `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Self::default();
        let mut cases_given = false;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.to_owned());
            }
            let mut value = || {
                args.next()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match flag.as_str() {
                "--n" => parsed.n = number(&flag, &value()?)?,
                "--rounds" => parsed.rounds = number(&flag, &value()?)?,
                "--window" => parsed.window = number(&flag, &value()?)?,
                "--cases" => {
                    parsed.cases = list(&flag, &value()?)?;
                    cases_given = true;
                }
                "--sizes" => parsed.sizes = list(&flag, &value()?)?,
                "--json" => parsed.json = Some(value()?.into()),
                "--plot" => parsed.plot = Some(value()?.into()),
                "--backlog" => parsed.backlog = Some(number(&flag, &value()?)?),
                "--instructions" => parsed.instructions = true,
                "--ack" => {
                    parsed.coalesced = match value()?.as_str() {
                        "auto" => false,
                        "coalesced" => true,
                        other => return Err(format!("unknown ack mode `{other}`\n{USAGE}")),
                    }
                }
                "--sides" => {
                    let sides = value()?;
                    parsed.framework = sides.contains('a');
                    parsed.raw = sides.contains('b');
                }
                "--transport" => {
                    parsed.transport = match value()?.as_str() {
                        "jetstream" => TransportKind::JetStream,
                        "memory" => TransportKind::Memory,
                        "stan" => TransportKind::Stan,
                        other => return Err(format!("unknown transport `{other}`\n{USAGE}")),
                    }
                }
                other => return Err(format!("unknown option `{other}`\n{USAGE}")),
            }
        }
        if parsed.cases.iter().any(|case| !(1..=4).contains(case)) {
            return Err(format!("cases are 1 to 4\n{USAGE}"));
        }
        if parsed.transport == TransportKind::Stan {
            if !cases_given {
                parsed.cases = vec![1, 3, 4];
            }
            if parsed.cases.contains(&2) {
                return Err(format!("case 2 does not run on NATS Streaming\n{USAGE}"));
            }
            if parsed.backlog.is_some() {
                return Err(format!("--backlog runs on JetStream only\n{USAGE}"));
            }
        }
        parsed.rounds = parsed.rounds.max(1);
        parsed.window = parsed.window.max(1);
        Ok(parsed)
    }
}

fn number<N: std::str::FromStr>(flag: &str, value: &str) -> Result<N, String> {
    value
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{flag}: `{value}` is not a number"))
}

fn list<N: std::str::FromStr>(flag: &str, value: &str) -> Result<Vec<N>, String> {
    value
        .split(',')
        .map(|item| number(flag, item.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_option() {
        let args = Args::parse(
            "--n 50_000 --rounds 2 --cases 1,3 --transport memory --json out.jsonl"
                .split(' ')
                .map(str::to_owned),
        )
        .expect("valid");
        assert_eq!(args.n, 50_000);
        assert_eq!(args.rounds, 2);
        assert_eq!(args.cases, vec![1, 3]);
        assert_eq!(args.transport, TransportKind::Memory);
        assert!(!args.instructions);
        assert!(Args::parse(["--instructions".to_owned()]).is_ok_and(|a| a.instructions));
        assert!(Args::parse(["--cases".to_owned(), "5".to_owned()]).is_err());
    }

    #[test]
    fn stan_runs_cases_1_3_4() {
        let parse = |line: &str| Args::parse(line.split(' ').map(str::to_owned));
        let args = parse("--transport stan").expect("valid");
        assert_eq!(args.transport, TransportKind::Stan);
        assert_eq!(args.cases, vec![1, 3, 4]);
        assert_eq!(
            parse("--transport stan --cases 1").expect("valid").cases,
            vec![1]
        );
        assert!(parse("--cases 2 --transport stan").is_err());
    }
}
