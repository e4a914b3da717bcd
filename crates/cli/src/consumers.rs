//! `flowgate consumers`: each durable with its backlog, and, run from an
//! app's binary, whether its settings on the server are the code's.

use std::fmt::Write as _;

use flowgate::{App, ConfigCheck, ConsumerReport, JetStream};
use serde_json::json;

use crate::table::{or_dash, Table};
use crate::CliError;

/// The reports: of the app's durables when there is an app (compared with
/// the code), else of every durable on the server.
pub async fn reports(nats: &JetStream, app: Option<&App>) -> Result<Vec<ConsumerReport>, CliError> {
    let Some(app) = app else {
        return Ok(nats.consumer_reports().await?);
    };
    let mut reports = Vec::new();
    for subscriber in app.subscribers() {
        if let Some(report) = nats.consumer_report(subscriber.spec()).await? {
            reports.push(report);
        }
    }
    Ok(reports)
}

/// Writes the reports as a table or JSON; an error when a consumer's
/// settings differ from the code's, so a deploy script can stop on it.
pub fn write(
    reports: &[ConsumerReport],
    compared: bool,
    json: bool,
    out: &mut String,
) -> Result<(), CliError> {
    if json {
        let rows: Vec<serde_json::Value> = reports
            .iter()
            .map(|report| {
                json!({
                    "stream": report.stream,
                    "consumer": report.name,
                    "pending": report.counts.map(|c| c.pending),
                    "ack_pending": report.counts.map(|c| c.ack_pending),
                    "redelivered": report.counts.map(|c| c.redelivered),
                    "config": config_word(&report.config),
                    "drift": match &report.config {
                        ConfigCheck::Differs(why) => Some(why.as_str()),
                        _ => None,
                    },
                })
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(rows));
    } else if reports.is_empty() {
        let _ = writeln!(out, "no durable consumers");
    } else {
        let mut table = Table::new(vec![
            "STREAM",
            "CONSUMER",
            "PENDING",
            "ACK PENDING",
            "REDELIVERED",
            "CONFIG",
        ]);
        for report in reports {
            table.row(vec![
                report.stream.clone(),
                report.name.clone(),
                or_dash(report.counts.map(|c| c.pending.to_string())),
                or_dash(report.counts.map(|c| c.ack_pending.to_string())),
                or_dash(report.counts.map(|c| c.redelivered.to_string())),
                config_word(&report.config).to_owned(),
            ]);
        }
        out.push_str(&table.render());
        for report in reports {
            if let ConfigCheck::Differs(why) = &report.config {
                let _ = writeln!(out, "\n{}/{}: {why}", report.stream, report.name);
            }
        }
        if !compared {
            let _ = writeln!(
                out,
                "\n(config not compared: run `flowgate consumers` from your app's own binary to check each durable against the code)"
            );
        }
    }
    let drifted = reports
        .iter()
        .filter(|r| matches!(r.config, ConfigCheck::Differs(_)))
        .count();
    match drifted {
        0 => Ok(()),
        n => Err(CliError::Incomplete(format!(
            "{n} durable consumer(s) differ from the code"
        ))),
    }
}

fn config_word(check: &ConfigCheck) -> &'static str {
    match check {
        ConfigCheck::NotCompared => "-",
        ConfigCheck::Matches => "matches",
        ConfigCheck::Differs(_) => "DIFFERS",
        ConfigCheck::Missing => "missing (created at start)",
        _ => "?",
    }
}
