//! A span's attributes, encoded as OTLP `Span.attributes` fields the moment they are set: the
//! value is at hand then, so the span thread later copies one byte run per span instead of
//! walking typed values twice (lengths, then bytes). Reading back (gRPC export, tests) decodes.

use super::otlp_wire::{field_len, str_field_len, tag_len, varint_len};
use crate::json_text::clip;

/// Longest string value kept, in bytes: values such as the model come from the client's body,
/// and a span is no place for a megabyte of it. Longer ones are cut at a character boundary.
pub const MAX_VALUE_LEN: usize = 256;
/// Most attributes per span, and most items per list; the rest are dropped and counted, as the
/// OpenTelemetry SDK does at its default limit.
pub const MAX_ATTRIBUTES: usize = 128;

/// `Span.attributes` is field 9; `KeyValue.key` 1 and `.value` 2; `AnyValue` members: string 1,
/// bool 2, int 3, double 4, array 5; `ArrayValue.values` 1.
const SPAN_ATTRIBUTES: u64 = 9;

/// A value handed to [`AttrSet::push`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SpanValue<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
}

impl<'a> From<&'a str> for SpanValue<'a> {
    fn from(s: &'a str) -> Self {
        SpanValue::Str(s)
    }
}
impl<'a> From<&'a String> for SpanValue<'a> {
    fn from(s: &'a String) -> Self {
        SpanValue::Str(s)
    }
}
impl From<i64> for SpanValue<'_> {
    fn from(i: i64) -> Self {
        SpanValue::Int(i)
    }
}
impl From<bool> for SpanValue<'_> {
    fn from(b: bool) -> Self {
        SpanValue::Bool(b)
    }
}
impl From<f64> for SpanValue<'_> {
    fn from(d: f64) -> Self {
        SpanValue::Double(d)
    }
}

/// One span's attributes as encoded `KeyValue` fields, in the order they were set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttrSet {
    encoded: Vec<u8>,
    count: u32,
    dropped: u32,
}

/// Tags, lengths and small values before and between the copied strings of one attribute.
/// Keys and values are clipped to [`MAX_VALUE_LEN`] and lists to [`MAX_ATTRIBUTES`] items, so
/// no length takes more than three varint bytes and a head between two flushes at most 15
/// bytes (an int64 value: tag, ten bytes, and the three before it).
struct Head {
    bytes: [u8; 32],
    len: usize,
}

impl Head {
    fn new() -> Head {
        Head {
            bytes: [0; 32],
            len: 0,
        }
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        debug_assert!(self.len < self.bytes.len(), "heads are at most 15 bytes");
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    /// Appends the head to `out` and starts over.
    #[inline(always)]
    fn flush_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes[..self.len]);
        self.len = 0;
    }
}

/// Length of the `AnyValue` message holding a scalar (the oneof member is written even when it
/// is the default value, as the SDK does).
fn scalar_len(v: SpanValue<'_>) -> usize {
    match v {
        SpanValue::Str(s) => field_len(1, s.len()),
        SpanValue::Bool(_) => tag_len(2) + 1,
        // Negative int64 values take ten bytes as varints.
        SpanValue::Int(i) => tag_len(3) + varint_len(i as u64),
        SpanValue::Double(_) => tag_len(4) + 8,
    }
}

/// Field tags (field number << 3 | wire type) as they appear below.
const TAG_SPAN_ATTRIBUTE: u8 = (9 << 3) | 2;
const TAG_KEY: u8 = (1 << 3) | 2;
const TAG_VALUE: u8 = (2 << 3) | 2;
const TAG_STRING: u8 = (1 << 3) | 2;
const TAG_BOOL: u8 = 2 << 3;
const TAG_INT: u8 = 3 << 3;
const TAG_DOUBLE: u8 = (4 << 3) | 1;
const TAG_ARRAY: u8 = (5 << 3) | 2;
const TAG_ARRAY_VALUE: u8 = (1 << 3) | 2;

impl AttrSet {
    /// Room for `bytes` of encoded attributes before any reallocation.
    pub fn with_capacity(bytes: usize) -> AttrSet {
        AttrSet {
            encoded: Vec::with_capacity(bytes),
            count: 0,
            dropped: 0,
        }
    }

