//! Audit records: the event the proxy hands in, its canonical encoding, and the parser for stored lines.
//!
//! # Stored line format (format 1; stable — pinned by a golden test)
//! One JSON object per line, terminated by `\n`, produced byte-for-byte by this module:
//!
//! ```text
//! {"seq":N,<members>,"prev":"<64 hex>","hash":"<64 hex>"[,"subject_value":{"id":"…","salt":"<32 hex>"}]}
//! ```
//!
//! **Canonical bytes** = `{"seq":N,<members>,"prev":"<64 hex>"}` — i.e. the stored line up to the
//! `,"hash":` member, closed with `}`. `hash = SHA3-256(prev as 32 raw bytes ‖ canonical bytes)`.
//! `subject_value` sits after `hash`, outside the hashed bytes, so erasure can delete it.
//!
//! Encoding rules: no whitespace; members in the fixed order below; optional members are omitted when
//! absent (never `null`); strings escaped as serde_json does (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`,
//! other control characters as `\u00XX` lowercase, everything else raw UTF-8); integers in decimal;
//! `findings` keys in byte order; timestamps RFC 3339 UTC with milliseconds (`2026-11-25T10:30:45.123Z`).
//! Member order per `kind`:
//! - `request` / `admin`: `ts, kind, request_id, caller?, route, model?, upstream?, decision, shadow, rules,
//!   findings, status, latency_ms, upstream_latency_ms?, usage? {prompt, completion, total}, detail?,
//!   subject?, replayed?` (an event whose kind is one of the internal kinds below is stored as
//!   `event_<kind>`)
//! - `genesis`: `ts, kind, format, log_id, file` (seq 0, prev = 64 zeros; first record of a directory)
//! - `file`: `ts, kind, log_id, file` (first record of every later file)
//! - `seal`: `ts, kind, file, torn_bytes, torn_sha3` (start-up removed a torn tail of `file`)
//! - `anchor`: `ts, kind, first_seq, first_prev, first_file, removed_files` (retention removed older files)
//! - `erasure`: `ts, kind, erased, files` (subject values removed from `erased` records)
//! - `resume`: `ts, kind, dead_lettered, dropped` (the log is writable again after a failure during
//!   which records went to the dead-letter file or were lost)
//!
//! Verification hashes the stored bytes themselves, so every record written by any version stays
//! verifiable; readers ignore members they do not know. No hashed member may be a string-valued key
//! named `hash` (the line splitter relies on it).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::chain::{self, Hash};

/// Stored format version (in the genesis record).
pub const FORMAT: u32 = 1;

// Limits keep one misbehaving client from producing megabyte audit lines.
const MAX_SHORT: usize = 256;
const MAX_DETAIL: usize = 512;
const MAX_RULES: usize = 256;
const MAX_FINDINGS: usize = 256;
/// Longest data-subject id accepted (longer ids are cut at a char boundary before hashing).
pub const MAX_SUBJECT: usize = 1024;

/// Token usage reported by the upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

/// One auditable event, as the proxy glue hands it over. Contains no raw PII or secrets except the
/// two identities, which are never stored raw: `caller` becomes a keyed hash and `subject` a salted
/// commitment (the erasable value is kept beside the record, outside the chain).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditEvent {
    pub request_id: String,
    /// Caller NAME; stored only as `"sha3:<hex>"` keyed hash.
    pub caller: Option<String>,
    /// Data-subject id (GDPR art. 15/17): exportable and erasable.
    pub subject: Option<String>,
    pub route: String,
    pub model: Option<String>,
    pub upstream: Option<String>,
    pub decision: String,
    pub shadow: bool,
    pub rules: Vec<String>,
    pub findings: BTreeMap<String, u64>,
    pub status: u16,
    pub latency_ms: u64,
    pub upstream_latency_ms: Option<u64>,
    pub usage: Option<TokenUsage>,
    /// `"request"` or `"admin"` (admin actions, auth failures). Anything else is stored as given.
    pub kind: String,
    /// Short free text without secrets (e.g. admin path).
    pub detail: Option<String>,
}

/// A record waiting for its place in the chain: the canonical members between `seq` and `prev`
/// (no surrounding commas) and the erasable subject value, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    pub body: Vec<u8>,
    pub subject_value: Option<Vec<u8>>,
}

