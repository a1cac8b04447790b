//! Incremental Server-Sent-Events splitter: turns arbitrary byte chunks into complete events (raw
//! bytes + field spans) per the WHATWG framing rules (`\n`, `\r\n`, `\r` line endings, comments,
//! multi-line `data:`), and splices rewritten data back into an event's original bytes.
//!
//! Byte fidelity: every input byte is handed back exactly once, either inside an event's `raw`
//! or as a [`SseItem::Raw`] piece, so an unchanged stream is re-emitted byte for byte. The only
//! `Raw` piece is the `\n` of a `\r\n` blank line split across chunks: the event is dispatched at
//! the `\r` (no waiting for the next chunk) and the late `\n` follows on its own.
//!
//! Bounded memory: an event (complete or still partial) larger than the configured maximum is an
//! [`SseError::EventTooLarge`]; the caller is expected to end the stream (fail closed) since the
//! event can be neither scanned nor safely forwarded.

use std::borrow::Cow;

/// Default upper bound for one SSE event (raw bytes, framing included): 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("SSE event exceeds {limit} bytes")]
    EventTooLarge { limit: usize },
}

/// Byte offsets (relative to the event's first byte) of one `data:` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DataLine {
    line_start: usize,
    value_start: usize,
    value_end: usize,
    /// End of the line including its terminator.
    line_end: usize,
}

/// Field spans of the event being assembled, relative to the event start.
#[derive(Clone, Debug, Default)]
struct EventMeta {
    data: Vec<DataLine>,
    /// Text spans of comment lines (`: text`): everything after the colon.
    comments: Vec<(usize, usize)>,
    event: Option<(usize, usize)>,
    /// Span of the first line terminator seen (the stream's line-ending style).
    eol: Option<(usize, usize)>,
}

impl EventMeta {
    fn clear(&mut self) {
        self.data.clear();
        self.comments.clear();
        self.event = None;
        self.eol = None;
    }
}

/// One event as it appeared on the wire.
pub struct SseEvent<'a> {
    raw: &'a [u8],
    meta: &'a EventMeta,
    complete: bool,
}

impl<'a> SseEvent<'a> {
    /// The exact input bytes of this event, framing included.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// False only for a trailing partial event handed out by [`SseSplitter::finish`].
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Whether the event has at least one `data` field (comment-only blocks have none).
    pub fn has_data(&self) -> bool {
        !self.meta.data.is_empty()
    }

