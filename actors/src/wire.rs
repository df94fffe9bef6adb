//! How payloads cross nodes.
//!
//! `ractor_cluster` serializes message fields through `BytesConvertable`, whose
//! `from_bytes` cannot fail. A peer's malformed frame must not panic this node, so
//! every payload travels as a [`Wire`], which decodes into either the value or a
//! description of what was wrong. Handlers answer a `Malformed` request with an
//! error instead of crashing, and callers treat a malformed reply the same way.

use ractor::BytesConvertable;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A payload as received from a (possibly remote) sender.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire<T> {
    Value(T),
    /// The bytes did not decode; the text says why.
    Malformed(String),
}

impl<T> Wire<T> {
    /// The value, or what was wrong with the bytes.
    pub fn into_result(self) -> Result<T, String> {
        match self {
            Wire::Value(v) => Ok(v),
            Wire::Malformed(reason) => Err(reason),
        }
    }
}

impl<T> From<T> for Wire<T> {
    fn from(value: T) -> Self {
        Wire::Value(value)
    }
}

impl<T> BytesConvertable for Wire<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn into_bytes(self) -> Vec<u8> {
        let framed: Result<T, String> = self.into_result();
        serde_json::to_vec(&framed).unwrap_or_else(|e| {
            // Only maps with non-string keys fail to encode; say so on the other side.
            serde_json::to_vec(&Err::<(), String>(format!("sender could not encode: {e}")))
                .unwrap_or_default()
        })
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        match serde_json::from_slice::<Result<T, String>>(&bytes) {
            Ok(Ok(value)) => Wire::Value(value),
            Ok(Err(reason)) => Wire::Malformed(reason),
            Err(e) => Wire::Malformed(format!("undecodable payload: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_survives_the_round_trip() {
        let bytes = Wire::Value(vec![1u32, 2, 3]).into_bytes();
        assert_eq!(
            Wire::<Vec<u32>>::from_bytes(bytes),
            Wire::Value(vec![1, 2, 3])
        );
    }

    #[test]
    fn garbage_decodes_into_malformed_instead_of_panicking() {
        let decoded = Wire::<Vec<u32>>::from_bytes(b"\xff\x00not json".to_vec());
        assert!(matches!(decoded, Wire::Malformed(_)));
        let wrong_shape = Wire::<Vec<u32>>::from_bytes(br#"{"Ok": "text"}"#.to_vec());
        assert!(matches!(wrong_shape, Wire::Malformed(_)));
    }
}
