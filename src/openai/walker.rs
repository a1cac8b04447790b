//! The JSON body walker: knows which fields of each request/response dialect carry content (message
//! text, tool-call arguments, prompts, …) and hands exactly those strings to a [`TextFilter`].
//! Model names, ids, roles, tool names, image/file payloads and unknown fields are never touched.

use std::borrow::Cow;

use super::json::Node;
use super::{Endpoint, TextFilter};
use serde_json::Value;

/// What the walker needs of a JSON value: implemented by `serde_json::Value` (stream events)
/// and by the borrowed [`Node`] tree (whole bodies, rewritten in place by splicing).
pub(crate) trait JsonNode: Sized {
    fn get(&self, key: &str) -> Option<&Self>;
    fn get_mut(&mut self, key: &str) -> Option<&mut Self>;
    fn str_value(&self) -> Option<Cow<'_, str>>;
    fn is_str(&self) -> bool;
    fn is_obj(&self) -> bool;
    fn array_mut(&mut self) -> Option<&mut [Self]>;
    fn each_value_mut(&mut self, f: &mut dyn FnMut(&mut Self));
    /// Runs `f` over a non-empty string value; true when it changed the value.
    fn filter_str(&mut self, f: &mut dyn TextFilter) -> bool;
    /// Replaces the value with `null`.
    fn set_null(&mut self);
    /// Replaces the value with `[]`.
    fn set_empty_array(&mut self);

    /// The `type` tag of an object, if it is a string.
    fn type_tag(&self) -> Option<Cow<'_, str>> {
        self.get("type").and_then(Self::str_value)
    }
}

impl JsonNode for Value {
    fn set_null(&mut self) {
        *self = Value::Null;
    }
    fn set_empty_array(&mut self) {
        *self = Value::Array(Vec::new());
    }
    fn get(&self, key: &str) -> Option<&Value> {
        Value::get(self, key)
    }
    fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        Value::get_mut(self, key)
    }
    fn str_value(&self) -> Option<Cow<'_, str>> {
        self.as_str().map(Cow::Borrowed)
    }
    fn is_str(&self) -> bool {
        self.is_string()
    }
    fn is_obj(&self) -> bool {
        self.is_object()
    }
    fn array_mut(&mut self) -> Option<&mut [Value]> {
        self.as_array_mut().map(Vec::as_mut_slice)
    }
    fn each_value_mut(&mut self, f: &mut dyn FnMut(&mut Value)) {
        if let Value::Object(map) = self {
            map.values_mut().for_each(f);
        }
    }
    fn filter_str(&mut self, f: &mut dyn TextFilter) -> bool {
        if let Value::String(s) = self {
            if !s.is_empty() {
                if let Some(new) = f.filter(s) {
                    if new != *s {
                        *s = new;
                        return true;
                    }
                }
            }
        }
        false
    }
}

impl JsonNode for Node<'_> {
    fn set_null(&mut self) {
        self.set_literal("null")
    }
    fn set_empty_array(&mut self) {
        self.set_literal("[]")
    }
    fn get(&self, key: &str) -> Option<&Self> {
        Node::get(self, key)
    }
    fn get_mut(&mut self, key: &str) -> Option<&mut Self> {
        Node::get_mut(self, key)
    }
    fn str_value(&self) -> Option<Cow<'_, str>> {
        self.as_str()
    }
    fn is_str(&self) -> bool {
        self.is_string()
    }
    fn is_obj(&self) -> bool {
        self.is_object()
    }
    fn array_mut(&mut self) -> Option<&mut [Self]> {
        self.as_array_mut()
    }
    fn each_value_mut(&mut self, f: &mut dyn FnMut(&mut Self)) {
        self.for_each_value_mut(f)
    }
    fn filter_str(&mut self, f: &mut dyn TextFilter) -> bool {
        let new = match self.as_str() {
            Some(cur) if !cur.is_empty() => match f.filter(&cur) {
                Some(new) if new != cur => new,
                _ => return false,
            },
            _ => return false,
        };
        self.set_string(new);
        true
    }
}

/// Which side of the exchange a body belongs to; a few item kinds are only content on one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Request,
    Response,
}

