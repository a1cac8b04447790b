//! `POST /v1/responses`: the `response` object and its SSE event sequence (response.created …
//! response.output_text.delta … response.completed, each with `event:` line and `sequence_number`),
//! including a `function_call` output item when tools are offered and the user asks to "call tool".

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use super::common::{
    approx_tokens, char_chunks, content_text, named_event, new_id, now_secs, parse_object,
    text_chars, wants_stream, Ctx, Flavor, Reply,
};

/// Text of the last user input: a plain string `input`, or the last item with role `user`.
fn last_user_input(req: &Value) -> Option<String> {
    match req.get("input")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items
            .iter()
            .rev()
            .find(|it| {
                it.get("role").and_then(Value::as_str) == Some("user")
                    && it.get("type").and_then(Value::as_str).unwrap_or("message") == "message"
            })
            .and_then(|it| it.get("content"))
            .and_then(content_text),
        _ => None,
    }
}

struct FunctionCall {
    id: String,
    call_id: String,
    name: String,
    arguments: String,
}

fn planned_function_call(req: &Value, user_text: Option<&str>) -> Option<FunctionCall> {
    let text = user_text?;
    let tools = req.get("tools").and_then(Value::as_array)?;
    if !text.to_ascii_lowercase().contains("call tool") {
        return None;
    }
    let name = tools.iter().find_map(|t| {
        t.get("name")
            .or_else(|| t.get("function").and_then(|f| f.get("name")))
            .and_then(Value::as_str)
    })?;
    Some(FunctionCall {
        id: new_id("fc_"),
        call_id: new_id("call_"),
        name: name.to_string(),
        arguments: serde_json::to_string(&json!({ "text": text }))
            .unwrap_or_else(|_| "{}".to_string()),
    })
}

fn message_item(id: &str, status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(t) => json!([{"type": "output_text", "annotations": [], "logprobs": [], "text": t}]),
        None => json!([]),
    };
    json!({"id": id, "type": "message", "status": status, "content": content, "role": "assistant"})
}

fn function_item(fc: &FunctionCall, status: &str, arguments: &str) -> Value {
    json!({"id": fc.id, "type": "function_call", "status": status, "arguments": arguments,
           "call_id": fc.call_id, "name": fc.name})
}

/// The `response` object; `output`/`usage` are filled for the final state only.
fn response_object(
    req: &Value,
    id: &str,
    created_at: u64,
    model: &str,
    status: &str,
    output: Value,
    usage: Value,
) -> Value {
    let get = |k: &str, default: Value| req.get(k).cloned().unwrap_or(default);
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": get("instructions", Value::Null),
        "max_output_tokens": get("max_output_tokens", Value::Null),
        "model": model,
        "output": output,
        "parallel_tool_calls": get("parallel_tool_calls", Value::Bool(true)),
        "previous_response_id": get("previous_response_id", Value::Null),
        "reasoning": {"effort": null, "summary": null},
        "service_tier": "default",
        "store": get("store", Value::Bool(true)),
        "temperature": get("temperature", json!(1.0)),
        "text": {"format": {"type": "text"}},
        "tool_choice": get("tool_choice", json!("auto")),
        "tools": get("tools", json!([])),
        "top_p": get("top_p", json!(1.0)),
        "truncation": get("truncation", json!("disabled")),
        "usage": usage,
        "user": get("user", Value::Null),
        "metadata": get("metadata", json!({})),
    })
}

#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    delta: &'a str,
    logprobs: &'static [u8],
}

#[derive(Serialize)]
struct ArgsDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    delta: &'a str,
}

/// Builds the stream, numbering events in order.
struct Events {
    out: Vec<Bytes>,
    seq: u64,
}

impl Events {
    /// Pushes `{"type": name, "sequence_number": n, ...fields}`.
    fn push(&mut self, name: &'static str, fields: Value) {
        let mut obj = serde_json::Map::with_capacity(8);
        obj.insert("type".into(), Value::from(name));
        obj.insert("sequence_number".into(), Value::from(self.seq));
        if let Value::Object(f) = fields {
            obj.extend(f);
        }
        self.out.push(named_event(name, &Value::Object(obj)));
        self.seq += 1;
    }

    fn push_typed<T: Serialize>(&mut self, name: &'static str, ev: &T) {
        self.out.push(named_event(name, ev));
        self.seq += 1;
    }
}

