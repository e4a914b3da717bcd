//! Channel and consumer names, checked at compile time with the same rules as
//! `flowgate::validate_channel_pattern` (a declared channel),
//! `flowgate::validate_channel` (a subject to publish to) and
//! `flowgate::validate_consumer_name`.

/// Why `channel` is not a channel a subscriber or an event type may
/// declare (a literal NATS subject, or a pattern with whole `*` tokens and a
/// last `>` token), if it is not one.
pub(crate) fn channel_error(channel: &str) -> Option<String> {
    let reason = pattern_reason(channel)?;
    Some(format!(
        "channel `{channel}` is not valid: {reason}; use dot-separated tokens of \
         letters, digits, `-` and `_`, like `orders.placed`, where a `*` token stands \
         for any one token and a last `>` token for one or more, like `orders.*` or `orders.>`"
    ))
}

/// Why `subject` is not a literal NATS subject (one that can be published
/// to), if it is not one.
pub(crate) fn subject_error(subject: &str) -> Option<String> {
    let reason = if subject.split('.').any(|t| t == "*" || t == ">") {
        "wildcards (`*`, `>`) match subjects when subscribing, and cannot be published to"
    } else {
        pattern_reason(subject)?
    };
    Some(format!(
        "subject `{subject}` is not valid: {reason}; use dot-separated tokens of \
         letters, digits, `-` and `_`, like `orders.failed`"
    ))
}

fn pattern_reason(pattern: &str) -> Option<&'static str> {
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
            _ if !token.bytes().all(is_name_byte) => {
                return Some(
                    "it has a character other than ASCII letters, digits, `-`, `_` and `.`",
                )
            }
            _ => {}
        }
    }
    None
}

/// Why `name` is not a valid durable or queue name (`kind`), if it is not one.
pub(crate) fn consumer_name_error(kind: &str, name: &str) -> Option<String> {
    if !name.is_empty() && name.bytes().all(is_name_byte) {
        return None;
    }
    Some(format!(
        "{kind} name `{name}` is not valid: use ASCII letters, digits, `-` and `_` only, \
         like `billing-v2`"
    ))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels() {
        for good in [
            "orders.placed",
            "a-b_c.D9",
            "orders.*",
            "orders.>",
            "*.placed",
            ">",
        ] {
            assert!(channel_error(good).is_none(), "{good:?} refused");
        }
        for bad in [
            "",
            ".",
            "orders.",
            ".orders",
            "orders..placed",
            "orders.*x",
            "orders.>.a",
            ">x",
            "ordé",
            "a b",
        ] {
            assert!(channel_error(bad).is_some(), "{bad:?} accepted");
        }
        assert!(channel_error("orders.>.a")
            .expect("refused")
            .contains("last token"));
    }

    #[test]
    fn subjects() {
        assert!(subject_error("orders.failed").is_none());
        for bad in ["", "orders.*", "orders.>", "a..b", "a b"] {
            assert!(subject_error(bad).is_some(), "{bad:?} accepted");
        }
        assert!(subject_error("orders.*")
            .expect("refused")
            .contains("wildcards"));
    }

    #[test]
    fn consumer_names() {
        assert!(consumer_name_error("durable", "billing-v2_1").is_none());
        for bad in ["", "billing.v2", "bill ing", "a*"] {
            assert!(
                consumer_name_error("queue", bad).is_some(),
                "{bad:?} accepted"
            );
        }
    }
}
