//! OTLP/protobuf encoding of trace exports (`ExportTraceServiceRequest`), written straight from
//! Jimini's span records into one reusable buffer around their attributes, which arrive already
//! encoded (`span_attrs`): no `SpanData`, no generated message structs, no allocation per span.
//! Field numbers follow opentelemetry-proto v1; the tests decode the bytes with the official
//! definitions and compare with the SDK's own conversion.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::span_attrs::AttrSet;

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// `Span.flags`: bit 8 says whether bit 9 (parent is remote) is known; the SDK always sets it.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// `Span.SpanKind` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireSpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// One span as the encoder needs it; borrowed from the request's record.
#[derive(Debug)]
pub struct WireSpan<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    pub parent_is_remote: bool,
    /// W3C `tracestate` header value ("" when none).
    pub trace_state: &'a str,
    /// W3C trace flags (bit 0 = sampled).
    pub trace_flags: u8,
    pub name: &'a str,
    pub kind: WireSpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Encoded as they were set; their `dropped()` count becomes `dropped_attributes_count`.
    pub attributes: &'a AttrSet,
    /// Status ERROR (with an empty message) instead of UNSET.
    pub error: bool,
}

/// Accumulates encoded spans and emits them as one `ExportTraceServiceRequest` under a fixed
/// resource and instrumentation scope.
#[derive(Debug)]
pub struct TraceExportEncoder {
    /// `ResourceSpans.resource` field, tag included.
    resource: Vec<u8>,
    /// `ScopeSpans.scope` field, tag included.
    scope: Vec<u8>,
    /// `ScopeSpans.spans` fields, tags included, after `head_room()` bytes kept free for the
    /// request's head (so that a batch is sent where it was encoded, not copied behind it).
    spans: Vec<u8>,
    count: usize,
}

impl TraceExportEncoder {
    pub fn new(resource_attributes: &AttrSet, scope_name: &str, scope_version: &str) -> Self {
        // `Resource.attributes` is field 1 where a span's is field 9: re-tag each `KeyValue`.
        let resource_body: usize = resource_attributes
            .key_values()
            .map(|kv| field_len(1, kv.len()))
            .sum();
        let mut resource = Vec::new();
        append(&mut resource, field_len(1, resource_body), |c| {
            c.len_prefix(1, resource_body);
            for kv in resource_attributes.key_values() {
                c.bytes(1, kv);
            }
        });

        let scope_body = str_field_len(1, scope_name) + str_field_len(2, scope_version);
        let mut scope = Vec::new();
        append(&mut scope, field_len(1, scope_body), |c| {
            c.len_prefix(1, scope_body);
            c.str(1, scope_name);
            c.str(2, scope_version);
        });

        let mut encoder = TraceExportEncoder {
            resource,
            scope,
            spans: Vec::new(),
            count: 0,
        };
        encoder.spans.resize(encoder.head_room(), 0);
        encoder
    }

    /// The most the head before the spans can take: two tags and two ten-byte lengths around
    /// the resource and the scope.
    fn head_room(&self) -> usize {
        2 * (1 + 10) + self.resource.len() + self.scope.len()
    }

    /// Spans encoded since the last [`Self::take_request`].
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn push(&mut self, s: &WireSpan<'_>) {
        // Lengths first, then the bytes straight to their place: the span's length prefix is
        // known without encoding the body aside and copying it behind the prefix.
        let body = span_body_len(s);
        append(&mut self.spans, field_len(2, body), |c| {
            c.len_prefix(2, body);
            c.span_body(s);
        });
        self.count += 1;
    }

    /// The encoded request holding every span pushed so far; the encoder is then empty again
    /// (its next batch gets a buffer of the same size).
    pub fn take_request(&mut self) -> Bytes {
        let room = self.head_room();
        let scope_spans = self.scope.len() + self.spans.len() - room;
        let resource_spans = self.resource.len() + field_len(2, scope_spans);
        let head_len = field_len(1, resource_spans) - resource_spans + field_len(2, scope_spans)
            - scope_spans
            + self.resource.len()
            + self.scope.len();
        let start = room - head_len;
        let capacity = self.spans.capacity();
        let mut buf = std::mem::replace(&mut self.spans, Vec::with_capacity(capacity));
        let mut c = Cursor {
            buf: &mut buf[start..room],
            at: 0,
        };
        c.len_prefix(1, resource_spans);
        c.raw(&self.resource);
        c.len_prefix(2, scope_spans);
        c.raw(&self.scope);
        debug_assert_eq!(c.at, head_len, "head length computed before writing");
        self.spans.resize(room, 0);
        self.count = 0;
        Bytes::from(buf).slice(start..)
    }
}

