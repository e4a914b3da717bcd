//! The benchmark's event: an id and a body padded to the payload size.

use serde::{Deserialize, Serialize};

/// The channel of case 1 (consume).
pub const CONSUME_CHANNEL: &str = "bench.consume";
/// The channel of case 2 (consume with 2 ms of simulated I/O).
pub const IO_CHANNEL: &str = "bench.io";
/// The channel of cases 3 and 4 (publish).
pub const PUBLISH_CHANNEL: &str = "bench.publish";

/// One benchmark message, JSON-encoded by both sides.
#[derive(Debug, Clone, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "bench.publish")]
pub struct BenchEvent {
    /// A running number.
    pub id: u64,
    /// Padding up to the payload size.
    pub body: String,
}

impl BenchEvent {
    /// An event whose JSON encoding is about `size` bytes.
    pub fn sized(id: u64, size: usize) -> Self {
        const OVERHEAD: usize = r#"{"id":100000,"body":""}"#.len();
        Self {
            id,
            body: "x".repeat(size.saturating_sub(OVERHEAD)),
        }
    }

    /// The same body under another id: the benchmark's n-th event.
    pub fn numbered(&self, id: u64) -> Self {
        Self {
            id,
            body: self.body.clone(),
        }
    }

    /// The JSON encoding, as the raw client sends it.
    pub fn to_json(&self) -> bytes::Bytes {
        serde_json::to_vec(self)
            .expect("a struct of a number and a string encodes")
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_about_the_asked_size() {
        assert_eq!(BenchEvent::sized(123_456, 128).to_json().len(), 128);
        assert_eq!(BenchEvent::sized(123_456, 1024).to_json().len(), 1024);
    }
}