impl Pending {
    /// Approximate memory/disk footprint, for the retry and dead-letter bounds.
    pub fn size(&self) -> usize {
        self.body.len() + self.subject_value.as_ref().map_or(0, Vec::len) + 200
    }
}

/// Minimal JSON object member writer producing the canonical form.
pub(crate) struct Members<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Members<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        let first = out.is_empty();
        Members { out, first }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_json_str(self.out, v);
        self
    }
    pub fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        if let Some(v) = v {
            self.str(k, v);
        }
        self
    }
    pub fn u64(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        push_u64(self.out, v);
        self
    }
    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        self
    }
    pub fn hex(&mut self, k: &str, h: &Hash) -> &mut Self {
        self.key(k);
        self.out.push(b'"');
        chain::push_hex(self.out, h);
        self.out.push(b'"');
        self
    }
    pub fn ts(&mut self, ts: &DateTime<Utc>) -> &mut Self {
        self.str("ts", &format_ts(ts))
    }
}

/// RFC 3339, UTC, milliseconds, `Z`.
pub fn format_ts(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) use crate::json_text::push_json_str;

pub(crate) fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(crate::json_text::decimal(v, &mut [0u8; 20]));
}

pub(crate) use crate::json_text::clip;

/// Test shorthand for [`encode_event_with`]: the caller hash keyed by `caller_key`, computed per call.
#[cfg(test)]
pub(crate) fn encode_event(
    ev: &AuditEvent,
    ts: &DateTime<Utc>,
    caller_key: &[u8; 32],
    salt: &[u8; 16],
) -> Pending {
    encode_event_with(ev, ts, &mut |c| chain::caller_hash(caller_key, c), salt)
}

/// Encode an event. `caller_hash` maps a caller name to its keyed hash (the writer memoizes it:
/// names are few, and the keyed SHA3 is a sixth of a record's hashing); `salt` salts the subject
/// commitment (random per record, chosen by the caller so that re-encoding is deterministic).
pub(crate) fn encode_event_with(
    ev: &AuditEvent,
    ts: &DateTime<Utc>,
    caller_hash: &mut dyn FnMut(&str) -> String,
    salt: &[u8; 16],
) -> Pending {
    let mut body = Vec::with_capacity(320);
    let mut m = Members::new(&mut body);
    // Kinds the writer itself uses carry meaning for verification; an event may never pose as one.
    let kind: std::borrow::Cow<'_, str> = match ev.kind.as_str() {
        "" => "request".into(),
        k if INTERNAL_KINDS.contains(&k) => format!("event_{k}").into(),
        k => clip(k, MAX_SHORT).into(),
    };
    m.ts(ts)
        .str("kind", &kind)
        .str("request_id", clip(&ev.request_id, MAX_SHORT));
    if let Some(c) = &ev.caller {
        m.str("caller", &caller_hash(c));
    }
    m.str("route", clip(&ev.route, MAX_SHORT))
        .opt_str("model", ev.model.as_deref().map(|s| clip(s, MAX_SHORT)))
        .opt_str(
            "upstream",
            ev.upstream.as_deref().map(|s| clip(s, MAX_SHORT)),
        )
        .str("decision", clip(&ev.decision, MAX_SHORT))
        .bool("shadow", ev.shadow);
    m.key("rules");
    m.out.push(b'[');
    for (i, r) in ev.rules.iter().take(MAX_RULES).enumerate() {
        if i > 0 {
            m.out.push(b',');
        }
        push_json_str(m.out, clip(r, MAX_SHORT));
    }
    m.out.push(b']');
    m.key("findings");
    {
        let mut f = Vec::new();
        let mut fm = Members::new(&mut f);
        for (k, v) in ev.findings.iter().take(MAX_FINDINGS) {
            fm.u64(clip(k, MAX_SHORT), *v);
        }
        m.out.push(b'{');
        m.out.extend_from_slice(&f);
        m.out.push(b'}');
    }
    m.u64("status", u64::from(ev.status))
        .u64("latency_ms", ev.latency_ms);
    if let Some(u) = ev.upstream_latency_ms {
        m.u64("upstream_latency_ms", u);
    }
    if let Some(u) = &ev.usage {
        m.key("usage");
        let mut ub = Vec::with_capacity(64);
        Members::new(&mut ub)
            .u64("prompt", u.prompt)
            .u64("completion", u.completion)
            .u64("total", u.total);
        m.out.push(b'{');
        m.out.extend_from_slice(&ub);
        m.out.push(b'}');
    }
    m.opt_str("detail", ev.detail.as_deref().map(|s| clip(s, MAX_DETAIL)));
    let mut subject_value = None;
    if let Some(id) = &ev.subject {
        let id = clip(id, MAX_SUBJECT);
        m.hex("subject", &chain::commitment(salt, id));
        let mut sv = Vec::with_capacity(id.len() + 64);
        sv.push(b'{');
        sv.extend_from_slice(b"\"id\":");
        push_json_str(&mut sv, id);
        sv.extend_from_slice(b",\"salt\":\"");
        sv.extend_from_slice(hex::encode(salt).as_bytes());
        sv.extend_from_slice(b"\"}");
        subject_value = Some(sv);
    }
    Pending {
        body,
        subject_value,
    }
}

