//! Protocol Buffers through prost.

use bytes::Bytes;

use crate::{DecodeError, EncodeError};

/// Serializes `value` as protobuf.
pub fn encode<T: prost::Message>(value: &T) -> Result<Bytes, EncodeError> {
    let mut buf = Vec::with_capacity(value.encoded_len());
    value
        .encode(&mut buf)
        .map_err(|e| EncodeError::new("protobuf", std::any::type_name::<T>(), Box::new(e)))?;
    Ok(Bytes::from(buf))
}

/// Parses protobuf into `T`.
pub fn decode<T: prost::Message + Default>(payload: &[u8]) -> Result<T, DecodeError> {
    T::decode(payload)
        .map_err(|e| DecodeError::new("protobuf", std::any::type_name::<T>(), Box::new(e)))
}