/// A walk over one body: applies the filter to content strings and remembers whether anything
/// changed (so an unchanged body can be forwarded byte for byte).
pub(crate) struct Walk<'f> {
    f: &'f mut dyn TextFilter,
    pub changed: bool,
}

impl<'f> Walk<'f> {
    pub fn new(f: &'f mut dyn TextFilter) -> Self {
        Walk { f, changed: false }
    }

    /// Filters `v` if it is a non-empty string.
    pub fn string<N: JsonNode>(&mut self, v: &mut N) {
        if v.filter_str(self.f) {
            self.changed = true;
        }
    }

    /// Filters `obj[key]` if it is a string.
    pub fn field<N: JsonNode>(&mut self, obj: &mut N, key: &str) {
        if let Some(v) = obj.get_mut(key) {
            self.string(v);
        }
    }

    /// Filters every string value (not keys) below `v`. Depth is bounded by serde_json's parser
    /// recursion limit (128), so the recursion cannot overflow the stack.
    pub fn strings_deep<N: JsonNode>(&mut self, v: &mut N) {
        if v.is_str() {
            self.string(v);
        } else if let Some(items) = v.array_mut() {
            items.iter_mut().for_each(|i| self.strings_deep(i));
        } else {
            v.each_value_mut(&mut |i| self.strings_deep(i));
        }
    }

    /// A string, or an array whose string elements are filtered (token arrays are left alone).
    fn string_or_strings<N: JsonNode>(&mut self, v: &mut N) {
        if v.is_str() {
            self.string(v);
        } else if let Some(items) = v.array_mut() {
            items.iter_mut().for_each(|i| self.string(i));
        }
    }

    /// A content part (`text`, `input_text`, `output_text`, `summary_text`, `refusal`, or an
    /// untyped `{"text": …}`); image/audio/file parts carry no text and are skipped.
    pub fn part<N: JsonNode>(&mut self, p: &mut N) {
        match p.type_tag().as_deref() {
            None
            | Some("text" | "input_text" | "output_text" | "summary_text" | "reasoning_text") => {
                // Output text parts carry per-token logprobs (a list) that spell the text.
                let changed = self.changes(p, |w, p| w.field(p, "text"));
                if let Some(lp) = p.get_mut("logprobs").filter(|_| changed) {
                    lp.set_empty_array();
                }
            }
            Some("refusal") => self.field(p, "refusal"),
            _ => {}
        }
    }

    /// Content that is either a plain string or an array of parts.
    fn content<N: JsonNode>(&mut self, v: &mut N) {
        if v.is_str() {
            self.string(v);
        } else if let Some(parts) = v.array_mut() {
            parts.iter_mut().for_each(|p| self.part(p));
        }
    }

    fn tool_calls<N: JsonNode>(&mut self, v: &mut N) {
        if let Some(calls) = v.array_mut() {
            for tc in calls {
                if let Some(func) = tc.get_mut("function") {
                    self.field(func, "arguments");
                }
                if let Some(custom) = tc.get_mut("custom") {
                    self.field(custom, "input");
                }
            }
        }
    }

    /// A Chat Completions message (request `messages[]` or response `choices[].message`).
    fn chat_message<N: JsonNode>(&mut self, msg: &mut N) {
        if let Some(c) = msg.get_mut("content") {
            self.content(c);
        }
        self.field(msg, "refusal");
        // Reasoning text of OpenAI-compatible providers (DeepSeek/vLLM, OpenRouter).
        self.field(msg, "reasoning_content");
        self.field(msg, "reasoning");
        if let Some(tc) = msg.get_mut("tool_calls") {
            self.tool_calls(tc);
        }
        if let Some(fc) = msg.get_mut("function_call") {
            self.field(fc, "arguments");
        }
        if let Some(audio) = msg.get_mut("audio") {
            self.field(audio, "transcript");
        }
    }