/// Kinds of the records the writer makes itself.
pub const INTERNAL_KINDS: &[&str] = &["genesis", "file", "seal", "anchor", "erasure", "resume"];

/// Internal record kinds written by the writer itself.
pub(crate) enum Internal<'a> {
    Genesis {
        log_id: &'a str,
        file: &'a str,
    },
    File {
        log_id: &'a str,
        file: &'a str,
    },
    Seal {
        file: &'a str,
        torn_bytes: u64,
        torn_sha3: Hash,
    },
    Anchor {
        first_seq: u64,
        first_prev: Hash,
        first_file: &'a str,
        removed_files: u64,
    },
    Erasure {
        erased: u64,
        files: u64,
    },
    Resume {
        dead_lettered: u64,
        dropped: u64,
    },
}

pub(crate) fn encode_internal(rec: &Internal<'_>, ts: &DateTime<Utc>) -> Pending {
    let mut body = Vec::with_capacity(200);
    let mut m = Members::new(&mut body);
    m.ts(ts);
    match rec {
        Internal::Genesis { log_id, file } => {
            m.str("kind", "genesis")
                .u64("format", u64::from(FORMAT))
                .str("log_id", log_id)
                .str("file", file);
        }
        Internal::File { log_id, file } => {
            m.str("kind", "file")
                .str("log_id", log_id)
                .str("file", file);
        }
        Internal::Seal {
            file,
            torn_bytes,
            torn_sha3,
        } => {
            m.str("kind", "seal")
                .str("file", file)
                .u64("torn_bytes", *torn_bytes)
                .hex("torn_sha3", torn_sha3);
        }
        Internal::Anchor {
            first_seq,
            first_prev,
            first_file,
            removed_files,
        } => {
            m.str("kind", "anchor")
                .u64("first_seq", *first_seq)
                .hex("first_prev", first_prev)
                .str("first_file", first_file)
                .u64("removed_files", *removed_files);
        }
        Internal::Erasure { erased, files } => {
            m.str("kind", "erasure")
                .u64("erased", *erased)
                .u64("files", *files);
        }
        Internal::Resume {
            dead_lettered,
            dropped,
        } => {
            m.str("kind", "resume")
                .u64("dead_lettered", *dead_lettered)
                .u64("dropped", *dropped);
        }
    }
    Pending {
        body,
        subject_value: None,
    }
}

/// Append the stored line for `p` at `seq` after `prev` to `out` (with `\n`); returns the record hash.
pub(crate) fn chain_line(out: &mut Vec<u8>, seq: u64, prev: &Hash, p: &Pending) -> Hash {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    push_u64(out, seq);
    out.push(b',');
    out.extend_from_slice(&p.body);
    out.extend_from_slice(b",\"prev\":\"");
    chain::push_hex(out, prev);
    out.push(b'"');
    let h = chain::link(prev, &out[start..]);
    out.extend_from_slice(b",\"hash\":\"");
    chain::push_hex(out, &h);
    out.push(b'"');
    if let Some(sv) = &p.subject_value {
        out.extend_from_slice(b",\"subject_value\":");
        out.extend_from_slice(sv);
    }
    out.extend_from_slice(b"}\n");
    h
}

const HASH_KEY: &[u8] = b",\"hash\":\"";
const SV_KEY: &[u8] = b",\"subject_value\":";
/// `,"hash":"` + 64 hex + `"`.
const HASH_MEMBER_LEN: usize = 9 + 64 + 1;

