//! The `ProxyHttp` implementation: each hook is a one-line hand-off to the module that owns that
//! step of the data path, so the order of the request's life reads top to bottom here.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, Result};

use super::app::App;
use super::ctx::RequestCtx;
use super::{admission, finish, peer, request_body, respond, response};

/// The proxy service. Cheap to clone; all state lives in [`App`].
#[derive(Clone)]
pub struct JiminiProxy {
    pub app: Arc<App>,
}

#[async_trait]
impl ProxyHttp for JiminiProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.app.snapshot())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(err) = admission::admit(&self.app, session, ctx).await {
            let status = err.status;
            ctx.client_error = Some(err.clone());
            finish::audit_before_completion(&self.app, ctx, status);
            respond::write_client_error(session, &err, &ctx.request_id).await;
            ctx.client_error = Some(err);
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        peer::select(&self.app, session, ctx).await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        peer::prepare_request(&self.app, session, upstream_request, ctx)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        request_body::on_chunk(&self.app, body, end_of_stream, ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        peer::on_upstream_response(&self.app, session, upstream_response, ctx).await
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response::on_headers(&self.app, session, upstream_response, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        response::on_chunk(&self.app, body, end_of_stream, ctx)?;
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        peer::on_connect_failure(&self.app, peer, ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        peer::on_proxy_error(&self.app, peer, session, ctx, e, client_reused)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        respond::on_fail(&self.app, session, e, ctx).await
    }

    /// Pingora's own error logs use this; the default includes the query string, which can carry
    /// credentials (`?key=…`), so only the method, path and request id are logged.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!(
            "{} {} request_id={}",
            req.method,
            req.uri.path(),
            ctx.request_id
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.corked {
            // The response is complete (or abandoned): release what the kernel holds.
            ctx.corked = !super::cork::set(session, false);
        }
        finish::record(&self.app, session, e, ctx).await;
    }
}
