//! The stream a wildcard channel (`orders.*`, `orders.>`) reads: one whose
//! subjects cover the whole pattern. JetStream lets no subject belong to two
//! streams, so a stream that holds only part of the pattern stands in the
//! way of one that holds all of it: that is an error that says what to change.

use async_nats::jetstream;
use async_nats::jetstream::context::GetStreamByNameErrorKind;
use serde::Deserialize;

use crate::Error;

/// One page of `$JS.API.STREAM.LIST`, as much of it as is read here.
#[derive(Debug, Deserialize)]
struct ListPage {
    #[serde(default)]
    total: usize,
    #[serde(default)]
    streams: Option<Vec<Listed>>,
}

#[derive(Debug, Deserialize)]
struct Listed {
    config: ListedConfig,
}

#[derive(Debug, Deserialize)]
struct ListedConfig {
    name: String,
    #[serde(default)]
    subjects: Vec<String>,
}

/// What the server holds of `pattern`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cover {
    /// This stream holds every subject the pattern matches.
    Whole(String),
    /// No stream holds any of them.
    None,
    /// These streams (name, subjects) hold some of them, none all.
    Part(Vec<(String, Vec<String>)>),
}

/// Which stream holds every subject of `subject`, a pattern or not
/// ([`Cover::Whole`] or [`Cover::None`] for a plain subject). Creates
/// nothing.
pub(crate) async fn holding(context: &jetstream::Context, subject: &str) -> Result<Cover, Error> {
    if crate::is_pattern(subject) {
        return find(context, subject).await;
    }
    match context.stream_by_subject(subject).await {
        Ok(name) => Ok(Cover::Whole(name)),
        Err(err) if err.kind() == GetStreamByNameErrorKind::NotFound => Ok(Cover::None),
        Err(err) => Err(Error::Subscribe {
            channel: subject.to_owned(),
            source: Box::new(err),
        }),
    }
}

/// Which stream covers `pattern`: the server lists the streams whose
/// subjects overlap it, and one of them must cover it all.
pub(crate) async fn find(context: &jetstream::Context, pattern: &str) -> Result<Cover, Error> {
    let mut overlapping = Vec::new();
    let mut offset = 0;
    loop {
        let request = serde_json::json!({ "subject": pattern, "offset": offset });
        let response: jetstream::response::Response<ListPage> = context
            .request("STREAM.LIST", &request)
            .await
            .map_err(|e| Error::Subscribe {
                channel: pattern.to_owned(),
                source: Box::new(e),
            })?;
        let page = match response {
            jetstream::response::Response::Ok(page) => page,
            jetstream::response::Response::Err { error } => {
                return Err(Error::Subscribe {
                    channel: pattern.to_owned(),
                    source: Box::new(error),
                })
            }
        };
        let listed = page.streams.unwrap_or_default();
        offset += listed.len();
        // Filtered here too: the subject filter is the server's, and this
        // must not depend on how widely it matches.
        overlapping.extend(
            listed
                .into_iter()
                .map(|stream| (stream.config.name, stream.config.subjects))
                .filter(|(_, subjects)| {
                    subjects.iter().any(|s| crate::patterns_overlap(s, pattern))
                }),
        );
        if offset >= page.total || offset == 0 {
            break;
        }
    }
    Ok(classify(pattern, overlapping))
}

fn classify(pattern: &str, overlapping: Vec<(String, Vec<String>)>) -> Cover {
    let whole = overlapping
        .iter()
        .find(|(_, subjects)| subjects.iter().any(|s| crate::pattern_covers(s, pattern)));
    match whole {
        Some((name, _)) => Cover::Whole(name.clone()),
        None if overlapping.is_empty() => Cover::None,
        None => Cover::Part(overlapping),
    }
}

/// The error for streams that hold only part of `pattern`.
pub(crate) fn partly_held(pattern: &str, streams: &[(String, Vec<String>)]) -> Error {
    let held = streams
        .iter()
        .map(|(name, subjects)| format!("`{name}` holds {}", subjects.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    let first = streams.first().map_or("STREAM", |(name, _)| name.as_str());
    Error::Subscribe {
        channel: pattern.to_owned(),
        source: format!(
            "no stream holds all of `{pattern}`, and JetStream lets no subject belong to two streams ({held}): give one stream every subject `{pattern}` matches, for example `nats stream edit {first} --subjects '{pattern}'`, then start again. (A stream flowgate created for one subject, because it was published to before any subscriber of `{pattern}` started, is one of these: start the subscribers first, or create the stream yourself.)"
        )
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, subjects: &[&str]) -> (String, Vec<String>) {
        (
            name.to_owned(),
            subjects.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    #[test]
    fn a_stream_covers_a_pattern_only_with_a_subject_as_wide() {
        assert_eq!(classify("orders.*", vec![]), Cover::None);
        assert_eq!(
            classify("orders.*", vec![stream("ORDERS", &["orders.>"])]),
            Cover::Whole("ORDERS".into())
        );
        let part = vec![stream("orders_placed", &["orders.placed"])];
        assert_eq!(
            classify("orders.*", part.clone()),
            Cover::Part(part.clone())
        );
        let message = partly_held("orders.*", &part).to_string();
        assert!(
            message.contains("`orders_placed` holds orders.placed"),
            "{message}"
        );
        assert!(
            message.contains("nats stream edit orders_placed"),
            "{message}"
        );
    }
}
