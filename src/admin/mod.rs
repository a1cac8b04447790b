//! Admin HTTP API on its own listener (axum on a dedicated thread + runtime): open `/healthz`,
//! `/readyz`, `/metrics`; JWT-protected, role-checked `/admin/*`. The application is reached only
//! through the [`AdminBackend`] trait.

pub mod backend;
pub mod config;
pub mod jwt;
pub mod server;

pub use backend::{AdminAuditEvent, AdminBackend};
pub use config::{AdminConfig, JwtAlgorithm, JwtConfig, Secret};
pub use jwt::{issue_token, parse_ttl, Principal, Role, Verifier};
pub use server::{spawn_admin, AdminServer};

/// Admin API errors.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Invalid `admin:` configuration (message names the key).
    #[error("{0}")]
    Config(String),
    /// The admin listener could not be bound.
    #[error("admin.listen {addr}: {message}")]
    Bind { addr: String, message: String },
    /// Something named in a request does not exist (→ 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// Invalid input (→ 400).
    #[error("{0}")]
    BadRequest(String),
    /// Anything else (→ 500).
    #[error("internal error: {0}")]
    Internal(String),
}