    /// The data buffer: `data` values joined with `\n` (borrowed when there is a single line).
    pub fn data(&self) -> Cow<'a, [u8]> {
        match self.meta.data.as_slice() {
            [] => Cow::Borrowed(&[]),
            [d] => Cow::Borrowed(&self.raw[d.value_start..d.value_end]),
            lines => {
                let len = lines.iter().map(|d| d.value_end - d.value_start + 1).sum();
                let mut v = Vec::with_capacity(len);
                for (i, d) in lines.iter().enumerate() {
                    if i > 0 {
                        v.push(b'\n');
                    }
                    v.extend_from_slice(&self.raw[d.value_start..d.value_end]);
                }
                Cow::Owned(v)
            }
        }
    }

    /// The text of each comment line (`: ping` → ` ping`), in order.
    pub fn comments(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let raw = self.raw;
        self.meta.comments.iter().map(move |&(s, e)| &raw[s..e])
    }

    /// Whether the event has comment lines.
    pub fn has_comments(&self) -> bool {
        !self.meta.comments.is_empty()
    }

    /// The value of the last `event:` field, if any.
    pub fn event_type(&self) -> Option<&'a [u8]> {
        self.meta.event.map(|(s, e)| &self.raw[s..e])
    }

    /// The event's line terminator style (`\n` when it has no complete line).
    pub fn eol(&self) -> &'a [u8] {
        match self.meta.eol {
            Some((s, e)) => &self.raw[s..e],
            None => b"\n",
        }
    }

    /// Writes the event with its data buffer replaced by `data`: every byte outside the data
    /// values (other fields, comments, ids, line endings, the blank line) stays as it was. The new
    /// data goes where the first `data:` value was; further `data:` lines are dropped. Line breaks
    /// inside `data` become separate `data:` lines.
    pub fn write_with_data(&self, data: &[u8], out: &mut Vec<u8>) {
        self.write_rewritten(Some(data), &[], out);
    }

    /// Writes the event with its data buffer replaced by `data` (when given, as in
    /// [`SseEvent::write_with_data`]) and the text of comment line `i` replaced by `text` for
    /// every `(i, text)` in `comments` (sorted by `i`; line breaks in `text` become further
    /// comment lines). Every other byte stays as it was.
    pub fn write_rewritten(
        &self,
        data: Option<&[u8]>,
        comments: &[(usize, String)],
        out: &mut Vec<u8>,
    ) {
        let eol = self.eol();
        let data_lines: &[DataLine] = match data {
            Some(_) => &self.meta.data,
            None => &[],
        };
        let mut cursor = 0;
        let (mut di, mut ci) = (0, 0);
        loop {
            // The next edit in byte order: a data line (the first one gets the new data, later
            // ones are removed) or a rewritten comment. Comment edits that point at no comment,
            // or out of order, are skipped.
            let next_comment = loop {
                match comments.get(ci) {
                    None => break None,
                    Some((i, text)) => match self.meta.comments.get(*i) {
                        Some(&(s, e)) if s >= cursor => break Some((s, e, text)),
                        _ => ci += 1,
                    },
                }
            };
            let next_data = data_lines.get(di).copied();
            let data_start = |d: DataLine| if di == 0 { d.value_start } else { d.line_start };
            match (next_data, next_comment) {
                (Some(d), c) if c.is_none_or(|(s, _, _)| data_start(d) < s) => {
                    out.extend_from_slice(&self.raw[cursor..data_start(d)]);
                    if di == 0 {
                        write_lines(data.unwrap_or_default(), eol, b"data: ", out);
                        cursor = d.value_end;
                    } else {
                        cursor = d.line_end;
                    }
                    di += 1;
                }
                (_, Some((s, e, text))) => {
                    out.extend_from_slice(&self.raw[cursor..s]);
                    write_lines(text.as_bytes(), eol, b":", out);
                    cursor = e;
                    ci += 1;
                }
                _ => break,
            }
        }
        out.extend_from_slice(&self.raw[cursor..]);
    }

    /// Bytes that complete this (partial) event's framing so another event can follow it.
    pub fn missing_terminator(&self) -> Vec<u8> {
        if self.complete || self.raw.is_empty() {
            return Vec::new();
        }
        let eol = self.eol();
        match self.raw.last() {
            Some(b'\n' | b'\r') => eol.to_vec(),
            _ => [eol, eol].concat(),
        }
    }
}

/// Writes `text` with each line break (`\r\n`, `\r` or `\n`) replaced by `eol` + `prefix`, so
/// that every line of it becomes a line of the same kind (a `data:` line, a comment).
pub(crate) fn write_lines(text: &[u8], eol: &[u8], prefix: &[u8], out: &mut Vec<u8>) {
    let mut rest = text;
    loop {
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            None => {
                out.extend_from_slice(rest);
                break;
            }
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                out.extend_from_slice(eol);
                out.extend_from_slice(prefix);
                rest = &rest[i + skip..];
            }
        }
    }
}