fn span_flags(s: &WireSpan<'_>) -> u32 {
    let mut f = u32::from(s.trace_flags) | FLAG_HAS_IS_REMOTE;
    if s.parent_is_remote {
        f |= FLAG_IS_REMOTE;
    }
    f
}

/// Nanoseconds since the epoch (0 for a clock before it, as the SDK does).
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Status: code ERROR (2) or an empty message (UNSET), as the SDK always sends one.
const STATUS_ERROR: [u8; 2] = [0x18, 0x02];

fn span_body_len(s: &WireSpan<'_>) -> usize {
    field_len(1, s.trace_id.len())
        + field_len(2, s.span_id.len())
        + str_field_len(3, s.trace_state)
        + s.parent_span_id.map_or(0, |p| field_len(4, p.len()))
        + str_field_len(5, s.name)
        + tag_len(6)
        + varint_len(s.kind as u64)
        + 2 * (tag_len(7) + 8)
        + s.attributes.encoded().len()
        + match s.attributes.dropped() {
            0 => 0,
            n => tag_len(10) + varint_len(u64::from(n)),
        }
        + field_len(15, if s.error { STATUS_ERROR.len() } else { 0 })
        + tag_len(16)
        + 4
}

pub(super) fn varint_len(v: u64) -> usize {
    // Most tags and lengths here take one byte.
    if v < 0x80 {
        return 1;
    }
    // 7 payload bits per byte.
    (64 - v.leading_zeros() as usize).div_ceil(7)
}

pub(super) fn tag_len(field: u64) -> usize {
    varint_len(field << 3)
}

/// Length of a length-delimited field carrying `n` bytes, tag included.
pub(super) fn field_len(field: u64, n: usize) -> usize {
    tag_len(field) + varint_len(n as u64) + n
}

/// proto3 leaves empty strings out.
pub(super) fn str_field_len(field: u64, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        field_len(field, s.len())
    }
}

