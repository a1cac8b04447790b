//! `POST /v1/embeddings` (deterministic unit vectors derived from each input; float or base64
//! encoding) and `GET /v1/models`, `GET /v1/models/{id}`.

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use super::common::{approx_tokens, parse_object, splitmix64, Ctx, Flavor, Reply};

/// Vector length when the request does not ask for `dimensions`.
pub(crate) const DEFAULT_DIMENSIONS: usize = 16;
const MAX_DIMENSIONS: usize = 4096;
/// Fixed `created` timestamp for listed models (they never change).
const MODEL_CREATED: u64 = 1_700_000_000;

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// One input: its hash seed and its size in (approximate) tokens.
struct Input {
    seed: u64,
    tokens: u64,
}

fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn token_input(ids: &[Value]) -> Option<Input> {
    let mut bytes = Vec::with_capacity(ids.len() * 8);
    for id in ids {
        bytes.extend_from_slice(&id.as_u64()?.to_le_bytes());
    }
    Some(Input {
        seed: fnv1a(bytes) ^ 0x746f_6b65_6e73, // distinct from a text with the same bytes
        tokens: ids.len() as u64,
    })
}

fn text_input(s: &str) -> Input {
    Input {
        seed: fnv1a(s.bytes()),
        tokens: approx_tokens(s.chars().count()),
    }
}

/// Inputs in order, or None when `input` is missing or malformed.
fn inputs(v: &Value) -> Option<Vec<Input>> {
    match v {
        Value::String(s) => Some(vec![text_input(s)]),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.iter().all(Value::is_number) => {
            token_input(items).map(|i| vec![i])
        }
        Value::Array(items) => items
            .iter()
            .map(|it| match it {
                Value::String(s) => Some(text_input(s)),
                Value::Array(ids) if !ids.is_empty() => token_input(ids),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Deterministic unit-length vector for `seed`.
pub(crate) fn vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims as u64)
        .map(|i| {
            let r = splitmix64(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            // Top 24 bits → [-1, 1).
            ((r >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// `POST /v1/embeddings`.
pub(crate) fn embeddings(ctx: &Ctx<'_>, body: &[u8]) -> Reply {
    let req = match parse_object(body, Flavor::OpenAi) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(items) = req.get("input").and_then(inputs) else {
        return Reply::bad_request(
            Flavor::OpenAi,
            "'input' must be a non-empty string, array of strings, or array of token arrays.",
            Some("input"),
        );
    };
    let dims = req
        .get("dimensions")
        .and_then(Value::as_u64)
        .map(|d| (d as usize).clamp(1, MAX_DIMENSIONS))
        .unwrap_or(DEFAULT_DIMENSIONS);
    let base64 = match req.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Reply::bad_request(
                Flavor::OpenAi,
                "'encoding_format' must be 'float' or 'base64'.",
                Some("encoding_format"),
            )
        }
    };
    let prompt_tokens = items.iter().map(|i| i.tokens).sum();
    let data = items
        .iter()
        .enumerate()
        .map(|(index, it)| {
            let v = vector(it.seed, dims);
            let embedding = if base64 {
                let mut bytes = Vec::with_capacity(v.len() * 4);
                v.iter()
                    .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Float(v)
            };
            Embedding {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    Reply::ok(&EmbeddingList {
        object: "list",
        data,
        model: ctx.model(&req),
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

fn model(id: &str) -> Model<'_> {
    Model {
        id,
        object: "model",
        created: MODEL_CREATED,
        owned_by: "jimini-mock",
    }
}

/// `GET /v1/models`: the configured model plus a few well-known names.
pub(crate) fn list_models(ctx: &Ctx<'_>) -> Reply {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Model<'a>>,
    }
    let mut ids: Vec<&str> = vec![&ctx.cfg.model];
    for id in ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"] {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Reply::ok(&List {
        object: "list",
        data: ids.into_iter().map(model).collect(),
    })
}

/// `GET /v1/models/{id}`: the mock serves every model name, so any id is found.
pub(crate) fn get_model(id: &str) -> Reply {
    Reply::ok(&model(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockConfig;
    use serde_json::json;

    fn call(req: Value) -> (u16, Value) {
        let cfg = MockConfig::default();
        let ctx = Ctx {
            cfg: &cfg,
            chunk_chars: 4,
        };
        match embeddings(&ctx, req.to_string().as_bytes()) {
            Reply::Json { status, body } => {
                (status.as_u16(), serde_json::from_slice(&body).unwrap())
            }
            Reply::Sse(_) => panic!(),
        }
    }

    #[test]
    fn deterministic_unit_vectors() {
        let (_, a) = call(json!({"input": "hello", "model": "e"}));
        let (_, b) = call(json!({"input": ["hello", "world"]}));
        assert_eq!(a["data"][0]["embedding"], b["data"][0]["embedding"]);
        assert_ne!(b["data"][0]["embedding"], b["data"][1]["embedding"]);
        assert_eq!(b["data"][1]["index"], 1);
        let v: Vec<f64> = a["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), DEFAULT_DIMENSIONS);
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
        assert_eq!(a["model"], "e");
    }

    #[test]
    fn base64_matches_float() {
        let (_, f) = call(json!({"input": [[1, 2, 3]], "dimensions": 5}));
        let (_, b) =
            call(json!({"input": [[1, 2, 3]], "dimensions": 5, "encoding_format": "base64"}));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let floats: Vec<f32> = f["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(decoded, floats);
        assert_eq!(decoded.len(), 5);
    }

    #[test]
    fn bad_inputs() {
        for req in [
            json!({}),
            json!({"input": []}),
            json!({"input": [{"a":1}]}),
            json!({"input": "x", "encoding_format": "hex"}),
        ] {
            let (status, v) = call(req.clone());
            assert_eq!(status, 400, "{req}");
            assert_eq!(v["error"]["type"], "invalid_request_error");
        }
    }
}