/// A stored line taken apart (without its `\n`).
#[derive(Debug)]
pub(crate) struct Split<'a> {
    /// Canonical bytes without the final `}`.
    pub canonical_open: &'a [u8],
    pub hash: Hash,
    /// The erasable `subject_value` object, if present.
    pub subject_value: Option<&'a [u8]>,
    /// Offset where the members after the hash start (`,"subject_value":…` or the final `}`).
    pub tail_start: usize,
}

/// Take a stored line apart. Strict: after the hash only `}` or `,"subject_value":{…}}` may follow.
pub(crate) fn split_line(line: &[u8]) -> Result<Split<'_>, &'static str> {
    let n = line.len();
    // Fast path: no subject value, the hash member sits right before the closing brace.
    let pos = if n > HASH_MEMBER_LEN + 1
        && line[n - 1] == b'}'
        && &line[n - 1 - HASH_MEMBER_LEN..n - 1 - 65] == HASH_KEY
    {
        n - 1 - HASH_MEMBER_LEN
    } else {
        find(line, HASH_KEY).ok_or("no hash member")?
    };
    if pos < 2 || line[0] != b'{' {
        return Err("not a JSON object record");
    }
    let hex_start = pos + HASH_KEY.len();
    if n < hex_start + 65 || line[hex_start + 64] != b'"' {
        return Err("hash member is not 64 hex digits");
    }
    let hash = chain::parse_hex(&line[hex_start..hex_start + 64])
        .ok_or("hash member is not 64 hex digits")?;
    let tail_start = hex_start + 65;
    let tail = &line[tail_start..];
    let subject_value = if tail == b"}" {
        None
    } else if tail.len() > SV_KEY.len() + 2
        && tail.starts_with(SV_KEY)
        && tail.ends_with(b"}}")
        && tail[SV_KEY.len()] == b'{'
    {
        Some(&tail[SV_KEY.len()..tail.len() - 1])
    } else {
        return Err("unexpected members after the hash");
    };
    Ok(Split {
        canonical_open: &line[..pos],
        hash,
        subject_value,
        tail_start,
    })
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let off = hay[i..hay.len() + 1 - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        i += off;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The members verification and recovery need; everything else is skipped.
#[derive(Deserialize, Debug)]
pub(crate) struct Head<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub kind: &'a str,
    pub prev: &'a str,
    #[serde(default, borrow)]
    pub log_id: Option<&'a str>,
    #[serde(default, borrow)]
    pub file: Option<&'a str>,
    #[serde(default)]
    pub first_seq: Option<u64>,
    #[serde(default, borrow)]
    pub first_prev: Option<&'a str>,
    #[serde(default, borrow)]
    pub subject: Option<&'a str>,
}

pub(crate) fn parse_head(line: &[u8]) -> Result<Head<'_>, serde_json::Error> {
    serde_json::from_slice(line)
}

/// `prev` hex digits at their canonical place: the last member of the canonical bytes.
pub(crate) fn canonical_prev(canonical_open: &[u8]) -> Option<&[u8]> {
    const K: &[u8] = b",\"prev\":\"";
    let n = canonical_open.len();
    if n < K.len() + 65 || canonical_open[n - 1] != b'"' || &canonical_open[n - 74..n - 65] != K {
        return None;
    }
    Some(&canonical_open[n - 65..n - 1])
}

/// Positional fast path for the common canonical layout (`{"seq":N,"ts":"<24>","kind":"k",…,"prev":"…"}`)
/// of records that need nothing else (no subject value, not a header or anchor). `None` means "use
/// `parse_head`". The hash still covers every byte, so skipping the full JSON parse hides no edit.
pub(crate) fn fast_head<'a>(line: &'a [u8], split: &Split<'a>) -> Option<Head<'a>> {
    if split.subject_value.is_some() {
        return None;
    }
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let seq: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b",\"ts\":\"")?;
    if rest.len() < 24 {
        return None;
    }
    let ts = std::str::from_utf8(&rest[..24]).ok()?;
    let rest = rest[24..].strip_prefix(b"\",\"kind\":\"")?;
    let klen = rest
        .iter()
        .take_while(|b| b.is_ascii_lowercase() || **b == b'_')
        .count();
    if rest.get(klen) != Some(&b'"') {
        return None;
    }
    let kind = std::str::from_utf8(&rest[..klen]).ok()?;
    if matches!(kind, "genesis" | "file" | "anchor") {
        return None;
    }
    let prev = std::str::from_utf8(canonical_prev(split.canonical_open)?).ok()?;
    Some(Head {
        seq,
        ts,
        kind,
        prev,
        log_id: None,
        file: None,
        first_seq: None,
        first_prev: None,
        subject: None,
    })
}

