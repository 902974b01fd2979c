//! Codecs: how keys and values become bytes and back.
//!
//! Four are built in: [`Json`] (the default for values), [`Auto`] (the default for keys:
//! JSON, but strings as their raw bytes), [`Raw`] (bytes and strings as they are) and
//! [`Binary`] (MessagePack: compact, self-describing, serde-based). Any type implementing
//! [`Codec<T>`] can be used for a topic's keys or values.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A key or value that did not encode or decode.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{codec}: {message}")]
pub struct CodecError {
    /// The codec's name.
    pub codec: &'static str,
    /// What went wrong.
    pub message: String,
}

impl CodecError {
    fn new(codec: &'static str, err: impl std::fmt::Display) -> Self {
        Self {
            codec,
            message: err.to_string(),
        }
    }
}

/// Turns `T` into bytes and back.
///
/// ```
/// use faust::codec::{Codec, Json};
/// let bytes = Json.encode(&vec![1, 2]).unwrap();
/// assert_eq!(bytes, b"[1,2]");
/// let back: Vec<i32> = Json.decode(&bytes).unwrap();
/// assert_eq!(back, vec![1, 2]);
/// ```
pub trait Codec<T>: Send + Sync + 'static {
    /// The codec's name, for errors and logs.
    fn name(&self) -> &'static str;
    /// Encodes a value.
    fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError>;
    /// Decodes a value.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// JSON through serde (the default codec).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T: Serialize + DeserializeOwned> Codec<T> for Json {
    fn name(&self) -> &'static str {
        "json"
    }
    fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::new("json", e))
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::new("json", e))
    }
}

/// MessagePack through serde: compact and self-describing (structs as maps, so fields
/// can be added later).
#[derive(Debug, Clone, Copy, Default)]
pub struct Binary;

impl<T: Serialize + DeserializeOwned> Codec<T> for Binary {
    fn name(&self) -> &'static str {
        "binary"
    }
    fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        rmp_serde::to_vec_named(value).map_err(|e| CodecError::new("binary", e))
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        rmp_serde::from_slice(bytes).map_err(|e| CodecError::new("binary", e))
    }
}

/// The default key codec: JSON, except that a string is its raw UTF-8 bytes, as Faust's
/// `raw` key serializer and most Kafka producers write keys. So a `String` key `u1` is
/// the bytes `u1` on the wire, while numbers and structs are JSON.
///
/// ```
/// use faust::codec::{Auto, Codec};
/// assert_eq!(Auto.encode(&"u1".to_string()).unwrap(), b"u1");
/// assert_eq!(Auto.encode(&42u32).unwrap(), b"42");
/// let key: String = Auto.decode(b"u1").unwrap();
/// assert_eq!(key, "u1");
/// let key: String = Auto.decode(b"123").unwrap();
/// assert_eq!(key, "123");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Auto;

impl<T: Serialize + DeserializeOwned> Codec<T> for Auto {
    fn name(&self) -> &'static str {
        "auto"
    }
    fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        match serde_json::to_value(value).map_err(|e| CodecError::new("auto", e))? {
            serde_json::Value::String(s) => Ok(s.into_bytes()),
            other => serde_json::to_vec(&other).map_err(|e| CodecError::new("auto", e)),
        }
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        // Bytes that cannot start a JSON value are a raw string (the common case of text
        // keys): skip the JSON attempt and its error.
        let json_start = matches!(
            bytes.first(),
            Some(b'"' | b'{' | b'[' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
        );
        if json_start {
            match serde_json::from_slice(bytes) {
                Ok(v) => return Ok(v),
                Err(json_err) => {
                    return Self::from_text(bytes).map_err(|_| CodecError::new("auto", json_err))
                }
            }
        }
        Self::from_text(bytes)
    }
}

impl Auto {
    /// Decodes `T` from `bytes` taken as a (UTF-8) string.
    fn from_text<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let text = std::str::from_utf8(bytes).map_err(|e| CodecError::new("auto", e))?;
        T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text))
            .map_err(|e| CodecError::new("auto", e))
    }
}

/// Bytes as they are: `Vec<u8>` unchanged, `String` as UTF-8 (invalid UTF-8 is an error).
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Codec<Vec<u8>> for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }
    fn encode(&self, value: &Vec<u8>) -> Result<Vec<u8>, CodecError> {
        Ok(value.clone())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        Ok(bytes.to_vec())
    }
}

impl Codec<String> for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }
    fn encode(&self, value: &String) -> Result<Vec<u8>, CodecError> {
        Ok(value.as_bytes().to_vec())
    }
    fn decode(&self, bytes: &[u8]) -> Result<String, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| CodecError::new("raw", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Tx {
        user: String,
        amount: i64,
    }

    #[test]
    fn every_codec_round_trips_a_record() {
        let tx = Tx {
            user: "u1".into(),
            amount: -5,
        };
        let codecs: [&dyn Codec<Tx>; 2] = [&Json, &Binary];
        for c in codecs {
            let bytes = c.encode(&tx).unwrap();
            assert_eq!(c.decode(&bytes).unwrap(), tx, "{}", c.name());
        }
        assert_eq!(Json.encode(&tx).unwrap(), br#"{"user":"u1","amount":-5}"#);
    }

    #[test]
    fn binary_is_smaller_than_json() {
        let tx = Tx {
            user: "u1".into(),
            amount: 123456,
        };
        assert!(Binary.encode(&tx).unwrap().len() < Codec::<Tx>::encode(&Json, &tx).unwrap().len());
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let err = Codec::<Tx>::decode(&Json, b"{\"user\": 1}").unwrap_err();
        assert_eq!(err.codec, "json");
        assert!(err.message.contains("invalid type"), "{err}");
        assert!(Codec::<Tx>::decode(&Binary, b"\xc1").is_err());
        assert!(Codec::<String>::decode(&Raw, b"\xff\xfe").is_err());
    }

    #[test]
    fn raw_keeps_bytes() {
        let v = vec![0u8, 255, 3];
        let back: Vec<u8> = Raw
            .decode(&Codec::<Vec<u8>>::encode(&Raw, &v).unwrap())
            .unwrap();
        assert_eq!(back, v);
        assert_eq!(Codec::<String>::decode(&Raw, b"hi").unwrap(), "hi");
    }
}