/// `POST /v1/responses`.
pub(crate) fn responses(ctx: &Ctx<'_>, body: &[u8]) -> Reply {
    let req = match parse_object(body, Flavor::OpenAi) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let user_text = last_user_input(&req);
    let call = planned_function_call(&req, user_text.as_deref());
    let text = ctx.reply_text(user_text);
    let model = ctx.model(&req).to_string();
    let id = new_id("resp_");
    let created_at = now_secs();
    let input_tokens = approx_tokens(
        req.get("input").map(text_chars).unwrap_or(0)
            + req.get("instructions").map(text_chars).unwrap_or(0),
    );
    let output_tokens = approx_tokens(match &call {
        Some(c) => c.arguments.chars().count(),
        None => text.chars().count(),
    });
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    });
    let item_id = match &call {
        Some(c) => c.id.clone(),
        None => new_id("msg_"),
    };
    let final_item = match &call {
        Some(c) => function_item(c, "completed", &c.arguments),
        None => message_item(&item_id, "completed", Some(&text)),
    };
    let final_response = |usage: Value| {
        response_object(
            &req,
            &id,
            created_at,
            &model,
            "completed",
            Value::Array(vec![final_item.clone()]),
            usage,
        )
    };

    if !wants_stream(&req) {
        return Reply::ok(&final_response(usage));
    }

    let streamed: &str = match &call {
        Some(c) => &c.arguments,
        None => &text,
    };
    let pieces: Vec<&str> = char_chunks(streamed, ctx.chunk_chars).collect();
    let mut ev = Events {
        out: Vec::with_capacity(pieces.len() + 9),
        seq: 0,
    };
    let pending = response_object(
        &req,
        &id,
        created_at,
        &model,
        "in_progress",
        json!([]),
        Value::Null,
    );
    ev.push("response.created", json!({ "response": pending }));
    ev.push("response.in_progress", json!({ "response": pending }));
    drop(pending);
    let added_item = match &call {
        Some(c) => function_item(c, "in_progress", ""),
        None => message_item(&item_id, "in_progress", None),
    };
    ev.push(
        "response.output_item.added",
        json!({"output_index": 0, "item": added_item}),
    );
    match &call {
        Some(c) => {
            for piece in &pieces {
                let seq = ev.seq;
                ev.push_typed(
                    "response.function_call_arguments.delta",
                    &ArgsDelta {
                        kind: "response.function_call_arguments.delta",
                        sequence_number: seq,
                        item_id: &item_id,
                        output_index: 0,
                        delta: piece,
                    },
                );
            }
            ev.push(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "arguments": c.arguments}),
            );
        }
        None => {
            ev.push(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
            );
            for piece in &pieces {
                let seq = ev.seq;
                ev.push_typed(
                    "response.output_text.delta",
                    &TextDelta {
                        kind: "response.output_text.delta",
                        sequence_number: seq,
                        item_id: &item_id,
                        output_index: 0,
                        content_index: 0,
                        delta: piece,
                        logprobs: &[],
                    },
                );
            }
            ev.push(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "text": text, "logprobs": []}),
            );
            ev.push(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": text}}),
            );
        }
    }
    ev.push(
        "response.output_item.done",
        json!({"output_index": 0, "item": final_item}),
    );
    ev.push(
        "response.completed",
        json!({ "response": final_response(usage) }),
    );
    Reply::Sse(ev.out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockConfig;

    fn events(r: Reply) -> Vec<(String, Value)> {
        let Reply::Sse(evs) = r else {
            panic!("expected sse")
        };
        evs.iter()
            .map(|e| {
                let s = std::str::from_utf8(e).unwrap();
                let (ev, data) = s.split_once('\n').unwrap();
                let name = ev.strip_prefix("event: ").unwrap().to_string();
                let v: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap().trim_end()).unwrap();
                assert_eq!(v["type"], name.as_str());
                (name, v)
            })
            .collect()
    }

    #[test]
    fn input_shapes() {
        let table = [
            (json!({"input": "plain"}), Some("plain")),
            (
                json!({"input": [{"role":"user","content":"a"},{"role":"assistant","content":"b"},
                                 {"type":"message","role":"user","content":[{"type":"input_text","text":"c"}]},
                                 {"type":"function_call_output","call_id":"x","output":"o"}]}),
                Some("c"),
            ),
            (json!({"input": []}), None),
            (json!({}), None),
        ];
        for (req, want) in table {
            assert_eq!(last_user_input(&req).as_deref(), want, "{req}");
        }
    }

    #[test]
    fn function_call_stream() {
        let cfg = MockConfig::default();
        let ctx = Ctx {
            cfg: &cfg,
            chunk_chars: 5,
        };
        let req = json!({"model":"m","input":"call tool now","stream":true,
                         "tools":[{"type":"function","name":"f","parameters":{}}]});
        let evs = events(responses(&ctx, req.to_string().as_bytes()));
        let args: String = evs
            .iter()
            .filter(|(n, _)| n == "response.function_call_arguments.delta")
            .map(|(_, v)| v["delta"].as_str().unwrap().to_string())
            .collect();
        let parsed: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(parsed["text"], "call tool now");
        let (_, done) = evs.last().unwrap();
        assert_eq!(done["response"]["output"][0]["type"], "function_call");
        assert_eq!(done["response"]["output"][0]["name"], "f");
        for (i, (_, v)) in evs.iter().enumerate() {
            assert_eq!(v["sequence_number"], i as u64);
        }
    }
}
