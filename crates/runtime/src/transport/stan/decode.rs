//! The two messages received once per message, `MsgProto` (a delivery) and
//! `PubAck`, decoded straight from the NATS payload: string and bytes fields
//! become slices of that buffer (one reference count each), not owned copies.
//! Every field goes through prost's own merge functions, field by field as the
//! generated `Message::decode` does (last occurrence wins, unknown fields
//! skipped, the same wire-type and length checks), and strings are checked to
//! be UTF-8 as prost checks them. A payload that fails that check is decoded
//! by the generated code instead, so its outcome is prost's by construction.

use bytes::{Buf, Bytes};
use prost::encoding::{self, decode_key, skip_field, DecodeContext, WireType};
use prost::{DecodeError, Message as _};

use super::proto::{MsgProto, PubAck};

/// One delivery, as `MsgProto` carries it. `subject` is UTF-8 (checked);
/// `reply` and `CRC32` are decoded and checked like the other fields but
/// not kept: this client uses neither.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub(crate) sequence: u64,
    pub(crate) subject: Bytes,
    pub(crate) data: Bytes,
    pub(crate) timestamp: i64,
    pub(crate) redelivered: bool,
    pub(crate) redelivery_count: u32,
}

impl From<MsgProto> for Delivered {
    fn from(msg: MsgProto) -> Self {
        Self {
            sequence: msg.sequence,
            subject: msg.subject.into(),
            data: msg.data,
            timestamp: msg.timestamp,
            redelivered: msg.redelivered,
            redelivery_count: msg.redelivery_count,
        }
    }
}

impl Delivered {
    /// The subject (checked to be UTF-8 when decoded).
    pub(crate) fn subject(&self) -> &str {
        std::str::from_utf8(&self.subject).unwrap_or_default()
    }
}

/// Why decoding stopped early.
enum Stop {
    /// Malformed, as prost reports it.
    Malformed(DecodeError),
    /// A `string` field is not UTF-8: left to the generated code.
    NotUtf8,
}

impl From<DecodeError> for Stop {
    fn from(err: DecodeError) -> Self {
        Self::Malformed(err)
    }
}

/// Merges a `string` field as a slice of `buf`. One equal to `known` (a
/// `str`) is UTF-8 without a check.
fn merge_str(
    wire_type: WireType,
    (value, known): (&mut Bytes, &[u8]),
    buf: &mut Bytes,
    ctx: DecodeContext,
) -> Result<(), Stop> {
    encoding::bytes::merge(wire_type, value, buf, ctx)?;
    if value[..] == *known || std::str::from_utf8(value).is_ok() {
        Ok(())
    } else {
        Err(Stop::NotUtf8)
    }
}

/// Decodes the `MsgProto` in `payload`; `channel` is the subject it most
/// likely has (the subscription's channel).
pub(crate) fn decode_msg(payload: &Bytes, channel: &str) -> Result<Delivered, DecodeError> {
    match merge_msg(payload.clone(), channel.as_bytes()) {
        Ok(msg) => Ok(msg),
        Err(Stop::Malformed(err)) => Err(err),
        Err(Stop::NotUtf8) => MsgProto::decode(payload.clone()).map(Delivered::from),
    }
}

fn merge_msg(mut buf: Bytes, channel: &[u8]) -> Result<Delivered, Stop> {
    let mut msg = Delivered::default();
    let (mut reply, mut crc32) = (Bytes::new(), 0u32);
    let ctx = DecodeContext::default();
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        let (buf, ctx) = (&mut buf, ctx.clone());
        match tag {
            1 => encoding::uint64::merge(wire_type, &mut msg.sequence, buf, ctx)?,
            2 => merge_str(wire_type, (&mut msg.subject, channel), buf, ctx)?,
            3 => merge_str(wire_type, (&mut reply, b""), buf, ctx)?,
            4 => encoding::bytes::merge(wire_type, &mut msg.data, buf, ctx)?,
            5 => encoding::int64::merge(wire_type, &mut msg.timestamp, buf, ctx)?,
            6 => encoding::bool::merge(wire_type, &mut msg.redelivered, buf, ctx)?,
            7 => encoding::uint32::merge(wire_type, &mut msg.redelivery_count, buf, ctx)?,
            10 => encoding::uint32::merge(wire_type, &mut crc32, buf, ctx)?,
            _ => skip_field(wire_type, tag, buf, ctx)?,
        }
    }
    Ok(msg)
}

