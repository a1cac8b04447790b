//! A borrowed JSON tree with byte spans, for rewriting bodies in place: one strict parse (no
//! string is copied unless it holds escapes), the walker replaces content strings, and
//! [`splice`] re-encodes only those into the original bytes — keys, numbers, whitespace and
//! every untouched value stay byte-identical to what the client or upstream sent.

use std::borrow::Cow;
use std::collections::HashSet;

use super::BodyError;
use crate::json_text::{plain_run_end, push_json_str};

/// Nesting deeper than this is rejected (serde_json's default recursion limit).
const MAX_DEPTH: usize = 128;
/// Objects with more keys than this check duplicates with a hash set instead of a scan.
const LINEAR_DUP_CHECK: usize = 16;

/// One JSON value and where it sits in the source text.
#[derive(Debug)]
pub(crate) struct Node<'a> {
    /// Byte range of the value in the source (strings include their quotes).
    start: usize,
    end: usize,
    kind: Kind<'a>,
}

#[derive(Debug)]
enum Kind<'a> {
    Null,
    Bool(bool),
    /// The number exactly as written (validated against the JSON grammar).
    Num(&'a str),
    Str(JsonStr<'a>),
    Arr(Vec<Node<'a>>),
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
    /// A value the walker replaced with a constant (`null`, `[]`).
    Literal(&'static str),
}

#[derive(Debug)]
struct JsonStr<'a> {
    /// The text between the quotes, escapes not decoded.
    raw: &'a str,
    escaped: bool,
    /// The replacement value, once a filter changed it.
    new: Option<String>,
}

impl JsonStr<'_> {
    fn value(&self) -> Cow<'_, str> {
        match &self.new {
            Some(s) => Cow::Borrowed(s),
            None if self.escaped => Cow::Owned(unescape(self.raw)),
            None => Cow::Borrowed(self.raw),
        }
    }
}

