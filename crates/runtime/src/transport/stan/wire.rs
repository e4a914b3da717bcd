//! The two messages sent once per message, `PubMsg` and `Ack`, encoded
//! straight from borrowed parts into one buffer: the same bytes prost
//! writes for the generated structs (fields in tag order, empty ones left
//! out), without copying the client id, guid, subject, connID and payload
//! into an owned struct first. Also the publish guids: a per-registration
//! random prefix and a counter, unique like the reference client's NUIDs.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

/// The parts of one `PubMsg` (no reply, no sha256: this client sends neither).
pub(crate) struct PubMsgParts<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) guid: &'a Guid<'a>,
    pub(crate) subject: &'a str,
    pub(crate) data: &'a [u8],
    pub(crate) conn_id: &'a [u8],
}

fn field_len(tag: u32, value: &[u8]) -> usize {
    if value.is_empty() {
        return 0;
    }
    let key = u64::from(tag << 3);
    encoded_len_varint(key) + encoded_len_varint(value.len() as u64) + value.len()
}

fn put_field(tag: u32, value: &[u8], buf: &mut BytesMut) {
    if value.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

impl PubMsgParts<'_> {
    /// The encoded `PubMsg`.
    pub(crate) fn encode(&self) -> Bytes {
        let (prefix, digits) = (self.guid.prefix.as_bytes(), self.guid.digits());
        let guid_len = prefix.len() + digits.len();
        let before: [(u32, &[u8]); 1] = [(1, self.client_id.as_bytes())];
        let after: [(u32, &[u8]); 3] = [
            (3, self.subject.as_bytes()),
            (5, self.data),
            (6, self.conn_id),
        ];
        let len = before
            .iter()
            .chain(&after)
            .map(|(tag, v)| field_len(*tag, v))
            .sum::<usize>()
            + 1
            + encoded_len_varint(guid_len as u64)
            + guid_len;
        let mut buf = BytesMut::with_capacity(len);
        for (tag, value) in before {
            put_field(tag, value, &mut buf);
        }
        // The guid is never empty (it has at least one digit).
        encode_key(2, WireType::LengthDelimited, &mut buf);
        encode_varint(guid_len as u64, &mut buf);
        buf.put_slice(prefix);
        buf.put_slice(digits);
        for (tag, value) in after {
            put_field(tag, value, &mut buf);
        }
        buf.freeze()
    }
}

/// The encoded `Ack{subject, sequence}`.
pub(crate) fn encode_ack(subject: &str, sequence: u64) -> Bytes {
    let sequence_len = match sequence {
        0 => 0,
        s => 1 + encoded_len_varint(s),
    };
    let mut buf = BytesMut::with_capacity(field_len(1, subject.as_bytes()) + sequence_len);
    put_field(1, subject.as_bytes(), &mut buf);
    if sequence != 0 {
        encode_key(2, WireType::Varint, &mut buf);
        encode_varint(sequence, &mut buf);
    }
    buf.freeze()
}

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// One publish guid, written into the `PubMsg` without a string of its own:
/// the registration's prefix and the running number's digits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guid<'a> {
    prefix: &'a str,
    /// Base-36 digits of the number, in `digits[at..]`.
    digits: [u8; 13],
    at: usize,
}

impl Guid<'_> {
    fn digits(&self) -> &[u8] {
        &self.digits[self.at..]
    }
}

impl std::fmt::Display for Guid<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.prefix)?;
        for &digit in self.digits() {
            std::fmt::Write::write_char(f, char::from(digit))?;
        }
        Ok(())
    }
}

/// Publish guids of one registration: its random prefix (a NUID) and a
/// running number in base 36, so no two publishes of the registration share
/// one, and registrations differ by their prefix.
#[derive(Debug)]
pub(crate) struct Guids {
    prefix: String,
    next: AtomicU64,
}

impl Guids {
    pub(crate) fn new(prefix: String) -> Self {
        Self {
            prefix,
            next: AtomicU64::new(0),
        }
    }

    /// A guid no earlier call returned, and its running number.
    pub(crate) fn next(&self) -> (u64, Guid<'_>) {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let mut n = number;
        let mut digits = [0u8; 13];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = DIGITS[(n % 36) as usize];
            n /= 36;
            if n == 0 {
                break;
            }
        }
        let guid = Guid {
            prefix: &self.prefix,
            digits,
            at,
        };
        (number, guid)
    }

    /// The running number of a guid [`next`](Self::next) made; `None` for
    /// any other string.
    pub(crate) fn number(&self, guid: &str) -> Option<u64> {
        let digits = guid.strip_prefix(self.prefix.as_str())?;
        if digits.is_empty() || digits.len() > 13 || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        digits.bytes().try_fold(0u64, |n, digit| {
            let value = DIGITS.iter().position(|&d| d == digit)?;
            n.checked_mul(36)?.checked_add(value as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use prost::Message as _;

    use super::super::proto::{Ack, PubMsg};
    use super::*;

    #[test]
    fn pub_msg_bytes_are_prosts() {
        let data = vec![7u8; 300];
        let guids = Guids::new("Xy12abc".to_owned());
        let cases = [("bench-1", &data[..]), ("", &b""[..]), ("c", &b"x"[..])];
        // Guids of one digit, two, and the most there can be.
        for ((client_id, data), start) in cases.into_iter().zip([0, 36, u64::MAX]) {
            guids.next.store(start, Ordering::Relaxed);
            let (_, guid) = guids.next();
            let parts = PubMsgParts {
                client_id,
                guid: &guid,
                subject: "orders.placed",
                data,
                conn_id: b"conn-9",
            };
            let prost = PubMsg {
                client_id: client_id.to_owned(),
                guid: guid.to_string(),
                subject: "orders.placed".to_owned(),
                reply: String::new(),
                data: data.to_vec(),
                conn_id: b"conn-9".to_vec(),
                sha256: Vec::new(),
            };
            assert_eq!(parts.encode().as_ref(), prost.encode_to_vec().as_slice());
        }
    }

    #[test]
    fn ack_bytes_are_prosts() {
        for (subject, sequence) in [("orders.placed", 1), ("a", 0), ("x.y", u64::MAX), ("", 300)] {
            let prost = Ack {
                subject: subject.to_owned(),
                sequence,
            };
            assert_eq!(
                encode_ack(subject, sequence).as_ref(),
                prost.encode_to_vec().as_slice()
            );
        }
    }

    #[test]
    fn guids_are_unique_and_prefixed() {
        let guids = Guids::new("PREFIX".to_owned());
        let seen: HashSet<String> = (0..100_000)
            .map(|i| {
                let (number, guid) = guids.next();
                let guid = guid.to_string();
                assert_eq!(number, i);
                assert_eq!(guids.number(&guid), Some(number));
                guid
            })
            .collect();
        assert_eq!(seen.len(), 100_000);
        assert!(seen.iter().all(|g| g.starts_with("PREFIX")));
        let guids = Guids::new("p".to_owned());
        let (number, guid) = guids.next();
        assert_eq!((number, guid.to_string()), (0, "p0".to_owned()));
        for other in ["p", "q0", "p00", "p01", "p!", "pzzzzzzzzzzzzzz", "x"] {
            assert_eq!(guids.number(other), None, "{other}");
        }
        let max = Guids::new(String::new());
        max.next.store(u64::MAX, Ordering::Relaxed);
        let (number, guid) = max.next();
        assert_eq!(max.number(&guid.to_string()), Some(number));
    }
}
