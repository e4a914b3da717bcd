//! JSON through serde: the default codec.

use bytes::Bytes;

use crate::{DecodeError, EncodeError};

/// Serializes `value` as JSON.
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Bytes, EncodeError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| EncodeError::new("json", std::any::type_name::<T>(), Box::new(e)))
}

/// Parses JSON into `T`.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload)
        .map_err(|e| DecodeError::new("json", std::any::type_name::<T>(), Box::new(e)))
}
