//! `flowgate asyncapi` prints the document of the app it runs for, and
//! says what to do when it runs without one. No server is needed.

use clap::Parser;
use flowgate::{App, Subscriber};
use flowgate_cli::{Cli, CliError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "cli.invoices")]
struct Invoice {
    id: u64,
}

fn app() -> App {
    let handler = |_: Invoice| async { Ok::<(), std::io::Error>(()) };
    App::new().subscriber(Subscriber::new("cli.invoices", handler).durable("ledger"))
}

#[tokio::test]
async fn the_document_of_the_app_it_runs_for() {
    let cli = Cli::try_parse_from([
        "flowgate",
        "asyncapi",
        "--title",
        "ledger",
        "--doc-version",
        "1.2.3",
    ])
    .expect("arguments");
    let mut out = String::new();
    flowgate_cli::run(&cli, Some(&app()), &mut out)
        .await
        .expect("printed");
    let document: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(document["asyncapi"], "3.0.0");
    assert_eq!(document["info"]["title"], "ledger");
    assert_eq!(document["info"]["version"], "1.2.3");
    let addresses: Vec<&str> = document["channels"]
        .as_object()
        .expect("channels")
        .values()
        .filter_map(|channel| channel["address"].as_str())
        .collect();
    assert!(
        addresses.contains(&"cli.invoices") && addresses.contains(&"dlq.cli.invoices"),
        "{addresses:?}"
    );

    let cli = Cli::try_parse_from(["flowgate", "asyncapi", "--yaml"]).expect("arguments");
    let mut yaml = String::new();
    flowgate_cli::run(&cli, Some(&app()), &mut yaml)
        .await
        .expect("printed");
    assert!(yaml.starts_with("asyncapi: 3.0.0"), "{yaml}");
    assert!(yaml.contains("address: cli.invoices"), "{yaml}");
}

#[tokio::test]
async fn without_an_app_it_says_where_to_run_it() {
    let cli = Cli::try_parse_from(["flowgate", "asyncapi"]).expect("arguments");
    let mut out = String::new();
    let err = flowgate_cli::run(&cli, None, &mut out)
        .await
        .expect_err("no app");
    assert!(matches!(err, CliError::Usage(_)), "{err:?}");
    assert!(err.to_string().contains("flowgate_cli::main_for"), "{err}");
}
