//! `POST /v1/messages` (Anthropic Messages API): the `message` object and its SSE sequence
//! (message_start, content_block_start, ping, content_block_delta…, content_block_stop,
//! message_delta with usage, message_stop), with a `tool_use` block when asked to "call tool".

use serde::Serialize;
use serde_json::{json, Value};

use super::common::{
    approx_tokens, char_chunks, last_user_text, named_event, new_id, parse_object, text_chars,
    wants_stream, Ctx, Flavor, Reply,
};

struct ToolUse {
    id: String,
    name: String,
    input_json: String,
}

fn planned_tool_use(req: &Value, user_text: Option<&str>) -> Option<ToolUse> {
    let text = user_text?;
    let tools = req.get("tools").and_then(Value::as_array)?;
    if !text.to_ascii_lowercase().contains("call tool") {
        return None;
    }
    let name = tools
        .iter()
        .find_map(|t| t.get("name").and_then(Value::as_str))?;
    Some(ToolUse {
        id: new_id("toolu_"),
        name: name.to_string(),
        input_json: serde_json::to_string(&json!({ "text": text }))
            .unwrap_or_else(|_| "{}".to_string()),
    })
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_json: Option<&'a str>,
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    delta: Delta<'a>,
}

/// `POST /v1/messages`.
pub(crate) fn messages(ctx: &Ctx<'_>, body: &[u8]) -> Reply {
    let req = match parse_object(body, Flavor::Anthropic) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(msgs) = req.get("messages").and_then(Value::as_array) else {
        return Reply::bad_request(Flavor::Anthropic, "messages: Field required", None);
    };
    let user_text = last_user_text(msgs);
    let tool = planned_tool_use(&req, user_text.as_deref());
    let text = ctx.reply_text(user_text);
    let model = ctx.model(&req);
    let id = new_id("msg_");
    let input_tokens = approx_tokens(
        msgs.iter().map(text_chars).sum::<usize>() + req.get("system").map(text_chars).unwrap_or(0),
    );
    let output_tokens = approx_tokens(match &tool {
        Some(t) => t.input_json.chars().count(),
        None => text.chars().count(),
    });
    let stop_reason = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };

    if !wants_stream(&req) {
        let content = match &tool {
            Some(t) => json!([{"type": "tool_use", "id": t.id, "name": t.name,
                               "input": {"text": text_of(&t.input_json)}}]),
            None => json!([{"type": "text", "text": text}]),
        };
        return Reply::ok(&json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }));
    }

    let streamed: &str = match &tool {
        Some(t) => &t.input_json,
        None => &text,
    };
    let pieces: Vec<&str> = char_chunks(streamed, ctx.chunk_chars).collect();
    let mut out = Vec::with_capacity(pieces.len() + 6);
    out.push(named_event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    ));
    let block = match &tool {
        Some(t) => json!({"type": "tool_use", "id": t.id, "name": t.name, "input": {}}),
        None => json!({"type": "text", "text": ""}),
    };
    out.push(named_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": block}),
    ));
    out.push(named_event("ping", &json!({"type": "ping"})));
    for piece in pieces {
        let delta = if tool.is_some() {
            Delta {
                kind: "input_json_delta",
                text: None,
                partial_json: Some(piece),
            }
        } else {
            Delta {
                kind: "text_delta",
                text: Some(piece),
                partial_json: None,
            }
        };
        out.push(named_event(
            "content_block_delta",
            &BlockDelta {
                kind: "content_block_delta",
                index: 0,
                delta,
            },
        ));
    }
    out.push(named_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push(named_event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": output_tokens}}),
    ));
    out.push(named_event(
        "message_stop",
        &json!({"type": "message_stop"}),
    ));
    Reply::Sse(out)
}

/// The `text` member of the tool input we generated (so the non-stream `input` is an object).
fn text_of(input_json: &str) -> Value {
    serde_json::from_str::<Value>(input_json)
        .ok()
        .and_then(|v| v.get("text").cloned())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockConfig;

    #[test]
    fn stream_sequence_and_text() {
        let cfg = MockConfig::default();
        let ctx = Ctx {
            cfg: &cfg,
            chunk_chars: 2,
        };
        let req = json!({"model":"claude","max_tokens":10,"stream":true,
                         "messages":[{"role":"user","content":[{"type":"text","text":"héllo"}]}]});
        let Reply::Sse(evs) = messages(&ctx, req.to_string().as_bytes()) else {
            panic!()
        };
        let mut names = vec![];
        let mut text = String::new();
        for e in &evs {
            let s = std::str::from_utf8(e).unwrap();
            let (ev, data) = s.split_once('\n').unwrap();
            let name = ev.strip_prefix("event: ").unwrap();
            let v: Value =
                serde_json::from_str(data.strip_prefix("data: ").unwrap().trim_end()).unwrap();
            assert_eq!(v["type"], name);
            if name == "content_block_delta" {
                text.push_str(v["delta"]["text"].as_str().unwrap());
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        assert_eq!(text, "héllo");
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }

    #[test]
    fn tool_use_non_stream() {
        let cfg = MockConfig::default();
        let ctx = Ctx {
            cfg: &cfg,
            chunk_chars: 2,
        };
        let req = json!({"messages":[{"role":"user","content":"call tool x"}],
                         "tools":[{"name":"t","input_schema":{}}]});
        let Reply::Json { body, .. } = messages(&ctx, req.to_string().as_bytes()) else {
            panic!()
        };
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["content"][0]["input"]["text"], "call tool x");
    }
}
