//! `POST /v1/chat/completions` and legacy `POST /v1/completions`: `chat.completion` /
//! `text_completion` objects and their SSE chunk streams (role chunk, content or tool-call argument
//! deltas, finish chunk, optional usage chunk, `[DONE]`), with `n` > 1 interleaved.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::common::{
    approx_tokens, char_chunks, choice_count, content_text, data_event, last_user_text, new_id,
    now_secs, parse_object, text_chars, wants_stream, Ctx, Flavor, Reply, DONE_EVENT,
};

const FINGERPRINT: &str = "fp_jimini_mock";
const EMPTY: &[u8] = &[];

#[derive(Serialize, Clone, Copy)]
pub(crate) struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
pub(crate) struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

/// OpenAI `usage` object (details only on chat).
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionDetails>,
}

impl Usage {
    fn new(prompt: u64, completion: u64, details: bool) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: details.then_some(PromptDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            }),
            completion_tokens_details: details.then_some(CompletionDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            }),
        }
    }
}

/// A tool call the mock makes when asked to ("call tool" in the last user message).
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    annotations: &'static [u8],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
}

/// `choices[].logprobs` when the request asks for `logprobs: true`: one entry per token, a
/// token being a word with its leading space (non-streamed) or one streamed piece.
#[derive(Serialize)]
struct Logprobs<'a> {
    content: Vec<TokenLogprob<'a>>,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct TokenLogprob<'a> {
    token: &'a str,
    logprob: f64,
    bytes: &'a [u8],
    top_logprobs: [(); 0],
}

fn logprobs_of<'a>(tokens: impl Iterator<Item = &'a str>) -> Logprobs<'a> {
    Logprobs {
        content: tokens
            .map(|token| TokenLogprob {
                token,
                logprob: -0.25,
                bytes: token.as_bytes(),
                top_logprobs: [],
            })
            .collect(),
        refusal: None,
    }
}

/// Splits text into word tokens, each keeping its leading whitespace.
fn word_tokens(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let lead = rest.len() - rest.trim_start().len();
        let end = rest[lead..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |i| lead + i);
        let (token, tail) = rest.split_at(end);
        rest = tail;
        Some(token)
    })
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: usize,
    message: ChatMessage<'a>,
    logprobs: Option<Logprobs<'a>>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChatChoice<'a>>,
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// `Some(None)` serializes as `"content": null` (tool-call role chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    logprobs: Option<Logprobs<'a>>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    /// Present (null, then the totals) only when `stream_options.include_usage` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

fn include_usage(req: &Value) -> bool {
    req.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The tool call to make, if the request offers tools and the last user message asks for one.
fn planned_tool_call(req: &Value, user_text: Option<&str>) -> Option<ToolCall> {
    let text = user_text?;
    let tools = req.get("tools").and_then(Value::as_array)?;
    if tools.is_empty() || !text.to_ascii_lowercase().contains("call tool") {
        return None;
    }
    let forced = req
        .get("tool_choice")
        .and_then(|c| c.get("function"))
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str);
    let name = forced
        .or_else(|| {
            tools.iter().find_map(|t| {
                t.get("function")
                    .and_then(|f| f.get("name"))
                    .or_else(|| t.get("name"))
                    .and_then(Value::as_str)
            })
        })
        .unwrap_or("mock_tool");
    let arguments = serde_json::to_string(&serde_json::json!({ "text": text }))
        .unwrap_or_else(|_| "{}".to_string());
    Some(ToolCall {
        id: new_id("call_"),
        name: name.to_string(),
        arguments,
    })
}