/// Does a stored line's hash match its own bytes and stored prev? (No JSON parse; for parallel
/// pre-checking during verification.)
pub(crate) fn self_consistent(line: &[u8]) -> bool {
    let Ok(s) = split_line(line) else {
        return false;
    };
    let Some(prev) = canonical_prev(s.canonical_open).and_then(chain::parse_hex) else {
        return false;
    };
    chain::link(&prev, s.canonical_open) == s.hash
}

/// The erasable part of a record.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubjectValue {
    pub id: String,
    pub salt: String,
}

/// Needle that finds lines whose subject value is `id` without parsing every line.
pub(crate) fn subject_needle(id: &str) -> Vec<u8> {
    let mut n = Vec::with_capacity(id.len() + 32);
    n.extend_from_slice(b",\"subject_value\":{\"id\":");
    push_json_str(&mut n, clip(id, MAX_SUBJECT));
    n.extend_from_slice(b",\"salt\":\"");
    n
}

/// Does the subject value match the record's commitment?
pub(crate) fn subject_matches(sv: &SubjectValue, commitment_hex: &str) -> bool {
    let Ok(salt) = hex::decode(&sv.salt) else {
        return false;
    };
    let Some(want) = chain::parse_hex(commitment_hex.as_bytes()) else {
        return false;
    };
    chain::commitment(&salt, &sv.id) == want
}

