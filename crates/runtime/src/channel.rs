//! Channel and consumer names, checked before anything reaches the broker.

/// Why a channel, durable or queue name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The channel is not a literal NATS subject.
    #[error("channel `{channel}` is not valid: {reason}; use dot-separated tokens of letters, digits, `-` and `_`, like `orders.placed`")]
    Channel {
        /// The refused channel.
        channel: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The subscription's channel is not a NATS subject pattern.
    #[error("channel `{pattern}` is not valid: {reason}; use dot-separated tokens of letters, digits, `-` and `_`, where a `*` token stands for any one token and a last `>` token for one or more, like `orders.*` or `orders.>`")]
    Pattern {
        /// The refused pattern.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The durable or queue name would be refused by the server.
    #[error("{kind} name `{name}` is not valid: use letters, digits, `-` and `_` only")]
    Consumer {
        /// `durable` or `queue`.
        kind: &'static str,
        /// The refused name.
        name: String,
    },
}

/// The name flowgate gives the stream it creates for `channel`, on JetStream
/// and in memory: its tokens joined by `_`, a `*` token named `any` and a
/// `>` token `all` (stream names cannot hold `.`, `*` or `>`).
///
/// ```
/// assert_eq!(flowgate::stream_name("orders.placed"), "orders_placed");
/// assert_eq!(flowgate::stream_name("orders.*"), "orders_any");
/// assert_eq!(flowgate::stream_name("orders.*.eu"), "orders_any_eu");
/// assert_eq!(flowgate::stream_name("orders.>"), "orders_all");
/// ```
pub fn stream_name(channel: &str) -> String {
    channel
        .split('.')
        .map(|token| match token {
            "*" => "any",
            ">" => "all",
            literal => literal,
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// Checks that `channel` is a literal subject: non-empty dot-separated tokens of
/// letters, digits, `-` and `_`.
///
/// ```
/// assert!(flowgate::validate_channel("orders.placed").is_ok());
/// assert!(flowgate::validate_channel("orders.*").is_err());
/// assert!(flowgate::validate_channel("orders..placed").is_err());
/// ```
pub fn validate_channel(channel: &str) -> Result<(), NameError> {
    let fail = |reason| {
        Err(NameError::Channel {
            channel: channel.to_owned(),
            reason,
        })
    };
    if channel.is_empty() {
        return fail("it is empty");
    }
    // One pass over the bytes (it runs for every publish to a given channel):
    // the first problem from the left is reported, as token by token.
    let mut token_len = 0usize;
    for &byte in channel.as_bytes() {
        if byte == b'.' {
            if token_len == 0 {
                return fail("it has an empty token");
            }
            token_len = 0;
        } else if is_name_byte(byte) {
            token_len += 1;
        } else if byte == b'*' || byte == b'>' {
            return fail(WILDCARD_IN_SUBJECT);
        } else {
            return fail(BAD_BYTE);
        }
    }
    if token_len == 0 {
        return fail("it has an empty token");
    }
    Ok(())
}

const BAD_BYTE: &str = "it has a character other than letters, digits, `-`, `_` and `.`";
const WILDCARD_IN_SUBJECT: &str =
    "wildcards (`*`, `>`) only match subjects when subscribing: publish to a concrete subject";

/// Checks that `pattern` is a channel a subscription may name: a literal
/// subject, or a NATS subject pattern where a `*` token stands for any one
/// token and a last `>` token for one or more.
///
/// ```
/// use flowgate::validate_channel_pattern;
///
/// assert!(validate_channel_pattern("orders.placed").is_ok());
/// assert!(validate_channel_pattern("orders.*").is_ok());
/// assert!(validate_channel_pattern("orders.*.eu").is_ok());
/// assert!(validate_channel_pattern("orders.>").is_ok());
/// assert!(validate_channel_pattern("orders.*x").is_err());
/// assert!(validate_channel_pattern("orders.>.eu").is_err());
/// ```
pub fn validate_channel_pattern(pattern: &str) -> Result<(), NameError> {
    match pattern_error(pattern) {
        None => Ok(()),
        Some(reason) => Err(NameError::Pattern {
            pattern: pattern.to_owned(),
            reason,
        }),
    }
}

/// Why `pattern` is not a subject pattern, the first problem from the left.
fn pattern_error(pattern: &str) -> Option<&'static str> {
    if pattern.is_empty() {
        return Some("it is empty");
    }
    let mut tokens = pattern.split('.').peekable();
    while let Some(token) = tokens.next() {
        let last = tokens.peek().is_none();
        match token {
            "" => return Some("it has an empty token"),
            "*" => {}
            ">" if last => {}
            ">" => {
                return Some("`>` stands for the rest of the subject, so it must be the last token")
            }
            _ if token.contains(['*', '>']) => {
                return Some(
                    "a wildcard (`*`, `>`) must be a whole token, like `orders.*`, not part of one",
                )
            }
            _ if !token.bytes().all(is_name_byte) => return Some(BAD_BYTE),
            _ => {}
        }
    }
    None
}

/// Checks a durable or queue group name.
///
/// ```
/// assert!(flowgate::validate_consumer_name("durable", "billing-v2").is_ok());
/// assert!(flowgate::validate_consumer_name("durable", "billing.v2").is_err());
/// ```
pub fn validate_consumer_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() || !name.bytes().all(is_name_byte) {
        return Err(NameError::Consumer {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(channel: &str) -> Option<&'static str> {
        match validate_channel(channel) {
            Ok(()) => None,
            Err(NameError::Channel { reason, .. }) => Some(reason),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn patterns_have_whole_wildcard_tokens_and_a_last_full_wildcard() {
        for good in [
            "orders.placed",
            "orders.*",
            "*",
            ">",
            "orders.>",
            "*.placed.>",
            "a.*.b",
        ] {
            assert_eq!(pattern_error(good), None, "{good}");
        }
        for bad in [
            "",
            "orders.",
            "orders..*",
            "orders.*x",
            "orders.>.a",
            ">x",
            "a.x>",
            "caf\u{e9}.*",
        ] {
            assert!(pattern_error(bad).is_some(), "{bad} accepted");
        }
        assert!(pattern_error(">.a").is_some_and(|r| r.contains("last token")));
        assert!(pattern_error("orders.*x").is_some_and(|r| r.contains("whole token")));
    }

    #[test]
    fn reports_the_first_problem_from_the_left() {
        const EMPTY_TOKEN: Option<&str> = Some("it has an empty token");
        const BAD_BYTE: Option<&str> = Some(super::BAD_BYTE);
        assert_eq!(reason("orders.placed-v2_x"), None);
        assert_eq!(reason("a"), None);
        assert_eq!(reason(""), Some("it is empty"));
        assert_eq!(reason(".a"), EMPTY_TOKEN);
        assert_eq!(reason("a."), EMPTY_TOKEN);
        assert_eq!(reason("a..b*"), EMPTY_TOKEN);
        assert_eq!(reason("a*..b"), Some(WILDCARD_IN_SUBJECT));
        assert_eq!(reason("orders.>"), Some(WILDCARD_IN_SUBJECT));
        assert_eq!(reason("a b"), BAD_BYTE);
        assert_eq!(reason("caf\u{e9}.x"), BAD_BYTE);
    }
}
