//! `flowgate dlq list | show | replay | purge`.

use std::fmt::Write as _;

use flowgate::dead_letter::rfc3339;
use flowgate::dlq::{DeadLetterRecord, DeadLetters, ReplayOptions, ReplayOutcome};
use flowgate::JetStream;
use serde_json::json;

use crate::args::{show_target, DeadLetterSubject, DlqCommand};
use crate::table::{or_dash, shortened, Table};
use crate::CliError;

/// Runs one `flowgate dlq` command, writing what it says to `out`.
pub async fn run(nats: &JetStream, command: &DlqCommand, out: &mut String) -> Result<(), CliError> {
    match command {
        DlqCommand::List { at, select, json } => {
            let dead = open(nats, at).await?;
            let letters = dead.list(&select.selection(true)).await?;
            if *json {
                let rows: Vec<serde_json::Value> = letters.iter().map(as_json).collect();
                let _ = writeln!(out, "{}", serde_json::Value::Array(rows));
            } else {
                list_table(&dead, &letters, out);
            }
            Ok(())
        }
        DlqCommand::Show { args, subject } => {
            let (at, sequence) = show_target(args, subject.as_deref()).map_err(CliError::Usage)?;
            let dead = open(nats, &at).await?;
            show(&dead.get(sequence).await?, out);
            Ok(())
        }
        DlqCommand::Replay {
            at,
            select,
            to,
            dry_run,
            force,
        } => {
            let dead = open(nats, at).await?;
            let mut options = ReplayOptions::new();
            if let Some(to) = to {
                options = options.to(to);
            }
            if *dry_run {
                options = options.dry_run();
            }
            if *force {
                options = options.force();
            }
            let entries = dead.replay(&select.selection(false), &options).await?;
            let mut refused = 0;
            for entry in &entries {
                let id = entry.dead_letter.id();
                let line = match &entry.outcome {
                    ReplayOutcome::Replayed { to, sequence } => {
                        format!("{id}: replayed to {to} (sequence {sequence})")
                    }
                    ReplayOutcome::WouldReplay { to } => format!("{id}: would be replayed to {to}"),
                    ReplayOutcome::AlreadyReplayed(before) => {
                        refused += 1;
                        format!(
                            "{id}: refused, replayed before to {} (sequence {}, {}); --force replays it again",
                            before.to, before.sequence, before.at
                        )
                    }
                    ReplayOutcome::NoSubject => {
                        refused += 1;
                        format!("{id}: refused, it names no original subject; give one with --to")
                    }
                    ReplayOutcome::Failed { error } => {
                        refused += 1;
                        format!("{id}: failed, {error}; the replay stopped here")
                    }
                    other => format!("{id}: {other:?}"),
                };
                let _ = writeln!(out, "{line}");
            }
            summary(out, entries.len(), "replay");
            match refused {
                0 => Ok(()),
                n => Err(CliError::Incomplete(format!(
                    "{n} of {} dead letters not replayed",
                    entries.len()
                ))),
            }
        }
        DlqCommand::Purge {
            at,
            select,
            dry_run,
        } => {
            let dead = open(nats, at).await?;
            let purged = dead.purge(&select.selection(false), *dry_run).await?;
            let verb = if *dry_run {
                "would be deleted"
            } else {
                "deleted"
            };
            for letter in &purged {
                let _ = writeln!(out, "{}: {verb}", letter.id());
            }
            summary(out, purged.len(), "purge");
            Ok(())
        }
    }
}

async fn open(nats: &JetStream, at: &DeadLetterSubject) -> Result<DeadLetters, CliError> {
    Ok(match (&at.subject, &at.channel) {
        (Some(subject), _) => DeadLetters::on_subject(nats, subject.clone()).await?,
        (None, Some(channel)) => DeadLetters::of_channel(nats, channel).await?,
        (None, None) => {
            return Err(CliError::Usage(
                "name a channel, or a dead-letter subject with --subject".into(),
            ))
        }
    })
}

fn summary(out: &mut String, chosen: usize, what: &str) {
    if chosen == 0 {
        let _ = writeln!(
            out,
            "no dead letter matches the selection: nothing to {what}"
        );
    }
}

fn list_table(dead: &DeadLetters, letters: &[DeadLetterRecord], out: &mut String) {
    if letters.is_empty() {
        let _ = writeln!(
            out,
            "no dead letters on {} (stream {})",
            dead.subject(),
            dead.stream()
        );
        return;
    }
    let mut table = Table::new(vec![
        "SEQ",
        "ORIGINAL SUBJECT",
        "ORIGINAL SEQ",
        "DURABLE",
        "ATTEMPTS",
        "FAILED AT",
        "REPLAYED",
        "LAST ERROR",
    ]);
    for letter in letters {
        table.row(vec![
            letter.sequence.to_string(),
            or_dash(letter.original_subject.clone()),
            or_dash(letter.original_sequence.map(|s| s.to_string())),
            or_dash(letter.durable.clone()),
            or_dash(letter.attempts.map(|a| a.to_string())),
            or_dash(letter.failed_at.clone()),
            or_dash(
                letter
                    .replayed
                    .as_ref()
                    .map(|r| format!("{}× → {}#{}", r.count, r.to, r.sequence)),
            ),
            or_dash(letter.last_error.as_deref().map(|e| shortened(e, 80))),
        ]);
    }
    let noun = if letters.len() == 1 {
        "dead letter"
    } else {
        "dead letters"
    };
    let _ = writeln!(
        out,
        "{} {noun} on {} (stream {})",
        letters.len(),
        dead.subject(),
        dead.stream()
    );
    out.push_str(&table.render());
}

fn show(letter: &DeadLetterRecord, out: &mut String) {
    let _ = writeln!(
        out,
        "dead letter {} on {}, stored {}",
        letter.id(),
        letter.subject,
        rfc3339(letter.stored_at)
    );
    let _ = writeln!(out, "headers:");
    let mut headers: Vec<(String, String)> = letter
        .headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_owned()))
        })
        .collect();
    headers.sort();
    for (name, value) in headers {
        let _ = writeln!(out, "  {name}: {value}");
    }
    if let Some(replayed) = &letter.replayed {
        let _ = writeln!(
            out,
            "replayed {} time(s), last to {} (sequence {}) at {}",
            replayed.count, replayed.to, replayed.sequence, replayed.at
        );
    }
    let payload = &letter.payload;
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(value) => {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            let _ = writeln!(out, "payload ({} bytes, JSON):\n{pretty}", payload.len());
        }
        Err(_) => match std::str::from_utf8(payload) {
            Ok(text) => {
                let _ = writeln!(out, "payload ({} bytes, text):\n{text}", payload.len());
            }
            Err(_) => {
                let _ = writeln!(
                    out,
                    "payload ({} bytes, binary):\n{}",
                    payload.len(),
                    hex(payload)
                );
            }
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn as_json(letter: &DeadLetterRecord) -> serde_json::Value {
    json!({
        "stream": letter.stream,
        "sequence": letter.sequence,
        "subject": letter.subject,
        "stored_at": rfc3339(letter.stored_at),
        "original_subject": letter.original_subject,
        "original_sequence": letter.original_sequence,
        "durable": letter.durable,
        "attempts": letter.attempts,
        "last_error": letter.last_error,
        "failed_at": letter.failed_at,
        "replayed": letter.replayed.as_ref().and_then(|r| serde_json::to_value(r).ok()),
    })
}
