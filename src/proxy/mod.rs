//! The Pingora glue: one `ProxyHttp` implementation whose hooks call the pure modules (openai,
//! rules, upstream, audit, telemetry). Files follow the data path: `ctx` (per-request state),
//! `admission` (caller, route, limits), `request_body` (parse, scan, rewrite or block),
//! `peer` (upstream selection, headers, retries), `response` (JSON and SSE rewriting),
//! `finish` (metrics, trace, audit, breaker outcome) and `respond` (errors the client sees).

mod admission;
pub mod app;
mod cork;
mod ctx;
mod finish;
mod hooks;
mod peer;
mod request_body;
mod respond;
mod response;

pub use app::{App, ConfigSource, Snapshot};
pub use ctx::RequestCtx;
pub use hooks::JiminiProxy;
