//! Jimini: a streaming policy proxy for OpenAI-compatible LLM APIs, built on Pingora.
//!
//! The data path, by module: `proxy` (Pingora glue) → `openai` (parse bodies and SSE) → `scan`
//! (detectors) and `rules` (packs, decisions) → `upstream` (routing, breakers, limits) → `audit`
//! and `telemetry` (records, metrics, traces). `admin` serves the operator API; `mock` is the
//! built-in OpenAI-compatible upstream used offline and by the tests.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
mod json_text;
pub mod mock;
pub mod openai;
mod percent;
pub mod proxy;
pub mod proxy_admin;
pub mod rules;
pub mod scan;
pub mod server;
pub mod telemetry;
pub mod upstream;
