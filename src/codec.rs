//! Value codecs: how a `T` becomes the bytes stored in Redis and carried in events.
//!
//! Encoding happens once, at the edge (the typed cache handle); the pipeline moves raw bytes.

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

mod raw;

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
    /// The value's own bytes, unchanged: for byte strings and text (`Vec<u8>`, `String`, newtypes
    /// around them), which then read the same from every language and from `redis-cli`. A `String`
    /// and a `Vec<u8>` cache share values; any other type fails with [`Error::Codec`]. The C ABI
    /// uses it.
    Raw,
}

impl Codec {
    /// Serializes `value`.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        match self {
            Codec::Json => serde_json::to_vec(value).map_err(Error::codec),
            Codec::Binary => postcard::to_stdvec(value).map_err(Error::codec),
            Codec::Raw => raw::encode(value).map_err(Error::codec),
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
            Codec::Raw => raw::decode(bytes).map_err(Error::codec),
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
    fn raw_is_the_bytes_themselves() {
        let raw = Codec::Raw;
        assert_eq!(raw.encode(&vec![0u8, 255, 7]).unwrap(), [0, 255, 7]);
        assert_eq!(raw.encode("héllo").unwrap(), "héllo".as_bytes());
        assert_eq!(raw.encode(&String::new()).unwrap(), b"");
        // A String written is the Vec<u8> read, and the other way round.
        let bytes = raw.encode(&"text".to_string()).unwrap();
        assert_eq!(raw.decode::<Vec<u8>>(&bytes).unwrap(), b"text");
        assert_eq!(raw.decode::<String>(b"text").unwrap(), "text");
        assert_eq!(raw.decode::<Vec<u8>>(&[1, 0, 200]).unwrap(), [1, 0, 200]);
        assert_eq!(raw.decode::<Box<[u8]>>(b"ab").unwrap().as_ref(), b"ab");
    }

    #[test]
    fn raw_refuses_what_is_not_bytes() {
        let raw = Codec::Raw;
        for err in [
            raw.encode(&42u64).unwrap_err(),
            raw.encode(&vec![1u32, 2]).unwrap_err(),
            raw.encode(&vec!["a".to_string()]).unwrap_err(),
            raw.encode(&Shape::Unit).unwrap_err(),
            raw.encode(&Some(vec![1u8])).unwrap_err(),
            raw.decode::<String>(&[0xff, 0xfe]).unwrap_err(),
            raw.decode::<u64>(b"42").unwrap_err(),
            raw.decode::<Shape>(b"Unit").unwrap_err(),
        ] {
            assert!(matches!(err, Error::Codec(_)), "{err}");
        }
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
