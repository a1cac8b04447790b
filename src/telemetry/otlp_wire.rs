//! OTLP/protobuf encoding of trace exports (`ExportTraceServiceRequest`), written straight from
//! Jimini's span records into one reusable buffer: no `SpanData`, no generated message structs,
//! no allocation per span or attribute. Field numbers follow opentelemetry-proto v1; the tests
//! decode the bytes with the official definitions and compare with the SDK's own conversion.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry::{Array, KeyValue, Value};

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
    pub attributes: &'a [KeyValue],
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
    /// One span's body while it is encoded.
    scratch: Vec<u8>,
}

impl TraceExportEncoder {
    pub fn new(resource_attributes: &[KeyValue], scope_name: &str, scope_version: &str) -> Self {
        let mut resource_body = Vec::new();
        for kv in resource_attributes {
            put_key_value(&mut resource_body, 1, kv);
        }
        let mut resource = Vec::new();
        put_bytes(&mut resource, 1, &resource_body);

        let mut scope_body = Vec::new();
        put_str(&mut scope_body, 1, scope_name);
        put_str(&mut scope_body, 2, scope_version);
        let mut scope = Vec::new();
        put_bytes(&mut scope, 1, &scope_body);

        let mut encoder = TraceExportEncoder {
            resource,
            scope,
            spans: Vec::new(),
            count: 0,
            scratch: Vec::new(),
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
        // The span body goes to a reused scratch buffer first: its length prefix is then known
        // without a second walk over the attributes.
        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        put_span_body(&mut body, s);
        put_bytes(&mut self.spans, 2, &body);
        self.scratch = body;
        self.count += 1;
    }

    /// The encoded request holding every span pushed so far; the encoder is then empty again
    /// (its next batch gets a buffer of the same size).
    pub fn take_request(&mut self) -> Bytes {
        let room = self.head_room();
        let scope_spans = self.scope.len() + self.spans.len() - room;
        let resource_spans = self.resource.len() + field_len(2, scope_spans);
        let mut head = Vec::with_capacity(room);
        put_tag(&mut head, 1, WIRE_LEN);
        put_varint(&mut head, resource_spans as u64);
        head.extend_from_slice(&self.resource);
        put_tag(&mut head, 2, WIRE_LEN);
        put_varint(&mut head, scope_spans as u64);
        head.extend_from_slice(&self.scope);
        let start = room - head.len();
        let capacity = self.spans.capacity();
        let mut buf = std::mem::replace(&mut self.spans, Vec::with_capacity(capacity));
        buf[start..room].copy_from_slice(&head);
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

fn put_span_body(out: &mut Vec<u8>, s: &WireSpan<'_>) {
    put_bytes(out, 1, &s.trace_id);
    put_bytes(out, 2, &s.span_id);
    put_str(out, 3, s.trace_state);
    if let Some(p) = &s.parent_span_id {
        put_bytes(out, 4, p);
    }
    put_str(out, 5, s.name);
    put_tag(out, 6, WIRE_VARINT);
    put_varint(out, s.kind as u64);
    put_tag(out, 7, WIRE_FIXED64);
    out.extend_from_slice(&unix_nanos(s.start).to_le_bytes());
    put_tag(out, 8, WIRE_FIXED64);
    out.extend_from_slice(&unix_nanos(s.end).to_le_bytes());
    for kv in s.attributes {
        put_key_value(out, 9, kv);
    }
    // Status: code ERROR (2) or an empty message (UNSET), as the SDK always sends one.
    if s.error {
        put_bytes(out, 15, &[0x18, 0x02]);
    } else {
        put_bytes(out, 15, &[]);
    }
    put_tag(out, 16, WIRE_FIXED32);
    out.extend_from_slice(&span_flags(s).to_le_bytes());
}

fn varint_len(v: u64) -> usize {
    // Most tags and lengths here take one byte.
    if v < 0x80 {
        return 1;
    }
    // 7 payload bits per byte.
    (64 - v.leading_zeros() as usize).div_ceil(7)
}

fn tag_len(field: u64) -> usize {
    varint_len(field << 3)
}

/// Length of a length-delimited field carrying `n` bytes, tag included.
fn field_len(field: u64, n: usize) -> usize {
    tag_len(field) + varint_len(n as u64) + n
}

/// proto3 leaves empty strings out.
fn str_field_len(field: u64, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        field_len(field, s.len())
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_tag(out, field, WIRE_LEN);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, field: u64, s: &str) {
    if !s.is_empty() {
        put_bytes(out, field, s.as_bytes());
    }
}

fn put_key_value(out: &mut Vec<u8>, field: u64, kv: &KeyValue) {
    let value_len = any_value_len(&kv.value);
    put_tag(out, field, WIRE_LEN);
    put_varint(
        out,
        (str_field_len(1, kv.key.as_str()) + field_len(2, value_len)) as u64,
    );
    put_str(out, 1, kv.key.as_str());
    put_tag(out, 2, WIRE_LEN);
    put_varint(out, value_len as u64);
    put_any_value(out, &kv.value);
}

/// One scalar of an `AnyValue`, borrowed out of a `Value` or an `Array` element.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(&'a str),
}

impl Scalar<'_> {
    /// Length of the `AnyValue` message holding this scalar (the oneof member is always
    /// written, even when it is the default value).
    fn len(self) -> usize {
        match self {
            Scalar::Bool(_) => tag_len(2) + 1,
            // Negative int64 values take ten bytes as varints.
            Scalar::Int(i) => tag_len(3) + varint_len(i as u64),
            Scalar::Double(_) => tag_len(4) + 8,
            Scalar::Str(s) => field_len(1, s.len()),
        }
    }

    fn put(self, out: &mut Vec<u8>) {
        match self {
            Scalar::Bool(b) => {
                put_tag(out, 2, WIRE_VARINT);
                out.push(u8::from(b));
            }
            Scalar::Int(i) => {
                put_tag(out, 3, WIRE_VARINT);
                put_varint(out, i as u64);
            }
            Scalar::Double(d) => {
                put_tag(out, 4, WIRE_FIXED64);
                out.extend_from_slice(&d.to_le_bytes());
            }
            Scalar::Str(s) => put_bytes(out, 1, s.as_bytes()),
        }
    }
}

/// Calls `f` for each element of an array attribute; `false` for an array kind this encoder
/// does not know (written as an empty `AnyValue`, as the SDK does for unknown values).
fn for_each_element(a: &Array, mut f: impl FnMut(Scalar<'_>)) -> bool {
    match a {
        Array::Bool(v) => v.iter().for_each(|&b| f(Scalar::Bool(b))),
        Array::I64(v) => v.iter().for_each(|&i| f(Scalar::Int(i))),
        Array::F64(v) => v.iter().for_each(|&d| f(Scalar::Double(d))),
        Array::String(v) => v.iter().for_each(|s| f(Scalar::Str(s.as_str()))),
        _ => return false,
    }
    true
}

fn array_body_len(a: &Array) -> usize {
    let mut n = 0;
    for_each_element(a, |s| n += field_len(1, s.len()));
    n
}

fn scalar_of(v: &Value) -> Option<Scalar<'_>> {
    match v {
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        Value::I64(i) => Some(Scalar::Int(*i)),
        Value::F64(d) => Some(Scalar::Double(*d)),
        Value::String(s) => Some(Scalar::Str(s.as_str())),
        _ => None,
    }
}

fn any_value_len(v: &Value) -> usize {
    match (scalar_of(v), v) {
        (Some(s), _) => s.len(),
        (None, Value::Array(a)) if known_array(a) => field_len(5, array_body_len(a)),
        _ => 0,
    }
}

fn known_array(a: &Array) -> bool {
    matches!(
        a,
        Array::Bool(_) | Array::I64(_) | Array::F64(_) | Array::String(_)
    )
}

fn put_any_value(out: &mut Vec<u8>, v: &Value) {
    match (scalar_of(v), v) {
        (Some(s), _) => s.put(out),
        (None, Value::Array(a)) if known_array(a) => {
            put_tag(out, 5, WIRE_LEN);
            put_varint(out, array_body_len(a) as u64);
            for_each_element(a, |s| {
                put_tag(out, 1, WIRE_LEN);
                put_varint(out, s.len() as u64);
                s.put(out);
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{InstrumentationScope, StringValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{InstrumentationScope as PScope, KeyValue as PKv};
    use opentelemetry_proto::tonic::trace::v1::Span as PSpan;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
    use proptest::prelude::*;
    use prost::Message;
    use std::borrow::Cow;
    use std::time::Duration;

    /// What the SDK's exporter would put on the wire for the same span.
    fn sdk_span(s: &WireSpan<'_>) -> PSpan {
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
            attributes: s.attributes.to_vec(),
            dropped_attributes_count: 0,
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
            KeyValue::new("ints", Value::Array(Array::I64(vec![0, -1, i64::MAX]))),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("doubles", Value::Array(Array::F64(vec![1.5, -0.0]))),
            KeyValue::new("none", Value::Array(Array::String(vec![]))),
        ]
    }

    #[test]
    fn request_decodes_to_what_the_sdk_would_send() {
        let a = attrs();
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
                attributes: &a,
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
                attributes: &[],
                error: false,
            },
        ];
        let resource = [
            KeyValue::new("service.name", "jimini"),
            KeyValue::new("service.version", "1.2.3"),
        ];
        let mut enc = TraceExportEncoder::new(&resource, "jimini", "1.2.3");
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
        assert_eq!(ss.spans, spans.iter().map(sdk_span).collect::<Vec<_>>());

        // The encoder is reusable: the next request holds only the next batch.
        enc.push(&spans[1]);
        let req = decode(&enc.take_request());
        assert_eq!(
            req.resource_spans[0].scope_spans[0].spans,
            vec![sdk_span(&spans[1])]
        );
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
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
            proptest::collection::vec(any::<i64>(), 0..4).prop_map(|v| Value::Array(Array::I64(v))),
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
        ) {
            let attributes: Vec<KeyValue> =
                kvs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
            let start = UNIX_EPOCH + Duration::from_nanos(start_ns);
            let span = WireSpan {
                trace_id,
                span_id,
                parent_span_id: parent,
                parent_is_remote: remote,
                trace_state: "",
                trace_flags: flags,
                name: &name,
                kind: [WireSpanKind::Internal, WireSpanKind::Server, WireSpanKind::Client][kind],
                start,
                end: start + Duration::from_nanos(dur_ns),
                attributes: &attributes,
                error,
            };
            let mut enc = TraceExportEncoder::new(&[], "jimini", "");
            for _ in 0..copies {
                enc.push(&span);
            }
            let req = decode(&enc.take_request());
            let got = &req.resource_spans[0].scope_spans[0].spans;
            prop_assert_eq!(got.len(), copies);
            let want = sdk_span(&span);
            for s in got {
                prop_assert_eq!(s, &want);
            }
        }
    }
}