/// Appends exactly `n` bytes, written by `write` through a [`Cursor`]. A wrong `n` is a bug
/// the tests catch; in release a too-large one only leaves the unwritten tail out.
fn append(out: &mut Vec<u8>, n: usize, write: impl FnOnce(&mut Cursor<'_>)) {
    let start = out.len();
    out.resize(start + n, 0);
    let mut c = Cursor {
        buf: &mut out[start..],
        at: 0,
    };
    write(&mut c);
    let written = c.at;
    debug_assert_eq!(written, n, "length computed before writing");
    out.truncate(start + written);
}

/// Writes protobuf into a slice sized beforehand: no capacity check or length update per
/// byte, as `Vec::push` does (the encoder was ~1.4k instructions per span that way).
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }

    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline(always)]
    fn tag(&mut self, field: u64, wire: u64) {
        self.varint((field << 3) | wire);
    }

    #[inline(always)]
    fn raw(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }

    /// Tag and length of a length-delimited field whose `n` bytes follow.
    #[inline(always)]
    fn len_prefix(&mut self, field: u64, n: usize) {
        self.tag(field, WIRE_LEN);
        self.varint(n as u64);
    }

    #[inline(always)]
    fn bytes(&mut self, field: u64, b: &[u8]) {
        self.len_prefix(field, b.len());
        self.raw(b);
    }

    #[inline(always)]
    fn str(&mut self, field: u64, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn span_body(&mut self, s: &WireSpan<'_>) {
        self.bytes(1, &s.trace_id);
        self.bytes(2, &s.span_id);
        self.str(3, s.trace_state);
        if let Some(p) = &s.parent_span_id {
            self.bytes(4, p);
        }
        self.str(5, s.name);
        self.tag(6, WIRE_VARINT);
        self.varint(s.kind as u64);
        self.tag(7, WIRE_FIXED64);
        self.raw(&unix_nanos(s.start).to_le_bytes());
        self.tag(8, WIRE_FIXED64);
        self.raw(&unix_nanos(s.end).to_le_bytes());
        self.raw(s.attributes.encoded());
        if s.attributes.dropped() > 0 {
            self.varint_field(10, u64::from(s.attributes.dropped()));
        }
        self.bytes(15, if s.error { &STATUS_ERROR } else { &[] });
        self.tag(16, WIRE_FIXED32);
        self.raw(&span_flags(s).to_le_bytes());
    }

    #[inline(always)]
    fn varint_field(&mut self, field: u64, v: u64) {
        self.tag(field, WIRE_VARINT);
        self.varint(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::tracing::attrs_from_key_values;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{InstrumentationScope as PScope, KeyValue as PKv};
    use opentelemetry_proto::tonic::trace::v1::Span as PSpan;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
    use proptest::prelude::*;
    use prost::Message;
    use std::borrow::Cow;
    use std::time::Duration;

    /// What the SDK's exporter would put on the wire for the same span, given the attributes
    /// the span was recorded from.
    fn sdk_span(s: &WireSpan<'_>, attributes: &[KeyValue]) -> PSpan {
        let state = if s.trace_state.is_empty() {
            TraceState::default()
        } else {
            TraceState::from_key_value(s.trace_state.split(',').filter_map(|kv| kv.split_once('=')))
                .unwrap()
        };
        let data = SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(s.trace_id),
                SpanId::from_bytes(s.span_id),
                TraceFlags::new(s.trace_flags),
                false,
                state,
            ),
            parent_span_id: s.parent_span_id.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: s.parent_is_remote,
            span_kind: match s.kind {
                WireSpanKind::Internal => SpanKind::Internal,
                WireSpanKind::Server => SpanKind::Server,
                WireSpanKind::Client => SpanKind::Client,
            },
            name: Cow::Owned(s.name.to_owned()),
            start_time: s.start,
            end_time: s.end,
            attributes: attributes.to_vec(),
            dropped_attributes_count: s.attributes.dropped(),
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if s.error {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: InstrumentationScope::builder("x").build(),
        };
        PSpan::from(data)
    }

    fn decode(bytes: &[u8]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(bytes).expect("valid protobuf")
    }

    fn attrs() -> Vec<KeyValue> {
        vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.response.status_code", 200i64),
            KeyValue::new("gen_ai.usage.input_tokens", -5i64),
            KeyValue::new("jimini.shadow", false),
            KeyValue::new("ratio", 0.25f64),
            KeyValue::new("empty", ""),
            KeyValue::new(
                "jimini.rules",
                Value::Array(Array::String(vec![
                    StringValue::from("pii.email"),
                    StringValue::from("ünïcode"),
                ])),
            ),
            KeyValue::new("none", Value::Array(Array::String(vec![]))),
        ]
    }

    #[test]
    fn request_decodes_to_what_the_sdk_would_send() {
        let a = attrs();
        let set = attrs_from_key_values(&a);
        // More attributes than a span keeps: the first 128 are sent, the rest counted.
        let many: Vec<KeyValue> = (0..131i64).map(|i| KeyValue::new("n", i)).collect();
        let full = attrs_from_key_values(&many);
        let t0 = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let spans = [
            WireSpan {
                trace_id: [0xab; 16],
                span_id: [1, 2, 3, 4, 5, 6, 7, 8],
                parent_span_id: Some([9; 8]),
                parent_is_remote: true,
                trace_state: "vendor=x,other=y",
                trace_flags: 1,
                name: "jimini.request",
                kind: WireSpanKind::Server,
                start: t0,
                end: t0 + Duration::from_millis(12),
                attributes: &set,
                error: true,
            },
            WireSpan {
                trace_id: [0xab; 16],
                span_id: [7; 8],
                parent_span_id: None,
                parent_is_remote: false,
                trace_state: "",
                trace_flags: 1,
                name: "jimini.upstream",
                kind: WireSpanKind::Client,
                start: UNIX_EPOCH - Duration::from_secs(1),
                end: t0,
                attributes: &full,
                error: false,
            },
        ];
        let resource = [
            KeyValue::new("service.name", "jimini"),
            KeyValue::new("service.version", "1.2.3"),
        ];
        let mut enc = TraceExportEncoder::new(&attrs_from_key_values(&resource), "jimini", "1.2.3");
        assert!(enc.is_empty());
        for s in &spans {
            enc.push(s);
        }
        assert_eq!(enc.len(), 2);
        let req = decode(&enc.take_request());
        assert!(enc.is_empty());
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        let want_res: Vec<PKv> = resource.iter().map(PKv::from).collect();
        assert_eq!(res.attributes, want_res);
        assert_eq!(rs.scope_spans.len(), 1);
        let ss = &rs.scope_spans[0];
        assert_eq!(
            ss.scope,
            Some(PScope {
                name: "jimini".into(),
                version: "1.2.3".into(),
                ..Default::default()
            })
        );
        let recorded_from: [&[KeyValue]; 2] = [&a, &many[..128]];
        let want: Vec<PSpan> = spans
            .iter()
            .zip(recorded_from)
            .map(|(s, a)| sdk_span(s, a))
            .collect();
        assert_eq!(ss.spans, want);

        // The encoder is reusable: the next request holds only the next batch.
        enc.push(&spans[1]);
        let req = decode(&enc.take_request());
        assert_eq!(
            req.resource_spans[0].scope_spans[0].spans,
            vec![sdk_span(&spans[1], &many[..128])]
        );
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            append(&mut out, varint_len(v), |c| c.varint(v));
            assert_eq!(out.len(), varint_len(v), "{v}");
            // Seven bits per byte, low groups first, the high bit set on all but the last.
            let decoded = out
                .iter()
                .enumerate()
                .fold(0u64, |acc, (i, b)| acc | (u64::from(b & 0x7f) << (7 * i)));
            assert_eq!(decoded, v);
            assert!(
                out[..out.len() - 1].iter().all(|b| b & 0x80 != 0) && out[out.len() - 1] < 0x80
            );
        }
    }

    fn scalar_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<f64>()
                .prop_filter("NaN never equals itself", |d| !d.is_nan())
                .prop_map(Value::F64),
            ".{0,40}".prop_map(|s| Value::String(s.into())),
            proptest::collection::vec(".{0,12}", 0..4).prop_map(|v| Value::Array(Array::String(
                v.into_iter().map(StringValue::from).collect()
            ))),
        ]
    }

    proptest! {
        #[test]
        fn any_span_round_trips_like_the_sdk(
            trace_id in any::<[u8; 16]>(),
            span_id in any::<[u8; 8]>(),
            parent in proptest::option::of(any::<[u8; 8]>().prop_filter("a parent id is never all zero", |p| *p != [0; 8])),
            remote in any::<bool>(),
            flags in 0u8..2,
            name in ".{0,30}",
            kind in 0usize..3,
            start_ns in 0u64..4_000_000_000_000_000_000,
            dur_ns in 0u64..10_000_000_000,
            error in any::<bool>(),
            kvs in proptest::collection::vec(("[a-z._]{1,20}", scalar_value()), 0..20),
            copies in 1usize..4,
            trace_state in prop_oneof![Just(String::new()), "[a-z]{1,8}=[a-z0-9]{1,150}(,[a-z]{1,8}=[a-z0-9]{1,8}){0,2}"],
        ) {
            let kvs: Vec<KeyValue> =
                kvs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
            let set = attrs_from_key_values(&kvs);
            let start = UNIX_EPOCH + Duration::from_nanos(start_ns);
            let span = WireSpan {
                trace_id,
                span_id,
                parent_span_id: parent,
                parent_is_remote: remote,
                trace_state: &trace_state,
                trace_flags: flags,
                name: &name,
                kind: [WireSpanKind::Internal, WireSpanKind::Server, WireSpanKind::Client][kind],
                start,
                end: start + Duration::from_nanos(dur_ns),
                attributes: &set,
                error,
            };
            let mut enc = TraceExportEncoder::new(&AttrSet::default(), "jimini", "");
            for _ in 0..copies {
                enc.push(&span);
            }
            let req = decode(&enc.take_request());
            let got = &req.resource_spans[0].scope_spans[0].spans;
            prop_assert_eq!(got.len(), copies);
            let want = sdk_span(&span, &kvs);
            for s in got {
                prop_assert_eq!(s, &want);
            }
        }
    }
}
