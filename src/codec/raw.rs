//! The raw codec: a value that is a byte string or a text string is stored as its bytes, unchanged.
//!
//! For callers whose values already are bytes (the C ABI, other languages reading Redis directly):
//! `Vec<u8>`, `String`, `Box<[u8]>` and newtypes around them. The bytes in Redis and in events are
//! exactly the value's bytes, so a `String` written by one node is the same UTF-8 a `Vec<u8>` reader
//! gets. Any other shape (numbers, structs, maps) is a [`Error::Codec`](crate::Error::Codec).

use serde::de::value::{Error as ValueError, SeqDeserializer};
use serde::de::{self, Visitor};
use serde::ser::{self, Impossible, Serialize};

/// Serializes a byte string, a text string, or a sequence of `u8` (how `Vec<u8>` serializes) into
/// its bytes.
pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ValueError> {
    value.serialize(BytesSerializer)
}

/// Hands `bytes` to a deserializer as they are: `String` checks them for UTF-8, `Vec<u8>` takes
/// them as a sequence.
pub(super) fn decode<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ValueError> {
    T::deserialize(BytesDeserializer(bytes))
}

fn unsupported<T>(what: &str) -> Result<T, ValueError> {
    Err(ser::Error::custom(format!(
        "the raw codec stores byte strings and text only, not {what}"
    )))
}

/// Generates the serializer methods of shapes the raw codec refuses.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ret:ty: $what:literal;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ret, ValueError> {
            unsupported($what)
        })*
    };
}

struct BytesSerializer;

impl ser::Serializer for BytesSerializer {
    type Ok = Vec<u8>;
    type Error = ValueError;
    type SerializeSeq = ByteSeq;
    type SerializeTuple = Impossible<Vec<u8>, ValueError>;
    type SerializeTupleStruct = Impossible<Vec<u8>, ValueError>;
    type SerializeTupleVariant = Impossible<Vec<u8>, ValueError>;
    type SerializeMap = Impossible<Vec<u8>, ValueError>;
    type SerializeStruct = Impossible<Vec<u8>, ValueError>;
    type SerializeStructVariant = Impossible<Vec<u8>, ValueError>;

    fn serialize_bytes(self, v: &[u8]) -> Result<Vec<u8>, ValueError> {
        Ok(v.to_vec())
    }

