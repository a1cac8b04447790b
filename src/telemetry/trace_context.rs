//! W3C Trace Context on the request path: parsing an incoming `traceparent` (and keeping a
//! well-formed `tracestate`), formatting the one sent upstream, and the sampling decision.
//! Plain bytes and booleans, no OpenTelemetry types: this runs once per request.

use super::config::SamplerSpec;

/// A valid incoming `traceparent`: the caller's trace and span, and its sampled flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

/// Longest `tracestate` kept (the W3C limit of 32 list members fits in 512 bytes in practice;
/// longer headers may be truncated by any participant, so they are dropped, not cut).
pub const MAX_TRACESTATE_LEN: usize = 512;

/// Parses a `traceparent` header as W3C Trace Context level 1 says: version `00` is exactly
/// `00-<32 hex>-<16 hex>-<2 hex>`; a later version may carry more fields after a `-`; version
/// `ff`, upper-case hex and all-zero ids are invalid. `None` means "start a new trace".
pub fn parse_traceparent(header: &str) -> Option<TraceParent> {
    let h = header.trim().as_bytes();
    if h.len() < 55 || h[2] != b'-' || h[35] != b'-' || h[52] != b'-' {
        return None;
    }
    let version = hex_byte(&h[0..2])?;
    match version {
        0xff => return None,
        0 if h.len() != 55 => return None,
        _ if h.len() > 55 && h[55] != b'-' => return None,
        _ => {}
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(&h[3 + 2 * i..5 + 2 * i])?;
    }
    for (i, b) in span_id.iter_mut().enumerate() {
        *b = hex_byte(&h[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&h[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        span_id,
        sampled: flags & 0x01 != 0,
    })
}

/// Two lower-case hex digits.
fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

/// A `tracestate` worth keeping on the span: non-empty, printable ASCII, at most
/// [`MAX_TRACESTATE_LEN`] bytes. Jimini does not add a member of its own, so the header itself
/// passes upstream untouched either way.
pub fn keep_tracestate(header: &str) -> Option<&str> {
    let s = header.trim();
    let printable = s.bytes().all(|b| (0x20..0x7f).contains(&b));
    (!s.is_empty() && s.len() <= MAX_TRACESTATE_LEN && printable).then_some(s)
}

/// `00-<trace id>-<span id>-<flags>` into a stack buffer: no formatter, no allocation.
pub fn format_traceparent(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> [u8; 55] {
    let mut buf = [b'-'; 55];
    buf[..2].copy_from_slice(b"00");
    let mut ok = hex::encode_to_slice(trace_id, &mut buf[3..35]).is_ok();
    ok &= hex::encode_to_slice(span_id, &mut buf[36..52]).is_ok();
    ok &= hex::encode_to_slice([u8::from(sampled)], &mut buf[53..55]).is_ok();
    debug_assert!(ok, "buffer sized for the ids");
    buf
}

/// The configured sampling policy, resolved once at start.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    AlwaysOn,
    AlwaysOff,
    /// Root traces whose id falls under this bound (of 2^63) are sampled; a ratio of 1 or
    /// more gives a bound of 2^63 or more, which every id is under.
    Ratio {
        upper_bound: u64,
    },
    /// A parent's sampled flag decides; without a parent, the inner policy does.
    ParentBased(Box<Sampling>),
}

impl Sampling {
    pub fn from_spec(spec: &SamplerSpec) -> Sampling {
        match spec {
            SamplerSpec::AlwaysOn => Sampling::AlwaysOn,
            SamplerSpec::AlwaysOff => Sampling::AlwaysOff,
            // The SDK's TraceIdRatioBased rule, so that a ratio keeps meaning what it meant
            // there: the trace id's low 8 bytes, shifted to 63 bits, under ratio * 2^63.
            SamplerSpec::Ratio(r) => Sampling::Ratio {
                upper_bound: (r.max(0.0) * (1u64 << 63) as f64) as u64,
            },
            SamplerSpec::ParentBased(inner) => {
                Sampling::ParentBased(Box::new(Sampling::from_spec(inner)))
            }
        }
    }

    /// Whether the trace with this id (and this incoming parent, if any) is recorded.
    pub fn sampled(&self, parent: Option<&TraceParent>, trace_id: &[u8; 16]) -> bool {
        match self {
            Sampling::AlwaysOn => true,
            Sampling::AlwaysOff => false,
            Sampling::Ratio { upper_bound } => {
                let mut low = [0u8; 8];
                low.copy_from_slice(&trace_id[8..]);
                (u64::from_be_bytes(low) >> 1) < *upper_bound
            }
            Sampling::ParentBased(root) => match parent {
                Some(p) => p.sampled,
                None => root.sampled(None, trace_id),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::{SpanKind, TraceContextExt, TraceId};
    use opentelemetry::Context;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
    use proptest::prelude::*;

    struct Header<'a>(&'a str);
    impl Extractor for Header<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }

    /// What the OpenTelemetry SDK's propagator makes of the same header.
    fn sdk_parse(h: &str) -> Option<TraceParent> {
        let cx = TraceContextPropagator::new().extract(&Header(h));
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
        })
    }

    #[test]
    fn parses_the_spec_examples_and_rejects_malformed_headers() {
        let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let p = parse_traceparent(ok).unwrap();
        assert_eq!(p.trace_id[0], 0x0a);
        assert_eq!(p.span_id[7], 0x31);
        assert!(p.sampled);
        assert!(
            !parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
                .unwrap()
                .sampled
        );
        // unknown flags are ignored; padding whitespace is not part of the value
        assert!(
            parse_traceparent(&format!(" {}  ", ok.replace("-01", "-03")))
                .unwrap()
                .sampled
        );
        // a future version may append fields
        assert!(parse_traceparent(&format!("cc{}-what-the-future-holds", &ok[2..])).is_some());
        for bad in [
            "",
            "garbage",
            &ok[..54],
            &format!("{ok}-extra"),
            &ok.replace("0af7", "0AF7"),
            &ok.replacen("00", "ff", 1),
            &format!("cc{}xwhat", &ok[2..]),
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_what_it_parses() {
        let p = TraceParent {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            sampled: true,
        };
        let buf = format_traceparent(p.trace_id, p.span_id, true);
        let s = std::str::from_utf8(&buf).unwrap();
        assert_eq!(s, "00-abababababababababababababababab-0101010101010101-01");
        assert_eq!(parse_traceparent(s), Some(p));
        let unsampled = format_traceparent([0; 16], [0xff; 8], false);
        assert!(unsampled.ends_with(b"ffffffffffffffff-00"));
    }

    #[test]
    fn tracestate_is_kept_only_when_well_formed_and_short() {
        assert_eq!(
            keep_tracestate(" rojo=00f067aa0ba902b7 "),
            Some("rojo=00f067aa0ba902b7")
        );
        assert_eq!(keep_tracestate(""), None);
        assert_eq!(keep_tracestate("a=\u{7}"), None);
        assert_eq!(keep_tracestate("a=é"), None);
        assert_eq!(keep_tracestate(&"a=b,".repeat(200)), None);
    }

    fn header() -> impl Strategy<Value = String> {
        let well_formed = (
            any::<[u8; 16]>(),
            any::<[u8; 8]>(),
            any::<u8>(),
            prop_oneof![Just(0u8), 1u8..0xff],
        )
            .prop_map(|(t, s, f, v)| {
                format!("{:02x}-{}-{}-{:02x}", v, hex::encode(t), hex::encode(s), f)
            });
        // Mutations of a well-formed header: one character changed, dropped or repeated.
        let mutated = (
            well_formed.clone(),
            any::<prop::sample::Index>(),
            any::<char>(),
            0..3,
        )
            .prop_map(|(h, at, c, how)| {
                let mut chars: Vec<char> = h.chars().collect();
                let i = at.index(chars.len());
                match how {
                    0 => chars[i] = c,
                    1 => {
                        chars.remove(i);
                    }
                    _ => chars.insert(i, chars[i]),
                }
                chars.into_iter().collect()
            });
        prop_oneof![well_formed, mutated, ".{0,60}"]
    }

    proptest! {
        /// Every header accepted here is accepted identically by the SDK's propagator (which is
        /// laxer: it takes short ids and signs); every well-formed one is accepted by both.
        #[test]
        fn agrees_with_the_sdk_propagator(h in header()) {
            let ours = parse_traceparent(&h);
            if let Some(p) = ours {
                prop_assert_eq!(Some(p), sdk_parse(&h));
                let b = h.trim().as_bytes();
                prop_assert!(b.len() == 55 || (b[..2] != *b"00" && b[55] == b'-'));
            }
            let strict = h.len() == 55
                && h.starts_with("00-")
                && h.bytes().enumerate().all(|(i, c)| {
                    matches!(i, 2 | 35 | 52) == (c == b'-')
                        && (c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                });
            if strict && !h[3..35].bytes().all(|c| c == b'0') && !h[36..52].bytes().all(|c| c == b'0') {
                prop_assert!(ours.is_some(), "{}", h);
            }
        }

        /// The SDK's samplers, decision for decision.
        #[test]
        fn samples_like_the_sdk(
            ratio in prop_oneof![Just(0.0), Just(1.0), Just(1.5), Just(-1.0), 0.0f64..1.0],
            trace_id in any::<[u8; 16]>(),
            parent in proptest::option::of((any::<[u8; 8]>(), any::<bool>())),
        ) {
            let parent = parent.map(|(s, sampled)| TraceParent {
                trace_id,
                span_id: if s == [0; 8] { [1; 8] } else { s },
                sampled,
            });
            let cx = match parent {
                Some(p) => {
                    let h = std::str::from_utf8(&format_traceparent(p.trace_id, p.span_id, p.sampled))
                        .unwrap()
                        .to_owned();
                    TraceContextPropagator::new().extract(&Header(&h))
                }
                None => Context::new(),
            };
            let specs = [
                SamplerSpec::AlwaysOn,
                SamplerSpec::AlwaysOff,
                SamplerSpec::Ratio(ratio),
                SamplerSpec::ParentBased(Box::new(SamplerSpec::Ratio(ratio))),
                SamplerSpec::ParentBased(Box::new(SamplerSpec::AlwaysOff)),
            ];
            for spec in &specs {
                let sdk = match spec {
                    SamplerSpec::AlwaysOn => Sampler::AlwaysOn,
                    SamplerSpec::AlwaysOff => Sampler::AlwaysOff,
                    SamplerSpec::Ratio(r) => Sampler::TraceIdRatioBased(*r),
                    SamplerSpec::ParentBased(inner) => Sampler::ParentBased(Box::new(match **inner {
                        SamplerSpec::Ratio(r) => Sampler::TraceIdRatioBased(r),
                        _ => Sampler::AlwaysOff,
                    })),
                };
                let want = sdk
                    .should_sample(Some(&cx), TraceId::from_bytes(trace_id), "x", &SpanKind::Server, &[], &[])
                    .decision
                    == SamplingDecision::RecordAndSample;
                prop_assert_eq!(
                    Sampling::from_spec(spec).sampled(parent.as_ref(), &trace_id),
                    want,
                    "{:?} parent {:?}", spec, parent
                );
            }
        }
    }
}