    /// One Responses API item (request `input[]`, response `output[]`, stream `item`).
    pub fn responses_item<N: JsonNode>(&mut self, item: &mut N, side: Side) {
        match item.type_tag().as_deref() {
            None | Some("message") => {
                if let Some(c) = item.get_mut("content") {
                    self.content(c);
                }
            }
            Some("function_call") => self.field(item, "arguments"),
            Some("custom_tool_call") => self.field(item, "input"),
            Some("function_call_output" | "custom_tool_call_output") => {
                if let Some(out) = item.get_mut("output") {
                    self.content(out);
                }
            }
            // Model-written reasoning summaries are shown to users; on the request side they are
            // echoes of an earlier (already filtered) response and may be integrity-checked.
            // Open-weight models served with a Responses API stream their reasoning as
            // `reasoning_text` content (OpenAI's own is only `encrypted_content`, left alone).
            Some("reasoning") if side == Side::Response => {
                if let Some(parts) = item.get_mut("summary").and_then(N::array_mut) {
                    parts.iter_mut().for_each(|p| self.part(p));
                }
                if let Some(parts) = item.get_mut("content").and_then(N::array_mut) {
                    parts.iter_mut().for_each(|p| self.part(p));
                }
            }
            _ => {}
        }
    }

    /// A Responses `input`/`instructions`/`output`: a string or an array of items.
    fn responses_items<N: JsonNode>(&mut self, v: &mut N, side: Side) {
        if v.is_str() {
            self.string(v);
        } else if let Some(items) = v.array_mut() {
            items.iter_mut().for_each(|i| self.responses_item(i, side));
        }
    }

    /// Anthropic content: a string or an array of content blocks.
    pub fn anthropic_content<N: JsonNode>(&mut self, v: &mut N) {
        if v.is_str() {
            self.string(v);
        } else if let Some(blocks) = v.array_mut() {
            blocks.iter_mut().for_each(|b| self.anthropic_block(b));
        }
    }

