//! The two messages sent once per message, `PubMsg` and `Ack`, encoded
//! straight from borrowed parts into one buffer: the same bytes prost
//! writes for the generated structs (fields in tag order, empty ones left
//! out), without copying the client id, guid, subject, connID and payload
//! into an owned struct first, and into memory allocated a chunk at a time
//! ([`Chunks`]). Also the publish guids: a per-registration random prefix
//! and a counter, unique like the reference client's NUIDs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

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

/// The encoded length of a length-delimited field of `len` bytes (none when
/// empty: proto3 leaves it out).
fn field_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    encoded_len_varint(u64::from(tag << 3)) + encoded_len_varint(len as u64) + len
}

/// Writes a length-delimited field whose value is `parts`, one after another.
fn put_field(tag: u32, parts: &[&[u8]], buf: &mut BytesMut) {
    let len = parts.iter().map(|part| part.len()).sum::<usize>();
    if len == 0 {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    for part in parts {
        buf.put_slice(part);
    }
}

impl PubMsgParts<'_> {
    /// The encoded `PubMsg`, in memory from `chunks`.
    pub(crate) fn encode(&self, chunks: &Chunks) -> Bytes {
        let guid: [&[u8]; 2] = [self.guid.prefix.as_bytes(), self.guid.digits()];
        let fields: [(u32, &[&[u8]]); 5] = [
            (1, &[self.client_id.as_bytes()]),
            (2, &guid),
            (3, &[self.subject.as_bytes()]),
            (5, &[self.data]),
            (6, &[self.conn_id]),
        ];
        let len = fields
            .iter()
            .map(|(tag, parts)| field_len(*tag, parts.iter().map(|p| p.len()).sum()))
            .sum();
        chunks.write(len, |buf| {
            for (tag, parts) in fields {
                put_field(tag, parts, buf);
            }
        })
    }
}

/// The encoded `Ack{subject, sequence}`, in memory from `chunks`.
pub(crate) fn encode_ack(chunks: &Chunks, subject: &str, sequence: u64) -> Bytes {
    let sequence_len = match sequence {
        0 => 0,
        s => 1 + encoded_len_varint(s),
    };
    let len = field_len(1, subject.len()) + sequence_len;
    chunks.write(len, |buf| {
        put_field(1, &[subject.as_bytes()], buf);
        if sequence != 0 {
            encode_key(2, WireType::Varint, buf);
            encode_varint(sequence, buf);
        }
    })
}

/// Memory for the small messages sent once per message (`PubMsg`s of a
/// registration, `Ack`s of a subscription), allocated a chunk at a time:
/// each message is a slice of the current chunk (one reference count), not
/// an allocation of its own; a chunk is freed once its last message was
/// written out. A message larger than a quarter chunk has its own.
#[derive(Debug, Default)]
pub(crate) struct Chunks(Mutex<BytesMut>);

impl Chunks {
    /// Bytes allocated at once.
    const CHUNK: usize = 4096;

    /// `len` bytes, filled by `write`.
    fn write(&self, len: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
        if len > Self::CHUNK / 4 {
            let mut own = BytesMut::with_capacity(len);
            write(&mut own);
            return own.freeze();
        }
        let mut chunk = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if chunk.capacity() < len {
            *chunk = BytesMut::with_capacity(Self::CHUNK);
        }
        write(&mut chunk);
        chunk.split().freeze()
    }
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
    pub(crate) fn number(&self, guid: &[u8]) -> Option<u64> {
        let digits = guid.strip_prefix(self.prefix.as_bytes())?;
        if digits.is_empty() || digits.len() > 13 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        digits.iter().try_fold(0u64, |n, &digit| {
            let value = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'z' => digit - b'a' + 10,
                _ => return None,
            };
            n.checked_mul(36)?.checked_add(u64::from(value))
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
        let (data, large) = (vec![7u8; 300], vec![9u8; Chunks::CHUNK]);
        let guids = Guids::new("Xy12abc".to_owned());
        let chunks = Chunks::default();
        let cases = [
            ("bench-1", &data[..]),
            ("", &b""[..]),
            ("c", &b"x"[..]),
            ("c", &large[..]),
        ];
        // Guids of one digit, two, and the most there can be; messages that
        // share chunks, and one too large for them.
        let starts = [0, 36, u64::MAX, 7];
        let mut encoded = Vec::new();
        for _ in 0..20 {
            for (&(client_id, data), start) in cases.iter().zip(starts) {
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
                encoded.push((parts.encode(&chunks), prost.encode_to_vec()));
            }
        }
        for (ours, prost) in encoded {
            assert_eq!(ours.as_ref(), prost.as_slice());
        }
    }

    #[test]
    fn ack_bytes_are_prosts() {
        let chunks = Chunks::default();
        let long = "s".repeat(Chunks::CHUNK);
        let cases = [("orders.placed", 1), ("a", 0), ("x.y", u64::MAX), ("", 300)];
        // Again and again: acks that fill a chunk and go on in the next one,
        // and one longer than a chunk.
        let longest = (long.as_str(), 7);
        let cases = cases.iter().cycle().take(1000).chain([&longest]);
        let acks: Vec<_> = cases
            .map(|&(subject, sequence)| (subject, sequence, encode_ack(&chunks, subject, sequence)))
            .collect();
        for (subject, sequence, encoded) in acks {
            let prost = Ack {
                subject: subject.to_owned(),
                sequence,
            };
            assert_eq!(encoded.as_ref(), prost.encode_to_vec().as_slice());
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
                assert_eq!(guids.number(guid.as_bytes()), Some(number));
                guid
            })
            .collect();
        assert_eq!(seen.len(), 100_000);
        assert!(seen.iter().all(|g| g.starts_with("PREFIX")));
        let guids = Guids::new("p".to_owned());
        let (number, guid) = guids.next();
        assert_eq!((number, guid.to_string()), (0, "p0".to_owned()));
        for other in ["p", "q0", "p00", "p01", "p!", "pzzzzzzzzzzzzzz", "x"] {
            assert_eq!(guids.number(other.as_bytes()), None, "{other}");
        }
        let max = Guids::new(String::new());
        max.next.store(u64::MAX, Ordering::Relaxed);
        let (number, guid) = max.next();
        assert_eq!(max.number(guid.to_string().as_bytes()), Some(number));
    }
}