/// Fast path for verification look-ahead: the `seq` of a line that starts like a record.
pub(crate) fn peek_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample_event() -> AuditEvent {
        AuditEvent {
            request_id: "req-1".into(),
            caller: Some("team-a".into()),
            subject: Some("user-42".into()),
            route: "chat".into(),
            model: Some("gpt-4o".into()),
            upstream: Some("openai".into()),
            decision: "redact".into(),
            shadow: false,
            rules: vec!["pii.email".into(), "pii.phone".into()],
            findings: BTreeMap::from([("phone".into(), 1), ("email".into(), 2)]),
            status: 200,
            latency_ms: 812,
            upstream_latency_ms: Some(790),
            usage: Some(TokenUsage {
                prompt: 10,
                completion: 20,
                total: 30,
            }),
            kind: "request".into(),
            detail: Some("tab\there \"q\" é\u{1}".into()),
        }
    }

    fn ts() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 10, 30, 45).unwrap()
            + chrono::Duration::milliseconds(123)
    }

    /// Golden vector: the stored bytes and hash of a fixed record must never change, or logs written by
    /// earlier versions would no longer match what this version writes.
    #[test]
    fn golden_canonical_encoding() {
        let p = encode_event(&sample_event(), &ts(), &[0x11; 32], &[0x22; 16]);
        let mut line = Vec::new();
        let h = chain_line(&mut line, 42, &[0xab; 32], &p);
        let got = String::from_utf8(line).unwrap();
        let want = concat!(
            r#"{"seq":42,"ts":"2026-11-25T10:30:45.123Z","kind":"request","request_id":"req-1","#,
            r#""caller":"sha3:GOLDEN_CALLER","route":"chat","model":"gpt-4o","upstream":"openai","#,
            r#""decision":"redact","shadow":false,"rules":["pii.email","pii.phone"],"findings":{"email":2,"phone":1},"#,
            r#""status":200,"latency_ms":812,"upstream_latency_ms":790,"usage":{"prompt":10,"completion":20,"total":30},"#,
            r#""detail":"tab\there \"q\" é\u0001","subject":"GOLDEN_SUBJECT","#,
            r#""prev":"abababababababababababababababababababababababababababababababab","#,
            r#""hash":"GOLDEN_HASH","subject_value":{"id":"user-42","salt":"22222222222222222222222222222222"}}"#,
            "\n"
        );
        let want = want
            .replace("GOLDEN_CALLER", GOLDEN_CALLER)
            .replace("GOLDEN_SUBJECT", GOLDEN_SUBJECT)
            .replace("GOLDEN_HASH", GOLDEN_HASH);
        assert_eq!(got, want);
        assert_eq!(hex::encode(h), GOLDEN_HASH);
        // Canonical bytes are the line up to the hash member, closed with '}'.
        let split = split_line(got.trim_end().as_bytes()).unwrap();
        let mut canon = split.canonical_open.to_vec();
        canon.push(b'}');
        let mut pre = vec![0xab; 32];
        pre.extend_from_slice(&canon);
        assert_eq!(chain::sha3(&pre), h);
    }

    // Cross-checked with Python's hashlib.sha3_256 from the documented construction.
    const GOLDEN_CALLER: &str = "b1e22a3bbca306e215203430c4e0c3eea0fd1c9b21c8d220da7ca0771554081d";
    const GOLDEN_SUBJECT: &str = "295978a8caaa48fa3552f9ac97315bb812254dac8b9b6f7082782ef86d6f4a2a";
    const GOLDEN_HASH: &str = "4a031bed8f7ceb513d829931f1889d1060a2fea3c0dfe584a1811803cf3edad3";

    #[test]
    fn minimal_event_omits_optional_members() {
        let ev = AuditEvent {
            request_id: "r".into(),
            route: "models".into(),
            decision: "allow".into(),
            status: 200,
            ..Default::default()
        };
        let p = encode_event(&ev, &ts(), &[0; 32], &[0; 16]);
        assert_eq!(
            std::str::from_utf8(&p.body).unwrap(),
            r#""ts":"2026-11-25T10:30:45.123Z","kind":"request","request_id":"r","route":"models","decision":"allow","shadow":false,"rules":[],"findings":{},"status":200,"latency_ms":0"#
        );
        assert!(p.subject_value.is_none());
    }

    #[test]
    fn split_and_parse_round_trip() {
        let p = encode_event(&sample_event(), &ts(), &[1; 32], &[2; 16]);
        let mut line = Vec::new();
        let h = chain_line(&mut line, 3, &[9; 32], &p);
        line.pop();
        let s = split_line(&line).unwrap();
        assert_eq!(s.hash, h);
        assert_eq!(chain::link(&[9; 32], s.canonical_open), h);
        let sv: SubjectValue = serde_json::from_slice(s.subject_value.unwrap()).unwrap();
        assert_eq!(sv.id, "user-42");
        let head = parse_head(&line).unwrap();
        assert_eq!((head.seq, head.kind), (3, "request"));
        assert!(subject_matches(&sv, head.subject.unwrap()));
        assert!(find(&line, &subject_needle("user-42")).is_some());
        assert!(find(&line, &subject_needle("user-4")).is_none());
        assert_eq!(peek_seq(&line), Some(3));

        // Without subject value: fast path.
        let ev = AuditEvent {
            subject: None,
            ..sample_event()
        };
        let mut line = Vec::new();
        let h = chain_line(
            &mut line,
            4,
            &[9; 32],
            &encode_event(&ev, &ts(), &[1; 32], &[2; 16]),
        );
        line.pop();
        let s = split_line(&line).unwrap();
        assert_eq!(
            (s.hash, s.subject_value.is_none(), s.tail_start),
            (h, true, line.len() - 1)
        );
    }

    #[test]
    fn fast_head_agrees_with_serde() {
        let internal = [
            encode_internal(
                &Internal::Genesis {
                    log_id: "ab",
                    file: "f",
                },
                &ts(),
            ),
            encode_internal(
                &Internal::Seal {
                    file: "f",
                    torn_bytes: 3,
                    torn_sha3: [1; 32],
                },
                &ts(),
            ),
            encode_internal(
                &Internal::Erasure {
                    erased: 1,
                    files: 2,
                },
                &ts(),
            ),
            encode_internal(
                &Internal::Anchor {
                    first_seq: 1,
                    first_prev: [2; 32],
                    first_file: "f",
                    removed_files: 1,
                },
                &ts(),
            ),
        ];
        let events = [
            encode_event(
                &AuditEvent {
                    subject: None,
                    ..sample_event()
                },
                &ts(),
                &[1; 32],
                &[2; 16],
            ),
            encode_event(&sample_event(), &ts(), &[1; 32], &[2; 16]),
            encode_event(
                &AuditEvent {
                    kind: "admin".into(),
                    ..Default::default()
                },
                &ts(),
                &[1; 32],
                &[2; 16],
            ),
        ];
        for (i, p) in internal.iter().chain(events.iter()).enumerate() {
            let mut line = Vec::new();
            chain_line(&mut line, 1000 + i as u64, &[7; 32], p);
            line.pop();
            assert!(self_consistent(&line));
            let s = split_line(&line).unwrap();
            let full = parse_head(&line).unwrap();
            if let Some(f) = fast_head(&line, &s) {
                assert_eq!(
                    (f.seq, f.ts, f.kind, f.prev),
                    (full.seq, full.ts, full.kind, full.prev)
                );
                assert!(
                    s.subject_value.is_none() && !matches!(f.kind, "genesis" | "file" | "anchor")
                );
            } else {
                assert!(
                    s.subject_value.is_some() || matches!(full.kind, "genesis" | "anchor"),
                    "{}",
                    full.kind
                );
            }
            let mut bad = line.clone();
            bad[20] ^= 1;
            assert!(!self_consistent(&bad));
        }
    }

    #[test]
    fn split_rejects_junk() {
        let p = encode_event(&sample_event(), &ts(), &[1; 32], &[2; 16]);
        let mut line = Vec::new();
        chain_line(&mut line, 3, &[9; 32], &p);
        line.pop();
        let s = String::from_utf8(line).unwrap();
        let bad = [
            s.replace(",\"hash\":", ",\"hsh\":"),
            format!("{},\"x\":1}}", &s[..s.len() - 1]),
            s[..s.len() - 1].to_string(),
            s.replace("\"subject_value\":{", "\"subject_value\":["),
            String::new(),
            "{}".into(),
        ];
        for b in &bad {
            assert!(split_line(b.as_bytes()).is_err(), "{b}");
        }
    }

    #[test]
    fn events_cannot_pose_as_internal_records() {
        for k in INTERNAL_KINDS {
            let ev = AuditEvent {
                kind: (*k).into(),
                ..Default::default()
            };
            let p = encode_event(&ev, &ts(), &[0; 32], &[0; 16]);
            let body = std::str::from_utf8(&p.body).unwrap();
            assert!(body.contains(&format!("\"kind\":\"event_{k}\"")), "{body}");
        }
        let ev = AuditEvent {
            kind: "admin".into(),
            ..Default::default()
        };
        let p = encode_event(&ev, &ts(), &[0; 32], &[0; 16]);
        assert!(std::str::from_utf8(&p.body)
            .unwrap()
            .contains("\"kind\":\"admin\""));
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("ééé", 3), "é");
        assert_eq!(clip("abc", 5), "abc");
    }

    proptest::proptest! {
        /// The canonical string escaping equals serde_json's (what readers parse with).
        #[test]
        fn json_str_matches_serde(s in "\\PC*|[\\x00-\\x1f\"\\\\\\x7f]{0,8}") {
            let mut out = Vec::new();
            push_json_str(&mut out, &s);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }

        /// Any strings survive encoding: the line is valid JSON, splits, and hashes consistently.
        #[test]
        fn any_event_round_trips(rid in ".{0,40}", detail in proptest::option::of(".{0,40}"), subj in proptest::option::of(".{0,40}"), seq in 0u64..u64::MAX) {
            let ev = AuditEvent { request_id: rid.clone(), detail, subject: subj.clone(), route: "chat".into(), ..Default::default() };
            let p = encode_event(&ev, &ts(), &[3; 32], &[4; 16]);
            let mut line = Vec::new();
            let h = chain_line(&mut line, seq, &[5; 32], &p);
            line.pop();
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            proptest::prop_assert_eq!(v["request_id"].as_str().unwrap(), clip(&rid, MAX_SHORT));
            let s = split_line(&line).unwrap();
            proptest::prop_assert_eq!(s.hash, h);
            proptest::prop_assert_eq!(chain::link(&[5; 32], s.canonical_open), h);
            proptest::prop_assert_eq!(parse_head(&line).unwrap().seq, seq);
            if let Some(id) = subj {
                proptest::prop_assert!(find(&line, &subject_needle(&id)).is_some());
                let sv: SubjectValue = serde_json::from_slice(s.subject_value.unwrap()).unwrap();
                proptest::prop_assert_eq!(sv.id, id);
            }
        }
    }
}
