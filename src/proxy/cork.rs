//! TCP_CORK around responses Jimini buffers whole (non-streamed JSON it rewrites). Pingora writes
//! the response head as soon as `response_filter` returns and flushes it at once when the body is
//! chunked, i.e. before the upstream body has even been read; corking the client socket from
//! that point until the response is complete lets head and body leave in one transmission
//! (nginx's `tcp_nopush` idea): one wake-up of the client instead of two. The kernel sends
//! corked data after 200 ms at the latest, so a missed uncork costs latency, never a hang.

use pingora::proxy::Session;

/// Sets or clears TCP_CORK on the client connection. Returns whether it was applied (plain TCP
/// on Linux only; TLS and other transports are left alone).
pub fn set(session: &Session, on: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        // Plain TCP only: its UniqueID is the socket descriptor (TLS is left alone).
        let plain_tcp = session
            .digest()
            .is_some_and(|d| d.ssl_digest.is_none() && d.socket_digest.is_some());
        let Some(stream) = session.as_downstream().stream().filter(|_| plain_tcp) else {
            return false;
        };
        let fd = stream.id();
        let value: libc::c_int = on.into();
        // SAFETY: `fd` is the live socket of this session (borrowed, not closed or stored);
        // setsockopt only reads `value` for the given length. A wrong descriptor type makes the
        // call fail with an error code, which we treat as "not applied".
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (session, on);
        false
    }
}