    fn room(&mut self) -> bool {
        let ok = (self.count as usize) < MAX_ATTRIBUTES;
        if ok {
            self.count += 1;
        } else {
            self.dropped += 1;
        }
        ok
    }

    /// Adds `key = value` (strings clipped to [`MAX_VALUE_LEN`] bytes).
    pub fn push(&mut self, key: &str, value: SpanValue<'_>) {
        if !self.room() {
            return;
        }
        let key = clip(key, MAX_VALUE_LEN);
        let value = match value {
            SpanValue::Str(s) => SpanValue::Str(clip(s, MAX_VALUE_LEN)),
            v => v,
        };
        let (mut head, out) = self.begin(key, scalar_len(value));
        match value {
            SpanValue::Str(s) => {
                head.byte(TAG_STRING);
                head.varint(s.len() as u64);
                head.flush_into(out);
                out.extend_from_slice(s.as_bytes());
                return;
            }
            SpanValue::Bool(b) => {
                head.byte(TAG_BOOL);
                head.byte(u8::from(b));
            }
            SpanValue::Int(i) => {
                head.byte(TAG_INT);
                head.varint(i as u64);
            }
            SpanValue::Double(d) => {
                head.byte(TAG_DOUBLE);
                head.flush_into(out);
                out.extend_from_slice(&d.to_le_bytes());
                return;
            }
        }
        head.flush_into(out);
    }

    /// Writes an attribute up to its value: the field's tag and length, the key (left out when
    /// empty, as proto3 does), the value's tag and its `any`-byte length. The caller writes the
    /// value through the returned head and buffer.
    #[inline(always)]
    fn begin(&mut self, key: &str, any: usize) -> (Head, &mut Vec<u8>) {
        let body = str_field_len(1, key) + field_len(2, any);
        let out = &mut self.encoded;
        out.reserve(field_len(SPAN_ATTRIBUTES, body));
        let mut head = Head::new();
        head.byte(TAG_SPAN_ATTRIBUTE);
        head.varint(body as u64);
        if !key.is_empty() {
            head.byte(TAG_KEY);
            head.varint(key.len() as u64);
            head.flush_into(out);
            out.extend_from_slice(key.as_bytes());
        }
        head.byte(TAG_VALUE);
        head.varint(any as u64);
        (head, out)
    }

    /// Adds a string-list attribute (items clipped; at most [`MAX_ATTRIBUTES`] of them).
    pub fn push_list<'v, I>(&mut self, key: &str, items: I)
    where
        I: IntoIterator<Item = &'v str>,
        I::IntoIter: Clone,
    {
        if !self.room() {
            return;
        }
        let key = clip(key, MAX_VALUE_LEN);
        let items = items
            .into_iter()
            .take(MAX_ATTRIBUTES)
            .map(|s| clip(s, MAX_VALUE_LEN));
        let array: usize = items
            .clone()
            .map(|s| field_len(1, field_len(1, s.len())))
            .sum();
        let (mut head, out) = self.begin(key, field_len(5, array));
        head.byte(TAG_ARRAY);
        head.varint(array as u64);
        for s in items {
            head.byte(TAG_ARRAY_VALUE);
            head.varint(field_len(1, s.len()) as u64);
            head.byte(TAG_STRING);
            head.varint(s.len() as u64);
            head.flush_into(out);
            out.extend_from_slice(s.as_bytes());
        }
        head.flush_into(out);
    }

    /// Appends every attribute of `other` (all of them, or none when they do not fit).
    pub fn extend_from(&mut self, other: &AttrSet) {
        if self.len() + other.len() <= MAX_ATTRIBUTES {
            self.encoded.extend_from_slice(&other.encoded);
            self.count += other.count;
        } else {
            self.dropped += other.count;
        }
        self.dropped += other.dropped;
    }

    /// The attributes as repeated `Span.attributes` fields, tags included.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Attributes set (dropped ones aside).
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Attributes left out since the set was full.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// The attributes decoded back, in order.
    pub fn iter(&self) -> AttrIter<'_> {
        AttrIter {
            rest: Reader(&self.encoded),
        }
    }

    /// Each attribute's `KeyValue` body (for re-tagging under another field number).
    pub fn key_values(&self) -> impl Iterator<Item = &[u8]> {
        let mut r = Reader(&self.encoded);
        std::iter::from_fn(move || r.field().map(|(_, body)| body))
    }
}

