//! The command line, as clap reads it.

use clap::{Args, Parser, Subcommand};
use flowgate::dlq::Selection;

/// Operate flowgate apps on NATS: dead letters, durable consumers, AsyncAPI.
#[derive(Debug, Parser)]
#[command(name = "flowgate", version, about, long_about = None)]
pub struct Cli {
    /// The NATS server(s): a URL or a comma-separated seed list.
    #[arg(
        long,
        short,
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub server: String,
    /// A credentials file (.creds) to connect with.
    #[arg(long, global = true, env = "NATS_CREDS")]
    pub creds: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, replay and purge dead letters (JetStream).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Each durable consumer with its backlog; run from an app's own binary,
    /// also whether its settings on the server are the code's.
    Consumers(ConsumersArgs),
    /// Prints the app's AsyncAPI 3.0 document (from an app's own binary).
    Asyncapi(AsyncApiArgs),
}

/// `flowgate dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// A table of the dead letters: sequence, original subject and
    /// sequence, durable, attempts, last error, failed at, replayed.
    List {
        #[command(flatten)]
        at: DeadLetterSubject,
        #[command(flatten)]
        select: SelectArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: its headers, and its payload (pretty-printed when
    /// it is JSON).
    Show {
        /// The channel, then the dead letter's sequence in its stream (as
        /// `flowgate dlq list` shows it); with `--subject`, the sequence only.
        #[arg(value_name = "CHANNEL> <SEQ", num_args = 1..=2, required = true)]
        args: Vec<String>,
        /// The dead-letter subject itself (a subscriber's `dead_letter = "..."`).
        #[arg(long)]
        subject: Option<String>,
    },
    /// Sends dead letters back to their original subject (or `--to`), once
    /// each unless forced.
    Replay {
        #[command(flatten)]
        at: DeadLetterSubject,
        #[command(flatten)]
        select: SelectArgs,
        /// Publish to this subject instead of each one's original subject.
        #[arg(long)]
        to: Option<String>,
        /// Say what would be replayed; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay dead letters that were replayed before, too.
        #[arg(long)]
        force: bool,
    },
    /// Deletes dead letters from their stream.
    Purge {
        #[command(flatten)]
        at: DeadLetterSubject,
        #[command(flatten)]
        select: SelectArgs,
        /// Say what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Where the dead letters are: a channel's (`dlq.<channel>`) or a subject.
#[derive(Debug, Args)]
pub struct DeadLetterSubject {
    /// The subscriber's channel: its dead letters are on `dlq.<channel>`.
    #[arg(required_unless_present = "subject", conflicts_with = "subject")]
    pub channel: Option<String>,
    /// The dead-letter subject itself (a subscriber's `dead_letter = "..."`).
    #[arg(long)]
    pub subject: Option<String>,
}

/// Which dead letters: `--seq`, `--range`, `--error`, `--durable`, `--all`.
#[derive(Debug, Args, Default)]
pub struct SelectArgs {
    /// These sequences (repeat, or separate with commas).
    #[arg(long = "seq", value_delimiter = ',')]
    pub sequences: Vec<u64>,
    /// Sequences from A to B, both included: `A..B`.
    #[arg(long, value_parser = parse_range)]
    pub range: Option<(u64, u64)>,
    /// Only those whose last error contains this text (any case).
    #[arg(long)]
    pub error: Option<String>,
    /// Only those this durable (or queue group) gave up on.
    #[arg(long)]
    pub durable: Option<String>,
    /// Every dead letter (narrowed by `--error` and `--durable`).
    #[arg(long)]
    pub all: bool,
}

impl SelectArgs {
    /// The selection these arguments make; with `everything_by_default`
    /// (listing), no argument means all.
    pub fn selection(&self, everything_by_default: bool) -> Selection {
        let chosen_by_position = !self.sequences.is_empty() || self.range.is_some();
        let mut selection = if self.all || (everything_by_default && !chosen_by_position) {
            Selection::all()
        } else {
            Selection::new()
        };
        selection = selection.sequences(self.sequences.iter().copied());
        if let Some((from, to)) = self.range {
            selection = selection.range(from..=to);
        }
        if let Some(text) = &self.error {
            selection = selection.error_contains(text);
        }
        if let Some(durable) = &self.durable {
            selection = selection.durable(durable);
        }
        selection
    }
}

/// `flowgate consumers`
#[derive(Debug, Args)]
pub struct ConsumersArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `flowgate asyncapi`
#[derive(Debug, Args)]
pub struct AsyncApiArgs {
    /// YAML instead of JSON.
    #[arg(long)]
    pub yaml: bool,
    /// The document's title (info.title).
    #[arg(long)]
    pub title: Option<String>,
    /// The document's version (info.version), e.g. your app's.
    #[arg(long = "doc-version")]
    pub doc_version: Option<String>,
}

/// The dead-letter subject and sequence `flowgate dlq show` names.
pub fn show_target(
    args: &[String],
    subject: Option<&str>,
) -> Result<(DeadLetterSubject, u64), String> {
    let sequence = |text: &str| {
        text.parse::<u64>()
            .map_err(|_| format!("`{text}` is not a sequence: `flowgate dlq show <CHANNEL> <SEQ>`, or `flowgate dlq show --subject <SUBJECT> <SEQ>`"))
    };
    match (args, subject) {
        ([seq], Some(subject)) => Ok((
            DeadLetterSubject {
                channel: None,
                subject: Some(subject.to_owned()),
            },
            sequence(seq)?,
        )),
        ([channel, seq], None) => Ok((
            DeadLetterSubject {
                channel: Some(channel.clone()),
                subject: None,
            },
            sequence(seq)?,
        )),
        _ => Err("name the channel and the sequence (`flowgate dlq show orders.placed 7`), or the dead-letter subject with --subject and the sequence (`flowgate dlq show --subject orders.failed 7`)".to_owned()),
    }
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (from, to) = text
        .split_once("..")
        .ok_or_else(|| format!("`{text}` is not a range: write it as FROM..TO, e.g. 10..20"))?;
    let number = |part: &str| {
        part.trim()
            .parse::<u64>()
            .map_err(|_| format!("`{part}` in `{text}` is not a sequence number"))
    };
    let (from, to) = (number(from)?, number(to.trim_start_matches('='))?);
    if from > to {
        return Err(format!(
            "the range {text} is empty: its start is past its end"
        ));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_as_from_to_inclusive() {
        assert_eq!(parse_range("3..9"), Ok((3, 9)));
        assert_eq!(parse_range("3..=9"), Ok((3, 9)));
        assert!(parse_range("9..3").is_err());
        assert!(parse_range("3-9")
            .expect_err("no dots")
            .contains("FROM..TO"));
    }

    #[test]
    fn listing_selects_everything_unless_told_but_replay_needs_a_choice() {
        let none = SelectArgs::default();
        assert!(!none.selection(true).is_empty());
        assert!(none.selection(false).is_empty());
        let some = SelectArgs {
            sequences: vec![4],
            ..SelectArgs::default()
        };
        assert!(!some.selection(false).is_empty());
    }

    #[test]
    fn a_channel_or_a_subject_is_required() {
        use clap::Parser;
        assert!(Cli::try_parse_from(["flowgate", "dlq", "list"]).is_err());
        assert!(Cli::try_parse_from(["flowgate", "dlq", "list", "orders.placed"]).is_ok());
        assert!(
            Cli::try_parse_from(["flowgate", "dlq", "list", "--subject", "orders.failed"]).is_ok()
        );
        assert!(Cli::try_parse_from(["flowgate", "dlq", "show", "orders.placed", "7"]).is_ok());
        let shown = |args: &[&str], subject| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            show_target(&args, subject).map(|(at, seq)| (at.channel, at.subject, seq))
        };
        assert_eq!(
            shown(&["orders.placed", "7"], None),
            Ok((Some("orders.placed".into()), None, 7))
        );
        assert_eq!(
            shown(&["7"], Some("orders.failed")),
            Ok((None, Some("orders.failed".into()), 7))
        );
        assert!(shown(&["7"], None).is_err());
        assert!(shown(&["orders.placed", "seven"], None)
            .expect_err("not a number")
            .contains("not a sequence"));
        assert!(Cli::try_parse_from([
            "flowgate",
            "dlq",
            "replay",
            "orders.placed",
            "--seq",
            "1,2",
            "--dry-run"
        ])
        .is_ok());
    }
}
