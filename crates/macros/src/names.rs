//! Channel and consumer names, checked at compile time with the same rules as
//! `flowgate::validate_channel` and `flowgate::validate_consumer_name`.

/// Why `channel` is not a literal NATS subject, if it is not one.
pub(crate) fn channel_error(channel: &str) -> Option<String> {
    let reason = if channel.is_empty() {
        "it is empty"
    } else if channel.split('.').any(str::is_empty) {
        "it has an empty token"
    } else if channel.contains(['*', '>']) {
        "wildcards (`*`, `>`) cannot be published to or declared as a channel"
    } else if !channel.bytes().all(|b| b == b'.' || is_name_byte(b)) {
        "it has a character other than ASCII letters, digits, `-`, `_` and `.`"
    } else {
        return None;
    };
    Some(format!(
        "channel `{channel}` is not valid: {reason}; use dot-separated tokens of \
         letters, digits, `-` and `_`, like `orders.placed`"
    ))
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
        assert!(channel_error("orders.placed").is_none());
        assert!(channel_error("a-b_c.D9").is_none());
        for bad in [
            "",
            ".",
            "orders.",
            ".orders",
            "orders..placed",
            "orders.*",
            "orders.>",
            "ordé",
            "a b",
        ] {
            assert!(channel_error(bad).is_some(), "{bad:?} accepted");
        }
        assert!(channel_error("orders.*")
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
