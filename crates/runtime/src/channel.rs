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
    /// The durable or queue name would be refused by the server.
    #[error("{kind} name `{name}` is not valid: use letters, digits, `-` and `_` only")]
    Consumer {
        /// `durable` or `queue`.
        kind: &'static str,
        /// The refused name.
        name: String,
    },
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
        } else {
            return fail("it has a character other than letters, digits, `-`, `_` and `.`");
        }
    }
    if token_len == 0 {
        return fail("it has an empty token");
    }
    Ok(())
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
    fn reports_the_first_problem_from_the_left() {
        const EMPTY_TOKEN: Option<&str> = Some("it has an empty token");
        const BAD_BYTE: Option<&str> =
            Some("it has a character other than letters, digits, `-`, `_` and `.`");
        assert_eq!(reason("orders.placed-v2_x"), None);
        assert_eq!(reason("a"), None);
        assert_eq!(reason(""), Some("it is empty"));
        assert_eq!(reason(".a"), EMPTY_TOKEN);
        assert_eq!(reason("a."), EMPTY_TOKEN);
        assert_eq!(reason("a..b*"), EMPTY_TOKEN);
        assert_eq!(reason("a*..b"), BAD_BYTE);
        assert_eq!(reason("orders.>"), BAD_BYTE);
        assert_eq!(reason("caf\u{e9}.x"), BAD_BYTE);
    }
}
