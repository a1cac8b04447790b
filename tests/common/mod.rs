//! Shared helpers for integration tests (`mod common;`). Other helpers may add modules here.
pub mod gen;
pub mod harness;
pub mod otlp;