impl<'a> Node<'a> {
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match &self.kind {
            Kind::Obj(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node<'a>> {
        match &mut self.kind {
            Kind::Obj(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        match &self.kind {
            Kind::Str(s) => Some(s.value()),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.kind {
            Kind::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// A non-negative integer written without fraction or exponent (as `Value::as_u64`).
    pub fn as_u64(&self) -> Option<u64> {
        match self.kind {
            Kind::Num(raw) => raw.parse().ok(),
            _ => None,
        }
    }

    pub fn is_string(&self) -> bool {
        matches!(self.kind, Kind::Str(_))
    }

    pub fn is_object(&self) -> bool {
        matches!(self.kind, Kind::Obj(_))
    }

    pub fn as_array_mut(&mut self) -> Option<&mut [Node<'a>]> {
        match &mut self.kind {
            Kind::Arr(items) => Some(items),
            _ => None,
        }
    }

    /// Calls `f` on every value of an object (nothing for other kinds).
    pub fn for_each_value_mut(&mut self, f: &mut dyn FnMut(&mut Node<'a>)) {
        if let Kind::Obj(entries) = &mut self.kind {
            entries.iter_mut().for_each(|(_, v)| f(v));
        }
    }

    /// Replaces the value with a constant JSON text such as `null` or `[]` (spliced over the
    /// value's source bytes).
    pub fn set_literal(&mut self, json: &'static str) {
        self.kind = Kind::Literal(json);
    }

    /// Replaces the value of a string node; no-op on other kinds.
    pub fn set_string(&mut self, value: String) {
        if let Kind::Str(s) = &mut self.kind {
            s.new = Some(value);
        }
    }
}

/// Parses `text` as one JSON object (surrounding whitespace allowed); `None` for an empty or
/// whitespace-only text. Rejects what serde_json rejects that matters here: syntax errors,
/// unescaped control characters, invalid escapes and lone surrogates, duplicate keys (we would
/// scan one occurrence while a first-wins upstream uses the other), nesting deeper than 128,
/// trailing data, and a top level that is not an object.
pub(crate) fn parse_object(text: &str) -> Result<Option<Node<'_>>, BodyError> {
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    if p.i == p.b.len() {
        return Ok(None);
    }
    let root = p.value()?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("trailing characters"));
    }
    if root.is_object() {
        Ok(Some(root))
    } else {
        Err(BodyError::NotAnObject)
    }
}

/// The source text with every replaced string re-encoded in place.
pub(crate) fn splice(src: &str, root: &Node<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() + src.len() / 8);
    let mut copied = 0;
    splice_into(src, root, &mut out, &mut copied);
    out.extend_from_slice(&src.as_bytes()[copied..]);
    out
}

fn splice_into(src: &str, node: &Node<'_>, out: &mut Vec<u8>, copied: &mut usize) {
    match &node.kind {
        Kind::Str(JsonStr { new: Some(new), .. }) => {
            out.extend_from_slice(&src.as_bytes()[*copied..node.start]);
            push_json_str(out, new);
            *copied = node.end;
        }
        Kind::Literal(text) => {
            out.extend_from_slice(&src.as_bytes()[*copied..node.start]);
            out.extend_from_slice(text.as_bytes());
            *copied = node.end;
        }
        Kind::Arr(items) => items.iter().for_each(|n| splice_into(src, n, out, copied)),
        Kind::Obj(entries) => entries
            .iter()
            .for_each(|(_, n)| splice_into(src, n, out, copied)),
        _ => {}
    }
}

/// Decodes the escapes of a string body the parser has already validated.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let b = rest.as_bytes();
        let (ch, used) = match b[pos + 1] {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            _ => {
                let hi = hex4(&b[pos + 2..pos + 6]).unwrap_or(0xfffd);
                if (0xd800..0xdc00).contains(&hi) {
                    let lo = hex4(&b[pos + 8..pos + 12]).unwrap_or(0xdc00);
                    let cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                    (char::from_u32(cp).unwrap_or('\u{fffd}'), 12)
                } else {
                    (char::from_u32(hi).unwrap_or('\u{fffd}'), 6)
                }
            }
        };
        out.push(ch);
        rest = &rest[pos + used..];
    }
    out.push_str(rest);
    out
}

fn hex4(b: &[u8]) -> Option<u32> {
    if b.len() < 4 {
        return None;
    }
    b[..4].iter().try_fold(0u32, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc * 16 + d)
    })
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    /// An error naming the position only (never the offending content).
    fn err(&self, what: &str) -> BodyError {
        let upto = &self.b[..self.i.min(self.b.len())];
        let line = upto.iter().filter(|&&c| c == b'\n').count() + 1;
        let col = upto.len() - upto.iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
        BodyError::InvalidJson(format!("{what} at line {line} column {col}"))
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn value(&mut self) -> Result<Node<'a>, BodyError> {
        let start = self.i;
        let kind = match self.b.get(self.i) {
            None => return Err(self.err("EOF while parsing a value")),
            Some(b'{') => self.object()?,
            Some(b'[') => self.array()?,
            Some(b'"') => Kind::Str(self.string()?),
            Some(b't') => self.literal("true", Kind::Bool(true))?,
            Some(b'f') => self.literal("false", Kind::Bool(false))?,
            Some(b'n') => self.literal("null", Kind::Null)?,
            Some(b'-' | b'0'..=b'9') => Kind::Num(self.number()?),
            Some(_) => return Err(self.err("expected value")),
        };
        Ok(Node {
            start,
            end: self.i,
            kind,
        })
    }

    fn literal(&mut self, word: &str, kind: Kind<'a>) -> Result<Kind<'a>, BodyError> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(kind)
        } else {
            Err(self.err("expected value"))
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        self.i - from
    }

    fn number(&mut self) -> Result<&'a str, BodyError> {
        let start = self.i;
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        Ok(&self.s[start..self.i])
    }

    /// At an opening quote: validates the string and returns its raw body.
    fn string(&mut self) -> Result<JsonStr<'a>, BodyError> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = plain_run_end(self.b, self.i);
            match self.b.get(self.i) {
                None => return Err(self.err("EOF while parsing a string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(0..=0x1f) => {
                    return Err(self
                        .err("control character (\\u0000-\\u001F) found while parsing a string"))
                }
                Some(_) => self.i += 1,
            }
        }
        let raw = &self.s[start..self.i];
        self.i += 1;
        Ok(JsonStr {
            raw,
            escaped,
            new: None,
        })
    }

    /// At a backslash: validates one escape (a surrogate pair counts as one).
    fn escape(&mut self) -> Result<(), BodyError> {
        match self.b.get(self.i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 2;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex_escape()?;
                match unit {
                    0xd800..=0xdbff => {
                        if self.b.get(self.i) != Some(&b'\\')
                            || self.b.get(self.i + 1) != Some(&b'u')
                        {
                            return Err(self.err("lone leading surrogate in hex escape"));
                        }
                        match self.hex_escape()? {
                            0xdc00..=0xdfff => Ok(()),
                            _ => Err(self.err("lone leading surrogate in hex escape")),
                        }
                    }
                    0xdc00..=0xdfff => Err(self.err("lone trailing surrogate in hex escape")),
                    _ => Ok(()),
                }
            }
            _ => {
                self.i += 1;
                Err(self.err("invalid escape"))
            }
        }
    }

    /// At `\u`: reads the four hex digits.
    fn hex_escape(&mut self) -> Result<u32, BodyError> {
        let digits = self.b.get(self.i + 2..self.i + 6);
        match digits.and_then(hex4) {
            Some(v) => {
                self.i += 6;
                Ok(v)
            }
            None => {
                self.i += 2;
                Err(self.err("invalid escape"))
            }
        }
    }

    fn enter(&mut self) -> Result<(), BodyError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("recursion limit exceeded"));
        }
        self.i += 1;
        self.ws();
        Ok(())
    }

    fn array(&mut self) -> Result<Kind<'a>, BodyError> {
        self.enter()?;
        let mut items = Vec::new();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Kind::Arr(items));
        }
        loop {
            items.push(self.value()?);
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => break,
                None => return Err(self.err("EOF while parsing a list")),
                Some(_) => return Err(self.err("expected `,` or `]`")),
            }
        }
        self.i += 1;
        self.depth -= 1;
        Ok(Kind::Arr(items))
    }

    fn object(&mut self) -> Result<Kind<'a>, BodyError> {
        self.enter()?;
        let mut entries: Vec<(Cow<'a, str>, Node<'a>)> = Vec::new();
        let mut seen: Option<HashSet<Cow<'a, str>>> = None;
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Kind::Obj(entries));
        }
        loop {
            match self.b.get(self.i) {
                Some(b'"') => {}
                None => return Err(self.err("EOF while parsing an object")),
                Some(_) => return Err(self.err("key must be a string")),
            }
            let key_at = self.i;
            let k = self.string()?;
            let key: Cow<'a, str> = if k.escaped {
                Cow::Owned(unescape(k.raw))
            } else {
                Cow::Borrowed(k.raw)
            };
            let duplicate = match &mut seen {
                Some(set) => !set.insert(key.clone()),
                None if entries.len() < LINEAR_DUP_CHECK => entries.iter().any(|(k, _)| *k == key),
                None => {
                    let mut set: HashSet<Cow<'a, str>> =
                        entries.iter().map(|(k, _)| k.clone()).collect();
                    let dup = !set.insert(key.clone());
                    seen = Some(set);
                    dup
                }
            };
            if duplicate {
                // The key itself may be content; report its position only.
                self.i = key_at + 1;
                return Err(self.err("duplicate object key"));
            }
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return Err(self.err("expected `:`"));
            }
            self.i += 1;
            self.ws();
            let v = self.value()?;
            entries.push((key, v));
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => break,
                None => return Err(self.err("EOF while parsing an object")),
                Some(_) => return Err(self.err("expected `,` or `}`")),
            }
        }
        self.i += 1;
        self.depth -= 1;
        Ok(Kind::Obj(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn strict_serde(text: &str) -> Result<Option<Value>, BodyError> {
        super::super::parse_object(text.as_bytes())
    }

    #[test]
    fn accepts_and_rejects_like_serde() {
        let cases = [
            r#"{}"#,
            r#"  {"a":1}  "#,
            r#"{"a":[1,-2.5e+3,0,true,false,null,"x"],"b":{"c":{}}}"#,
            r#"{"s":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}"#,
            r#"{"a":"é😀"}"#,
            "",
            "  \n",
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":"x"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":1}x"#,
            r#"{"a":1}{}"#,
            r#"[1,2]"#,
            r#""x""#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":{"b":1,"\u0062":2}}"#,
            r#"{1:2}"#,
            r#"{"a" 1}"#,
            r#"{"a":[1 2]}"#,
        ];
        for text in cases {
            let ours = parse_object(text);
            let theirs = strict_serde(text);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{text}: {ours:?} vs {theirs:?}"
            );
            if let (Ok(a), Ok(b)) = (&ours, &theirs) {
                assert_eq!(a.is_some(), b.is_some(), "{text}");
            }
            if let (Err(a), Err(b)) = (&ours, &theirs) {
                assert_eq!(
                    matches!(a, BodyError::NotAnObject),
                    matches!(b, BodyError::NotAnObject),
                    "{text}: {a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn depth_is_bounded() {
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(126), "]".repeat(126));
        assert!(parse_object(&ok).is_ok());
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(
            parse_object(&deep),
            Err(BodyError::InvalidJson(_))
        ));
    }

    #[test]
    fn many_keys_still_reject_duplicates() {
        let mut body: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect();
        body.insert(0, '{');
        let unique = format!("{}\"last\":0}}", body);
        assert!(parse_object(&unique).is_ok());
        let dup = format!("{}\"k7\":0}}", body);
        let err = parse_object(&dup).unwrap_err();
        assert!(!err.to_string().contains("k7"), "{err}");
    }

    #[test]
    fn untouched_bytes_survive_and_replacements_are_encoded() {
        let src = "{ \"model\" : \"m\",\n \"n\": 1.50, \"x\":\"a\\u00e9\\n\", \"y\": \"keep\" }";
        let mut root = parse_object(src).unwrap().unwrap();
        assert_eq!(root.get("x").unwrap().as_str().unwrap(), "aé\n");
        root.get_mut("x")
            .unwrap()
            .set_string("q\"\\\u{1}\tz".to_string());
        let out = String::from_utf8(splice(src, &root)).unwrap();
        assert_eq!(
            out,
            "{ \"model\" : \"m\",\n \"n\": 1.50, \"x\":\"q\\\"\\\\\\u0001\\tz\", \"y\": \"keep\" }"
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["x"], "q\"\\\u{1}\tz");
        // Nothing replaced: the exact source.
        let root = parse_object(src).unwrap().unwrap();
        assert_eq!(splice(src, &root), src.as_bytes());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn upper_all(n: &mut Node<'_>) {
        if let Some(s) = n.as_str() {
            let up = s.to_uppercase();
            if up != s {
                n.set_string(up);
            }
            return;
        }
        if let Some(items) = n.as_array_mut() {
            items.iter_mut().for_each(upper_all);
        }
        n.for_each_value_mut(&mut upper_all);
    }

    fn upper_value(v: &mut Value) {
        match v {
            Value::String(s) => *s = s.to_uppercase(),
            Value::Array(a) => a.iter_mut().for_each(upper_value),
            Value::Object(m) => m.values_mut().for_each(upper_value),
            _ => {}
        }
    }

    proptest! {
        /// Any serde-produced object (compact or pretty) parses, reads back the same strings,
        /// and a splice that rewrites every string equals the same rewrite on a serde Value.
        #[test]
        fn splice_equals_value_rewrite(m in prop::collection::btree_map("\\PC{0,6}", json_value(), 0..6), pretty in any::<bool>()) {
            let v = Value::Object(m.into_iter().collect());
            let src = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { serde_json::to_string(&v).unwrap() };
            // Compare with serde's reading of the same text (its float parsing is not exactly
            // round-trip; the splice keeps the number bytes as written).
            let mut v: Value = serde_json::from_str(&src).unwrap();
            let mut root = parse_object(&src).unwrap().unwrap();
            upper_all(&mut root);
            let out: Value = serde_json::from_slice(&splice(&src, &root)).unwrap();
            upper_value(&mut v);
            prop_assert_eq!(out, v);
        }

        /// Arbitrary text never panics the parser, and it agrees with serde on validity
        /// (numbers aside: serde rejects out-of-range floats we pass through untouched).
        #[test]
        fn agrees_with_serde_on_arbitrary_text(text in "[{}\\[\\]\",:0-9a-z\\\\ .eE+-]{0,40}") {
            let ours = parse_object(&text);
            let theirs = strict_serde(&text);
            if theirs.is_ok() {
                prop_assert!(ours.is_ok(), "{:?} {:?}", text, ours);
            }
            if ours.is_ok() && theirs.is_err() {
                prop_assert!(text.contains(['e', 'E']), "{:?} {:?}", text, theirs);
            }
        }
    }
}