/// A publish ack: the guid it answers and the server's error, empty when the
/// message was stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PubAckView {
    guid: Bytes,
    error: Bytes,
}

impl PubAckView {
    /// The guid of the publish it answers (checked to be UTF-8).
    pub(crate) fn guid(&self) -> &[u8] {
        &self.guid
    }

    /// The server's error; `None` when the message was stored.
    pub(crate) fn error(&self) -> Option<&str> {
        match &self.error[..] {
            [] => None,
            error => Some(std::str::from_utf8(error).unwrap_or_default()),
        }
    }
}

/// Decodes the `PubAck` in `payload`.
pub(crate) fn decode_pub_ack(payload: &Bytes) -> Result<PubAckView, DecodeError> {
    match merge_pub_ack(payload.clone()) {
        Ok(ack) => Ok(ack),
        Err(Stop::Malformed(err)) => Err(err),
        Err(Stop::NotUtf8) => PubAck::decode(payload.clone()).map(|ack| PubAckView {
            guid: ack.guid.into(),
            error: ack.error.into(),
        }),
    }
}

fn merge_pub_ack(mut buf: Bytes) -> Result<PubAckView, Stop> {
    let mut ack = PubAckView::default();
    let ctx = DecodeContext::default();
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        let (buf, ctx) = (&mut buf, ctx.clone());
        match tag {
            1 => merge_str(wire_type, (&mut ack.guid, b""), buf, ctx)?,
            2 => merge_str(wire_type, (&mut ack.error, b""), buf, ctx)?,
            _ => skip_field(wire_type, tag, buf, ctx)?,
        }
    }
    Ok(ack)
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use prost::encoding::{encode_key, encode_varint};

    use super::*;

    /// The fields of `MsgProto` that `decode_msg` merges, with their wire types.
    const KNOWN_FIELDS: [(u32, WireType); 8] = [
        (1, WireType::Varint),
        (2, WireType::LengthDelimited),
        (3, WireType::LengthDelimited),
        (4, WireType::LengthDelimited),
        (5, WireType::Varint),
        (6, WireType::Varint),
        (7, WireType::Varint),
        (10, WireType::Varint),
    ];

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn sample_msg(rng: &mut Rng) -> MsgProto {
        MsgProto {
            sequence: if rng.below(3) == 0 { 0 } else { rng.next() },
            subject: ["", "orders.placed", "a", "ü.x"][rng.below(4) as usize].to_owned(),
            reply: ["", "r"][rng.below(2) as usize].to_owned(),
            data: Bytes::from(vec![rng.next() as u8; rng.below(300) as usize]),
            timestamp: rng.next() as i64,
            redelivered: rng.below(2) == 1,
            redelivery_count: rng.below(5) as u32,
            crc32: rng.below(2) as u32 * rng.next() as u32,
        }
    }

    /// A random field of a random tag and wire type, well formed or not.
    fn put_noise(rng: &mut Rng, buf: &mut Vec<u8>) {
        let tag = [1, 2, 3, 4, 5, 6, 7, 10, 11, 99][rng.below(10) as usize];
        match rng.below(5) {
            0 => {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(rng.next() >> rng.below(64), buf);
            }
            1 => {
                encode_key(tag, WireType::LengthDelimited, buf);
                let len = rng.below(6) as usize;
                encode_varint(len as u64, buf);
                for _ in 0..len {
                    // Mostly ASCII, now and then a byte that is not UTF-8.
                    buf.put_u8(if rng.below(8) == 0 {
                        0xff
                    } else {
                        b'a' + rng.below(26) as u8
                    });
                }
            }
            2 => {
                encode_key(tag, WireType::ThirtyTwoBit, buf);
                buf.put_u32_le(rng.next() as u32);
            }
            3 => {
                encode_key(tag, WireType::SixtyFourBit, buf);
                buf.put_u64_le(rng.next());
            }
            _ => buf.put_u8(rng.next() as u8),
        }
    }

    fn same_msg(payload: &[u8]) {
        let payload = Bytes::copy_from_slice(payload);
        let ours = decode_msg(&payload, "orders.placed");
        let prost = MsgProto::decode(payload.clone());
        match (&ours, &prost) {
            (Ok(ours), Ok(prost)) => {
                assert_eq!(ours.sequence, prost.sequence, "{payload:?}");
                assert_eq!(ours.subject(), prost.subject, "{payload:?}");
                assert_eq!(ours.data, prost.data, "{payload:?}");
                assert_eq!(ours.timestamp, prost.timestamp, "{payload:?}");
                assert_eq!(ours.redelivered, prost.redelivered, "{payload:?}");
                assert_eq!(ours.redelivery_count, prost.redelivery_count, "{payload:?}");
            }
            (Err(_), Err(_)) => {}
            _ => panic!("{payload:?}: ours {ours:?}, prost {prost:?}"),
        }
    }

    fn same_pub_ack(payload: &[u8]) {
        let payload = Bytes::copy_from_slice(payload);
        let ours = decode_pub_ack(&payload);
        let prost = PubAck::decode(payload.clone());
        match (&ours, &prost) {
            (Ok(ours), Ok(prost)) => {
                assert_eq!(ours.guid(), prost.guid.as_bytes(), "{payload:?}");
                assert_eq!(ours.error().unwrap_or_default(), prost.error, "{payload:?}");
            }
            (Err(_), Err(_)) => {}
            _ => panic!("{payload:?}: ours {ours:?}, prost {prost:?}"),
        }
    }

    #[test]
    fn a_delivery_decodes_as_prost_decodes_it() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let mut payload = sample_msg(&mut rng).encode_to_vec();
            same_msg(&payload);
            // Noise before, inside or after the fields, then cut somewhere.
            for _ in 0..rng.below(3) {
                let mut noise = Vec::new();
                put_noise(&mut rng, &mut noise);
                let at = rng.below(payload.len() as u64 + 1) as usize;
                payload.splice(at..at, noise);
                same_msg(&payload);
            }
            let cut = rng.below(payload.len() as u64 + 1) as usize;
            same_msg(&payload[..cut]);
        }
    }

    #[test]
    fn a_delivery_slices_its_payload() {
        let msg = MsgProto {
            sequence: 7,
            subject: "orders.placed".to_owned(),
            data: Bytes::from_static(b"{\"id\":1}"),
            ..MsgProto::default()
        };
        let payload = Bytes::from(msg.encode_to_vec());
        let decoded = decode_msg(&payload, "orders.placed").expect("decodes");
        let within = |part: &Bytes| {
            let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
            range.contains(&(part.as_ptr() as usize))
        };
        assert!(within(&decoded.data) && within(&decoded.subject));
        assert_eq!(decoded.subject(), "orders.placed");
        assert_eq!(&decoded.data[..], b"{\"id\":1}");
    }

    #[test]
    fn a_subject_that_is_not_utf8_fails_as_in_prost() {
        let mut payload = Vec::new();
        encode_key(2, WireType::LengthDelimited, &mut payload);
        encode_varint(2, &mut payload);
        payload.extend_from_slice(&[0xc3, 0x28]);
        assert!(decode_msg(&Bytes::from(payload.clone()), "orders.placed").is_err());
        same_msg(&payload);
    }

    #[test]
    fn a_pub_ack_decodes_as_prost_decodes_it() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let ack = PubAck {
                guid: ["", "Xy12abc0", "gü"][rng.below(3) as usize].to_owned(),
                error: ["", "stan: invalid publish request"][rng.below(2) as usize].to_owned(),
            };
            let mut payload = ack.encode_to_vec();
            same_pub_ack(&payload);
            for _ in 0..rng.below(3) {
                let mut noise = Vec::new();
                put_noise(&mut rng, &mut noise);
                let at = rng.below(payload.len() as u64 + 1) as usize;
                payload.splice(at..at, noise);
                same_pub_ack(&payload);
            }
            let cut = rng.below(payload.len() as u64 + 1) as usize;
            same_pub_ack(&payload[..cut]);
        }
    }

    #[test]
    fn the_schema_has_the_fields_decoded_here() {
        // Every field of the generated `MsgProto` set (a field added to the
        // schema breaks this literal), encoded: each of its tags must be one
        // `decode_msg` merges, with the wire type it expects.
        let full = MsgProto {
            sequence: 1,
            subject: "s".to_owned(),
            reply: "r".to_owned(),
            data: Bytes::from_static(b"d"),
            timestamp: 1,
            redelivered: true,
            redelivery_count: 1,
            crc32: 1,
        };
        let mut buf = Bytes::from(full.encode_to_vec());
        let mut seen = Vec::new();
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf).expect("key");
            assert!(KNOWN_FIELDS.contains(&(tag, wire_type)), "{tag}");
            seen.push(tag);
            skip_field(wire_type, tag, &mut buf, DecodeContext::default()).expect("field");
        }
        assert_eq!(seen.len(), KNOWN_FIELDS.len());
    }
}