    fn serialize_str(self, v: &str) -> Result<Vec<u8>, ValueError> {
        Ok(v.as_bytes().to_vec())
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<ByteSeq, ValueError> {
        Ok(ByteSeq(Vec::with_capacity(len.unwrap_or(0))))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Vec<u8>, ValueError> {
        value.serialize(self)
    }

    refuse! {
        serialize_bool(bool) -> Vec<u8>: "a bool";
        serialize_i8(i8) -> Vec<u8>: "a number";
        serialize_i16(i16) -> Vec<u8>: "a number";
        serialize_i32(i32) -> Vec<u8>: "a number";
        serialize_i64(i64) -> Vec<u8>: "a number";
        serialize_u8(u8) -> Vec<u8>: "a number";
        serialize_u16(u16) -> Vec<u8>: "a number";
        serialize_u32(u32) -> Vec<u8>: "a number";
        serialize_u64(u64) -> Vec<u8>: "a number";
        serialize_f32(f32) -> Vec<u8>: "a number";
        serialize_f64(f64) -> Vec<u8>: "a number";
        serialize_char(char) -> Vec<u8>: "a char";
        serialize_none() -> Vec<u8>: "an option";
        serialize_unit() -> Vec<u8>: "a unit";
        serialize_unit_struct(&'static str) -> Vec<u8>: "a unit struct";
        serialize_unit_variant(&'static str, u32, &'static str) -> Vec<u8>: "an enum";
        serialize_tuple(usize) -> Self::SerializeTuple: "a tuple";
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct: "a tuple struct";
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant: "an enum";
        serialize_map(Option<usize>) -> Self::SerializeMap: "a map";
        serialize_struct(&'static str, usize) -> Self::SerializeStruct: "a struct";
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant: "an enum";
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Vec<u8>, ValueError> {
        unsupported("an option")
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Vec<u8>, ValueError> {
        unsupported("an enum")
    }
}

/// A sequence whose every element must be a `u8`.
struct ByteSeq(Vec<u8>);

impl ser::SerializeSeq for ByteSeq {
    type Ok = Vec<u8>;
    type Error = ValueError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.0.push(value.serialize(ByteSerializer)?);
        Ok(())
    }

    fn end(self) -> Result<Vec<u8>, ValueError> {
        Ok(self.0)
    }
}

/// One element of a byte sequence: a `u8` and nothing else.
struct ByteSerializer;

impl ser::Serializer for ByteSerializer {
    type Ok = u8;
    type Error = ValueError;
    type SerializeSeq = Impossible<u8, ValueError>;
    type SerializeTuple = Impossible<u8, ValueError>;
    type SerializeTupleStruct = Impossible<u8, ValueError>;
    type SerializeTupleVariant = Impossible<u8, ValueError>;
    type SerializeMap = Impossible<u8, ValueError>;
    type SerializeStruct = Impossible<u8, ValueError>;
    type SerializeStructVariant = Impossible<u8, ValueError>;

    fn serialize_u8(self, v: u8) -> Result<u8, ValueError> {
        Ok(v)
    }

    refuse! {
        serialize_bool(bool) -> u8: "a sequence of bools";
        serialize_i8(i8) -> u8: "a sequence of numbers other than u8";
        serialize_i16(i16) -> u8: "a sequence of numbers other than u8";
        serialize_i32(i32) -> u8: "a sequence of numbers other than u8";
        serialize_i64(i64) -> u8: "a sequence of numbers other than u8";
        serialize_u16(u16) -> u8: "a sequence of numbers other than u8";
        serialize_u32(u32) -> u8: "a sequence of numbers other than u8";
        serialize_u64(u64) -> u8: "a sequence of numbers other than u8";
        serialize_f32(f32) -> u8: "a sequence of numbers other than u8";
        serialize_f64(f64) -> u8: "a sequence of numbers other than u8";
        serialize_char(char) -> u8: "a sequence of chars";
        serialize_str(&str) -> u8: "a sequence of strings";
        serialize_bytes(&[u8]) -> u8: "a sequence of byte strings";
        serialize_none() -> u8: "a sequence of options";
        serialize_unit() -> u8: "a sequence of units";
        serialize_unit_struct(&'static str) -> u8: "a sequence of unit structs";
        serialize_unit_variant(&'static str, u32, &'static str) -> u8: "a sequence of enums";
        serialize_seq(Option<usize>) -> Self::SerializeSeq: "nested sequences";
        serialize_tuple(usize) -> Self::SerializeTuple: "a sequence of tuples";
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct: "a sequence of tuples";
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant: "a sequence of enums";
        serialize_map(Option<usize>) -> Self::SerializeMap: "a sequence of maps";
        serialize_struct(&'static str, usize) -> Self::SerializeStruct: "a sequence of structs";
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant: "a sequence of enums";
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<u8, ValueError> {
        unsupported("a sequence of options")
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u8, ValueError> {
        unsupported("a sequence of newtypes")
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, ValueError> {
        unsupported("a sequence of enums")
    }
}

/// Offers the stored bytes as bytes (strings, byte buffers) or as a sequence of `u8` (`Vec<u8>`).
struct BytesDeserializer<'de>(&'de [u8]);

impl<'de> de::Deserializer<'de> for BytesDeserializer<'de> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_borrowed_bytes(self.0)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_seq(SeqDeserializer::new(self.0.iter().copied()))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct tuple tuple_struct map struct enum identifier ignored_any
    }
}
