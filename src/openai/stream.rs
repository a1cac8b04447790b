//! `SseRewriter`: runs the content deltas of a streamed response (Chat/Completions chunks, Responses
//! API events, Anthropic Messages events) through a [`StreamFilter`], flushes held-back text in
//! synthesized delta events just before the event that ends a field, keeps complete texts repeated
//! in `*.done` events consistent, tracks usage, and ends the stream with an error event on `stop()`.
//! Consecutive plain-text (non-JSON) data events are one held-back field too; comment lines are
//! scanned whole; nothing after `data: [DONE]` is forwarded.
//!
//! Events that are not changed are re-emitted byte for byte; changed events keep their framing and
//! only their data is re-serialized. Work per event is proportional to its size.

use super::sse::{write_lines, SseError, SseEvent, SseItem, SseSplitter, DEFAULT_MAX_EVENT_BYTES};
use super::walker::{Side, Walk};
use super::{errors, Endpoint, StreamFilter, TextFilter, Usage};
use serde_json::{json, Map, Value};

/// Responses API delta event kinds handled as streamed fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RespKind {
    OutputText,
    Refusal,
    FunctionArgs,
    CustomInput,
    ReasoningSummary,
    ReasoningText,
}

/// (delta event type, kind, done event type, field of the done event holding the whole text)
const RESP_FIELDS: &[(&str, RespKind, &str, &str)] = &[
    (
        "response.output_text.delta",
        RespKind::OutputText,
        "response.output_text.done",
        "text",
    ),
    (
        "response.refusal.delta",
        RespKind::Refusal,
        "response.refusal.done",
        "refusal",
    ),
    (
        "response.function_call_arguments.delta",
        RespKind::FunctionArgs,
        "response.function_call_arguments.done",
        "arguments",
    ),
    (
        "response.custom_tool_call_input.delta",
        RespKind::CustomInput,
        "response.custom_tool_call_input.done",
        "input",
    ),
    (
        "response.reasoning_summary_text.delta",
        RespKind::ReasoningSummary,
        "response.reasoning_summary_text.done",
        "text",
    ),
    (
        "response.reasoning_text.delta",
        RespKind::ReasoningText,
        "response.reasoning_text.done",
        "text",
    ),
];

/// One streamed content field of one choice / output item / content block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// A string directly under a chat choice's `delta`.
    ChatDelta {
        choice: u64,
        name: DeltaText,
    },
    ChatTool {
        choice: u64,
        tool: u64,
    },
    ChatCustom {
        choice: u64,
        tool: u64,
    },
    ChatFunction {
        choice: u64,
    },
    CompletionText {
        choice: u64,
    },
    Resp {
        kind: RespKind,
        output: u64,
        part: u64,
    },
    AnthText {
        block: u64,
    },
    AnthJson {
        block: u64,
    },
    /// The data of a run of consecutive non-JSON (plain-text) `data:` events.
    Plain,
}

/// String fields directly under a chat `delta`. `reasoning_content` (DeepSeek, vLLM) and
/// `reasoning` (OpenRouter and others) carry model-written text shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeltaText {
    Content,
    Refusal,
    ReasoningContent,
    Reasoning,
}

const DELTA_TEXTS: [DeltaText; 4] = [
    DeltaText::Content,
    DeltaText::Refusal,
    DeltaText::ReasoningContent,
    DeltaText::Reasoning,
];

impl DeltaText {
    fn key(self) -> &'static str {
        match self {
            DeltaText::Content => "content",
            DeltaText::Refusal => "refusal",
            DeltaText::ReasoningContent => "reasoning_content",
            DeltaText::Reasoning => "reasoning",
        }
    }
}

/// Fields that end together (a choice's `finish_reason`, an output item, a content block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Choice(u64),
    Output(u64),
    Block(u64),
    Plain,
}

const IDX_MASK: u64 = (1 << 28) - 1;

impl Field {
    /// Stable filter key: field kind in the top byte, two 28-bit indices below. Indices beyond
    /// 2^28 (never produced by real providers) would alias.
    fn key(self) -> u64 {
        let (kind, a, b) = match self {
            Field::ChatDelta { choice, name } => (
                match name {
                    DeltaText::Content => 1,
                    DeltaText::Refusal => 2,
                    DeltaText::ReasoningContent => 14,
                    DeltaText::Reasoning => 15,
                },
                choice,
                0,
            ),
            Field::ChatTool { choice, tool } => (3, choice, tool),
            Field::ChatCustom { choice, tool } => (4, choice, tool),
            Field::ChatFunction { choice } => (5, choice, 0),
            Field::CompletionText { choice } => (6, choice, 0),
            Field::Resp { kind, output, part } => (
                match kind {
                    RespKind::OutputText => 7,
                    RespKind::Refusal => 8,
                    RespKind::FunctionArgs => 9,
                    RespKind::CustomInput => 10,
                    RespKind::ReasoningSummary => 11,
                    RespKind::ReasoningText => 16,
                },
                output,
                part,
            ),
            Field::AnthText { block } => (12, block, 0),
            Field::AnthJson { block } => (13, block, 0),
            Field::Plain => (17, 0, 0),
        };
        (kind << 56) | ((a & IDX_MASK) << 28) | (b & IDX_MASK)
    }

    fn group(self) -> Group {
        match self {
            Field::ChatDelta { choice, .. }
            | Field::ChatTool { choice, .. }
            | Field::ChatCustom { choice, .. }
            | Field::ChatFunction { choice }
            | Field::CompletionText { choice } => Group::Choice(choice),
            Field::Resp { output, .. } => Group::Output(output),
            Field::AnthText { block } | Field::AnthJson { block } => Group::Block(block),
            Field::Plain => Group::Plain,
        }
    }
}

/// The last delta event of a field: the shape for a synthesized flush event.
struct Template {
    event: Option<String>,
    eol: &'static str,
    value: Value,
}

struct Active {
    field: Field,
    template: Template,
}

/// Why the stream ends early.
enum Stop {
    Policy { code: String, message: String },
    TooLarge { limit: usize },
    Cut(StreamCut),
}

/// Why the upstream's stream ended early (the client's stream then ends with an error event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCut {
    /// The upstream connection broke off (EOF inside an event, reset, bad framing).
    Interrupted,
    /// `timeouts.total_ms` elapsed.
    TimedOut,
}

impl StreamCut {
    /// The SSE error event that ends the client's stream.
    pub fn error_event(self, ep: Endpoint) -> Vec<u8> {
        let (message, code) = match self {
            StreamCut::Interrupted => (
                "The upstream connection ended before the response was complete.",
                errors::CODE_STREAM_INTERRUPTED,
            ),
            StreamCut::TimedOut => (
                "The response exceeded the configured total time limit.",
                errors::CODE_UPSTREAM_TIMEOUT,
            ),
        };
        errors::sse_event_for(ep, message, errors::UPSTREAM, Some(code))
    }
}

type Flow<T> = Result<T, Stop>;

fn check(f: &dyn StreamFilter) -> Flow<()> {
    match f.stop() {
        Some((code, message)) => Err(Stop::Policy { code, message }),
        None => Ok(()),
    }
}

/// `TextFilter` over `StreamFilter::whole`, for complete texts inside events; after a stop it
/// leaves everything alone (the event is dropped anyway).
struct Whole<'a> {
    f: &'a mut dyn StreamFilter,
    stop: Option<(String, String)>,
}

impl TextFilter for Whole<'_> {
    fn filter(&mut self, text: &str) -> Option<String> {
        if self.stop.is_some() {
            return None;
        }
        let r = self.f.whole(text);
        self.stop = self.f.stop();
        r
    }
}

/// Runs `walk` over `v` with `StreamFilter::whole`; returns whether anything changed.
fn walk_whole(
    f: &mut dyn StreamFilter,
    v: Option<&mut Value>,
    walk: impl FnOnce(&mut Walk<'_>, &mut Value),
) -> Flow<bool> {
    let Some(v) = v else { return Ok(false) };
    let mut w = Whole { f, stop: None };
    let changed = {
        let mut walker = Walk::new(&mut w);
        walk(&mut walker, v);
        walker.changed
    };
    match w.stop {
        Some((code, message)) => Err(Stop::Policy { code, message }),
        None => Ok(changed),
    }
}

/// Event `type`s the rewriter acts on, as `'static` so dispatch does not borrow the event.
const HANDLED_TYPES: &[&str] = &[
    "response.output_text.delta",
    "response.output_text.done",
    "response.refusal.delta",
    "response.refusal.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.custom_tool_call_input.delta",
    "response.custom_tool_call_input.done",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_text.done",
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.reasoning_summary_part.added",
    "response.reasoning_summary_part.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.created",
    "response.in_progress",
    "response.queued",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
];

fn handled_type(v: &Value) -> Option<&'static str> {
    let t = v.get("type")?.as_str()?;
    HANDLED_TYPES.iter().copied().find(|k| *k == t)
}

fn index_of(v: &Value, pos: usize) -> u64 {
    v.get("index").and_then(Value::as_u64).unwrap_or(pos as u64)
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn eol_static(b: &[u8]) -> &'static str {
    match b {
        b"\r\n" => "\r\n",
        b"\r" => "\r",
        _ => "\n",
    }
}

/// A chunk whose text was rewritten or held back loses its `logprobs` (a chat choice's become
/// `null`, a Responses event's an empty list): their tokens (and `bytes`, `top_logprobs`) spell
/// the original text, PII included. Chunks that pass unchanged keep theirs.
fn scrub_logprobs(holder: &mut Value, replacement: Value) {
    if let Some(lp) = holder.get_mut("logprobs") {
        *lp = replacement;
    }
}

/// Pushes a non-empty string slot through the filter and records the field as touched.
fn push_slot(
    f: &mut dyn StreamFilter,
    field: Field,
    slot: Option<&mut Value>,
    changed: &mut bool,
    touched: &mut Vec<Field>,
) -> Flow<()> {
    let Some(Value::String(s)) = slot else {
        return Ok(());
    };
    if s.is_empty() {
        return Ok(());
    }
    let out = f.push(field.key(), s);
    check(f)?;
    if out != *s {
        *s = out;
        *changed = true;
    }
    if !touched.contains(&field) {
        touched.push(field);
    }
    Ok(())
}

fn choice_mut(v: &mut Value, choice: u64) -> Option<&mut Value> {
    v.get_mut("choices")?
        .as_array_mut()?
        .iter_mut()
        .enumerate()
        .find(|(pos, c)| index_of(c, *pos) == choice)
        .map(|(_, c)| c)
}

fn tool_mut(v: &mut Value, choice: u64, tool: u64) -> Option<&mut Value> {
    choice_mut(v, choice)?
        .get_mut("delta")?
        .get_mut("tool_calls")?
        .as_array_mut()?
        .iter_mut()
        .enumerate()
        .find(|(pos, t)| index_of(t, *pos) == tool)
        .map(|(_, t)| t)
}

/// The string slot of `field` inside an event value.
fn slot_mut(v: &mut Value, field: Field) -> Option<&mut Value> {
    match field {
        Field::ChatDelta { choice, name } => {
            choice_mut(v, choice)?.get_mut("delta")?.get_mut(name.key())
        }
        Field::ChatTool { choice, tool } => tool_mut(v, choice, tool)?
            .get_mut("function")?
            .get_mut("arguments"),
        Field::ChatCustom { choice, tool } => tool_mut(v, choice, tool)?
            .get_mut("custom")?
            .get_mut("input"),
        Field::ChatFunction { choice } => choice_mut(v, choice)?
            .get_mut("delta")?
            .get_mut("function_call")?
            .get_mut("arguments"),
        Field::CompletionText { choice } => choice_mut(v, choice)?.get_mut("text"),
        Field::Resp { .. } => v.get_mut("delta"),
        Field::AnthText { .. } => v.get_mut("delta")?.get_mut("text"),
        Field::AnthJson { .. } => v.get_mut("delta")?.get_mut("partial_json"),
        Field::Plain => None,
    }
}

