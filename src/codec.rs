//! Value codecs: how a `T` becomes the bytes stored in Redis and carried in events.
//!
//! Encoding happens once, at the edge (the typed cache handle); the pipeline moves raw bytes.

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

/// How values are serialized. Every node that shares a namespace must use the same codec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codec {
    /// JSON via `serde_json`: readable with `redis-cli` and any Kafka client. The default.
    #[default]
    Json,
    /// A compact binary encoding (`postcard`: varints, no field names). Smaller and faster than
    /// JSON, but not self-describing: types that need `deserialize_any` (for example
    /// `serde_json::Value` or `#[serde(untagged)]` enums) cannot use it.
    Binary,
}

impl Codec {
    /// Serializes `value`.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        match self {
            Codec::Json => serde_json::to_vec(value).map_err(Error::codec),
            Codec::Binary => postcard::to_stdvec(value).map_err(Error::codec),
        }
    }

    /// Deserializes a `T` from `bytes`; fails with [`Error::Codec`] on malformed input.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(Error::codec),
            Codec::Binary => {
                // postcard stops once the value is complete; leftover bytes mean the input was
                // not one value of this type.
                let (value, rest) = postcard::take_from_bytes(bytes).map_err(Error::codec)?;
                if rest.is_empty() {
                    Ok(value)
                } else {
                    Err(Error::codec(format!(
                        "{} trailing bytes after the value",
                        rest.len()
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Circle(f64),
        Rect { w: u32, h: u32 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
        shape: Shape,
        extra: BTreeMap<String, i32>,
        nick: Option<String>,
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: T) {
        for codec in [Codec::Json, Codec::Binary] {
            let bytes = codec.encode(&v).unwrap();
            assert_eq!(codec.decode::<T>(&bytes).unwrap(), v, "{codec:?}");
        }
    }

    #[test]
    fn round_trips_common_types() {
        round_trip(42u64);
        round_trip(-7i32);
        round_trip("hello".to_string());
        round_trip(vec![1u8, 2, 3]);
        round_trip(Shape::Unit);
        round_trip(Shape::Rect { w: 3, h: 4 });
        round_trip(User {
            id: 1,
            name: "ana".into(),
            tags: vec!["a".into()],
            shape: Shape::Circle(1.5),
            extra: BTreeMap::from([("k".into(), 1)]),
            nick: None,
        });
    }

    #[test]
    fn garbage_is_a_codec_error() {
        for codec in [Codec::Json, Codec::Binary] {
            let err = codec.decode::<User>(b"\xff\x00garbage").unwrap_err();
            assert!(matches!(err, Error::Codec(_)), "{codec:?}: {err}");
            let err = codec.decode::<u64>(b"\xff\xfe garbage").unwrap_err();
            assert!(matches!(err, Error::Codec(_)), "{codec:?}: {err}");
        }
    }
}
