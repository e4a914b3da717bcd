//! NATS subject patterns: `*` stands for one token, a last `>` for one or
//! more. A subscription may name a pattern; a publish names a concrete
//! subject, which a pattern matches token by token.

/// Whether `subject` has a wildcard token (`*`, or `>`).
///
/// ```
/// assert!(flowgate::is_pattern("orders.*"));
/// assert!(!flowgate::is_pattern("orders.placed"));
/// ```
pub fn is_pattern(subject: &str) -> bool {
    subject.split('.').any(|token| token == "*" || token == ">")
}

/// Whether the concrete `subject` is one `pattern` matches.
///
/// ```
/// use flowgate::subject_matches;
///
/// assert!(subject_matches("orders.*", "orders.placed"));
/// assert!(!subject_matches("orders.*", "orders.eu.placed"));
/// assert!(subject_matches("orders.>", "orders.eu.placed"));
/// assert!(!subject_matches("orders.>", "orders"));
/// assert!(subject_matches("orders.placed", "orders.placed"));
/// assert!(!subject_matches("orders.*", "shipments.sent"));
/// ```
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    !is_pattern(subject) && pattern_covers(pattern, subject)
}

/// Whether every subject `inner` matches is one `outer` matches too: a
/// stream whose subjects include `outer` holds all of `inner`.
///
/// ```
/// use flowgate::pattern_covers;
///
/// assert!(pattern_covers("orders.>", "orders.*"));
/// assert!(pattern_covers("orders.*", "orders.*"));
/// assert!(!pattern_covers("orders.*", "orders.>"));
/// assert!(!pattern_covers("orders.placed", "orders.*"));
/// ```
pub fn pattern_covers(outer: &str, inner: &str) -> bool {
    let mut outer = outer.split('.');
    let mut inner = inner.split('.');
    loop {
        match (outer.next(), inner.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some(_), Some(">")) => return false,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Whether some concrete subject matches both `a` and `b`: the server
/// refuses two streams whose subjects overlap.
///
/// ```
/// use flowgate::patterns_overlap;
///
/// assert!(patterns_overlap("orders.*", "orders.placed"));
/// assert!(patterns_overlap("orders.*.eu", "orders.placed.*"));
/// assert!(!patterns_overlap("orders.*", "orders.eu.placed"));
/// assert!(!patterns_overlap("orders.>", "shipments.>"));
/// ```
pub fn patterns_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_and_overlap_agree_with_matching() {
        let subjects = ["a", "a.b", "a.c", "a.b.c", "x.b", "a.b.c.d"];
        let patterns = ["a", "a.*", "a.>", "*.b", "*", ">", "a.*.c", "a.b.>"];
        for outer in patterns {
            for inner in patterns {
                let in_inner: Vec<&str> = subjects
                    .into_iter()
                    .filter(|s| subject_matches(inner, s))
                    .collect();
                if pattern_covers(outer, inner) {
                    assert!(
                        in_inner.iter().all(|s| subject_matches(outer, s)),
                        "{outer} covers {inner}"
                    );
                }
                let shared = in_inner.iter().any(|s| subject_matches(outer, s));
                if shared {
                    assert!(patterns_overlap(outer, inner), "{outer} overlaps {inner}");
                    assert!(patterns_overlap(inner, outer), "{inner} overlaps {outer}");
                }
            }
        }
        assert!(!pattern_covers("a.*", "a.>"));
        assert!(pattern_covers(">", "a.>"));
        assert!(!pattern_covers("a.b", "a.*"));
        assert!(!patterns_overlap("a.*", "a"));
        assert!(patterns_overlap(">", "a.*.c"));
    }
}
