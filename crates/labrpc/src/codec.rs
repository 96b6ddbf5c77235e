//! Typed messages to bytes and back.
//!
//! Every request and reply crosses the network as bytes, so byte counts are real and no memory is
//! shared between the caller and the handler. Any `serde` type is a message; the wire format is
//! postcard's (varint integers, length-prefixed sequences), which is compact and stable.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Encodes `value`; `what` names it in the error.
pub(crate) fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| Error::Codec {
        action: "encode",
        what,
        detail: e.to_string(),
    })
}

/// Decodes a `T` that must use every byte of `bytes`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    let codec_error = |detail: String| Error::Codec { action: "decode", what, detail };
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| codec_error(e.to_string()))?;
    if !rest.is_empty() {
        return Err(codec_error(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let value = (7u64, String::from("abc"), vec![1u8, 2, 3], Some(-5i32));
        let bytes = encode(&value, "request").unwrap();
        let back: (u64, String, Vec<u8>, Option<i32>) = decode(&bytes, "request").unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&1u8, "reply").unwrap();
        bytes.push(0);
        let err = decode::<u8>(&bytes, "reply").unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let bytes = encode(&String::from("hello"), "request").unwrap();
        let err = decode::<(u64, u64, u64, u64, u64, u64, u64)>(&bytes, "request").unwrap_err();
        assert!(matches!(err, Error::Codec { action: "decode", what: "request", .. }), "{err}");
    }
}