/// `POST /v1/chat/completions`.
pub(crate) fn chat_completions(ctx: &Ctx<'_>, body: &[u8]) -> Reply {
    let req = match parse_object(body, Flavor::OpenAi) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(messages) = req.get("messages").and_then(Value::as_array) else {
        return Reply::bad_request(
            Flavor::OpenAi,
            "Missing required parameter: 'messages'.",
            Some("messages"),
        );
    };
    let user_text = last_user_text(messages);
    let tool = planned_tool_call(&req, user_text.as_deref());
    let text = ctx.reply_text(user_text);
    let n = choice_count(&req);
    let model = ctx.model(&req);
    let id = new_id("chatcmpl-");
    let created = now_secs();
    let prompt_tokens = approx_tokens(text_chars(&req["messages"]));
    let per_choice = match &tool {
        Some(t) => approx_tokens(t.arguments.chars().count()),
        None => approx_tokens(text.chars().count()),
    };
    let usage = Usage::new(prompt_tokens, per_choice * n as u64, true);
    let with_logprobs = tool.is_none() && req.get("logprobs") == Some(&Value::Bool(true));

    if !wants_stream(&req) {
        let choices = (0..n)
            .map(|index| ChatChoice {
                index,
                message: ChatMessage {
                    role: "assistant",
                    content: if tool.is_some() { None } else { Some(&text) },
                    refusal: None,
                    annotations: EMPTY,
                    tool_calls: tool.as_ref().map(|t| {
                        [ToolCallOut {
                            id: &t.id,
                            kind: "function",
                            function: FunctionOut {
                                name: &t.name,
                                arguments: &t.arguments,
                            },
                        }]
                    }),
                },
                logprobs: with_logprobs.then(|| logprobs_of(word_tokens(&text))),
                finish_reason: if tool.is_some() { "tool_calls" } else { "stop" },
            })
            .collect();
        return Reply::ok(&ChatCompletion {
            id: &id,
            object: "chat.completion",
            created,
            model,
            choices,
            usage,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
        });
    }

    let with_usage = include_usage(&req);
    let chunk = |choice: Option<&ChunkChoice<'_>>, usage: Option<Option<Usage>>| {
        data_event(&ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
            choices: choice.map(std::slice::from_ref).unwrap_or(&[]),
            usage,
        })
    };
    let null_usage = with_usage.then_some(None);
    let streamed: &str = match &tool {
        Some(t) => &t.arguments,
        None => &text,
    };
    let pieces: Vec<&str> = char_chunks(streamed, ctx.chunk_chars).collect();
    let mut events: Vec<Bytes> = Vec::with_capacity(n * (pieces.len() + 2) + 2);
    for index in 0..n {
        let delta = match &tool {
            Some(t) => Delta {
                role: Some("assistant"),
                content: Some(None),
                tool_calls: Some([ToolCallDelta {
                    index: 0,
                    id: Some(&t.id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(&t.name),
                        arguments: "",
                    },
                }]),
            },
            None => Delta {
                role: Some("assistant"),
                content: Some(Some("")),
                tool_calls: None,
            },
        };
        let c = ChunkChoice {
            index,
            delta,
            logprobs: None,
            finish_reason: None,
        };
        events.push(chunk(Some(&c), null_usage));
    }
    for piece in &pieces {
        for index in 0..n {
            let delta = if tool.is_some() {
                Delta {
                    tool_calls: Some([ToolCallDelta {
                        index: 0,
                        id: None,
                        kind: None,
                        function: FunctionDelta {
                            name: None,
                            arguments: piece,
                        },
                    }]),
                    ..Delta::default()
                }
            } else {
                Delta {
                    content: Some(Some(piece)),
                    ..Delta::default()
                }
            };
            let c = ChunkChoice {
                index,
                delta,
                logprobs: with_logprobs.then(|| logprobs_of(std::iter::once(*piece))),
                finish_reason: None,
            };
            events.push(chunk(Some(&c), null_usage));
        }
    }
    for index in 0..n {
        let c = ChunkChoice {
            index,
            delta: Delta::default(),
            logprobs: None,
            finish_reason: Some(if tool.is_some() { "tool_calls" } else { "stop" }),
        };
        events.push(chunk(Some(&c), null_usage));
    }
    if with_usage {
        events.push(chunk(None, Some(Some(usage))));
    }
    events.push(Bytes::from_static(DONE_EVENT));
    Reply::Sse(events)
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: usize,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [TextChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

/// Prompts of a legacy completion request: one entry per prompt, None for token-id prompts.
fn prompts(req: &Value) -> Vec<Option<String>> {
    match req.get("prompt") {
        Some(Value::String(s)) => vec![Some(s.clone())],
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.iter().all(Value::is_number) {
                // A single prompt given as token ids.
                vec![None]
            } else {
                items.iter().map(content_text).collect()
            }
        }
        _ => vec![None],
    }
}