/// What the splitter hands out, in input order.
pub enum SseItem<'a> {
    Event(SseEvent<'a>),
    /// Input bytes that belong to no event (see the module docs); forward as is.
    Raw(&'a [u8]),
}

/// Incremental SSE event splitter with a bounded buffer.
pub struct SseSplitter {
    /// Bytes of the current, incomplete event (starting at its first byte).
    buf: Vec<u8>,
    /// Where scanning resumes in `buf`; everything before is split into lines already.
    pos: usize,
    line_start: usize,
    /// The last event ended with a lone `\r` at the end of the input seen so far: a `\n` that
    /// arrives next is the rest of that `\r\n`.
    after_cr: bool,
    at_stream_start: bool,
    meta: EventMeta,
    max_event: usize,
}

impl Default for SseSplitter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseSplitter {
    /// `max_event`: largest event accepted, in raw bytes (framing included).
    pub fn new(max_event: usize) -> Self {
        SseSplitter {
            buf: Vec::new(),
            pos: 0,
            line_start: 0,
            after_cr: false,
            at_stream_start: true,
            meta: EventMeta::default(),
            max_event: max_event.max(1),
        }
    }

    /// Bytes currently buffered (the partial event).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the last event ended on a `\r` at the end of the input so far, so that a `\n`
    /// starting the next chunk would be the rest of its `\r\n` (handed out as [`SseItem::Raw`]).
    pub fn pending_cr(&self) -> bool {
        self.after_cr
    }

    /// Forgets the partial event.
    pub fn discard(&mut self) {
        self.buf.clear();
        self.meta.clear();
        self.pos = 0;
        self.line_start = 0;
        self.after_cr = false;
    }

    /// Feeds a chunk; calls `f` for every item completed by it. `f` returns false to stop early
    /// (the splitter is then in an unspecified state and must be dropped). Returns Ok(false) if
    /// `f` stopped, Err if an event exceeds the size bound.
    pub fn push(
        &mut self,
        mut input: &[u8],
        f: &mut dyn FnMut(SseItem<'_>) -> bool,
    ) -> Result<bool, SseError> {
        if self.after_cr && !input.is_empty() {
            self.after_cr = false;
            if input[0] == b'\n' {
                if !f(SseItem::Raw(&input[..1])) {
                    return Ok(false);
                }
                input = &input[1..];
            }
        }
        self.buf.extend_from_slice(input);
        self.scan(false, f)
    }

    /// Upstream EOF: dispatches the remaining complete lines and then the partial event (if any)
    /// with `is_complete() == false`. The splitter is reset afterwards.
    pub fn finish(&mut self, f: &mut dyn FnMut(SseItem<'_>) -> bool) -> Result<bool, SseError> {
        self.after_cr = false;
        if !self.scan(true, f)? {
            return Ok(false);
        }
        let len = self.buf.len();
        if self.line_start < len {
            self.parse_line(0, self.line_start, len, len);
        }
        let mut cont = true;
        if !self.buf.is_empty() {
            cont = f(SseItem::Event(SseEvent {
                raw: &self.buf,
                meta: &self.meta,
                complete: false,
            }));
        }
        self.buf.clear();
        self.meta.clear();
        self.pos = 0;
        self.line_start = 0;
        Ok(cont)
    }

    fn scan(
        &mut self,
        eof: bool,
        f: &mut dyn FnMut(SseItem<'_>) -> bool,
    ) -> Result<bool, SseError> {
        let len = self.buf.len();
        let mut ev_start = 0;
        let mut i = self.pos;
        let mut cont = true;
        while i < len {
            let Some(off) = self.buf[i..].iter().position(|&b| b == b'\n' || b == b'\r') else {
                i = len;
                break;
            };
            let eol = i + off;
            let blank = eol == self.line_start;
            let term = if self.buf[eol] == b'\n' {
                1
            } else if eol + 1 < len {
                if self.buf[eol + 1] == b'\n' {
                    2
                } else {
                    1
                }
            } else if eof {
                1
            } else if blank {
                // The event is complete whatever follows; dispatch now rather than wait a chunk.
                self.after_cr = true;
                1
            } else {
                // `\r` or `\r\n`? Only the next chunk can tell; resume at the `\r`.
                i = eol;
                break;
            };
            let next = eol + term;
            if self.at_stream_start && blank {
                self.at_stream_start = false;
            }
            if blank {
                if next - ev_start > self.max_event {
                    return Err(self.too_large());
                }
                cont = f(SseItem::Event(SseEvent {
                    raw: &self.buf[ev_start..next],
                    meta: &self.meta,
                    complete: true,
                }));
                self.meta.clear();
                ev_start = next;
            } else {
                self.parse_line(ev_start, self.line_start, eol, next);
            }
            self.line_start = next;
            i = next;
            if !cont {
                break;
            }
        }
        if ev_start > 0 {
            self.buf.drain(..ev_start);
        }
        self.pos = i - ev_start;
        self.line_start -= ev_start;
        if self.buf.len() > self.max_event {
            return Err(self.too_large());
        }
        Ok(cont)
    }

    fn too_large(&mut self) -> SseError {
        self.buf = Vec::new();
        self.meta.clear();
        self.pos = 0;
        self.line_start = 0;
        SseError::EventTooLarge {
            limit: self.max_event,
        }
    }

    /// Records the fields of the line `ls..le` (terminator up to `next`). All offsets are
    /// absolute in `buf`; spans are stored relative to the event start `ev`.
    fn parse_line(&mut self, ev: usize, ls: usize, le: usize, next: usize) {
        let mut name_start = ls;
        if std::mem::take(&mut self.at_stream_start) && self.buf[ls..le].starts_with(BOM) {
            name_start += BOM.len();
        }
        if self.meta.eol.is_none() && next > le {
            self.meta.eol = Some((le - ev, next - ev));
        }
        let line = &self.buf[name_start..le];
        if line.first() == Some(&b':') {
            self.meta.comments.push((name_start + 1 - ev, le - ev));
            return;
        }
        let (name_end, mut vs) = match line.iter().position(|&b| b == b':') {
            Some(c) => (name_start + c, name_start + c + 1),
            None => (le, le),
        };
        if vs < le && self.buf[vs] == b' ' {
            vs += 1;
        }
        match &self.buf[name_start..name_end] {
            b"data" => self.meta.data.push(DataLine {
                line_start: ls - ev,
                value_start: vs - ev,
                value_end: le - ev,
                line_end: next - ev,
            }),
            b"event" => self.meta.event = Some((vs - ev, le - ev)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (raw, data, event type, complete) for every event, plus Raw pieces as ("raw", …).
    type Rec = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>, bool);
    /// (data, event type) of an event.
    type DataRec = (Option<Vec<u8>>, Option<Vec<u8>>);

    fn collect(chunks: &[&[u8]], max: usize) -> (Vec<Rec>, Result<(), SseError>) {
        let mut sp = SseSplitter::new(max);
        let mut recs = Vec::new();
        let mut f = |item: SseItem<'_>| {
            match item {
                SseItem::Event(e) => recs.push((
                    e.raw().to_vec(),
                    e.has_data().then(|| e.data().into_owned()),
                    e.event_type().map(<[u8]>::to_vec),
                    e.is_complete(),
                )),
                SseItem::Raw(r) => recs.push((r.to_vec(), None, Some(b"<raw>".to_vec()), true)),
            }
            true
        };
        for c in chunks {
            if let Err(e) = sp.push(c, &mut f) {
                return (recs, Err(e));
            }
        }
        let r = sp.finish(&mut f).map(|_| ());
        (recs, r)
    }

    fn concat_raw(recs: &[Rec]) -> Vec<u8> {
        recs.iter().flat_map(|r| r.0.clone()).collect()
    }

    /// Events with their data, ignoring how raw bytes were grouped.
    fn datas(recs: &[Rec]) -> Vec<DataRec> {
        recs.iter()
            .filter(|r| r.2.as_deref() != Some(b"<raw>"))
            .filter(|r| r.1.is_some())
            .map(|r| (r.1.clone(), r.2.clone()))
            .collect()
    }

    #[test]
    fn fields_and_line_endings() {
        let input: &[u8] =
            b"\xEF\xBB\xBFevent: a\r\ndata: x\r\ndata:y\r\nid: 7\r\nretry: 10\r\n: c\r\n\r\n\
data\n\n: ping\n\ndata: z\r\rdata: w\ndata: [DONE]\n\n";
        let (recs, r) = collect(&[input], 1024);
        r.unwrap();
        assert_eq!(concat_raw(&recs), input);
        let d = datas(&recs);
        assert_eq!(
            d,
            vec![
                (Some(b"x\ny".to_vec()), Some(b"a".to_vec())),
                (Some(b"".to_vec()), None),
                (Some(b"z".to_vec()), None),
                (Some(b"w\n[DONE]".to_vec()), None),
            ]
        );
        // The comment-only block is an event without data.
        assert!(recs.iter().any(|r| r.0 == b": ping\n\n" && r.1.is_none()));
    }

    #[test]
    fn split_crlf_after_event() {
        // Blank line `\r\n` split between chunks: event dispatched at `\r`, `\n` follows raw.
        let (recs, r) = collect(&[b"data: a\r\n\r", b"\ndata: b\r\n\r\n"], 1024);
        r.unwrap();
        assert_eq!(recs[0].0, b"data: a\r\n\r");
        assert_eq!(recs[1].0, b"\n");
        assert_eq!(recs[2].0, b"data: b\r\n\r\n");
        // A `\r\n` split inside a data line waits for the `\n`.
        let (recs, _) = collect(&[b"data: a\r", b"\n\r\n"], 1024);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].0, b"data: a\r\n\r\n");
        assert_eq!(recs[0].1.as_deref(), Some(&b"a"[..]));
        // Lone CRs are line endings too.
        let (recs, _) = collect(&[b"data: a\r", b"\rdata: b\r\r"], 1024);
        assert_eq!(datas(&recs).len(), 2);
    }

    #[test]
    fn partial_event_at_eof() {
        let (recs, r) = collect(&[b"data: a\n\ndata: {\"x\":1}"], 1024);
        r.unwrap();
        assert_eq!(recs.len(), 2);
        assert!(!recs[1].3);
        assert_eq!(recs[1].1.as_deref(), Some(&b"{\"x\":1}"[..]));
        // A pending lone CR at EOF terminates the line.
        let (recs, _) = collect(&[b"data: a\r"], 1024);
        assert_eq!(recs[0].1.as_deref(), Some(&b"a"[..]));
        assert!(!recs[0].3);
    }

    #[test]
    fn size_bound() {
        // Complete event over the limit.
        let (recs, r) = collect(&[b"data: 1\n\ndata: 0123456789\n\n"], 12);
        assert_eq!(recs.len(), 1);
        assert_eq!(r, Err(SseError::EventTooLarge { limit: 12 }));
        // Partial event over the limit while buffering, fed byte by byte.
        let big = b"data: 0123456789abcdef";
        let chunks: Vec<&[u8]> = big.chunks(1).collect();
        let (_, r) = collect(&chunks, 12);
        assert_eq!(r, Err(SseError::EventTooLarge { limit: 12 }));
        // Exactly at the limit is fine.
        let (_, r) = collect(&[b"data: 12345\n\n"], 13);
        r.unwrap();
    }

    #[test]
    fn splice_keeps_framing() {
        let input = b"event: x\r\nid: 1\r\ndata: a\r\n: c\r\ndata: b\r\n\r\n";
        let mut sp = SseSplitter::new(1024);
        let mut out = Vec::new();
        sp.push(input, &mut |item| {
            if let SseItem::Event(e) = item {
                e.write_with_data(b"NEW\nLINE", &mut out);
            }
            true
        })
        .unwrap();
        assert_eq!(
            out,
            b"event: x\r\nid: 1\r\ndata: NEW\r\ndata: LINE\r\n: c\r\n\r\n".to_vec()
        );
    }

    /// A rewrite of one event: new data (if any) and comment edits.
    type Edit = (Option<Vec<u8>>, Vec<(usize, String)>);

    /// Runs `input` through a splitter and writes every event with `edit`'s rewrite.
    fn rewrite_each(input: &[u8], edit: &dyn Fn(&SseEvent<'_>) -> Edit) -> Vec<u8> {
        let mut sp = SseSplitter::new(1024);
        let mut out = Vec::new();
        let mut f = |item: SseItem<'_>| {
            match item {
                SseItem::Event(e) => {
                    let (data, comments) = edit(&e);
                    e.write_rewritten(data.as_deref(), &comments, &mut out);
                }
                SseItem::Raw(r) => out.extend_from_slice(r),
            }
            true
        };
        sp.push(input, &mut f).unwrap();
        sp.finish(&mut f).unwrap();
        out
    }

    #[test]
    fn comments_are_spanned_and_rewritable() {
        let input: &[u8] =
            b"\xEF\xBB\xBF: first\r\n\r\n: ping\n\n:\n\nid: 1\n: a\ndata: x\n:b\ndata: y\n\n";
        let mut seen = Vec::new();
        let mut sp = SseSplitter::new(1024);
        sp.push(input, &mut |item| {
            if let SseItem::Event(e) = item {
                seen.push(e.comments().map(<[u8]>::to_vec).collect::<Vec<_>>());
                assert_eq!(e.has_comments(), !seen.last().is_some_and(Vec::is_empty));
            }
            true
        })
        .unwrap();
        let v = |s: &[&str]| s.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(
            seen,
            vec![v(&[" first"]), v(&[" ping"]), v(&[""]), v(&[" a", "b"])]
        );
        // No edits: byte for byte.
        assert_eq!(rewrite_each(input, &|_| (None, Vec::new())), input);
        // Comment edits alone, with a line break; then mixed with a data rewrite, in order.
        let out = rewrite_each(input, &|e| {
            let n = e.comments().count();
            match e.has_data() {
                false => (None, vec![(0, " X\nY".to_string())]),
                true => (
                    Some(b"new".to_vec()),
                    vec![
                        (n - 1, "B".to_string()),
                        (0, "ignored: out of order".into()),
                    ],
                ),
            }
        });
        assert_eq!(
            out,
            b"\xEF\xBB\xBF: X\r\n:Y\r\n\r\n: X\n:Y\n\n: X\n:Y\n\nid: 1\n: a\ndata: new\n:B\n\n"
                .to_vec()
        );
        // An index past the comments changes nothing.
        let out = rewrite_each(b": a\n\n", &|_| (None, vec![(5, "z".to_string())]));
        assert_eq!(out, b": a\n\n".to_vec());
    }

    fn stream_sample() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"\xEF\xBB\xBF: hello\r\n\r\n");
        s.extend_from_slice("data: {\"c\":\"héllo 🌍\"}\n\n".as_bytes());
        s.extend_from_slice(b"event: e\r\ndata: 1\r\ndata: 2\r\n\r\n");
        s.extend_from_slice(b"data: cr\r\rdata\r\n\n");
        s.extend_from_slice("id: 5\ndata: ü\n\n".as_bytes());
        s.extend_from_slice(b"data: [DONE]\r\n\r\n");
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn any_chunking_same_events(cuts in proptest::collection::vec(0usize..200, 0..20)) {
            let input = stream_sample();
            let (whole, r) = collect(&[&input], 4096);
            r.unwrap();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for c in cuts {
                chunks.push(&input[prev..c]);
                prev = c;
            }
            chunks.push(&input[prev..]);
            let (split, r) = collect(&chunks, 4096);
            r.unwrap();
            prop_assert_eq!(concat_raw(&split), input.clone());
            prop_assert_eq!(datas(&split), datas(&whole));
        }
    }

    fn line() -> impl Strategy<Value = (String, Option<String>)> {
        // (line text, the data value it contributes if it is a data line)
        let text = "[a-zé🌍 :{}\"]{0,12}";
        prop_oneof![
            text.prop_map(|t| (format!("data: {t}"), Some(t))),
            text.prop_map(|t| {
                let v = t.strip_prefix(' ').unwrap_or(&t).to_string();
                (format!("data:{t}"), Some(v))
            }),
            Just(("data".to_string(), Some(String::new()))),
            text.prop_map(|t| (format!(": {t}"), None)),
            Just(("event: response.output_text.delta".to_string(), None)),
            Just(("id: 42".to_string(), None)),
            Just(("retry: 1000".to_string(), None)),
            Just(("x-unknown".to_string(), None)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn random_streams_roundtrip(
            events in proptest::collection::vec(
                proptest::collection::vec((line(), 0usize..3), 0..5), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let eols = ["\n", "\r\n", "\r"];
            let mut input = String::new();
            let mut expected: Vec<Vec<u8>> = Vec::new();
            let mut last_cr = false;
            for lines in &events {
                let mut data: Option<Vec<String>> = None;
                for ((text, d), e) in lines {
                    input += text;
                    input += eols[*e];
                    last_cr = *e == 2;
                    if let Some(d) = d {
                        data.get_or_insert_with(Vec::new).push(d.clone());
                    }
                }
                // A `\n` right after a lone `\r` would merge into one `\r\n` terminator.
                let blank = if last_cr { 1 + lines.len() % 2 } else { lines.len() % 3 };
                input += eols[blank];
                last_cr = blank == 2;
                if let Some(d) = data {
                    expected.push(d.join("\n").into_bytes());
                }
            }
            let bytes = input.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for c in cuts {
                chunks.push(&bytes[prev..c]);
                prev = c;
            }
            chunks.push(&bytes[prev..]);
            let (split, r) = collect(&chunks, 1 << 16);
            r.unwrap();
            prop_assert_eq!(concat_raw(&split), bytes.to_vec());
            let got: Vec<Vec<u8>> = datas(&split).into_iter().filter_map(|d| d.0).collect();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn one_byte_chunks() {
        let input = stream_sample();
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let (split, _) = collect(&chunks, 4096);
        let (whole, _) = collect(&[&input], 4096);
        assert_eq!(concat_raw(&split), input);
        assert_eq!(datas(&split), datas(&whole));
    }
}