/// A chat/completions chunk reduced to one choice carrying only `field` (text empty).
fn reduce_chunk(template: &Value, field: Field, choice: u64) -> Value {
    let Some(obj) = template.as_object() else {
        return template.clone();
    };
    let mut out = Map::with_capacity(obj.len());
    for (k, val) in obj {
        match k.as_str() {
            "choices" => {
                let (slot_key, slot) = match field {
                    Field::ChatDelta { name, .. } => {
                        let mut d = Map::new();
                        d.insert(name.key().into(), json!(""));
                        ("delta", Value::Object(d))
                    }
                    Field::ChatTool { tool, .. } => (
                        "delta",
                        json!({"tool_calls": [{"index": tool, "function": {"arguments": ""}}]}),
                    ),
                    Field::ChatCustom { tool, .. } => (
                        "delta",
                        json!({"tool_calls": [{"index": tool, "custom": {"input": ""}}]}),
                    ),
                    Field::ChatFunction { .. } => {
                        ("delta", json!({"function_call": {"arguments": ""}}))
                    }
                    _ => ("text", json!("")),
                };
                let mut slot = Some(slot);
                let mut c = Map::new();
                let found = val.as_array().and_then(|cs| {
                    cs.iter()
                        .enumerate()
                        .find(|(pos, c)| index_of(c, *pos) == choice)
                        .and_then(|(_, c)| c.as_object())
                });
                for (ck, cv) in found.into_iter().flatten() {
                    // Same key order as the template; only the text slot is replaced.
                    let v = match ck.as_str() {
                        key if key == slot_key => slot.take().unwrap_or(Value::Null),
                        "delta" | "text" => continue,
                        "finish_reason" | "logprobs" => Value::Null,
                        _ => cv.clone(),
                    };
                    c.insert(ck.clone(), v);
                }
                if !c.contains_key("index") {
                    c.insert("index".into(), json!(choice));
                }
                if let Some(slot) = slot {
                    c.insert(slot_key.into(), slot);
                }
                out.insert(k.clone(), Value::Array(vec![Value::Object(c)]));
            }
            // Usage belongs to the final chunk only; never repeat it.
            "usage" if !val.is_null() => {
                out.insert(k.clone(), Value::Null);
            }
            _ => {
                out.insert(k.clone(), val.clone());
            }
        }
    }
    Value::Object(out)
}

/// Writes one event; line breaks in `data` (plain text can have them, JSON has none) become
/// further `data:` lines.
fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &[u8], eol: &str) {
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(eol.as_bytes());
    }
    out.extend_from_slice(b"data: ");
    write_lines(data, eol.as_bytes(), b"data: ", out);
    out.extend_from_slice(eol.as_bytes());
    out.extend_from_slice(eol.as_bytes());
}

/// Anthropic usage arrives in pieces (message_start, then cumulative message_delta).
#[derive(Default)]
struct AnthropicUsage {
    input: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
    output: Option<u64>,
}

impl AnthropicUsage {
    fn merge(&mut self, u: &Value) -> Option<Usage> {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        let mut any = false;
        for (slot, key) in [
            (&mut self.input, "input_tokens"),
            (&mut self.cache_creation, "cache_creation_input_tokens"),
            (&mut self.cache_read, "cache_read_input_tokens"),
            (&mut self.output, "output_tokens"),
        ] {
            if let Some(n) = get(key) {
                *slot = Some(n);
                any = true;
            }
        }
        any.then(|| {
            let prompt = self.input.unwrap_or(0)
                + self.cache_creation.unwrap_or(0)
                + self.cache_read.unwrap_or(0);
            let completion = self.output.unwrap_or(0);
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            }
        })
    }
}

/// Everything but the splitter, so the splitter's callback can borrow it mutably.
struct State {
    ep: Endpoint,
    active: Vec<Active>,
    usage: Option<Usage>,
    anthropic: AnthropicUsage,
    stopped: bool,
    /// `data: [DONE]` went out: the stream is over and nothing after it is forwarded.
    done: bool,
    /// The `[DONE]` event ended on a `\r` at the end of a chunk: a `\n` starting the next chunk
    /// is the rest of its blank line.
    lf_owed: bool,
    /// Bytes after `[DONE]` were dropped (logged once per stream).
    dropped_after_done: bool,
    /// Framing owed by a trailing partial event before anything else may be written.
    pending_term: Vec<u8>,
}

/// What handling one JSON event produced.
#[derive(Default)]
struct Outcome {
    /// Synthesized flush events, emitted before the event.
    pre: Vec<u8>,
    changed: bool,
    /// Fields with a delta in this event that are still open (their template becomes this event).
    touched: Vec<Field>,
}

impl State {
    fn begin(&mut self, out: &mut Vec<u8>) {
        if !self.pending_term.is_empty() {
            out.append(&mut self.pending_term);
        }
    }

    fn note_dropped_after_done(&mut self) {
        if !std::mem::replace(&mut self.dropped_after_done, true) {
            tracing::warn!(
                endpoint = self.ep.route(),
                "upstream sent data after `data: [DONE]`; dropped"
            );
        }
    }

    fn on_item(
        &mut self,
        item: SseItem<'_>,
        f: &mut dyn StreamFilter,
        out: &mut Vec<u8>,
    ) -> Flow<()> {
        if self.done {
            // Only reached from `finish` (EOF right after `[DONE]`): see `after_done`.
            self.note_dropped_after_done();
            return Ok(());
        }
        match item {
            SseItem::Raw(b) => {
                out.extend_from_slice(b);
                Ok(())
            }
            SseItem::Event(ev) => self.on_event(&ev, f, out),
        }
    }

    fn emit_raw(&mut self, ev: &SseEvent<'_>, out: &mut Vec<u8>) {
        self.begin(out);
        out.extend_from_slice(ev.raw());
        self.pending_term = ev.missing_terminator();
    }

