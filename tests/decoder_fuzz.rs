//! Randomized decoder tests: whatever bytes arrive on a topic or sit in Redis, decoding them is an
//! `Ok` or an `Error::Codec`, never a panic, and every valid encoding decodes back to what was
//! encoded.
//!
//! Three decoders face data from outside: the wire envelope (`Event::decode`, both topics), the
//! version stored beside a value in Redis (`Version::from_hex`, field `ver`) and the value itself
//! (`Codec::decode`, field `v` and the envelope's value). Inputs are random bytes, random
//! well-formed envelopes, and well-formed envelopes with bytes flipped, cut, inserted or swapped.
//!
//! Cases per property: `PROPTEST_CASES` (default 4096, what `scripts/test.sh` runs);
//! `scripts/fuzz.sh` runs a million.

use std::collections::BTreeMap;
use std::time::Duration;

use distcache::event::{Event, Op, FORMAT};
use distcache::{Codec, Error, Version};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde::{Deserialize, Serialize};

/// Cases per property: `PROPTEST_CASES`, else a CI-sized default.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(4096);
    Config {
        cases,
        // Failures are reported with their seed and shrunk input; nothing is written to disk.
        failure_persistence: None,
        ..Config::default()
    }
}

fn ttl() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        Just(None),
        Just(Some(Duration::from_millis(u64::MAX))),
        (0..u64::MAX).prop_map(|ms| Some(Duration::from_millis(ms))),
    ]
}

/// Any envelope `Event::encode` can write: sets carry a value or have it omitted, deletes and
/// stale markers carry none; strings include the empty string and non-ASCII text.
fn event() -> impl Strategy<Value = Event> {
    let op = prop_oneof![Just(Op::Set), Just(Op::Delete), Just(Op::Stale)];
    let value = prop_oneof![
        Just(None),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Some)
    ];
    (
        (op, ".{0,12}", ".{0,24}", any::<u64>(), any::<u64>()),
        (ttl(), ttl(), value, any::<bool>()),
        (any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (op, ns, key, hlc, node),
                (remote_ttl, local_ttl, value, write_redis),
                (origin, at),
            )| {
                let (value, value_omitted) = match op {
                    Op::Set => {
                        let omitted = value.is_none();
                        (value, omitted)
                    }
                    _ => (None, false),
                };
                Event {
                    op,
                    ns,
                    key,
                    version: Version::new(hlc, node),
                    // The wire holds whole milliseconds.
                    remote_ttl: remote_ttl.map(whole_millis),
                    local_ttl: local_ttl.map(whole_millis),
                    value,
                    write_redis,
                    value_omitted,
                    origin,
                    produced_at_us: at,
                }
            },
        )
}

fn whole_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u64::MAX as u128) as u64)
}