    /// One Anthropic content block. Thinking blocks are signed by the provider and must stay
    /// byte-identical, so they are never touched.
    pub fn anthropic_block<N: JsonNode>(&mut self, b: &mut N) {
        match b.type_tag().as_deref() {
            Some("text") => self.field(b, "text"),
            Some("tool_use" | "server_tool_use" | "mcp_tool_use") => {
                if let Some(input) = b.get_mut("input") {
                    self.strings_deep(input);
                }
            }
            Some("tool_result" | "mcp_tool_result" | "search_result") => {
                if let Some(c) = b.get_mut("content") {
                    self.anthropic_content(c);
                }
            }
            Some("document") => {
                if let Some(src) = b.get_mut("source") {
                    match src.type_tag().as_deref() {
                        Some("text") => self.field(src, "data"),
                        Some("content") => {
                            if let Some(c) = src.get_mut("content") {
                                self.anthropic_content(c);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Walks the content fields of a request body of endpoint `ep`.
    pub fn request<N: JsonNode>(&mut self, ep: Endpoint, root: &mut N) {
        match ep {
            Endpoint::ChatCompletions => {
                if let Some(msgs) = root.get_mut("messages").and_then(N::array_mut) {
                    msgs.iter_mut().for_each(|m| self.chat_message(m));
                }
                // Predicted outputs are sent to the provider verbatim.
                if let Some(pred) = root.get_mut("prediction") {
                    if let Some(c) = pred.get_mut("content") {
                        self.content(c);
                    }
                }
            }
            Endpoint::Completions => {
                if let Some(p) = root.get_mut("prompt") {
                    self.string_or_strings(p);
                }
                self.field(root, "suffix");
            }
            Endpoint::Responses => {
                if let Some(input) = root.get_mut("input") {
                    self.responses_items(input, Side::Request);
                }
                if let Some(ins) = root.get_mut("instructions") {
                    self.responses_items(ins, Side::Request);
                }
                // Prompt-template variables are substituted into the prompt server-side.
                if let Some(vars) = root.get_mut("prompt").and_then(|p| p.get_mut("variables")) {
                    vars.each_value_mut(&mut |v| {
                        if v.is_str() {
                            self.string(v);
                        } else if v.is_obj() {
                            self.part(v);
                        }
                    });
                }
            }
            Endpoint::Embeddings => {
                if let Some(input) = root.get_mut("input") {
                    self.string_or_strings(input);
                }
            }
            Endpoint::AnthropicMessages => {
                if let Some(sys) = root.get_mut("system") {
                    self.anthropic_content(sys);
                }
                if let Some(msgs) = root.get_mut("messages").and_then(N::array_mut) {
                    for m in msgs {
                        if let Some(c) = m.get_mut("content") {
                            self.anthropic_content(c);
                        }
                    }
                }
            }
            Endpoint::Models | Endpoint::Other => {}
        }
    }

    /// Runs `walk` on `node` and tells whether it changed anything there (the walk's own
    /// `changed` flag keeps what came before).
    fn changes<N: JsonNode>(&mut self, node: &mut N, walk: impl FnOnce(&mut Self, &mut N)) -> bool {
        let before = std::mem::take(&mut self.changed);
        walk(self, node);
        let changed = self.changed;
        self.changed |= before;
        changed
    }

    /// Walks one chat/completions choice; if its text was rewritten it loses its `logprobs`:
    /// their tokens (and `bytes`, `top_logprobs`) spell the original text, PII included.
    fn choice<N: JsonNode>(&mut self, choice: &mut N, walk: impl FnOnce(&mut Self, &mut N)) {
        if self.changes(choice, walk) {
            if let Some(lp) = choice.get_mut("logprobs") {
                lp.set_null();
            }
        }
    }

    /// Walks the content fields of a (non-streamed) response body of endpoint `ep`.
    pub fn response<N: JsonNode>(&mut self, ep: Endpoint, root: &mut N) {
        match ep {
            Endpoint::ChatCompletions => {
                if let Some(choices) = root.get_mut("choices").and_then(N::array_mut) {
                    for c in choices {
                        self.choice(c, |w, c| {
                            if let Some(m) = c.get_mut("message") {
                                w.chat_message(m);
                            }
                        });
                    }
                }
            }
            Endpoint::Completions => {
                if let Some(choices) = root.get_mut("choices").and_then(N::array_mut) {
                    for c in choices {
                        self.choice(c, |w, c| w.field(c, "text"));
                    }
                }
            }
            Endpoint::Responses => {
                if let Some(out) = root.get_mut("output") {
                    self.responses_items(out, Side::Response);
                }
                // SDK convenience aggregate; present in some gateways' raw output.
                self.field(root, "output_text");
            }
            Endpoint::AnthropicMessages => {
                if let Some(c) = root.get_mut("content") {
                    self.anthropic_content(c);
                }
            }
            Endpoint::Embeddings | Endpoint::Models | Endpoint::Other => {}
        }
        // An error object (OpenAI `{"error": {...}}`, Anthropic `{"type": "error", "error":
        // {...}}`): its message may quote the request.
        if let Some(err) = root.get_mut("error") {
            self.field(err, "message");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{rewrite_request, rewrite_response, BodyError};
    use super::*;
    use serde_json::json;

    /// Replaces every "SECRET" with "[X]"; None when absent.
    fn redact(t: &str) -> Option<String> {
        t.contains("SECRET").then(|| t.replace("SECRET", "[X]"))
    }

    fn req(ep: Endpoint, body: Value) -> Option<Value> {
        let raw = serde_json::to_vec(&body).unwrap();
        let mut f = redact;
        rewrite_request(ep, &raw, &mut f)
            .unwrap()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    fn resp(ep: Endpoint, body: Value) -> Option<Value> {
        let raw = serde_json::to_vec(&body).unwrap();
        let mut f = redact;
        rewrite_response(ep, &raw, &mut f)
            .unwrap()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn error_bodies_have_their_message_scanned() {
        for ep in [
            Endpoint::ChatCompletions,
            Endpoint::Responses,
            Endpoint::AnthropicMessages,
        ] {
            assert_eq!(
                resp(
                    ep,
                    json!({"error":{"message":"bad: SECRET","type":"x","code":"SECRET"}})
                ),
                Some(json!({"error":{"message":"bad: [X]","type":"x","code":"SECRET"}})),
                "{ep:?}"
            );
            assert_eq!(
                resp(
                    ep,
                    json!({"type":"error","error":{"type":"x","message":"SECRET"}})
                ),
                Some(json!({"type":"error","error":{"type":"x","message":"[X]"}})),
                "{ep:?}"
            );
        }
    }

    #[test]
    fn rewritten_choices_lose_their_logprobs() {
        let lp =
            json!({"content":[{"token":"SECRET","logprob":-0.1,"bytes":[83],"top_logprobs":[]}]});
        let out = resp(
            Endpoint::ChatCompletions,
            json!({"choices":[
                {"index":0,"message":{"role":"assistant","content":"a SECRET"},"logprobs":lp},
                {"index":1,"message":{"role":"assistant","content":"clean"},"logprobs":{"content":[{"token":"clean"}]}}
            ]}),
        )
        .expect("changed");
        assert_eq!(out["choices"][0]["message"]["content"], "a [X]");
        assert_eq!(out["choices"][0]["logprobs"], Value::Null);
        assert_eq!(
            out["choices"][1]["logprobs"]["content"][0]["token"],
            "clean"
        );
        let out = resp(
            Endpoint::Completions,
            json!({"choices":[{"index":0,"text":"SECRET","logprobs":{"tokens":["SECRET"]}}]}),
        )
        .expect("changed");
        assert_eq!(out["choices"][0]["logprobs"], Value::Null);
        assert!(!out.to_string().contains("SECRET"));
        let out = resp(
            Endpoint::Responses,
            json!({"output":[{"type":"message","role":"assistant","content":[
                {"type":"output_text","text":"SECRET","annotations":[],"logprobs":[{"token":"SECRET"}]},
                {"type":"output_text","text":"fine","annotations":[],"logprobs":[{"token":"fine"}]}
            ]}]}),
        )
        .expect("changed");
        assert_eq!(out["output"][0]["content"][0]["logprobs"], json!([]));
        assert_eq!(
            out["output"][0]["content"][1]["logprobs"][0]["token"],
            "fine"
        );
        // Nothing to redact: the body is forwarded as is, logprobs included.
        let clean = json!({"choices":[{"index":0,"text":"hello","logprobs":{"tokens":["hello"]}}]});
        assert_eq!(resp(Endpoint::Completions, clean), None);
    }

    #[test]
    fn request_fields_table() {
        use Endpoint::*;
        // (endpoint, input, expected output) — SECRET in non-content fields must survive.
        let cases: Vec<(Endpoint, Value, Value)> = vec![
            (
                ChatCompletions,
                json!({"model":"SECRET-model","messages":[{"role":"user","name":"SECRET","content":"hi SECRET"}]}),
                json!({"model":"SECRET-model","messages":[{"role":"user","name":"SECRET","content":"hi [X]"}]}),
            ),
            (
                ChatCompletions,
                json!({"messages":[{"role":"user","content":[
                    {"type":"text","text":"a SECRET"},
                    {"type":"image_url","image_url":{"url":"https://x/SECRET.png"}},
                    {"type":"input_audio","input_audio":{"data":"SECRET","format":"wav"}}]}]}),
                json!({"messages":[{"role":"user","content":[
                    {"type":"text","text":"a [X]"},
                    {"type":"image_url","image_url":{"url":"https://x/SECRET.png"}},
                    {"type":"input_audio","input_audio":{"data":"SECRET","format":"wav"}}]}]}),
            ),
            (
                ChatCompletions,
                json!({"messages":[{"role":"assistant","content":null,"refusal":"SECRET no",
                    "tool_calls":[{"id":"call_SECRET","type":"function","function":{"name":"SECRET","arguments":"{\"q\":\"SECRET\"}"}},
                                  {"id":"c2","type":"custom","custom":{"name":"n","input":"SECRET"}}],
                    "function_call":{"name":"SECRET","arguments":"SECRET"}},
                    {"role":"tool","tool_call_id":"call_SECRET","content":"result SECRET"}],
                    "prediction":{"type":"content","content":"SECRET"}}),
                json!({"messages":[{"role":"assistant","content":null,"refusal":"[X] no",
                    "tool_calls":[{"id":"call_SECRET","type":"function","function":{"name":"SECRET","arguments":"{\"q\":\"[X]\"}"}},
                                  {"id":"c2","type":"custom","custom":{"name":"n","input":"[X]"}}],
                    "function_call":{"name":"SECRET","arguments":"[X]"}},
                    {"role":"tool","tool_call_id":"call_SECRET","content":"result [X]"}],
                    "prediction":{"type":"content","content":"[X]"}}),
            ),
            (
                Completions,
                json!({"model":"m","prompt":"SECRET","suffix":"SECRET","user":"SECRET"}),
                json!({"model":"m","prompt":"[X]","suffix":"[X]","user":"SECRET"}),
            ),
            (
                Completions,
                json!({"prompt":["SECRET a","b"]}),
                json!({"prompt":["[X] a","b"]}),
            ),
            (
                Responses,
                json!({"model":"m","instructions":"be SECRET","input":"hello SECRET"}),
                json!({"model":"m","instructions":"be [X]","input":"hello [X]"}),
            ),
            (
                Responses,
                json!({"input":[
                    {"role":"user","content":"SECRET"},
                    {"type":"message","role":"user","content":[{"type":"input_text","text":"SECRET"},{"type":"input_image","image_url":"SECRET"},{"type":"input_file","file_data":"SECRET"}]},
                    {"type":"message","role":"assistant","id":"msg_SECRET","content":[{"type":"output_text","text":"SECRET","annotations":[]},{"type":"refusal","refusal":"SECRET"}]},
                    {"type":"function_call","call_id":"SECRET","name":"SECRET","arguments":"{\"a\":\"SECRET\"}"},
                    {"type":"function_call_output","call_id":"SECRET","output":"SECRET"},
                    {"type":"function_call_output","call_id":"x","output":[{"type":"input_text","text":"SECRET"}]},
                    {"type":"custom_tool_call","call_id":"x","name":"SECRET","input":"SECRET"},
                    {"type":"reasoning","id":"rs","summary":[{"type":"summary_text","text":"SECRET"}],"encrypted_content":"SECRET"},
                    {"type":"item_reference","id":"SECRET"}],
                    "prompt":{"id":"pmpt_SECRET","variables":{"a":"SECRET","b":{"type":"input_text","text":"SECRET"},"c":{"type":"input_image","image_url":"SECRET"}}}}),
                json!({"input":[
                    {"role":"user","content":"[X]"},
                    {"type":"message","role":"user","content":[{"type":"input_text","text":"[X]"},{"type":"input_image","image_url":"SECRET"},{"type":"input_file","file_data":"SECRET"}]},
                    {"type":"message","role":"assistant","id":"msg_SECRET","content":[{"type":"output_text","text":"[X]","annotations":[]},{"type":"refusal","refusal":"[X]"}]},
                    {"type":"function_call","call_id":"SECRET","name":"SECRET","arguments":"{\"a\":\"[X]\"}"},
                    {"type":"function_call_output","call_id":"SECRET","output":"[X]"},
                    {"type":"function_call_output","call_id":"x","output":[{"type":"input_text","text":"[X]"}]},
                    {"type":"custom_tool_call","call_id":"x","name":"SECRET","input":"[X]"},
                    {"type":"reasoning","id":"rs","summary":[{"type":"summary_text","text":"SECRET"}],"encrypted_content":"SECRET"},
                    {"type":"item_reference","id":"SECRET"}],
                    "prompt":{"id":"pmpt_SECRET","variables":{"a":"[X]","b":{"type":"input_text","text":"[X]"},"c":{"type":"input_image","image_url":"SECRET"}}}}),
            ),
            (
                Embeddings,
                json!({"model":"SECRET","input":"SECRET"}),
                json!({"model":"SECRET","input":"[X]"}),
            ),
            (
                Embeddings,
                json!({"input":["SECRET", "x", [1,2,3]]}),
                json!({"input":["[X]", "x", [1,2,3]]}),
            ),
            (
                AnthropicMessages,
                json!({"model":"claude","system":"SECRET","metadata":{"user_id":"SECRET"},"messages":[{"role":"user","content":"SECRET"}]}),
                json!({"model":"claude","system":"[X]","metadata":{"user_id":"SECRET"},"messages":[{"role":"user","content":"[X]"}]}),
            ),
            (
                AnthropicMessages,
                json!({"system":[{"type":"text","text":"SECRET","cache_control":{"type":"ephemeral"}}],"messages":[
                    {"role":"user","content":[{"type":"text","text":"SECRET"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"SECRET"}},
                        {"type":"document","source":{"type":"text","media_type":"text/plain","data":"SECRET"}}]},
                    {"role":"assistant","content":[{"type":"thinking","thinking":"SECRET","signature":"sig"},
                        {"type":"tool_use","id":"toolu_SECRET","name":"SECRET","input":{"q":"SECRET","n":[1,"SECRET",{"k":"SECRET"}],"SECRET":true}}]},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_SECRET","content":"SECRET"},
                        {"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"SECRET"}]}]}]}),
                json!({"system":[{"type":"text","text":"[X]","cache_control":{"type":"ephemeral"}}],"messages":[
                    {"role":"user","content":[{"type":"text","text":"[X]"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"SECRET"}},
                        {"type":"document","source":{"type":"text","media_type":"text/plain","data":"[X]"}}]},
                    {"role":"assistant","content":[{"type":"thinking","thinking":"SECRET","signature":"sig"},
                        {"type":"tool_use","id":"toolu_SECRET","name":"SECRET","input":{"q":"[X]","n":[1,"[X]",{"k":"[X]"}],"SECRET":true}}]},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_SECRET","content":"[X]"},
                        {"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"[X]"}]}]}]}),
            ),
        ];
        for (i, (ep, input, want)) in cases.into_iter().enumerate() {
            assert_eq!(req(ep, input), Some(want), "case {i} ({ep:?})");
        }
    }

    #[test]
    fn response_fields_table() {
        use Endpoint::*;
        let cases: Vec<(Endpoint, Value, Value)> = vec![
            (
                ChatCompletions,
                json!({"id":"SECRET","model":"SECRET","choices":[{"index":0,"message":{"role":"assistant","content":"SECRET","refusal":"SECRET",
                    "tool_calls":[{"id":"SECRET","type":"function","function":{"name":"SECRET","arguments":"SECRET"}}],
                    "audio":{"id":"SECRET","data":"SECRET","transcript":"SECRET"},"reasoning_content":"SECRET"},"finish_reason":"stop"}]}),
                json!({"id":"SECRET","model":"SECRET","choices":[{"index":0,"message":{"role":"assistant","content":"[X]","refusal":"[X]",
                    "tool_calls":[{"id":"SECRET","type":"function","function":{"name":"SECRET","arguments":"[X]"}}],
                    "audio":{"id":"SECRET","data":"SECRET","transcript":"[X]"},"reasoning_content":"[X]"},"finish_reason":"stop"}]}),
            ),
            (
                ChatCompletions,
                json!({"choices":[{"message":{"content":[{"type":"text","text":"SECRET"}]}}]}),
                json!({"choices":[{"message":{"content":[{"type":"text","text":"[X]"}]}}]}),
            ),
            (
                Completions,
                json!({"id":"SECRET","choices":[{"text":"SECRET","index":0,"logprobs":null},{"text":"SECRET b","index":1}]}),
                json!({"id":"SECRET","choices":[{"text":"[X]","index":0,"logprobs":null},{"text":"[X] b","index":1}]}),
            ),
            (
                Responses,
                json!({"id":"resp_SECRET","output":[
                    {"type":"reasoning","id":"rs","summary":[{"type":"summary_text","text":"SECRET"}]},
                    {"type":"message","id":"msg_SECRET","role":"assistant","content":[{"type":"output_text","text":"SECRET","annotations":[{"type":"url_citation","url":"SECRET"}]}]},
                    {"type":"function_call","id":"fc","call_id":"SECRET","name":"SECRET","arguments":"SECRET"},
                    {"type":"web_search_call","id":"ws","action":{"query":"SECRET"}}],
                    "output_text":"SECRET","instructions":"SECRET"}),
                json!({"id":"resp_SECRET","output":[
                    {"type":"reasoning","id":"rs","summary":[{"type":"summary_text","text":"[X]"}]},
                    {"type":"message","id":"msg_SECRET","role":"assistant","content":[{"type":"output_text","text":"[X]","annotations":[{"type":"url_citation","url":"SECRET"}]}]},
                    {"type":"function_call","id":"fc","call_id":"SECRET","name":"SECRET","arguments":"[X]"},
                    {"type":"web_search_call","id":"ws","action":{"query":"SECRET"}}],
                    "output_text":"[X]","instructions":"SECRET"}),
            ),
            (
                AnthropicMessages,
                json!({"id":"msg_SECRET","type":"message","content":[{"type":"text","text":"SECRET"},{"type":"thinking","thinking":"SECRET","signature":"s"},
                    {"type":"tool_use","id":"SECRET","name":"SECRET","input":{"a":"SECRET"}}]}),
                json!({"id":"msg_SECRET","type":"message","content":[{"type":"text","text":"[X]"},{"type":"thinking","thinking":"SECRET","signature":"s"},
                    {"type":"tool_use","id":"SECRET","name":"SECRET","input":{"a":"[X]"}}]}),
            ),
        ];
        for (i, (ep, input, want)) in cases.into_iter().enumerate() {
            assert_eq!(resp(ep, input), Some(want), "case {i} ({ep:?})");
        }
        // Embeddings, models and unknown endpoints are never rewritten.
        for ep in [Embeddings, Models, Other] {
            assert_eq!(
                resp(ep, json!({"data":[{"embedding":[0.1]}],"text":"SECRET"})),
                None
            );
        }
    }

    #[test]
    fn unchanged_is_none() {
        let mut f = redact;
        let body = br#"{ "model" : "gpt-4o",  "messages":[{"role":"user","content":"hello"}], "temperature": 1.0e0 }"#;
        for ep in [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Responses,
            Endpoint::Embeddings,
            Endpoint::AnthropicMessages,
            Endpoint::Models,
            Endpoint::Other,
        ] {
            assert_eq!(rewrite_request(ep, body, &mut f).unwrap(), None, "{ep:?}");
            assert_eq!(rewrite_response(ep, body, &mut f).unwrap(), None, "{ep:?}");
        }
        // A filter returning Some(identical text) is also "unchanged".
        let mut same = |t: &str| Some(t.to_string());
        assert_eq!(
            rewrite_request(Endpoint::ChatCompletions, body, &mut same).unwrap(),
            None
        );
        // Empty bodies (GET list endpoints) are nothing to rewrite.
        assert_eq!(
            rewrite_request(Endpoint::ChatCompletions, b"  ", &mut f).unwrap(),
            None
        );
    }

    #[test]
    fn changed_preserves_order_and_unknown_fields() {
        let mut f = redact;
        let body = br#"{"zeta":1,"model":"m","messages":[{"content":"SECRET","role":"user","x_extra":{"b":2,"a":1}}],"alpha":[true,null],"stream":false}"#;
        let out = rewrite_request(Endpoint::ChatCompletions, body, &mut f)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"zeta":1,"model":"m","messages":[{"content":"[X]","role":"user","x_extra":{"b":2,"a":1}}],"alpha":[true,null],"stream":false}"#
        );
    }

    #[test]
    fn errors() {
        let mut f = redact;
        let ep = Endpoint::ChatCompletions;
        assert!(matches!(
            rewrite_request(ep, b"{\"messages\":[", &mut f),
            Err(BodyError::InvalidJson(_))
        ));
        assert!(matches!(
            rewrite_request(ep, b"{\"content\":\"\xff\xfe\"}", &mut f),
            Err(BodyError::InvalidUtf8)
        ));
        assert!(matches!(
            rewrite_request(ep, b"[1,2]", &mut f),
            Err(BodyError::NotAnObject)
        ));
        assert!(matches!(
            rewrite_response(ep, b"{} trailing", &mut f),
            Err(BodyError::InvalidJson(_))
        ));
        // Unknown endpoints never parse, so garbage passes through.
        assert_eq!(
            rewrite_request(Endpoint::Other, b"\xff garbage", &mut f).unwrap(),
            None
        );
    }

    #[test]
    fn error_messages_do_not_echo_content() {
        let mut f = redact;
        let e = rewrite_request(
            Endpoint::ChatCompletions,
            br#"{"messages":[{"content":"sk-SECRETVALUE" oops}]}"#,
            &mut f,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
    }
}