/// An attribute value as read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttrView<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
    List(ListView<'a>),
}

/// The items of a string list, still encoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ListView<'a>(&'a [u8]);

impl<'a> ListView<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut r = Reader(self.0);
        std::iter::from_fn(move || {
            let (_, any) = r.field()?;
            match Reader(any).field()? {
                (1, s) => std::str::from_utf8(s).ok(),
                _ => None,
            }
        })
    }
}

/// Reads back what [`AttrSet`] wrote (and nothing more general).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    /// The next field: its number and its payload (the bytes of a length-delimited field, the
    /// little-endian bytes of a fixed64, empty for a varint, whose value is `payload_varint`).
    fn field(&mut self) -> Option<(u64, &'a [u8])> {
        let tag = self.varint()?;
        let n = match tag & 7 {
            2 => usize::try_from(self.varint()?).ok()?,
            1 => 8,
            0 => {
                let before = self.0;
                self.varint()?;
                let used = before.len() - self.0.len();
                return Some((tag >> 3, &before[..used]));
            }
            _ => return None,
        };
        if self.0.len() < n {
            return None;
        }
        let (payload, rest) = self.0.split_at(n);
        self.0 = rest;
        Some((tag >> 3, payload))
    }
}

/// Iterator over the decoded attributes of an [`AttrSet`].
pub struct AttrIter<'a> {
    rest: Reader<'a>,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = (&'a str, AttrView<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (_, body) = self.rest.field()?;
        let mut kv = Reader(body);
        let mut key = "";
        let mut value = AttrView::Str("");
        while let Some((field, payload)) = kv.field() {
            match field {
                1 => key = std::str::from_utf8(payload).ok()?,
                2 => {
                    let (member, v) = Reader(payload).field()?;
                    value = match member {
                        1 => AttrView::Str(std::str::from_utf8(v).ok()?),
                        2 => AttrView::Bool(Reader(v).varint()? != 0),
                        3 => AttrView::Int(Reader(v).varint()? as i64),
                        4 => AttrView::Double(f64::from_le_bytes(v.try_into().ok()?)),
                        5 => AttrView::List(ListView(v)),
                        _ => return None,
                    };
                }
                _ => {}
            }
        }
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as PValue;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue as PKv};
    use opentelemetry_proto::tonic::trace::v1::Span as PSpan;
    use proptest::prelude::*;
    use prost::Message;

    #[derive(Clone, Debug, PartialEq)]
    enum Plain {
        Str(String),
        Int(i64),
        Bool(bool),
        Double(f64),
        List(Vec<String>),
    }

    fn push(set: &mut AttrSet, key: &str, v: &Plain) {
        match v {
            Plain::Str(s) => set.push(key, SpanValue::Str(s)),
            Plain::Int(i) => set.push(key, SpanValue::Int(*i)),
            Plain::Bool(b) => set.push(key, SpanValue::Bool(*b)),
            Plain::Double(d) => set.push(key, SpanValue::Double(*d)),
            Plain::List(items) => set.push_list(key, items.iter().map(String::as_str)),
        }
    }

    fn read(set: &AttrSet) -> Vec<(String, Plain)> {
        set.iter()
            .map(|(k, v)| {
                let v = match v {
                    AttrView::Str(s) => Plain::Str(s.into()),
                    AttrView::Int(i) => Plain::Int(i),
                    AttrView::Bool(b) => Plain::Bool(b),
                    AttrView::Double(d) => Plain::Double(d),
                    AttrView::List(l) => Plain::List(l.iter().map(String::from).collect()),
                };
                (k.to_owned(), v)
            })
            .collect()
    }

    /// The official message for the same attribute.
    fn official(key: &str, v: &Plain) -> PKv {
        let s = |s: &str| AnyValue {
            value: Some(PValue::StringValue(s.to_owned())),
        };
        let value = match v {
            Plain::Str(x) => s(x),
            Plain::Int(i) => AnyValue {
                value: Some(PValue::IntValue(*i)),
            },
            Plain::Bool(b) => AnyValue {
                value: Some(PValue::BoolValue(*b)),
            },
            Plain::Double(d) => AnyValue {
                value: Some(PValue::DoubleValue(*d)),
            },
            Plain::List(items) => AnyValue {
                value: Some(PValue::ArrayValue(ArrayValue {
                    values: items.iter().map(|i| s(i)).collect(),
                })),
            },
        };
        PKv {
            key: key.to_owned(),
            value: Some(value),
            ..Default::default()
        }
    }

    #[test]
    fn long_strings_are_clipped_on_a_char_boundary() {
        let mut set = AttrSet::default();
        let huge = "é".repeat(100_000);
        set.push("model", SpanValue::Str(&huge));
        set.push_list("rules", [huge.as_str(), "short"]);
        let got = read(&set);
        let Plain::Str(model) = &got[0].1 else {
            panic!("{got:?}")
        };
        assert_eq!(model.len(), MAX_VALUE_LEN, "128 two-byte characters");
        assert!(huge.starts_with(model.as_str()));
        assert_eq!(
            got[1].1,
            Plain::List(vec![model.clone(), "short".to_owned()])
        );
    }

    #[test]
    fn extending_appends_or_counts_what_does_not_fit() {
        let mut head = AttrSet::default();
        head.push("a", SpanValue::Str("x"));
        head.push_list("b", ["y", "z"]);
        let mut set = AttrSet::default();
        set.push("first", SpanValue::Int(1));
        set.extend_from(&head);
        set.push("last", SpanValue::Bool(true));
        let keys: Vec<&str> = set.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["first", "a", "b", "last"]);
        assert_eq!(set.len(), 4);
        let mut full = AttrSet::default();
        for _ in 0..MAX_ATTRIBUTES - 1 {
            full.push("n", SpanValue::Int(0));
        }
        full.extend_from(&head);
        assert_eq!((full.len(), full.dropped()), (MAX_ATTRIBUTES - 1, 2));
    }

    #[test]
    fn a_full_set_drops_and_counts() {
        let mut set = AttrSet::default();
        for i in 0..MAX_ATTRIBUTES as i64 + 3 {
            set.push("n", SpanValue::Int(i));
        }
        set.push_list("late", ["a"]);
        assert_eq!(set.iter().count(), MAX_ATTRIBUTES);
        assert_eq!(set.len(), MAX_ATTRIBUTES);
        assert_eq!(set.dropped(), 4);
        let mut long = AttrSet::default();
        long.push_list("many", (0..1000).map(|_| "x"));
        let Some((_, AttrView::List(items))) = long.iter().next() else {
            panic!()
        };
        assert_eq!(items.iter().count(), MAX_ATTRIBUTES);
    }

    fn value() -> impl Strategy<Value = Plain> {
        prop_oneof![
            ".{0,20}".prop_map(Plain::Str),
            any::<i64>().prop_map(Plain::Int),
            any::<bool>().prop_map(Plain::Bool),
            any::<f64>()
                .prop_filter("NaN never equals itself", |d| !d.is_nan())
                .prop_map(Plain::Double),
            proptest::collection::vec(".{0,8}", 0..4).prop_map(Plain::List),
        ]
    }

    proptest! {
        /// The bytes are what the official definitions encode for the same attributes (as a
        /// span's field 9), and they read back to what was pushed.
        #[test]
        fn encodes_like_the_official_definitions_and_reads_back(
            pushes in proptest::collection::vec(("[a-z.]{0,12}", value()), 0..30)
        ) {
            let mut set = AttrSet::with_capacity(16);
            for (key, v) in &pushes {
                push(&mut set, key, v);
            }
            prop_assert_eq!(read(&set), pushes.clone());
            prop_assert_eq!(set.len(), pushes.len());
            prop_assert_eq!(set.is_empty(), pushes.is_empty());
            let want = PSpan {
                attributes: pushes.iter().map(|(k, v)| official(k, v)).collect(),
                ..Default::default()
            };
            let official_bytes = want.encode_to_vec();
            prop_assert_eq!(set.encoded(), official_bytes.as_slice());
            prop_assert_eq!(set.key_values().count(), pushes.len());
        }
    }
}
