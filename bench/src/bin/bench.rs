//! The benchmark: flowgate side by side with the bare async-nats client.
//!
//! ```text
//! cargo run --release -p flowgate-bench --bin bench -- --n 50000 --rounds 3
//! cargo run --release -p flowgate-bench --bin bench -- --cases 1 --plot bench.png --json bench.jsonl
//! cargo run --release -p flowgate-bench --bin bench -- --backlog 1000000
//! cargo run --release -p flowgate-bench --bin bench -- --transport memory
//! cargo run --release -p flowgate-bench --bin bench -- --instructions
//! ```
//!
//! It starts its own `nats-server -js` on a free port with a temp store
//! (or uses `NATS_URL`), and stops it at the end. See `--help`. Its global
//! allocator counts allocations, for the allocations per message of each run.

use std::time::Duration;

use flowgate_bench::alloc_count::CountingAlloc;
use flowgate_bench::args::TransportKind;
use flowgate_bench::counters::{counters, spawn_sampler, CountingRecorder};
use flowgate_bench::instructions::{self, workload};
use flowgate_bench::report::{self, JsonLines};
use flowgate_bench::runner::{print_targets, Env};
use flowgate_bench::server::NatsServer;
use flowgate_bench::stan::{self, StanEnv};
use flowgate_bench::{backlog, plot, probe, Args, BenchError};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let hidden = argv.get(1).cloned().unwrap_or_default();
    match argv.first().map(String::as_str) {
        Some(stan::double::SERVE_FLAG) => {
            let served = runtime().and_then(|rt| rt.block_on(stan::double::serve(&hidden)));
            exit_on_error("the NATS Streaming double failed", served);
            return;
        }
        Some(workload::FLAG) => {
            let report = hidden
                .parse()
                .map_err(|_| format!("{}: `{hidden}` is not a number", workload::FLAG).into())
                .and_then(workload::run);
            match report {
                Ok(report) => println!("{}", serde_json::json!(report)),
                Err(err) => exit_on_error("the instructions workload failed", Err(err)),
            }
            return;
        }
        _ => {}
    }
    let args = match Args::parse(argv) {
        Ok(args) => args,
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    flowgate_bench::init_logging();
    let result = if args.instructions {
        run_instructions(&args)
    } else {
        runtime().and_then(|rt| rt.block_on(run(args)))
    };
    exit_on_error("bench failed", result);
}

/// The runtime `#[tokio::main]` would build.
fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn exit_on_error(what: &str, result: Result<(), BenchError>) {
    if let Err(err) = result {
        eprintln!("{what}: {err}");
        std::process::exit(1);
    }
}

fn run_instructions(args: &Args) -> Result<(), BenchError> {
    let report = instructions::measure()?;
    instructions::print(&report);
    JsonLines::create(args.json.as_deref())?.write(&report)?;
    Ok(())
}

async fn run(args: Args) -> Result<(), BenchError> {
    CountingRecorder::install();
    spawn_sampler(Duration::from_millis(100));
    let mut json = JsonLines::create(args.json.as_deref())?;
    let server = match (args.transport, std::env::var("NATS_URL")) {
        (TransportKind::Memory, _) | (_, Ok(_)) => None,
        (TransportKind::JetStream | TransportKind::Stan, Err(_)) => Some(NatsServer::start()?),
    };
    let url = match (&server, std::env::var("NATS_URL")) {
        (Some(server), _) => Some(server.url().to_owned()),
        (None, Ok(url)) if args.transport != TransportKind::Memory => Some(url),
        _ => None,
    };
    let env = match &url {
        Some(url) if args.transport == TransportKind::Stan => {
            eprintln!("nats-server at {url}; NATS Streaming double in a child process");
            Env {
                args: args.clone(),
                framework: None,
                raw: None,
                stan: Some(StanEnv::start(url, args.window).await?),
            }
        }
        Some(url) => {
            eprintln!("nats-server at {url}");
            let client = async_nats::connect(url).await?;
            let context = async_nats::jetstream::new(client.clone());
            Env {
                args: args.clone(),
                framework: Some(flowgate::JetStream::connect(url).await?),
                raw: Some((client, context)),
                stan: None,
            }
        }
        None => Env {
            args: args.clone(),
            framework: None,
            raw: None,
            stan: None,
        },
    };
    if let Some(n) = args.backlog {
        let result = backlog::run(&env, n).await?;
        println!(
            "backlog {n}: RSS before consuming {:.1} MiB; {}; {:.0} msgs/s",
            result.rss_before_mib,
            result
                .rss_at
                .iter()
                .map(|(done, mib)| format!("{done} consumed: {mib:.1} MiB"))
                .collect::<Vec<_>>()
                .join(", "),
            result.msgs_per_s
        );
        json.write(&result)?;
    } else {
        let summaries = env.run_all(&mut json).await?;
        let raw = match args.transport {
            TransportKind::Stan => "a raw stan.go-like client on async-nats + prost",
            _ => "raw async-nats",
        };
        println!(
            "\nA = flowgate, B = {raw}; medians of {} rounds; transport {:?}; allocs = heap allocations per message",
            args.rounds, args.transport
        );
        println!("{}", report::header());
        for summary in &summaries {
            println!("{}", report::row(summary));
        }
        println!();
        print_targets(&summaries);
    }
    println!(
        "process peak RSS {:.1} MiB",
        probe::peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    if let Some(path) = &args.plot {
        tokio::time::sleep(Duration::from_millis(250)).await;
        plot::draw(path, &counters().samples())?;
        println!("plot written to {}", path.display());
    }
    if let Some(stan) = &env.stan {
        stan.close().await?;
    }
    drop(env);
    drop(server);
    Ok(())
}