    /// Writes `ev` with its data replaced by `data` (when given) and its comment lines scanned:
    /// byte for byte when neither changes. Comments are scanned like any text (a keep-alive
    /// `: ping` finds nothing and passes as it came); events without comments cost nothing here.
    fn emit(
        &mut self,
        ev: &SseEvent<'_>,
        data: Option<&[u8]>,
        f: &mut dyn StreamFilter,
        out: &mut Vec<u8>,
    ) -> Flow<()> {
        let mut edits: Vec<(usize, String)> = Vec::new();
        if ev.has_comments() {
            for (i, c) in ev.comments().enumerate() {
                if c.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let text = String::from_utf8_lossy(c);
                let r = f.whole(&text);
                check(f)?;
                if let Some(new) = r.filter(|new| *new != text) {
                    edits.push((i, new));
                }
            }
        }
        if data.is_none() && edits.is_empty() {
            self.emit_raw(ev, out);
        } else {
            self.begin(out);
            ev.write_rewritten(data, &edits, out);
            self.pending_term = ev.missing_terminator();
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        ev: &SseEvent<'_>,
        f: &mut dyn StreamFilter,
        out: &mut Vec<u8>,
    ) -> Flow<()> {
        if !ev.has_data() {
            // Comments only (keep-alives), or only `id:` / `retry:` / unknown fields.
            return self.emit(ev, None, f, out);
        }
        let data = ev.data();
        if data.trim_ascii() == b"[DONE]" {
            let pre = self.flush(f, |_| true)?;
            self.begin(out);
            out.extend_from_slice(&pre);
            self.done = true;
            return self.emit(ev, None, f, out);
        }
        let parsed = std::str::from_utf8(&data)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .filter(Value::is_object);
        if parsed.is_none() && !ev.is_complete() {
            // EOF inside an event that does not parse: the upstream was cut mid-event. Its
            // bytes, and any text held back, may be part of a value (`jane.doe@exa`).
            return Err(Stop::Cut(StreamCut::Interrupted));
        }
        let Some(mut v) = parsed else {
            if data.is_empty() {
                return self.emit(ev, None, f, out);
            }
            return self.on_plain(ev, &data, f, out);
        };
        // A run of plain-text events ends here: its held text goes out before this event.
        let plain = if self.active.iter().any(|a| a.field == Field::Plain) {
            self.flush(f, |fl| fl == Field::Plain)?
        } else {
            Vec::new()
        };
        let outcome = match handled_type(&v) {
            Some(t) if t.starts_with("response.") => self.on_responses(t, &mut v, f)?,
            Some(t) => self.on_anthropic(t, &mut v, f, eol_static(ev.eol()))?,
            None if v.get("choices").is_some() => self.on_choices(&mut v, f)?,
            // An error event (`{"error": {...}}`; Anthropic's `"type": "error"`): its message
            // may quote the request.
            _ => Outcome {
                changed: walk_whole(f, v.get_mut("error"), |w, e| w.field(e, "message"))?,
                ..Outcome::default()
            },
        };
        self.begin(out);
        out.extend_from_slice(&plain);
        out.extend_from_slice(&outcome.pre);
        // Serialising a Value cannot fail; fall back to the original bytes if it ever did.
        let bytes = outcome
            .changed
            .then(|| serde_json::to_vec(&v).ok())
            .flatten();
        self.emit(ev, bytes.as_deref(), f, out)?;
        self.register(outcome.touched, v, ev);
        Ok(())
    }

    /// A `data:` event that is not JSON: its text continues the run of plain-text events before
    /// it (same event type) in one held-back stream field, so a value split across events is
    /// still found; the event carries whatever of the run is safe to release now.
    fn on_plain(
        &mut self,
        ev: &SseEvent<'_>,
        data: &[u8],
        f: &mut dyn StreamFilter,
        out: &mut Vec<u8>,
    ) -> Flow<()> {
        let name = ev.event_type();
        let same_run = |a: &Active| {
            a.field == Field::Plain && a.template.event.as_deref().map(str::as_bytes) == name
        };
        let pre = if self
            .active
            .iter()
            .any(|a| a.field == Field::Plain && !same_run(a))
        {
            // Another event type: a different stream of messages; the run ends.
            self.flush(f, |fl| fl == Field::Plain)?
        } else {
            Vec::new()
        };
        let text = String::from_utf8_lossy(data);
        let released = f.push(Field::Plain.key(), &text);
        check(f)?;
        let eol = eol_static(ev.eol());
        match self.active.iter_mut().find(|a| a.field == Field::Plain) {
            Some(a) => a.template.eol = eol,
            None => self.active.push(Active {
                field: Field::Plain,
                template: Template {
                    event: name.map(|n| String::from_utf8_lossy(n).into_owned()),
                    eol,
                    value: Value::Null,
                },
            }),
        }
        self.begin(out);
        out.extend_from_slice(&pre);
        if released == text {
            self.emit(ev, None, f, out)
        } else {
            self.emit(ev, Some(released.as_bytes()), f, out)
        }
    }

    /// Makes `v` the template of every still-open field it carried a delta for.
    fn register(&mut self, touched: Vec<Field>, v: Value, ev: &SseEvent<'_>) {
        let name = ev.event_type();
        let lossy = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
        let eol = eol_static(ev.eol());
        let n = touched.len();
        let mut v = Some(v);
        for (i, field) in touched.into_iter().enumerate() {
            let value = if i + 1 == n { v.take() } else { v.clone() }.unwrap_or(Value::Null);
            match self.active.iter_mut().find(|a| a.field == field) {
                Some(a) => {
                    a.template.value = value;
                    a.template.eol = eol;
                    // Reuse the stored name: no allocation per delta event.
                    if a.template.event.as_deref().map(str::as_bytes) != name {
                        a.template.event = name.map(lossy);
                    }
                }
                None => self.active.push(Active {
                    field,
                    template: Template {
                        event: name.map(lossy),
                        eol,
                        value,
                    },
                }),
            }
        }
    }

    fn set_template(&mut self, field: Field, template: Template) {
        match self.active.iter_mut().find(|a| a.field == field) {
            Some(a) => a.template = template,
            None => self.active.push(Active { field, template }),
        }
    }

    /// Finishes every open field matching `pred` (in first-seen order) and returns the
    /// synthesized delta events carrying their held-back text.
    fn flush(&mut self, f: &mut dyn StreamFilter, pred: impl Fn(Field) -> bool) -> Flow<Vec<u8>> {
        let mut pre = Vec::new();
        let mut i = 0;
        while i < self.active.len() {
            if !pred(self.active[i].field) {
                i += 1;
                continue;
            }
            let a = self.active.remove(i);
            let text = f.finish(a.field.key());
            check(f)?;
            if !text.is_empty() {
                synthesize(&a, text, &mut pre);
            }
        }
        Ok(pre)
    }

    fn on_choices(&mut self, v: &mut Value, f: &mut dyn StreamFilter) -> Flow<Outcome> {
        let mut o = Outcome::default();
        let mut finishing: Vec<u64> = Vec::new();
        if let Some(Value::Array(choices)) = v.get_mut("choices") {
            for (pos, choice) in choices.iter_mut().enumerate() {
                let ci = index_of(choice, pos);
                let changed_before = std::mem::take(&mut o.changed);
                if let Some(delta) = choice.get_mut("delta") {
                    let (c, t) = (&mut o.changed, &mut o.touched);
                    for name in DELTA_TEXTS {
                        let field = Field::ChatDelta { choice: ci, name };
                        push_slot(f, field, delta.get_mut(name.key()), c, t)?;
                    }
                    // Content as an array of parts (Mistral and others): each part is scanned
                    // whole (no hold-back across chunks for this shape), never passed unread.
                    if let Some(parts) = delta.get_mut("content").filter(|c| c.is_array()) {
                        *c |= walk_whole(f, Some(parts), |w, parts| {
                            if let Some(parts) = parts.as_array_mut() {
                                parts.iter_mut().for_each(|p| w.part(p));
                            }
                        })?;
                    }
                    if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                        for (tpos, tc) in calls.iter_mut().enumerate() {
                            let ti = index_of(tc, tpos);
                            let args = tc.get_mut("function").and_then(|x| x.get_mut("arguments"));
                            push_slot(
                                f,
                                Field::ChatTool {
                                    choice: ci,
                                    tool: ti,
                                },
                                args,
                                c,
                                t,
                            )?;
                            let input = tc.get_mut("custom").and_then(|x| x.get_mut("input"));
                            push_slot(
                                f,
                                Field::ChatCustom {
                                    choice: ci,
                                    tool: ti,
                                },
                                input,
                                c,
                                t,
                            )?;
                        }
                    }
                    let fc = delta
                        .get_mut("function_call")
                        .and_then(|x| x.get_mut("arguments"));
                    push_slot(f, Field::ChatFunction { choice: ci }, fc, c, t)?;
                }
                push_slot(
                    f,
                    Field::CompletionText { choice: ci },
                    choice.get_mut("text"),
                    &mut o.changed,
                    &mut o.touched,
                )?;
                if o.changed {
                    scrub_logprobs(choice, Value::Null);
                }
                o.changed |= changed_before;
                if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
                    finishing.push(ci);
                }
            }
        }
        for ci in finishing {
            // Held text of fields continued in this very chunk is appended in place (it follows
            // this chunk's text); the others get a synthesized chunk before this one.
            let in_place: Vec<Field> = o
                .touched
                .iter()
                .copied()
                .filter(|fl| fl.group() == Group::Choice(ci))
                .collect();
            for field in &in_place {
                self.active.retain(|a| a.field != *field);
                let text = f.finish(field.key());
                check(f)?;
                if !text.is_empty() {
                    if let Some(Value::String(s)) = slot_mut(v, *field) {
                        s.push_str(&text);
                        o.changed = true;
                    }
                    if let Some(choice) = choice_mut(v, ci) {
                        scrub_logprobs(choice, Value::Null);
                    }
                }
            }
            o.touched.retain(|fl| !in_place.contains(fl));
            let pre = self.flush(f, |fl| fl.group() == Group::Choice(ci))?;
            o.pre.extend_from_slice(&pre);
        }
        if let Some(u) = v.get("usage").and_then(Usage::from_value) {
            self.usage = Some(u);
        }
        Ok(o)
    }

    fn on_responses(&mut self, t: &str, v: &mut Value, f: &mut dyn StreamFilter) -> Flow<Outcome> {
        let mut o = Outcome::default();
        let output = u64_at(v, "output_index");
        let part_of = |kind: RespKind, v: &Value| match kind {
            RespKind::OutputText | RespKind::Refusal | RespKind::ReasoningText => {
                u64_at(v, "content_index")
            }
            RespKind::ReasoningSummary => u64_at(v, "summary_index"),
            RespKind::FunctionArgs | RespKind::CustomInput => 0,
        };
        if let Some(&(_, kind, _, _)) = RESP_FIELDS.iter().find(|r| r.0 == t) {
            let field = Field::Resp {
                kind,
                output,
                part: part_of(kind, v),
            };
            push_slot(f, field, v.get_mut("delta"), &mut o.changed, &mut o.touched)?;
            if o.changed {
                scrub_logprobs(v, Value::Array(Vec::new()));
            }
            return Ok(o);
        }
        if let Some(&(_, kind, _, key)) = RESP_FIELDS.iter().find(|r| r.2 == t) {
            let field = Field::Resp {
                kind,
                output,
                part: part_of(kind, v),
            };
            o.pre = self.flush(f, |fl| fl == field)?;
            o.changed = walk_whole(f, v.get_mut(key), |w, s| w.string(s))?;
            if o.changed {
                scrub_logprobs(v, Value::Array(Vec::new()));
            }
            return Ok(o);
        }
        match t {
            "response.content_part.done" | "response.reasoning_summary_part.done" => {
                let (kinds, part): (&[RespKind], u64) = if t == "response.content_part.done" {
                    (
                        &[RespKind::OutputText, RespKind::Refusal],
                        u64_at(v, "content_index"),
                    )
                } else {
                    (&[RespKind::ReasoningSummary], u64_at(v, "summary_index"))
                };
                o.pre = self.flush(f, |fl| {
                    kinds
                        .iter()
                        .any(|&kind| fl == Field::Resp { kind, output, part })
                })?;
                o.changed = walk_whole(f, v.get_mut("part"), |w, p| w.part(p))?;
            }
            "response.content_part.added" | "response.reasoning_summary_part.added" => {
                o.changed = walk_whole(f, v.get_mut("part"), |w, p| w.part(p))?;
            }
            "response.output_item.done" => {
                o.pre = self.flush(f, |fl| fl.group() == Group::Output(output))?;
                o.changed = walk_whole(f, v.get_mut("item"), |w, i| {
                    w.responses_item(i, Side::Response)
                })?;
            }
            "response.output_item.added" => {
                o.changed = walk_whole(f, v.get_mut("item"), |w, i| {
                    w.responses_item(i, Side::Response)
                })?;
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                o.pre = self.flush(f, |_| true)?;
                o.changed = walk_whole(f, v.get_mut("response"), |w, r| {
                    w.response(Endpoint::Responses, r)
                })?;
                if let Some(u) = v
                    .get("response")
                    .and_then(|r| r.get("usage"))
                    .and_then(Usage::from_value)
                {
                    self.usage = Some(u);
                }
            }
            "response.created" | "response.in_progress" | "response.queued" => {
                o.changed = walk_whole(f, v.get_mut("response"), |w, r| {
                    w.response(Endpoint::Responses, r)
                })?;
            }
            _ => {}
        }
        Ok(o)
    }

    fn on_anthropic(
        &mut self,
        t: &str,
        v: &mut Value,
        f: &mut dyn StreamFilter,
        eol: &'static str,
    ) -> Flow<Outcome> {
        let mut o = Outcome::default();
        let block = u64_at(v, "index");
        match t {
            "message_start" => {
                let msg = v.get_mut("message");
                o.changed = walk_whole(f, msg, |w, m| w.response(Endpoint::AnthropicMessages, m))?;
                if let Some(u) = v.get("message").and_then(|m| m.get("usage")) {
                    if let Some(u) = self.anthropic.merge(u) {
                        self.usage = Some(u);
                    }
                }
            }
            "content_block_start" => {
                let Some(cb) = v.get_mut("content_block") else {
                    return Ok(o);
                };
                if cb.get("type").and_then(Value::as_str) == Some("text") {
                    // Initial text (normally empty) is the start of the streamed block text.
                    let field = Field::AnthText { block };
                    let mut touched = Vec::new();
                    push_slot(f, field, cb.get_mut("text"), &mut o.changed, &mut touched)?;
                    if !touched.is_empty() && !self.active.iter().any(|a| a.field == field) {
                        let value = json!({"type": "content_block_delta", "index": block,
                            "delta": {"type": "text_delta", "text": ""}});
                        self.set_template(
                            field,
                            Template {
                                event: Some("content_block_delta".into()),
                                eol,
                                value,
                            },
                        );
                    }
                } else {
                    o.changed = walk_whole(f, Some(cb), |w, b| w.anthropic_block(b))?;
                }
            }
            "content_block_delta" => {
                let Some(delta) = v.get_mut("delta") else {
                    return Ok(o);
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => push_slot(
                        f,
                        Field::AnthText { block },
                        delta.get_mut("text"),
                        &mut o.changed,
                        &mut o.touched,
                    )?,
                    Some("input_json_delta") => push_slot(
                        f,
                        Field::AnthJson { block },
                        delta.get_mut("partial_json"),
                        &mut o.changed,
                        &mut o.touched,
                    )?,
                    // `thinking_delta`: signed by the provider and sent back verbatim in later
                    // turns; left untouched like whole thinking blocks (walker.rs).
                    _ => {}
                }
            }
            "content_block_stop" => {
                o.pre = self.flush(f, |fl| fl.group() == Group::Block(block))?;
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    if let Some(u) = self.anthropic.merge(u) {
                        self.usage = Some(u);
                    }
                }
                let stop = v.get("delta").and_then(|d| d.get("stop_reason"));
                if stop.is_some_and(|r| !r.is_null()) {
                    o.pre = self.flush(f, |_| true)?;
                }
            }
            "message_stop" => {
                o.pre = self.flush(f, |_| true)?;
            }
            _ => {}
        }
        Ok(o)
    }

    fn stop(&mut self, why: Stop, out: &mut Vec<u8>) {
        self.begin(out);
        let ev = match why {
            Stop::Policy { code, message } => {
                errors::sse_event_for(self.ep, &message, errors::POLICY, Some(&code))
            }
            Stop::TooLarge { limit } => errors::sse_event_for(
                self.ep,
                &format!("upstream stream event exceeds the {limit} byte limit of this proxy"),
                errors::UPSTREAM,
                Some(errors::CODE_STREAM_EVENT_TOO_LARGE),
            ),
            Stop::Cut(why) => why.error_event(self.ep),
        };
        out.extend_from_slice(&ev);
        self.stopped = true;
        self.active.clear();
        tracing::debug!(
            endpoint = self.ep.route(),
            "stream stopped with an error event"
        );
    }
}

/// Writes a delta event carrying `text` for `a.field`, shaped like the field's last delta event.
fn synthesize(a: &Active, text: String, out: &mut Vec<u8>) {
    let field = a.field;
    let mut v = match field {
        // Plain text: the held text is the data.
        Field::Plain => {
            let event = a.template.event.as_deref();
            write_event(out, event, text.as_bytes(), a.template.eol);
            return;
        }
        Field::ChatDelta { choice, .. }
        | Field::ChatTool { choice, .. }
        | Field::ChatCustom { choice, .. }
        | Field::ChatFunction { choice }
        | Field::CompletionText { choice } => reduce_chunk(&a.template.value, field, choice),
        Field::Resp { .. } | Field::AnthText { .. } | Field::AnthJson { .. } => {
            let mut v = a.template.value.clone();
            // Per-token logprobs of the template's delta do not describe the flushed text.
            if let Some(lp) = v.get_mut("logprobs") {
                *lp = Value::Array(Vec::new());
            }
            v
        }
    };
    match slot_mut(&mut v, field) {
        Some(slot) => *slot = Value::String(text),
        None => {
            // The template always has the slot (it was taken from an event that had it).
            tracing::warn!("stream flush template lacks its text field; held text dropped");
            return;
        }
    }
    if let Ok(data) = serde_json::to_vec(&v) {
        write_event(out, a.template.event.as_deref(), &data, a.template.eol);
    }
}