/// `POST /v1/completions` (legacy).
pub(crate) fn completions(ctx: &Ctx<'_>, body: &[u8]) -> Reply {
    let req = match parse_object(body, Flavor::OpenAi) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let n = choice_count(&req);
    let texts: Vec<String> = prompts(&req)
        .into_iter()
        .map(|p| ctx.reply_text(p))
        .collect();
    let model = ctx.model(&req);
    let id = new_id("cmpl-");
    let created = now_secs();
    let prompt_tokens = approx_tokens(req.get("prompt").map(text_chars).unwrap_or(0));
    let completion_tokens: u64 = texts
        .iter()
        .map(|t| approx_tokens(t.chars().count()) * n as u64)
        .sum();
    let usage = Usage::new(prompt_tokens, completion_tokens, false);
    // Choice index = prompt index * n + sample index, as in the real API.
    let slots: Vec<(usize, &str)> = texts
        .iter()
        .enumerate()
        .flat_map(|(p, t)| (0..n).map(move |i| (p * n + i, t.as_str())))
        .collect();

    if !wants_stream(&req) {
        let choices: Vec<TextChoice<'_>> = slots
            .iter()
            .map(|&(index, text)| TextChoice {
                text,
                index,
                logprobs: None,
                finish_reason: Some("stop"),
            })
            .collect();
        return Reply::ok(&TextCompletion {
            id: &id,
            object: "text_completion",
            created,
            model,
            system_fingerprint: FINGERPRINT,
            choices: &choices,
            usage: Some(Some(usage)),
        });
    }

    let null_usage = include_usage(&req).then_some(None);
    let event = |choice: Option<&TextChoice<'_>>, usage: Option<Option<Usage>>| {
        data_event(&TextCompletion {
            id: &id,
            object: "text_completion",
            created,
            model,
            system_fingerprint: FINGERPRINT,
            choices: choice.map(std::slice::from_ref).unwrap_or(&[]),
            usage,
        })
    };
    let pieces: Vec<Vec<&str>> = slots
        .iter()
        .map(|(_, t)| char_chunks(t, ctx.chunk_chars).collect())
        .collect();
    let rounds = pieces.iter().map(Vec::len).max().unwrap_or(0);
    let mut events = Vec::with_capacity(slots.len() * (rounds + 1) + 2);
    for round in 0..rounds {
        for (slot, &(index, _)) in slots.iter().enumerate() {
            if let Some(piece) = pieces[slot].get(round) {
                let c = TextChoice {
                    text: piece,
                    index,
                    logprobs: None,
                    finish_reason: None,
                };
                events.push(event(Some(&c), null_usage));
            }
        }
    }
    for &(index, _) in &slots {
        let c = TextChoice {
            text: "",
            index,
            logprobs: None,
            finish_reason: Some("stop"),
        };
        events.push(event(Some(&c), null_usage));
    }
    if null_usage.is_some() {
        events.push(event(None, Some(Some(usage))));
    }
    events.push(Bytes::from_static(DONE_EVENT));
    Reply::Sse(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockConfig;
    use serde_json::json;

    fn sse_json(events: &[Bytes]) -> Vec<Value> {
        events
            .iter()
            .filter_map(|e| {
                let s = std::str::from_utf8(e).unwrap();
                let d = s.strip_prefix("data: ").unwrap().trim_end();
                (d != "[DONE]").then(|| serde_json::from_str(d).unwrap())
            })
            .collect()
    }

    fn json_body(r: Reply) -> Value {
        match r {
            Reply::Json { body, .. } => serde_json::from_slice(&body).unwrap(),
            Reply::Sse(_) => panic!("expected json"),
        }
    }

    fn sse(r: Reply) -> Vec<Bytes> {
        match r {
            Reply::Sse(e) => e,
            Reply::Json { body, .. } => {
                panic!("expected sse, got {}", String::from_utf8_lossy(&body))
            }
        }
    }

    #[test]
    fn tool_call_non_stream_and_stream() {
        let cfg = MockConfig::default();
        let ctx = Ctx {
            cfg: &cfg,
            chunk_chars: 3,
        };
        let req = json!({"model":"m","messages":[{"role":"user","content":"please Call Tool ünï"}],
            "tools":[{"type":"function","function":{"name":"lookup","parameters":{}}}]});
        let v = json_body(chat_completions(&ctx, req.to_string().as_bytes()));
        let tc = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(tc["function"]["name"], "lookup");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert!(v["choices"][0]["message"]["content"].is_null());
        let args: Value =
            serde_json::from_str(tc["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args["text"], "please Call Tool ünï");

        let mut req = req;
        req["stream"] = json!(true);
        let chunks = sse_json(&sse(chat_completions(&ctx, req.to_string().as_bytes())));
        let first = &chunks[0]["choices"][0]["delta"];
        assert_eq!(first["tool_calls"][0]["function"]["name"], "lookup");
        assert!(first["content"].is_null() && first.get("content").is_some());
        let joined: String = chunks[1..]
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        let args: Value = serde_json::from_str(&joined).unwrap();
        assert_eq!(args["text"], "please Call Tool ünï");
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );
    }

    #[test]
    fn no_tool_call_without_phrase_or_tools() {
        let cfg = MockConfig::default();
        let ctx = Ctx {
            cfg: &cfg,
            chunk_chars: 4,
        };
        for req in [
            json!({"messages":[{"role":"user","content":"hello"}],"tools":[{"type":"function","function":{"name":"x"}}]}),
            json!({"messages":[{"role":"user","content":"call tool"}]}),
        ] {
            let v = json_body(chat_completions(&ctx, req.to_string().as_bytes()));
            assert!(
                v["choices"][0]["message"].get("tool_calls").is_none(),
                "{v}"
            );
            assert_eq!(v["model"], "mock-gpt");
        }
    }

    #[test]
    fn n_choices_interleaved() {
        let cfg = MockConfig::default();
        let ctx = Ctx {
            cfg: &cfg,
            chunk_chars: 2,
        };
        let req = json!({"messages":[{"role":"user","content":"abcde"}],"n":3,"stream":true});
        let chunks = sse_json(&sse(chat_completions(&ctx, req.to_string().as_bytes())));
        let mut texts = vec![String::new(); 3];
        let mut order = vec![];
        for c in &chunks {
            let ch = &c["choices"][0];
            let i = ch["index"].as_u64().unwrap() as usize;
            order.push(i);
            texts[i].push_str(ch["delta"]["content"].as_str().unwrap_or(""));
        }
        assert_eq!(texts, vec!["abcde"; 3]);
        assert_eq!(&order[..6], &[0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn legacy_multiple_prompts() {
        let cfg = MockConfig::default();
        let ctx = Ctx {
            cfg: &cfg,
            chunk_chars: 1,
        };
        let req = json!({"model":"davinci","prompt":["ab","xyz"],"n":2});
        let v = json_body(completions(&ctx, req.to_string().as_bytes()));
        let texts: Vec<&str> = v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["ab", "ab", "xyz", "xyz"]);
        assert_eq!(v["object"], "text_completion");
        let req = json!({"prompt":[1,2,3]});
        let v = json_body(completions(&ctx, req.to_string().as_bytes()));
        assert_eq!(v["choices"][0]["text"], cfg.fixed_reply.as_str());
    }

    proptest::proptest! {
        /// For any text and chunk size, streamed deltas concatenate to the echoed text and no delta
        /// exceeds `chunk_chars` characters.
        #[test]
        fn stream_deltas_reassemble(text in "\\PC{0,40}", chunk_chars in 1usize..9, n in 1usize..3) {
            let cfg = MockConfig::default();
            let ctx = Ctx { cfg: &cfg, chunk_chars };
            let req = json!({"messages":[{"role":"user","content":text}],"stream":true,"n":n});
            let chunks = sse_json(&sse(chat_completions(&ctx, req.to_string().as_bytes())));
            for i in 0..n {
                let mut got = String::new();
                for c in &chunks {
                    let ch = &c["choices"][0];
                    if ch["index"] == i {
                        let d = ch["delta"]["content"].as_str().unwrap_or("");
                        proptest::prop_assert!(d.chars().count() <= chunk_chars);
                        got.push_str(d);
                    }
                }
                proptest::prop_assert_eq!(&got, &text);
            }
        }
    }

    #[test]
    fn missing_messages_is_400() {
        let cfg = MockConfig::default();
        let ctx = Ctx {
            cfg: &cfg,
            chunk_chars: 4,
        };
        match chat_completions(&ctx, b"{\"model\":\"x\"}") {
            Reply::Json { status, body } => {
                assert_eq!(status, 400);
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["error"]["param"], "messages");
            }
            Reply::Sse(_) => panic!(),
        }
    }
}