/// One edit of an encoded envelope.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        bits: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// Overwrite 4 bytes with a big-endian integer (hits the length fields).
    Length {
        at: usize,
        len: u32,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..8usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (
            any::<usize>(),
            prop_oneof![Just(u32::MAX), Just(0), any::<u32>()]
        )
            .prop_map(|(at, len)| Mutation::Length { at, len }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match m {
        Mutation::Flip { at, bits } if n > 0 => bytes[at % n] ^= bits,
        Mutation::Set { at, byte } if n > 0 => bytes[at % n] = *byte,
        Mutation::Truncate { len } => bytes.truncate(len % (n + 1)),
        Mutation::Insert { at, bytes: extra } => {
            let at = at % (n + 1);
            bytes.splice(at..at, extra.iter().copied());
        }
        Mutation::Remove { at, len } if n > 0 => {
            let at = at % n;
            bytes.drain(at..(at + len).min(n));
        }
        Mutation::Length { at, len } if n >= 4 => {
            let at = at % (n - 3);
            bytes[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        _ => {}
    }
}

/// Decoding never panics, and what decodes is a valid event: it encodes back to the same bytes.
fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    match Event::decode(bytes) {
        Ok(event) => {
            prop_assert_eq!(
                event.encode(),
                bytes.to_vec(),
                "a decoded event must encode back to its bytes"
            );
            prop_assert!(event.op == Op::Set || event.value.is_none());
            prop_assert!(!(event.value.is_some() && event.value_omitted));
        }
        Err(Error::Codec(_)) => {}
        Err(other) => prop_assert!(false, "decode failed with a non-codec error: {other:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic_the_event_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        check_decode(&bytes)?;
    }

    #[test]
    fn random_bytes_behind_a_valid_header_never_panic_the_event_decoder(
        op in 0..5u8,
        flags in any::<u8>(),
        rest in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        // Past the magic, format and op checks, so the lengths and strings get exercised.
        let mut bytes = vec![b'D', b'C', FORMAT, op, flags];
        bytes.extend(rest);
        check_decode(&bytes)?;
    }

    #[test]
    fn valid_envelopes_round_trip(event in event()) {
        let bytes = event.encode();
        let decoded = Event::decode(&bytes);
        prop_assert!(decoded.is_ok(), "{:?}: {:?}", event, decoded);
        prop_assert_eq!(decoded.unwrap(), event);
    }

    #[test]
    fn mutated_envelopes_never_panic_the_event_decoder(
        event in event(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = event.encode();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        check_decode(&bytes)?;
    }

    #[test]
    fn unknown_formats_are_rejected(event in event(), format in any::<u8>()) {
        prop_assume!(format != FORMAT);
        let mut bytes = event.encode();
        bytes[2] = format;
        prop_assert!(matches!(Event::decode(&bytes), Err(Error::Codec(_))));
    }

    #[test]
    fn stored_versions_parse_only_in_their_one_form(
        s in "[0-9a-fA-F]{30,34}|[+-]?[0-9a-fA-F]{15}[+-]?[0-9a-fA-F]{15,16}|\\PC{0,40}",
    ) {
        // `ver`/`pver` in Redis: exactly 32 hex digits, nothing else (no sign, no spaces), the
        // same rule the apply script enforces.
        match Version::from_hex(&s) {
            Some(v) => {
                prop_assert_eq!(s.len(), 32);
                prop_assert!(s.bytes().all(|b| b.is_ascii_hexdigit()), "{s:?} accepted");
                prop_assert_eq!(v.to_hex(), s.to_ascii_lowercase());
            }
            None => prop_assert!(s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit())),
        }
    }

    #[test]
    fn versions_round_trip_through_their_stored_form(hlc in any::<u64>(), node in any::<u64>()) {
        let v = Version::new(hlc, node);
        prop_assert_eq!(Version::from_hex(&v.to_hex()), Some(v));
    }

    #[test]
    fn random_stored_values_never_panic_the_codecs(
        bytes in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        for codec in [Codec::Json, Codec::Binary] {
            check_value::<Record>(codec, &bytes)?;
            check_value::<String>(codec, &bytes)?;
            check_value::<Vec<u64>>(codec, &bytes)?;
            check_value::<BTreeMap<String, Vec<u8>>>(codec, &bytes)?;
        }
        check_value::<serde_json::Value>(Codec::Json, &bytes)?;
    }

    #[test]
    fn stored_values_round_trip_and_survive_mutation(
        record in record(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        for codec in [Codec::Json, Codec::Binary] {
            let mut bytes = codec.encode(&record).expect("encode");
            prop_assert_eq!(codec.decode::<Record>(&bytes).expect("decode"), record.clone());
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            check_value::<Record>(codec, &bytes)?;
        }
    }
}

/// A value type with the shapes serde codecs find hard: nested options, maps, enums, bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<i32>,
    attrs: BTreeMap<String, u32>,
    kind: Kind,
    blob: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Plain,
    Sized(u16),
    Named { first: String, last: Option<String> },
}

fn record() -> impl Strategy<Value = Record> {
    let kind = prop_oneof![
        Just(Kind::Plain),
        any::<u16>().prop_map(Kind::Sized),
        (".{0,6}", proptest::option::of(".{0,6}"))
            .prop_map(|(first, last)| Kind::Named { first, last }),
    ];
    (
        any::<u64>(),
        ".{0,12}",
        proptest::collection::vec(".{0,5}", 0..3),
        proptest::option::of(any::<i32>()),
        proptest::collection::btree_map(".{0,4}", any::<u32>(), 0..3),
        kind,
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(id, name, tags, score, attrs, kind, blob)| Record {
            id,
            name,
            tags,
            score,
            attrs,
            kind,
            blob,
        })
}

/// Decoding a stored value never panics: a value or `Error::Codec`, and a value re-encodes to
/// something that decodes to the same value.
fn check_value<T>(codec: Codec, bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    match codec.decode::<T>(bytes) {
        Ok(value) => {
            let again = codec.encode(&value).expect("re-encode a decoded value");
            let back: T = codec.decode(&again).expect("decode a re-encoded value");
            prop_assert_eq!(back, value);
        }
        Err(Error::Codec(_)) => {}
        Err(other) => prop_assert!(false, "{codec:?}: non-codec error {other:?}"),
    }
    Ok(())
}