/// Rewrites one streamed (SSE) response. One per response; not shared between streams.
pub struct SseRewriter {
    splitter: SseSplitter,
    state: State,
}

impl SseRewriter {
    pub fn new(ep: Endpoint) -> Self {
        Self::with_max_event(ep, DEFAULT_MAX_EVENT_BYTES)
    }

    /// `max_event`: largest SSE event accepted (raw bytes). A larger event ends the stream with a
    /// `jimini_upstream_error` / `stream_event_too_large` error event (fail closed).
    pub fn with_max_event(ep: Endpoint, max_event: usize) -> Self {
        SseRewriter {
            splitter: SseSplitter::new(max_event),
            state: State {
                ep,
                active: Vec::new(),
                usage: None,
                anthropic: AnthropicUsage::default(),
                stopped: false,
                done: false,
                lf_owed: false,
                dropped_after_done: false,
                pending_term: Vec::new(),
            },
        }
    }

    /// Feeds upstream bytes; returns the bytes to send downstream now (complete events only).
    pub fn push(&mut self, bytes: &[u8], f: &mut dyn StreamFilter) -> Vec<u8> {
        if self.state.done {
            return self.after_done(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len() + 64);
        if self.state.stopped {
            return out;
        }
        if let Err(why) = check(f) {
            self.state.stop(why, &mut out);
            return out;
        }
        let state = &mut self.state;
        let mut stop = None;
        let res = self
            .splitter
            .push(bytes, &mut |item| match state.on_item(item, f, &mut out) {
                // `[DONE]` stops the splitter right after that event.
                Ok(()) => !state.done,
                Err(why) => {
                    stop = Some(why);
                    false
                }
            });
        if let Err(SseError::EventTooLarge { limit }) = res {
            stop = Some(Stop::TooLarge { limit });
        }
        if let Some(why) = stop {
            self.state.stop(why, &mut out);
        } else if self.state.done {
            self.state.lf_owed = self.splitter.pending_cr();
            if self.splitter.buffered() > 0 {
                self.state.note_dropped_after_done();
            }
            self.splitter.discard();
        }
        out
    }

    /// Upstream bytes after `data: [DONE]`: the stream is over (the client stops reading at
    /// `[DONE]`, SDKs included), so they are not forwarded — whatever they are, JSON, text,
    /// comments — rather than sent on unread by the scanner or scanned out of context. Only the
    /// `\n` that completes `[DONE]`'s own `\r\n` blank line still goes out.
    fn after_done(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut rest = bytes;
        let mut out = Vec::new();
        if !rest.is_empty() && std::mem::take(&mut self.state.lf_owed) && rest[0] == b'\n' {
            out.push(b'\n');
            rest = &rest[1..];
        }
        if !rest.is_empty() {
            self.state.note_dropped_after_done();
        }
        out
    }

    /// Upstream EOF: processes a trailing partial event and flushes all held text. A partial
    /// event whose data is not a whole JSON object or `[DONE]` was cut off: then nothing held
    /// is released and an error event ends the stream, as in [`SseRewriter::abort`].
    pub fn finish(&mut self, f: &mut dyn StreamFilter) -> Vec<u8> {
        let mut out = Vec::new();
        if self.state.stopped || self.state.done {
            return out;
        }
        let state = &mut self.state;
        let mut stop = None;
        let res = self
            .splitter
            .finish(&mut |item| match state.on_item(item, f, &mut out) {
                Ok(()) => true,
                Err(why) => {
                    stop = Some(why);
                    false
                }
            });
        if let Err(SseError::EventTooLarge { limit }) = res {
            stop = Some(Stop::TooLarge { limit });
        }
        if stop.is_none() {
            match self.state.flush(f, |fl| fl != Field::Plain) {
                // Text still held at EOF belongs to a field the upstream never ended (no
                // `finish_reason`, `[DONE]`, `…done` or block stop): the stream was cut between
                // events, and held text is what could still be the start of a value. This is
                // decided first: a cut stream releases nothing held, plain text included.
                Ok(pre) if !pre.is_empty() => {
                    // A plain-text run still open ends unreleased.
                    for a in std::mem::take(&mut self.state.active) {
                        let _ = f.finish(a.field.key());
                    }
                    stop = Some(Stop::Cut(StreamCut::Interrupted));
                }
                Ok(_) => {}
                Err(why) => stop = Some(why),
            }
        }
        if stop.is_none() {
            // Plain-text events have no end marker: their stream ends with the response, and
            // the text still held is released (scanned whole) now.
            match self.state.flush(f, |fl| fl == Field::Plain) {
                Ok(pre) if pre.is_empty() => {}
                Ok(pre) => {
                    self.state.begin(&mut out);
                    out.extend_from_slice(&pre);
                }
                Err(why) => stop = Some(why),
            }
        }
        if let Some(why) = stop {
            self.state.stop(why, &mut out);
        }
        out
    }

    /// The stream ends early: the partial event and all held-back text are dropped, and an
    /// error event ends the client's stream. Held-back text is exactly the text that could
    /// still grow into a finding (`card 4111 1111 1111 11` before its last digits): released,
    /// it would show part of a value; the response is incomplete anyway.
    ///
    /// After `data: [DONE]` the client's stream is already complete (every field was flushed
    /// before it): an upstream that then resets, stalls or ends its framing early cut nothing,
    /// and nothing is added — an error event there would turn a finished stream into a failed one.
    pub fn abort(&mut self, why: StreamCut, f: &mut dyn StreamFilter) -> Vec<u8> {
        let mut out = Vec::new();
        if self.state.stopped {
            return out;
        }
        if self.state.done {
            tracing::debug!(
                endpoint = self.state.ep.route(),
                cut = ?why,
                "upstream ended abnormally after `data: [DONE]`; the client's stream was complete"
            );
            return out;
        }
        self.splitter.discard();
        for a in std::mem::take(&mut self.state.active) {
            // Ends the evaluator's stream for the field; its text is not sent.
            let _ = f.finish(a.field.key());
        }
        self.state.stop(Stop::Cut(why), &mut out);
        out
    }

    /// True once the error event was emitted: drop any further upstream bytes and close.
    pub fn stopped(&self) -> bool {
        self.state.stopped
    }

    /// True once `data: [DONE]` went out: the client's stream is complete.
    pub fn done(&self) -> bool {
        self.state.done
    }

    /// Token usage reported by the stream so far (last report wins).
    pub fn usage(&self) -> Option<Usage> {
        self.state.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    // ---------- test filters ----------

    /// Releases everything immediately, changes nothing.
    struct Identity;
    impl StreamFilter for Identity {
        fn push(&mut self, _: u64, chunk: &str) -> String {
            chunk.to_string()
        }
        fn finish(&mut self, _: u64) -> String {
            String::new()
        }
        fn whole(&mut self, _: &str) -> Option<String> {
            None
        }
        fn stop(&self) -> Option<(String, String)> {
            None
        }
    }

    /// Holds every field's text until `finish`.
    #[derive(Default)]
    struct Hold {
        held: HashMap<u64, String>,
        finished: Vec<u64>,
    }
    impl StreamFilter for Hold {
        fn push(&mut self, key: u64, chunk: &str) -> String {
            self.held.entry(key).or_default().push_str(chunk);
            String::new()
        }
        fn finish(&mut self, key: u64) -> String {
            self.finished.push(key);
            self.held.remove(&key).unwrap_or_default()
        }
        fn whole(&mut self, _: &str) -> Option<String> {
            None
        }
        fn stop(&self) -> Option<(String, String)> {
            None
        }
    }

    const WORD: &str = "SECRET";

    /// Streaming redaction of WORD -> "[X]" with the minimal hold-back; optionally stops the
    /// stream when a pushed field contains "BAD".
    #[derive(Default)]
    struct Redact {
        held: HashMap<u64, String>,
        stop_on_bad: bool,
        stopped: bool,
    }
    impl StreamFilter for Redact {
        fn push(&mut self, key: u64, chunk: &str) -> String {
            let buf = self.held.entry(key).or_default();
            buf.push_str(chunk);
            if self.stop_on_bad && buf.contains("BAD") {
                self.stopped = true;
            }
            let replaced = buf.replace(WORD, "[X]");
            // Keep the longest suffix that could still grow into WORD.
            let keep = (1..WORD.len())
                .rev()
                .find(|&n| replaced.len() >= n && replaced.ends_with(&WORD[..n]))
                .unwrap_or(0);
            let cut = replaced.len() - keep;
            *buf = replaced[cut..].to_string();
            replaced[..cut].to_string()
        }
        fn finish(&mut self, key: u64) -> String {
            self.held.remove(&key).unwrap_or_default()
        }
        fn whole(&mut self, text: &str) -> Option<String> {
            text.contains(WORD).then(|| text.replace(WORD, "[X]"))
        }
        fn stop(&self) -> Option<(String, String)> {
            self.stopped
                .then(|| ("test.bad".to_string(), "bad content".to_string()))
        }
    }

    // ---------- sample streams ----------

    fn chat_chunk(choices: &str, usage: &str) -> String {
        format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_1\",\"choices\":[{choices}],\"usage\":{usage}}}\n\n"
        )
    }

    fn chat_stream() -> String {
        let mut s = String::new();
        s += &chat_chunk(
            r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#,
            "null",
        );
        s += ": keep-alive\n\n";
        for piece in ["Hello", " wörld 🌍 SEC", "RET", " done"] {
            s += &chat_chunk(
                &format!(
                    r#"{{"index":0,"delta":{{"content":"{piece}"}},"logprobs":null,"finish_reason":null}}"#
                ),
                "null",
            );
        }
        s += &chat_chunk(
            r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#,
            "null",
        );
        s += &chat_chunk(
            "",
            r#"{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}"#,
        );
        s += "data: [DONE]\n\n";
        s
    }

    fn chat_tools_stream() -> String {
        let mut s = String::new();
        s += &chat_chunk(
            r#"{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"lookup","arguments":""}}]},"logprobs":null,"finish_reason":null}"#,
            "null",
        );
        s += &chat_chunk(
            r#"{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":\"SE"}}]},"logprobs":null,"finish_reason":null}"#,
            "null",
        );
        s += &chat_chunk(
            r#"{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"CRET\"}"}}]},"logprobs":null,"finish_reason":null}"#,
            "null",
        );
        s += &chat_chunk(
            r#"{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"other","arguments":"{\"x\":1}"}}]},"logprobs":null,"finish_reason":null}"#,
            "null",
        );
        s += &chat_chunk(
            r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}"#,
            "null",
        );
        s += "data: [DONE]\n\n";
        s
    }

    fn completions_stream() -> String {
        let mut s = String::new();
        for (i, t) in [(0, "one SE"), (1, "two"), (0, "CRET"), (1, " SECRET")] {
            s += &format!("data: {{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{{\"text\":\"{t}\",\"index\":{i},\"logprobs\":null,\"finish_reason\":null}}],\"model\":\"gpt-3.5-turbo-instruct\"}}\n\n");
        }
        for i in [0, 1] {
            s += &format!("data: {{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{{\"text\":\"\",\"index\":{i},\"logprobs\":null,\"finish_reason\":\"length\"}}],\"model\":\"gpt-3.5-turbo-instruct\"}}\n\n");
        }
        s += "data: [DONE]\n\n";
        s
    }

