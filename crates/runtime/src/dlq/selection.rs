//! Which dead letters an operation applies to.

use std::ops::RangeInclusive;

use super::DeadLetterRecord;

/// Which dead letters to replay, purge or list: by sequence, by a range of
/// sequences, by a filter on the error text or the durable, or all.
///
/// Sequences and a range together select the union of both; the filters
/// narrow what they select (or, without either, every dead letter). An
/// empty selection selects nothing, so a replay or purge that forgot to say
/// what is refused rather than applied to everything: ask for
/// [`Selection::all`].
///
/// ```
/// use flowgate::dlq::Selection;
///
/// let chosen = Selection::new().range(10..=20).error_contains("declined");
/// assert!(!chosen.is_empty());
/// assert!(Selection::new().is_empty());
/// assert!(!Selection::all().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    sequences: Vec<u64>,
    range: Option<RangeInclusive<u64>>,
    error_contains: Option<String>,
    durable: Option<String>,
    all: bool,
}

impl Selection {
    /// Selects nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every dead letter (narrowed by filters added after).
    pub fn all() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// Adds the dead letter at `sequence`.
    pub fn sequence(mut self, sequence: u64) -> Self {
        self.sequences.push(sequence);
        self
    }

    /// Adds the dead letters at `sequences`.
    pub fn sequences(mut self, sequences: impl IntoIterator<Item = u64>) -> Self {
        self.sequences.extend(sequences);
        self
    }

    /// Adds the dead letters in `range` (both ends included).
    pub fn range(mut self, range: RangeInclusive<u64>) -> Self {
        self.range = Some(range);
        self
    }

    /// Keeps those whose last error contains `text` (case-insensitive).
    pub fn error_contains(mut self, text: impl Into<String>) -> Self {
        self.error_contains = Some(text.into());
        self
    }

    /// Keeps those the durable (or queue group) `name` gave up on.
    pub fn durable(mut self, name: impl Into<String>) -> Self {
        self.durable = Some(name.into());
        self
    }

    /// True when it selects nothing.
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.sequences.is_empty()
            && self.range.is_none()
            && self.error_contains.is_none()
            && self.durable.is_none()
    }

    /// Whether `record` is selected.
    pub fn matches(&self, record: &DeadLetterRecord) -> bool {
        !self.is_empty()
            && self.covers(record.sequence)
            && self.error_contains.as_ref().is_none_or(|text| {
                record
                    .last_error
                    .as_deref()
                    .is_some_and(|error| error.to_lowercase().contains(&text.to_lowercase()))
            })
            && self
                .durable
                .as_ref()
                .is_none_or(|name| record.durable.as_deref() == Some(name.as_str()))
    }

    /// Whether `sequence` is within the sequences and range chosen (every
    /// sequence when neither is).
    pub(crate) fn covers(&self, sequence: u64) -> bool {
        if self.sequences.is_empty() && self.range.is_none() {
            return true;
        }
        self.sequences.contains(&sequence)
            || self
                .range
                .as_ref()
                .is_some_and(|range| range.contains(&sequence))
    }

    /// The lowest and highest sequence that can be selected, to bound a scan.
    pub(crate) fn bounds(&self) -> (u64, u64) {
        if self.sequences.is_empty() && self.range.is_none() {
            return (1, u64::MAX);
        }
        let lows = self
            .sequences
            .iter()
            .copied()
            .chain(self.range.as_ref().map(|r| *r.start()));
        let highs = self
            .sequences
            .iter()
            .copied()
            .chain(self.range.as_ref().map(|r| *r.end()));
        (
            lows.min().unwrap_or(1).max(1),
            highs.max().unwrap_or(u64::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sequence: u64, error: &str, durable: &str) -> DeadLetterRecord {
        DeadLetterRecord {
            stream: "dlq_orders".into(),
            sequence,
            subject: "dlq.orders".into(),
            stored_at: std::time::SystemTime::UNIX_EPOCH,
            original_subject: Some("orders".into()),
            original_sequence: Some(sequence * 10),
            durable: Some(durable.into()),
            attempts: Some(3),
            last_error: Some(error.into()),
            failed_at: None,
            headers: crate::Headers::new(),
            payload: bytes::Bytes::new(),
            replayed: None,
        }
    }

    #[test]
    fn an_empty_selection_matches_nothing_and_all_matches_everything() {
        let one = record(4, "card declined", "billing");
        assert!(!Selection::new().matches(&one));
        assert!(Selection::all().matches(&one));
    }

    #[test]
    fn sequences_and_a_range_are_a_union_that_filters_narrow() {
        let chosen = Selection::new().sequence(2).range(5..=7);
        let picked: Vec<u64> = (1..=9)
            .map(|seq| record(seq, "x", "billing"))
            .filter(|r| chosen.matches(r))
            .map(|r| r.sequence)
            .collect();
        assert_eq!(picked, vec![2, 5, 6, 7]);
        assert_eq!(chosen.bounds(), (2, 7));
        let narrowed = chosen.durable("shipping");
        assert!(!narrowed.matches(&record(5, "x", "billing")));
        assert!(narrowed.matches(&record(5, "x", "shipping")));
    }

    #[test]
    fn the_error_filter_ignores_case() {
        let chosen = Selection::all().error_contains("Declined");
        assert!(chosen.matches(&record(1, "card DECLINED by bank", "billing")));
        assert!(!chosen.matches(&record(1, "timeout", "billing")));
    }
}