    fn ev(name: &str, data: &str) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn responses_stream() -> String {
        let msg_done = r#"{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi SECRET thére"}]}"#;
        let fc_done = r#"{"id":"fc_1","type":"function_call","status":"completed","arguments":"{\"a\":\"SECRET\"}","call_id":"call_1","name":"f"}"#;
        let mut s = String::new();
        s += &ev(
            "response.created",
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","model":"gpt-4.1","output":[],"usage":null}}"#,
        );
        s += &ev(
            "response.in_progress",
            r#"{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","model":"gpt-4.1","output":[],"usage":null}}"#,
        );
        s += &ev(
            "response.output_item.added",
            r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]}}"#,
        );
        s += &ev(
            "response.content_part.added",
            r#"{"type":"response.content_part.added","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#,
        );
        for (i, d) in ["Hi SEC", "RET th", "ére"].iter().enumerate() {
            s += &ev(
                "response.output_text.delta",
                &format!(
                    r#"{{"type":"response.output_text.delta","sequence_number":{},"item_id":"msg_1","output_index":0,"content_index":0,"delta":"{d}","logprobs":[],"obfuscation":"abc"}}"#,
                    4 + i
                ),
            );
        }
        s += &ev(
            "response.output_text.done",
            r#"{"type":"response.output_text.done","sequence_number":7,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hi SECRET thére","logprobs":[]}"#,
        );
        s += &ev(
            "response.content_part.done",
            r#"{"type":"response.content_part.done","sequence_number":8,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi SECRET thére"}}"#,
        );
        s += &ev(
            "response.output_item.done",
            &format!(
                r#"{{"type":"response.output_item.done","sequence_number":9,"output_index":0,"item":{msg_done}}}"#
            ),
        );
        s += &ev(
            "response.output_item.added",
            r#"{"type":"response.output_item.added","sequence_number":10,"output_index":1,"item":{"id":"fc_1","type":"function_call","status":"in_progress","arguments":"","call_id":"call_1","name":"f"}}"#,
        );
        for (i, d) in [r#"{\"a\":\"SE"#, r#"CRET\"}"#].iter().enumerate() {
            s += &ev(
                "response.function_call_arguments.delta",
                &format!(
                    r#"{{"type":"response.function_call_arguments.delta","sequence_number":{},"item_id":"fc_1","output_index":1,"delta":"{d}"}}"#,
                    11 + i
                ),
            );
        }
        s += &ev(
            "response.function_call_arguments.done",
            r#"{"type":"response.function_call_arguments.done","sequence_number":13,"item_id":"fc_1","output_index":1,"arguments":"{\"a\":\"SECRET\"}"}"#,
        );
        s += &ev(
            "response.output_item.done",
            &format!(
                r#"{{"type":"response.output_item.done","sequence_number":14,"output_index":1,"item":{fc_done}}}"#
            ),
        );
        s += &ev(
            "response.completed",
            &format!(
                r#"{{"type":"response.completed","sequence_number":15,"response":{{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"gpt-4.1","output":[{msg_done},{fc_done}],"usage":{{"input_tokens":12,"input_tokens_details":{{"cached_tokens":0}},"output_tokens":8,"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":20}}}}}}"#
            ),
        );
        s
    }

    fn anthropic_stream() -> String {
        let mut s = String::new();
        s += &ev(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
        );
        s += &ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        );
        s += &ev("ping", r#"{"type": "ping"}"#);
        for d in ["Hello SE", "CRET ", "wörld"] {
            s += &ev(
                "content_block_delta",
                &format!(
                    r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{d}"}}}}"#
                ),
            );
        }
        s += &ev(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        );
        s += &ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
        );
        for d in [r#"{\"city\": \"SE"#, r#"CRET\"}"#] {
            s += &ev(
                "content_block_delta",
                &format!(
                    r#"{{"type":"content_block_delta","index":1,"delta":{{"type":"input_json_delta","partial_json":"{d}"}}}}"#
                ),
            );
        }
        s += &ev(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":1}"#,
        );
        s += &ev(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15}}"#,
        );
        s += &ev("message_stop", r#"{"type":"message_stop"}"#);
        s
    }

    fn streams() -> Vec<(Endpoint, String)> {
        vec![
            (Endpoint::ChatCompletions, chat_stream()),
            (Endpoint::ChatCompletions, chat_tools_stream()),
            (Endpoint::Completions, completions_stream()),
            (Endpoint::Responses, responses_stream()),
            (Endpoint::AnthropicMessages, anthropic_stream()),
        ]
    }

    fn crlf(s: &str) -> String {
        s.replace('\n', "\r\n")
    }

    // ---------- helpers ----------

    fn run_chunks(
        ep: Endpoint,
        chunks: &[&[u8]],
        f: &mut dyn StreamFilter,
    ) -> (Vec<u8>, SseRewriter) {
        let mut rw = SseRewriter::new(ep);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(rw.push(c, f));
        }
        out.extend(rw.finish(f));
        (out, rw)
    }

    fn run(ep: Endpoint, input: &[u8], f: &mut dyn StreamFilter) -> Vec<u8> {
        run_chunks(ep, &[input], f).0
    }

    /// A chat stream through the redacting test filter, in one chunk.
    fn redact_chat(input: &str) -> Vec<u8> {
        run(
            Endpoint::ChatCompletions,
            input.as_bytes(),
            &mut Redact::default(),
        )
    }

    fn split_at<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts {
            chunks.push(&input[prev..c]);
            prev = c;
        }
        chunks.push(&input[prev..]);
        chunks
    }

    /// Parses an output stream into (event type, data) pairs; data as JSON when it parses.
    fn events(out: &[u8]) -> Vec<(Option<String>, Result<Value, String>)> {
        let mut sp = SseSplitter::new(usize::MAX);
        let mut evs = Vec::new();
        let mut f = |item: SseItem<'_>| {
            if let SseItem::Event(e) = item {
                if e.has_data() {
                    let data = String::from_utf8(e.data().into_owned()).unwrap();
                    let name = e
                        .event_type()
                        .map(|n| String::from_utf8(n.to_vec()).unwrap());
                    evs.push((name, serde_json::from_str(&data).map_err(|_| data)));
                }
            }
            true
        };
        sp.push(out, &mut f).unwrap();
        sp.finish(&mut f).unwrap();
        evs
    }

    fn s(v: &Value) -> String {
        v.as_str().unwrap_or("").to_string()
    }

    /// Concatenated delta texts of the field selected by `pick`.
    fn concat(out: &[u8], pick: impl Fn(&Value) -> Option<String>) -> String {
        events(out)
            .iter()
            .filter_map(|(_, d)| d.as_ref().ok().and_then(&pick))
            .collect()
    }

    fn chat_content(v: &Value) -> Option<String> {
        v["choices"].get(0).map(|c| s(&c["delta"]["content"]))
    }

    // ---------- tests ----------

    #[test]
    fn identity_is_byte_exact() {
        for (ep, input) in streams() {
            for input in [input.clone(), crlf(&input), input.replace('\n', "\r")] {
                let out = run(ep, input.as_bytes(), &mut Identity);
                assert_eq!(String::from_utf8(out).unwrap(), input, "{ep:?}");
            }
        }
    }

    #[test]
    fn one_byte_chunks_match_whole() {
        for (ep, input) in streams() {
            for input in [input.clone(), crlf(&input)] {
                let bytes = input.as_bytes();
                let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
                for mk in 0..3 {
                    let mut filters: [Box<dyn StreamFilter>; 3] = [
                        Box::new(Identity),
                        Box::new(Hold::default()),
                        Box::new(Redact::default()),
                    ];
                    let whole = run(ep, bytes, filters[mk].as_mut());
                    let mut filters: [Box<dyn StreamFilter>; 3] = [
                        Box::new(Identity),
                        Box::new(Hold::default()),
                        Box::new(Redact::default()),
                    ];
                    let (split, _) = run_chunks(ep, &chunks, filters[mk].as_mut());
                    assert_eq!(split, whole, "{ep:?} filter {mk}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn any_chunking_matches_whole(
            which in 0usize..5,
            use_crlf in any::<bool>(),
            mk in 0usize..3,
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ) {
            let (ep, input) = streams().swap_remove(which);
            let input = if use_crlf { crlf(&input) } else { input };
            let bytes = input.as_bytes();
            let make = |mk: usize| -> Box<dyn StreamFilter> {
                match mk {
                    0 => Box::new(Identity),
                    1 => Box::new(Hold::default()),
                    _ => Box::new(Redact::default()),
                }
            };
            let whole = run(ep, bytes, make(mk).as_mut());
            let chunks = split_at(bytes, &cuts);
            let (split, _) = run_chunks(ep, &chunks, make(mk).as_mut());
            prop_assert_eq!(&split, &whole);
            if mk == 0 {
                prop_assert_eq!(split, bytes.to_vec());
            }
        }
    }

    #[test]
    fn hold_back_flushes_before_finish_chunk() {
        let input = chat_stream();
        let mut f = Hold::default();
        let out = run(Endpoint::ChatCompletions, input.as_bytes(), &mut f);
        assert_eq!(concat(&out, chat_content), "Hello wörld 🌍 SECRET done");
        let evs = events(&out);
        let flush = evs
            .iter()
            .position(|(_, d)| {
                d.as_ref().ok().and_then(chat_content).as_deref()
                    == Some("Hello wörld 🌍 SECRET done")
            })
            .expect("synthesized flush chunk");
        let finish = evs
            .iter()
            .position(|(_, d)| {
                d.as_ref()
                    .is_ok_and(|v| v["choices"][0]["finish_reason"] == "stop")
            })
            .unwrap();
        assert_eq!(
            flush + 1,
            finish,
            "flush chunk right before the finish chunk"
        );
        // The synthesized chunk has the stream's shape and key order.
        let raw = String::from_utf8(out.clone()).unwrap();
        assert!(raw.contains(r#""choices":[{"index":0,"delta":{"content":"Hello wörld 🌍 SECRET done"},"logprobs":null,"finish_reason":null}],"usage":null}"#), "{raw}");
        let v = evs[flush].1.as_ref().unwrap();
        assert_eq!(
            *v,
            json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1",
                   "choices":[{"index":0,"delta":{"content":"Hello wörld 🌍 SECRET done"},"logprobs":null,"finish_reason":null}],"usage":null})
        );
        // Held-back deltas are kept with empty content.
        let empties = evs
            .iter()
            .filter(|(_, d)| d.as_ref().ok().and_then(chat_content).as_deref() == Some(""))
            .count();
        assert!(empties >= 5, "{empties}");
        assert_eq!(f.finished.len(), 1);
    }

    #[test]
    fn logprobs_of_rewritten_chunks_are_dropped() {
        // "SEC" + "RET" across two chunks, each with logprobs spelling its tokens; a clean
        // chunk before them keeps its logprobs.
        let lp = |t: &str| {
            format!(
                r#"{{"content":[{{"token":"{t}","logprob":-0.1,"bytes":[1],"top_logprobs":[{{"token":"{t}","logprob":-0.1,"bytes":[1]}}]}}]}}"#
            )
        };
        let chunk = |text: &str, finish: &str| {
            chat_chunk(
                &format!(
                    r#"{{"index":0,"delta":{{"content":"{text}"}},"logprobs":{},"finish_reason":{finish}}}"#,
                    lp(text)
                ),
                "null",
            )
        };
        let input = [
            chunk("Hi ", "null"),
            chunk("SEC", "null"),
            chunk("RET", "null"),
            chunk(" ok", "\"stop\""),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let out = redact_chat(&input);
        assert_eq!(concat(&out, chat_content), "Hi [X] ok");
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("SEC") && !text.contains("RET"), "{text}");
        // The untouched first chunk still carries its logprobs.
        let first = events(&out).into_iter().find_map(|(_, v)| {
            v.ok()
                .filter(|v| v["choices"][0]["delta"]["content"] == "Hi ")
        });
        let first = first.expect("first chunk passes through");
        assert_eq!(
            first["choices"][0]["logprobs"]["content"][0]["token"],
            "Hi "
        );
    }

    #[test]
    fn responses_logprobs_of_rewritten_text_are_emptied() {
        let lp = |tokens: &[&str]| {
            let items: Vec<String> = tokens
                .iter()
                .map(|t| {
                    format!(r#"{{"token":"{t}","logprob":-0.1,"bytes":[1],"top_logprobs":[]}}"#)
                })
                .collect();
            format!(r#""logprobs":[{}]"#, items.join(","))
        };
        let mut input = String::new();
        for (d, tokens) in [
            ("Hi SEC", &["Hi", " SEC"][..]),
            ("RET th", &["RET", " th"]),
            ("ére", &["ére"]),
        ] {
            input += &ev(
                "response.output_text.delta",
                &format!(
                    r#"{{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"{d}",{}}}"#,
                    lp(tokens)
                ),
            );
        }
        let all = lp(&["Hi", " SEC", "RET", " th", "ére"]);
        input += &ev(
            "response.output_text.done",
            &format!(
                r#"{{"type":"response.output_text.done","item_id":"msg_1","output_index":0,"content_index":0,"text":"Hi SECRET thére",{all}}}"#
            ),
        );
        input += &ev(
            "response.content_part.done",
            &format!(
                r#"{{"type":"response.content_part.done","item_id":"msg_1","output_index":0,"content_index":0,"part":{{"type":"output_text","annotations":[],{all},"text":"Hi SECRET thére"}}}}"#
            ),
        );
        let out = run(
            Endpoint::Responses,
            input.as_bytes(),
            &mut Redact::default(),
        );
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("SEC") && !text.contains("RET"), "{text}");
        // The last delta passed unchanged and keeps its logprobs.
        assert!(text.contains(r#""token":"ére""#), "{text}");
    }

    #[test]
    fn redaction_across_deltas_all_dialects() {
        let mut f = Redact::default();
        let out = run(Endpoint::ChatCompletions, chat_stream().as_bytes(), &mut f);
        assert_eq!(concat(&out, chat_content), "Hello wörld 🌍 [X] done");

        let out = run(
            Endpoint::ChatCompletions,
            chat_tools_stream().as_bytes(),
            &mut Redact::default(),
        );
        let args = |idx: u64| {
            concat(&out, move |v| {
                let tcs = v["choices"].get(0)?["delta"]["tool_calls"]
                    .as_array()?
                    .clone();
                Some(
                    tcs.iter()
                        .filter(|t| t["index"] == idx)
                        .map(|t| s(&t["function"]["arguments"]))
                        .collect(),
                )
            })
        };
        assert_eq!(args(0), r#"{"q":"[X]"}"#);
        assert_eq!(args(1), r#"{"x":1}"#);

        let out = run(
            Endpoint::Completions,
            completions_stream().as_bytes(),
            &mut Redact::default(),
        );
        let text = |idx: u64| {
            concat(&out, move |v| {
                let c = v["choices"].get(0)?;
                (c["index"] == idx).then(|| s(&c["text"]))
            })
        };
        assert_eq!(text(0), "one [X]");
        assert_eq!(text(1), "two [X]");

        let out = run(
            Endpoint::Responses,
            responses_stream().as_bytes(),
            &mut Redact::default(),
        );
        let evs = events(&out);
        let deltas = |ty: &str| -> String {
            evs.iter()
                .filter_map(|(n, d)| {
                    let v = d.as_ref().ok()?;
                    (v["type"] == ty).then(|| {
                        assert_eq!(n.as_deref(), Some(ty));
                        s(&v["delta"])
                    })
                })
                .collect()
        };
        assert_eq!(deltas("response.output_text.delta"), "Hi [X] thére");
        assert_eq!(
            deltas("response.function_call_arguments.delta"),
            r#"{"a":"[X]"}"#
        );
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains(WORD), "{text}");
        let completed = evs
            .iter()
            .find_map(|(_, d)| {
                d.as_ref()
                    .ok()
                    .filter(|v| v["type"] == "response.completed")
            })
            .unwrap();
        assert_eq!(
            completed["response"]["output"][0]["content"][0]["text"],
            "Hi [X] thére"
        );
        assert_eq!(
            completed["response"]["output"][1]["arguments"],
            r#"{"a":"[X]"}"#
        );

        let out = run(
            Endpoint::AnthropicMessages,
            anthropic_stream().as_bytes(),
            &mut Redact::default(),
        );
        let evs = events(&out);
        let block = |i: u64, key: &str| -> String {
            evs.iter()
                .filter_map(|(_, d)| {
                    let v = d.as_ref().ok()?;
                    (v["type"] == "content_block_delta" && v["index"] == i)
                        .then(|| s(&v["delta"][key]))
                })
                .collect()
        };
        assert_eq!(block(0, "text"), "Hello [X] wörld");
        assert_eq!(block(1, "partial_json"), r#"{"city": "[X]"}"#);
    }

    #[test]
    fn responses_flush_before_done_events() {
        let out = run(
            Endpoint::Responses,
            responses_stream().as_bytes(),
            &mut Hold::default(),
        );
        let evs = events(&out);
        let types: Vec<String> = evs
            .iter()
            .map(|(_, d)| s(&d.as_ref().unwrap()["type"]))
            .collect();
        let done = types
            .iter()
            .position(|t| t == "response.output_text.done")
            .unwrap();
        let flush = &evs[done - 1].1.as_ref().unwrap();
        assert_eq!(flush["type"], "response.output_text.delta");
        assert_eq!(flush["delta"], "Hi SECRET thére");
        assert_eq!(flush["item_id"], "msg_1");
        assert_eq!(flush["sequence_number"], 6);
        assert_eq!(flush["obfuscation"], "abc");
        assert_eq!(
            evs[done - 1].0.as_deref(),
            Some("response.output_text.delta")
        );
        let done = types
            .iter()
            .position(|t| t == "response.function_call_arguments.done")
            .unwrap();
        assert_eq!(
            evs[done - 1].1.as_ref().unwrap()["delta"],
            r#"{"a":"SECRET"}"#
        );
        assert_eq!(evs[done - 1].1.as_ref().unwrap()["output_index"], 1);
    }

    #[test]
    fn anthropic_flush_before_block_stop() {
        let out = run(
            Endpoint::AnthropicMessages,
            anthropic_stream().as_bytes(),
            &mut Hold::default(),
        );
        let evs = events(&out);
        let stops: Vec<usize> = evs
            .iter()
            .enumerate()
            .filter(|(_, (_, d))| d.as_ref().unwrap()["type"] == "content_block_stop")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(stops.len(), 2);
        let a = evs[stops[0] - 1].1.as_ref().unwrap();
        assert_eq!(
            *a,
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello SECRET wörld"}})
        );
        assert_eq!(evs[stops[0] - 1].0.as_deref(), Some("content_block_delta"));
        let b = evs[stops[1] - 1].1.as_ref().unwrap();
        assert_eq!(b["delta"]["partial_json"], r#"{"city": "SECRET"}"#);
    }

    #[test]
    fn finish_chunk_with_text_appends_in_place() {
        let mut input = String::new();
        input += &chat_chunk(
            r#"{"index":0,"delta":{"content":"ab"},"finish_reason":null}"#,
            "null",
        );
        input += &chat_chunk(
            r#"{"index":0,"delta":{"content":"cd"},"finish_reason":"stop"}"#,
            "null",
        );
        let out = run(
            Endpoint::ChatCompletions,
            input.as_bytes(),
            &mut Hold::default(),
        );
        let evs = events(&out);
        assert_eq!(evs.len(), 2, "no synthesized chunk needed");
        assert_eq!(chat_content(evs[0].1.as_ref().unwrap()).unwrap(), "");
        assert_eq!(chat_content(evs[1].1.as_ref().unwrap()).unwrap(), "abcd");
        assert_eq!(
            evs[1].1.as_ref().unwrap()["choices"][0]["finish_reason"],
            "stop"
        );
    }

    #[test]
    fn multiple_choices_flush_per_choice() {
        let mut input = String::new();
        input += &chat_chunk(
            r#"{"index":0,"delta":{"content":"a0"},"finish_reason":null},{"index":1,"delta":{"content":"b0"},"finish_reason":null}"#,
            "null",
        );
        input += &chat_chunk(
            r#"{"index":1,"delta":{"content":"b1"},"finish_reason":null}"#,
            "null",
        );
        input += &chat_chunk(r#"{"index":1,"delta":{},"finish_reason":"stop"}"#, "null");
        input += &chat_chunk(
            r#"{"index":0,"delta":{"content":"a1"},"finish_reason":null}"#,
            "null",
        );
        input += "data: [DONE]\n\n";
        let out = run(
            Endpoint::ChatCompletions,
            input.as_bytes(),
            &mut Hold::default(),
        );
        let evs = events(&out);
        // choice 1 flushed right before its finish chunk, choice 0 before [DONE].
        let v2 = evs[2].1.as_ref().unwrap();
        assert_eq!(
            v2["choices"],
            json!([{"index":1,"delta":{"content":"b0b1"},"finish_reason":null}])
        );
        let last = evs.len() - 1;
        assert_eq!(evs[last].1, Err("[DONE]".to_string()));
        assert_eq!(
            evs[last - 1].1.as_ref().unwrap()["choices"],
            json!([{"index":0,"delta":{"content":"a0a1"},"finish_reason":null}])
        );
    }

    #[test]
    fn reasoning_and_refusal_deltas_are_fields() {
        let mut input = String::new();
        input += &chat_chunk(
            r#"{"index":0,"delta":{"reasoning_content":"think SE"},"finish_reason":null}"#,
            "null",
        );
        input += &chat_chunk(
            r#"{"index":0,"delta":{"reasoning_content":"CRET"},"finish_reason":null}"#,
            "null",
        );
        input += &chat_chunk(
            r#"{"index":0,"delta":{"refusal":"no SECRET"},"finish_reason":null}"#,
            "null",
        );
        input += &chat_chunk(
            r#"{"index":0,"delta":{"content":"ans SE"},"finish_reason":null}"#,
            "null",
        );
        input += &chat_chunk(
            r#"{"index":0,"delta":{"content":"CRET"},"finish_reason":"stop"}"#,
            "null",
        );
        let out = redact_chat(&input);
        let field = |k: &'static str| {
            concat(&out, move |v| {
                v["choices"].get(0).map(|c| s(&c["delta"][k]))
            })
        };
        assert_eq!(field("reasoning_content"), "think [X]");
        assert_eq!(field("refusal"), "no [X]");
        assert_eq!(field("content"), "ans [X]");
        let raw = String::from_utf8(out.clone()).unwrap();
        assert!(!raw.contains(WORD), "{raw}");
    }

    #[test]
    fn rewriter_is_send() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<SseRewriter>();
    }

    /// Rough throughput check: `cargo test --release -- --ignored perf --nocapture`.
    #[test]
    #[ignore]
    fn perf() {
        let input = chat_stream().repeat(2000);
        let t = std::time::Instant::now();
        let mut k = 0;
        for line in input.lines().filter(|l| l.starts_with("data: {")) {
            let v: Value = serde_json::from_str(&line[6..]).unwrap();
            k += v.as_object().map_or(0, |o| o.len());
        }
        println!(
            "baseline Value parse: {:?}/event ({k})",
            t.elapsed() / (2000 * 8)
        );
        for (name, mk) in [("identity", 0), ("redact", 1)] {
            let t = std::time::Instant::now();
            let mut rw = SseRewriter::new(Endpoint::ChatCompletions);
            let mut n = 0;
            let mut f: Box<dyn StreamFilter> = if mk == 0 {
                Box::new(Identity)
            } else {
                Box::new(Redact::default())
            };
            for c in input.as_bytes().chunks(512) {
                n += rw.push(c, f.as_mut()).len();
            }
            n += rw.finish(f.as_mut()).len();
            let dt = t.elapsed();
            let events = 2000 * 9;
            println!(
                "{name}: {} MB/s, {:?}/event ({n} bytes out)",
                input.len() as f64 / dt.as_secs_f64() / 1e6,
                dt / events
            );
        }
    }

    #[test]
    fn stop_emits_error_and_nothing_after() {
        let mut input = String::new();
        for piece in ["fine ", "text ", "BAD", " more"] {
            input += &chat_chunk(
                &format!(r#"{{"index":0,"delta":{{"content":"{piece}"}},"finish_reason":null}}"#),
                "null",
            );
        }
        input += "data: [DONE]\n\n";
        let mut f = Redact {
            stop_on_bad: true,
            ..Default::default()
        };
        let mut rw = SseRewriter::new(Endpoint::ChatCompletions);
        let out = rw.push(input.as_bytes(), &mut f);
        assert!(rw.stopped());
        let evs = events(&out);
        assert_eq!(evs.len(), 3);
        assert_eq!(
            *evs[2].1.as_ref().unwrap(),
            json!({"error":{"message":"bad content","type":"jimini_policy_violation","code":"test.bad","param":null}})
        );
        assert!(out.ends_with(b"}}\n\n"));
        assert!(rw.push(b"data: {}\n\n", &mut f).is_empty());
        assert!(rw.finish(&mut f).is_empty());

        // Anthropic dialect.
        let input = anthropic_stream().replace("wörld", "BAD");
        let mut f = Redact {
            stop_on_bad: true,
            ..Default::default()
        };
        let mut rw = SseRewriter::new(Endpoint::AnthropicMessages);
        let out = rw.push(input.as_bytes(), &mut f);
        let evs = events(&out);
        let (name, data) = evs.last().unwrap();
        assert_eq!(name.as_deref(), Some("error"));
        assert_eq!(
            *data.as_ref().unwrap(),
            json!({"type":"error","error":{"type":"jimini_policy_violation","message":"bad content"}})
        );
        assert!(rw.stopped());
    }

    #[test]
    fn usage_tracked() {
        let cases = [
            (Endpoint::ChatCompletions, chat_stream(), (9, 5, 14)),
            (Endpoint::Responses, responses_stream(), (12, 8, 20)),
            (
                Endpoint::AnthropicMessages,
                anthropic_stream(),
                (30, 15, 45),
            ),
        ];
        for (ep, input, want) in cases {
            let (_, rw) = run_chunks(ep, &[input.as_bytes()], &mut Identity);
            let u = rw.usage().unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.total_tokens),
                want,
                "{ep:?}"
            );
        }
        let (_, rw) = run_chunks(
            Endpoint::ChatCompletions,
            &[chat_tools_stream().as_bytes()],
            &mut Identity,
        );
        assert_eq!(rw.usage(), None);
    }

    #[test]
    fn non_json_data_goes_through_whole() {
        let input = "data: plain SECRET text\r\n\r\ndata: [DONE]\r\n\r\n";
        let out = redact_chat(input);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: plain [X] text\r\n\r\ndata: [DONE]\r\n\r\n"
        );
        // Invalid UTF-8 without a match passes through byte for byte.
        let input = b"data: \xff\xfe\n\n";
        assert_eq!(
            run(Endpoint::ChatCompletions, input, &mut Redact::default()),
            input.to_vec()
        );
        // Unknown JSON shapes pass through untouched, even containing the word.
        let input = "data: {\"error\":{\"message\":\"x\"}}\n\nevent: foo\ndata: {\"type\":\"foo\",\"text\":\"SECRET\"}\n\n";
        assert_eq!(
            run(
                Endpoint::Responses,
                input.as_bytes(),
                &mut Redact::default()
            ),
            input.as_bytes()
        );
    }

    #[test]
    fn oversized_event_fails_closed() {
        let mut rw = SseRewriter::with_max_event(Endpoint::ChatCompletions, 64);
        let ok = chat_chunk("", "null");
        let mut f = Identity;
        let out = rw.push(b"data: {\"choices\":[]}\n\n", &mut f);
        assert_eq!(out, b"data: {\"choices\":[]}\n\n");
        let out = rw.push(ok.as_bytes(), &mut f);
        assert!(rw.stopped());
        let evs = events(&out);
        assert_eq!(evs.len(), 1);
        let v = evs[0].1.as_ref().unwrap();
        assert_eq!(v["error"]["type"], "jimini_upstream_error");
        assert_eq!(v["error"]["code"], "stream_event_too_large");
    }

    /// A stream that ends (EOF between events, or after an event that lacks its blank line)
    /// before the upstream ended its fields: text still held back is dropped — it is what could
    /// still grow into a value — and an error event says the answer is incomplete. The event
    /// itself is terminated before that error event, so clients dispatch it.
    #[test]
    fn truncated_stream_is_terminated_before_flush() {
        let mut complete = chat_chunk(
            r#"{"index":0,"delta":{"content":"abc"},"finish_reason":null}"#,
            "null",
        );
        complete += &chat_chunk(
            r#"{"index":0,"delta":{"content":"def"},"finish_reason":null}"#,
            "null",
        );
        // EOF right after the last event, after its line without the blank line, and with
        // neither newline.
        for cut in [0, 1, 2] {
            let input = &complete[..complete.len() - cut];
            let out = run(
                Endpoint::ChatCompletions,
                input.as_bytes(),
                &mut Hold::default(),
            );
            let text = String::from_utf8_lossy(&out);
            assert_eq!(concat(&out, chat_content), "", "cut {cut}: {text}");
            assert!(out.ends_with(b"\n\n"), "cut {cut}: {text}");
            let evs = events(&out);
            assert_eq!(evs.len(), 3, "cut {cut}: {text}");
            let last = evs.last().and_then(|(_, v)| v.as_ref().ok()).unwrap();
            assert_eq!(last["error"]["code"], "upstream_stream_interrupted");
            // With nothing held, a truncated stream is forwarded byte for byte.
            let out = run(Endpoint::ChatCompletions, input.as_bytes(), &mut Identity);
            assert_eq!(out, input.as_bytes(), "cut {cut}");
        }
    }

    /// Reasoning streamed as `reasoning_text` (open-weight models behind a Responses API) is
    /// model-written text: held back and redacted like the answer, in the deltas, the done
    /// event and the finished item.
    #[test]
    fn responses_reasoning_text_is_scanned() {
        let mut input = String::new();
        for (i, d) in ["think SE", "CR", "ET more"].iter().enumerate() {
            input += &ev(
                "response.reasoning_text.delta",
                &format!(
                    r#"{{"type":"response.reasoning_text.delta","sequence_number":{i},"item_id":"rs_1","output_index":0,"content_index":0,"delta":"{d}"}}"#
                ),
            );
        }
        input += &ev(
            "response.reasoning_text.done",
            r#"{"type":"response.reasoning_text.done","sequence_number":3,"item_id":"rs_1","output_index":0,"content_index":0,"text":"think SECRET more"}"#,
        );
        input += &ev(
            "response.output_item.done",
            r#"{"type":"response.output_item.done","sequence_number":4,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[],"content":[{"type":"reasoning_text","text":"think SECRET more"}]}}"#,
        );
        for cut in 0..input.len() {
            let out = run_chunks(
                Endpoint::Responses,
                &[&input.as_bytes()[..cut], &input.as_bytes()[cut..]],
                &mut Redact::default(),
            )
            .0;
            let text = String::from_utf8(out.clone()).unwrap();
            assert!(!text.contains(WORD), "cut {cut}: {text}");
            let deltas: String = events(&out)
                .iter()
                .filter_map(|(_, d)| {
                    let v = d.as_ref().ok()?;
                    (v["type"] == "response.reasoning_text.delta").then(|| s(&v["delta"]))
                })
                .collect();
            assert_eq!(deltas, "think [X] more", "cut {cut}");
        }
    }

    #[test]
    fn error_event_messages_are_scanned() {
        for data in [
            r#"{"error":{"message":"bad input: SECRET","type":"invalid_request_error"}}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"SECRET"}}"#,
        ] {
            let input = format!("event: error\ndata: {data}\n\n");
            for ep in [Endpoint::ChatCompletions, Endpoint::AnthropicMessages] {
                let out = run(ep, input.as_bytes(), &mut Redact::default());
                let text = String::from_utf8(out).unwrap();
                assert!(!text.contains(WORD) && text.contains("[X]"), "{text}");
            }
        }
    }

    #[test]
    fn chat_delta_content_as_parts_is_scanned() {
        let input = chat_chunk(
            r#"{"index":0,"delta":{"content":[{"type":"text","text":"a SECRET b"}]},"finish_reason":null}"#,
            "null",
        ) + "data: [DONE]\n\n";
        let out = redact_chat(&input);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(WORD) && text.contains("a [X] b"), "{text}");
    }

    #[test]
    fn a_cut_mid_event_releases_nothing_held_and_ends_with_an_error() {
        let mut input = chat_chunk(
            r#"{"index":0,"delta":{"content":"abc"},"finish_reason":null}"#,
            "null",
        );
        input += r#"data: {"choices":[{"index":0,"delta":{"content":"de"#;
        let out = run(
            Endpoint::ChatCompletions,
            input.as_bytes(),
            &mut Hold::default(),
        );
        let text = String::from_utf8_lossy(&out);
        assert_eq!(concat(&out, chat_content), "", "{text}");
        assert!(!text.contains(r#""content":"de"#), "{text}");
        let evs = events(&out);
        let last = evs.last().and_then(|(_, v)| v.as_ref().ok()).unwrap();
        assert_eq!(
            last["error"]["code"], "upstream_stream_interrupted",
            "{text}"
        );
        // Nothing held: the complete event passes, the cut one does not.
        let out = run(Endpoint::ChatCompletions, input.as_bytes(), &mut Identity);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(concat(&out, chat_content), "abc", "{text}");
        assert!(!text.contains(r#""content":"de"#) && text.contains("upstream_stream_interrupted"));
        // A plain-text event cut at EOF is a cut too.
        let out = run(
            Endpoint::ChatCompletions,
            b"data: Contact jane.doe@exa",
            &mut Identity,
        );
        assert!(!String::from_utf8_lossy(&out).contains("jane"));
    }

    #[test]
    fn abort_drops_held_text_and_ends_the_stream_once() {
        let mut rw = SseRewriter::new(Endpoint::ChatCompletions);
        let mut hold = Hold::default();
        let chunk = chat_chunk(
            r#"{"index":0,"delta":{"content":"card 4111 1111"},"finish_reason":null}"#,
            "null",
        );
        let mut out = rw.push(chunk.as_bytes(), &mut hold);
        out.extend(rw.abort(StreamCut::TimedOut, &mut hold));
        assert_eq!(concat(&out, chat_content), "");
        let evs = events(&out);
        let last = evs.last().and_then(|(_, v)| v.as_ref().ok()).unwrap();
        assert_eq!(last["error"]["code"], "upstream_timeout");
        assert!(rw.stopped());
        assert!(rw.abort(StreamCut::Interrupted, &mut hold).is_empty());
        assert!(rw.finish(&mut hold).is_empty());
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("é".to_string()),
            Just("🌍".to_string()),
            Just(" ".to_string()),
            Just("\"q\\".to_string()),
            Just("\n".to_string()),
            Just("SECRET".to_string()),
            Just("SEC".to_string()),
            Just("RET".to_string()),
            Just("S".to_string()),
        ]
    }

    /// A chat stream whose content deltas are `deltas`, plus finish, usage and [DONE].
    fn chat_from(deltas: &[String], eol: &str) -> String {
        let mut s = chat_chunk(
            r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#,
            "null",
        );
        for d in deltas {
            let content = serde_json::to_string(d).unwrap();
            s += &chat_chunk(
                &format!(r#"{{"index":0,"delta":{{"content":{content}}},"finish_reason":null}}"#),
                "null",
            );
        }
        s += &chat_chunk(r#"{"index":0,"delta":{},"finish_reason":"stop"}"#, "null");
        s += "data: [DONE]\n\n";
        s.replace('\n', eol)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]
        /// Random texts, random delta boundaries, random byte chunking, random line endings:
        /// the streamed result equals redacting the whole text, identity is byte exact, and the
        /// output does not depend on the chunking.
        #[test]
        fn streamed_redaction_equals_whole(
            deltas in proptest::collection::vec(proptest::collection::vec(piece(), 0..4), 0..12),
            eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            cuts in proptest::collection::vec(any::<usize>(), 0..30),
        ) {
            let deltas: Vec<String> = deltas.into_iter().map(|p| p.concat()).collect();
            let text: String = deltas.concat();
            let input = chat_from(&deltas, eol);
            let bytes = input.as_bytes();
            let chunks = split_at(bytes, &cuts);
            let (out, _) = run_chunks(Endpoint::ChatCompletions, &chunks, &mut Redact::default());
            prop_assert_eq!(concat(&out, chat_content), text.replace(WORD, "[X]"));
            prop_assert_eq!(&out, &run(Endpoint::ChatCompletions, bytes, &mut Redact::default()));
            let (same, _) = run_chunks(Endpoint::ChatCompletions, &chunks, &mut Identity);
            prop_assert_eq!(same, bytes.to_vec());
            let (held, _) = run_chunks(Endpoint::ChatCompletions, &chunks, &mut Hold::default());
            prop_assert_eq!(concat(&held, chat_content), text);
        }
    }

    /// Plain-text (non-JSON) data of an output stream, event by event.
    fn plain_datas(out: &[u8]) -> Vec<String> {
        events(out)
            .into_iter()
            .filter_map(|(_, d)| d.err())
            .filter(|d| d != "[DONE]")
            .collect()
    }

    /// After `data: [DONE]` nothing reaches the client, whatever it is and however the bytes
    /// are chunked: no chat chunk (it used to open a new field whose held text then ended the
    /// finished stream with an "interrupted" error), no unknown JSON (passed unread), no plain
    /// text or comment, no partial event at EOF (no error either: the stream was complete).
    #[test]
    fn nothing_after_done_reaches_the_client() {
        let tails = [
            chat_chunk(
                r#"{"index":0,"delta":{"content":"late SECRET SE"},"finish_reason":null}"#,
                "null",
            ),
            "data: {\"foo\":\"SECRET\"}\n\n".to_string(),
            "data: plain SECRET\n\n: SECRET\n\n".to_string(),
            ": ping\n\n".to_string(),
            "data: [DONE]\n\n".to_string(),
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"cut SE".to_string(),
        ];
        for (ep, stream) in [
            (Endpoint::ChatCompletions, chat_stream()),
            (Endpoint::Completions, completions_stream()),
        ] {
            for tail in &tails {
                for eol in ["\n", "\r\n"] {
                    let head = stream.replace('\n', eol);
                    let input = head.clone() + &tail.replace('\n', eol);
                    let bytes = input.as_bytes();
                    let expected = run(ep, head.as_bytes(), &mut Redact::default());
                    assert!(!String::from_utf8_lossy(&expected).contains("error"));
                    for cut in 0..=bytes.len() {
                        let (out, rw) =
                            run_chunks(ep, &[&bytes[..cut], &bytes[cut..]], &mut Redact::default());
                        assert_eq!(
                            String::from_utf8_lossy(&out),
                            String::from_utf8_lossy(&expected),
                            "{ep:?} {tail:?} {eol:?} cut {cut}"
                        );
                        assert!(!rw.stopped());
                    }
                    let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
                    assert_eq!(run_chunks(ep, &chunks, &mut Identity).0, head.as_bytes());
                }
            }
        }
        // A `[DONE]` whose `\r\n` blank line is split after the `\r`: the `\n` still follows.
        let input = "data: [DONE]\r\n\r\ndata: SECRET\r\n\r\n";
        for cut in 0..=input.len() {
            let (out, _) = run_chunks(
                Endpoint::ChatCompletions,
                &[&input.as_bytes()[..cut], &input.as_bytes()[cut..]],
                &mut Identity,
            );
            assert_eq!(out, b"data: [DONE]\r\n\r\n", "cut {cut}");
        }
    }

    /// An upstream that resets, stalls or cuts its framing after `data: [DONE]` cut nothing:
    /// the client's stream was complete and gets no error event after `[DONE]` (it used to).
    /// Before `[DONE]` the same abort still ends the stream with one.
    #[test]
    fn abort_after_done_adds_nothing() {
        for why in [StreamCut::Interrupted, StreamCut::TimedOut] {
            for eol in ["\n", "\r\n", "\r"] {
                let input = (chat_stream() + "data: {\"late\":1}\n\n").replace('\n', eol);
                let bytes = input.as_bytes();
                let done_at = input.find("data: [DONE]").unwrap() + "data: [DONE]".len();
                for cut in 0..=bytes.len() {
                    let mut rw = SseRewriter::new(Endpoint::ChatCompletions);
                    let mut f = Redact::default();
                    let mut out = rw.push(&bytes[..cut], &mut f);
                    out.extend(rw.abort(why, &mut f));
                    let text = String::from_utf8(out).unwrap();
                    // `[DONE]` is dispatched at the end of its blank line (`\r\n`: at its `\r`).
                    let complete = cut >= done_at + if eol == "\r\n" { 3 } else { 2 };
                    assert_eq!(
                        text.contains("upstream_"),
                        !complete,
                        "{why:?} {eol:?} cut {cut}: {text}"
                    );
                    if complete {
                        let tail = text.trim_end_matches(['\r', '\n']);
                        assert!(
                            tail.ends_with("data: [DONE]") && !rw.stopped(),
                            "{why:?} {eol:?} cut {cut}: {text}"
                        );
                    }
                }
            }
        }
    }

    /// Comment lines are scanned like any text; a keep-alive passes byte for byte.
    #[test]
    fn comments_are_scanned_and_keepalives_pass() {
        let chunk = chat_chunk(
            r#"{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}"#,
            "null",
        );
        let input = format!(
            ": ping\n\n:\n\n: mail SECRET now\n\n: SECRET\n{chunk}data: plain\n: x SECRET\n\ndata: [DONE]\n\n"
        );
        for eol in ["\n", "\r\n", "\r"] {
            let input = input.replace('\n', eol);
            assert_eq!(
                run(Endpoint::ChatCompletions, input.as_bytes(), &mut Identity),
                input.as_bytes()
            );
            let expected = input.replace("SECRET", "[X]");
            let bytes = input.as_bytes();
            for cut in 0..=bytes.len() {
                let (out, _) = run_chunks(
                    Endpoint::ChatCompletions,
                    &[&bytes[..cut], &bytes[cut..]],
                    &mut Redact::default(),
                );
                assert_eq!(String::from_utf8(out).unwrap(), expected, "cut {cut}");
            }
        }
    }

    /// Consecutive plain-text (non-JSON) data events are one held-back field: a value split
    /// across them is found, text is released as soon as it is final, the rest goes out before
    /// the next JSON event, the next event type, `[DONE]` or at the end of the stream.
    #[test]
    fn plain_text_events_are_one_held_back_field() {
        let input = "data: mail SE\n\ndata: CRET ok\n\n";
        let out = redact_chat(input);
        assert_eq!(plain_datas(&out), ["mail ", "[X] ok"]);
        // Held at the end of the stream: released then (no end marker for plain text).
        let input = "data: a\n\ndata: b SE\n\n";
        let out = redact_chat(input);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: a\n\ndata: b \n\ndata: SE\n\n"
        );
        // Before a JSON event: the held text goes out first, in its own plain event.
        let chunk = chat_chunk(
            r#"{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}"#,
            "null",
        );
        let input = format!("id: 1\ndata: x SE\n\n{chunk}");
        let out = redact_chat(&input);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("id: 1\ndata: x \n\ndata: SE\n\n{chunk}")
        );
        // Another event type ends the run; the held text keeps its own type; multi-line data.
        let input = "event: a\ndata: x\ndata: SE\n\nevent: b\ndata: CRET\n\ndata: [DONE]\n\n";
        let out = redact_chat(input);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: a\ndata: x\ndata: \n\nevent: a\ndata: SE\n\nevent: b\ndata: CRET\n\ndata: [DONE]\n\n"
        );
        // Everything held: the events go out empty, the text in one event at the end.
        let input = "data: a\n\n: keep-alive\n\ndata: b\n\n";
        let mut hold = Hold::default();
        let out = run(Endpoint::ChatCompletions, input.as_bytes(), &mut hold);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: \n\n: keep-alive\n\ndata: \n\ndata: ab\n\n"
        );
        assert_eq!(hold.finished, [Field::Plain.key()]);
        // A stream cut inside a plain event releases nothing held.
        let out = run(
            Endpoint::ChatCompletions,
            b"data: a SE\n\ndata: CR",
            &mut Redact::default(),
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("SE\n") && text.contains("upstream_stream_interrupted"),
            "{text}"
        );
    }

    /// EOF while a JSON field still holds text is a cut, and a cut releases nothing held: not
    /// the plain-text run open beside it either (it used to be flushed before the cut was seen).
    #[test]
    fn cut_at_eof_releases_no_plain_text() {
        let chunk = chat_chunk(
            r#"{"index":0,"delta":{"content":"x SE"},"finish_reason":null}"#,
            "null",
        );
        for eol in ["\n", "\r\n", "\r"] {
            let input = format!("{chunk}: c\n\ndata: mail SE\n\nid: 2\n\n").replace('\n', eol);
            let bytes = input.as_bytes();
            for cut in 0..=bytes.len() {
                let (out, rw) = run_chunks(
                    Endpoint::ChatCompletions,
                    &[&bytes[..cut], &bytes[cut..]],
                    &mut Redact::default(),
                );
                let text = String::from_utf8_lossy(&out);
                assert!(rw.stopped(), "{eol:?} cut {cut}: {text}");
                assert_eq!(plain_datas(&out), ["mail "], "{eol:?} cut {cut}: {text}");
                assert!(
                    text.contains("upstream_stream_interrupted"),
                    "{eol:?} cut {cut}: {text}"
                );
            }
        }
        // Without the cut (the JSON field ended), the plain run's held text is released at EOF.
        let chunk = chat_chunk(
            r#"{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}"#,
            "null",
        );
        let input = format!("{chunk}data: mail SE\n\n");
        let (out, rw) = run_chunks(
            Endpoint::ChatCompletions,
            &[input.as_bytes()],
            &mut Redact::default(),
        );
        assert!(!rw.stopped());
        assert_eq!(plain_datas(&out), ["mail ", "SE"]);
    }

    fn plain_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("é".to_string()),
            Just("🌍".to_string()),
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("SECRET".to_string()),
            Just("SEC".to_string()),
            Just("RET".to_string()),
            Just("S".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]
        /// Plain-text streams: the concatenated data of the output equals redacting the whole
        /// text, whatever the event boundaries, byte chunking and line endings; identity is
        /// byte exact.
        #[test]
        fn plain_streamed_redaction_equals_whole(
            events_in in proptest::collection::vec(proptest::collection::vec(plain_piece(), 0..4), 0..12),
            eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            done in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..30),
        ) {
            let datas: Vec<String> = events_in.into_iter().map(|p| p.concat()).collect();
            let text: String = datas.concat();
            let mut input = String::new();
            for d in &datas {
                for (i, line) in d.split('\n').enumerate() {
                    if i > 0 {
                        input += eol;
                    }
                    input += "data: ";
                    input += line;
                }
                input += eol;
                input += eol;
            }
            if done {
                input += "data: [DONE]";
                input += eol;
                input += eol;
            }
            let bytes = input.as_bytes();
            let chunks = split_at(bytes, &cuts);
            let (out, rw) = run_chunks(Endpoint::ChatCompletions, &chunks, &mut Redact::default());
            prop_assert!(!rw.stopped());
            prop_assert_eq!(plain_datas(&out).concat(), text.replace(WORD, "[X]"));
            prop_assert_eq!(&out, &run(Endpoint::ChatCompletions, bytes, &mut Redact::default()));
            let (same, _) = run_chunks(Endpoint::ChatCompletions, &chunks, &mut Identity);
            prop_assert_eq!(same, bytes.to_vec());
        }
    }

    #[test]
    fn split_crlf_blank_line_with_rewrite() {
        // The event is rewritten at the `\r`; the late `\n` must follow it unchanged.
        let input = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"SECRET\"},\"finish_reason\":\"stop\"}]}\r\n\r\n";
        let whole = redact_chat(input);
        let cut = input.len() - 1;
        let (split, _) = run_chunks(
            Endpoint::ChatCompletions,
            &[&input.as_bytes()[..cut], &input.as_bytes()[cut..]],
            &mut Redact::default(),
        );
        assert_eq!(split, whole);
        assert!(String::from_utf8(whole).unwrap().contains("[X]"));
    }
}
