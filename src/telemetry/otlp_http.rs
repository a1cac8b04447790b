//! The HTTP/1.1 client that carries OTLP/HTTP exports: one keep-alive connection, blocking
//! I/O on the SDK's batch-export thread (never a request thread), bounded by the export
//! timeout. It replaces the reqwest blocking client, which ran a Tokio runtime on a second
//! thread and cost ~4 µs of CPU per traced request in hand-offs between the two.
//!
//! Plain `http://` only (a local collector or sidecar); the exporter rejects `https://`
//! earlier with a clear error. Responses with `Content-Length`, chunked or close-delimited
//! bodies are read (up to 4 MiB); a stale keep-alive connection is retried once on a fresh
//! one when it fails before any response byte arrived.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

/// Largest response body accepted from a collector (what the SDK's own clients allow).
const MAX_RESPONSE_BODY: usize = 4 << 20;
/// Largest response head (status line + headers).
const MAX_RESPONSE_HEAD: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum OtlpHttpError {
    #[error("OTLP endpoint '{0}': only http:// is supported by this client")]
    Scheme(String),
    #[error("OTLP endpoint '{0}' has no host")]
    NoHost(String),
    #[error("collector response: {0}")]
    Protocol(&'static str),
    #[error("collector I/O: {0}")]
    Io(#[from] io::Error),
}

/// Blocking OTLP/HTTP client with one pooled connection.
#[derive(Debug)]
pub struct PlainHttpClient {
    timeout: Duration,
    idle: Mutex<Option<TcpStream>>,
}

impl PlainHttpClient {
    /// `timeout` bounds connect, each write and each read.
    pub fn new(timeout: Duration) -> PlainHttpClient {
        PlainHttpClient {
            timeout: timeout.max(Duration::from_millis(1)),
            idle: Mutex::new(None),
        }
    }

    fn take_idle(&self) -> Option<TcpStream> {
        self.idle.lock().ok().and_then(|mut g| g.take())
    }

    fn put_idle(&self, s: TcpStream) {
        if let Ok(mut g) = self.idle.lock() {
            *g = Some(s);
        }
    }

    fn connect(&self, host: &str, port: u16) -> Result<TcpStream, OtlpHttpError> {
        let mut last = None;
        for addr in (host, port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    s.set_read_timeout(Some(self.timeout))?;
                    s.set_write_timeout(Some(self.timeout))?;
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
            .into())
    }

    /// Sends one request on the idle connection when there is one, else on a new one.
    pub fn send(&self, request: &Request<Bytes>) -> Result<Response<Bytes>, OtlpHttpError> {
        let uri = request.uri();
        if uri.scheme_str() != Some("http") {
            return Err(OtlpHttpError::Scheme(uri.to_string()));
        }
        let host = uri
            .host()
            .ok_or_else(|| OtlpHttpError::NoHost(uri.to_string()))?;
        // `http://[::1]:4318` gives the host with its brackets; the resolver wants the address.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = uri.port_u16().unwrap_or(80);
        let head = request_head(request);
        if let Some(conn) = self.take_idle() {
            match exchange(&conn, &head, request.body()) {
                Ok((resp, reusable)) => {
                    if reusable {
                        self.put_idle(conn);
                    }
                    return Ok(resp);
                }
                // The collector closed the idle connection: nothing was processed, retry.
                Err(Exchange::BeforeResponse(_)) => {}
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
        let conn = self.connect(host, port)?;
        match exchange(&conn, &head, request.body()) {
            Ok((resp, reusable)) => {
                if reusable {
                    self.put_idle(conn);
                }
                Ok(resp)
            }
            Err(Exchange::BeforeResponse(e) | Exchange::Failed(e)) => Err(e),
        }
    }
}

#[async_trait]
impl HttpClient for PlainHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        // Blocking is intended: the SDK drives exports with `block_on` on its own thread.
        self.send(&request).map_err(|e| Box::new(e) as HttpError)
    }
}

fn request_head(request: &Request<Bytes>) -> Vec<u8> {
    let uri = request.uri();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or("", |a| a.as_str());
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(request.method().as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(authority.as_bytes());
    head.extend_from_slice(b"\r\ncontent-length: ");
    head.extend_from_slice(request.body().len().to_string().as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in request.headers() {
        if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

enum Exchange {
    /// Failed before any response byte: safe to retry on a fresh connection.
    BeforeResponse(OtlpHttpError),
    Failed(OtlpHttpError),
}

fn exchange(
    conn: &TcpStream,
    head: &[u8],
    body: &[u8],
) -> Result<(Response<Bytes>, bool), Exchange> {
    let mut w = conn;
    let sent = w.write_all(head).and_then(|()| w.write_all(body));
    if let Err(e) = sent {
        return Err(Exchange::BeforeResponse(e.into()));
    }
    let mut reader = BufReader::with_capacity(8 << 10, conn);
    match reader.fill_buf() {
        Ok([]) => {
            return Err(Exchange::BeforeResponse(OtlpHttpError::Protocol(
                "connection closed before a response",
            )))
        }
        Ok(_) => {}
        Err(e) => return Err(Exchange::BeforeResponse(e.into())),
    }
    read_response(&mut reader).map_err(Exchange::Failed)
}

fn read_response<R: BufRead>(r: &mut R) -> Result<(Response<Bytes>, bool), OtlpHttpError> {
    let mut head_len = 0usize;
    let mut line = Vec::with_capacity(128);
    let status = loop {
        let status_line = read_line(r, &mut line, &mut head_len)?;
        let status = parse_status_line(status_line)?;
        // 1xx interim responses (100 Continue) are followed by the real one.
        if !(100..200).contains(&status) {
            break status;
        }
        while !read_line(r, &mut line, &mut head_len)?.is_empty() {}
    };
    let mut builder = http::Response::builder().status(status);
    let mut content_length = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        let l = read_line(r, &mut line, &mut head_len)?;
        if l.is_empty() {
            break;
        }
        let colon = l
            .iter()
            .position(|&b| b == b':')
            .ok_or(OtlpHttpError::Protocol("header line without ':'"))?;
        let name = &l[..colon];
        let value = l[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(OtlpHttpError::Protocol("bad content-length"))?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value
                .split(|&b| b == b',')
                .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        builder = builder.header(name, value);
    }
    let no_body = status == 204 || status == 304;
    let body = if no_body {
        Vec::new()
    } else if chunked {
        read_chunked(r, &mut line, &mut head_len)?
    } else if let Some(n) = content_length {
        if n > MAX_RESPONSE_BODY {
            return Err(OtlpHttpError::Protocol("response body over 4 MiB"));
        }
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        body
    } else {
        close = true;
        let mut body = Vec::new();
        r.take(MAX_RESPONSE_BODY as u64 + 1)
            .read_to_end(&mut body)?;
        if body.len() > MAX_RESPONSE_BODY {
            return Err(OtlpHttpError::Protocol("response body over 4 MiB"));
        }
        body
    };
    let resp = builder
        .body(Bytes::from(body))
        .map_err(|_| OtlpHttpError::Protocol("invalid response header"))?;
    Ok((resp, !close))
}

fn parse_status_line(l: &[u8]) -> Result<u16, OtlpHttpError> {
    let rest = l
        .strip_prefix(b"HTTP/1.")
        .ok_or(OtlpHttpError::Protocol("not an HTTP/1.x response"))?;
    let code = rest
        .get(2..5)
        .filter(|c| rest.get(1) == Some(&b' ') && c.iter().all(u8::is_ascii_digit))
        .ok_or(OtlpHttpError::Protocol("bad status line"))?;
    Ok(code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
}

/// One CRLF- (or LF-) terminated line without its terminator, counted against the head limit.
fn read_line<'a, R: BufRead>(
    r: &mut R,
    buf: &'a mut Vec<u8>,
    total: &mut usize,
) -> Result<&'a [u8], OtlpHttpError> {
    buf.clear();
    let n = r
        .by_ref()
        .take((MAX_RESPONSE_HEAD - (*total).min(MAX_RESPONSE_HEAD)) as u64)
        .read_until(b'\n', buf)?;
    *total += n;
    if buf.last() != Some(&b'\n') {
        return Err(OtlpHttpError::Protocol(if n == 0 {
            "connection closed mid-response"
        } else {
            "response head too long"
        }));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(buf)
}

fn read_chunked<R: BufRead>(
    r: &mut R,
    line: &mut Vec<u8>,
    head_len: &mut usize,
) -> Result<Vec<u8>, OtlpHttpError> {
    let mut body = Vec::new();
    loop {
        // Chunk-size lines and trailers count against the head limit too.
        let l = read_line(r, line, head_len)?;
        let hex = l
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let size = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or(OtlpHttpError::Protocol("bad chunk size"))?;
        if size == 0 {
            while !read_line(r, line, head_len)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_RESPONSE_BODY {
            return Err(OtlpHttpError::Protocol("response body over 4 MiB"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        if !read_line(r, line, head_len)?.is_empty() {
            return Err(OtlpHttpError::Protocol("chunk not followed by CRLF"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    fn post(port: u16, body: &'static [u8]) -> Request<Bytes> {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://127.0.0.1:{port}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .header("x-tenant", "t1")
            .body(Bytes::from_static(body))
            .expect("request")
    }

    /// A server that answers each request on a connection with the next canned response,
    /// reporting what it received; `close_after` closes a connection after that many requests.
    fn server(
        responses: Vec<&'static str>,
        close_after: usize,
    ) -> (u16, mpsc::Receiver<(usize, String)>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut responses = responses.into_iter();
            for (conn_no, s) in l.incoming().enumerate() {
                let Ok(s) = s else { return };
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut w = s;
                for _ in 0..close_after {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            break;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if head.is_empty() {
                        break;
                    }
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body);
                    head.push_str(&String::from_utf8_lossy(&body));
                    let _ = tx.send((conn_no, head));
                    let Some(resp) = responses.next() else { return };
                    let _ = w.write_all(resp.as_bytes());
                }
            }
        });
        (port, rx)
    }

    #[test]
    fn sends_head_and_body_and_reuses_the_connection() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 2\r\n\r\nok";
        let (port, rx) = server(vec![ok, ok], 10);
        let c = PlainHttpClient::new(Duration::from_secs(5));
        for _ in 0..2 {
            let resp = c.send(&post(port, b"spans")).expect("send");
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.body().as_ref(), b"ok");
            assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
        }
        let (c1, r1) = rx.recv().expect("first");
        let (c2, _) = rx.recv().expect("second");
        assert_eq!(c1, c2, "second export reused the keep-alive connection");
        assert!(r1.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{r1}");
        assert!(r1.contains(&format!("host: 127.0.0.1:{port}\r\n")), "{r1}");
        assert!(r1.contains("content-length: 5\r\n"), "{r1}");
        assert!(r1.contains("x-tenant: t1\r\n"), "{r1}");
        assert!(r1.ends_with("\r\n\r\nspans"), "{r1}");
    }

    #[test]
    fn exports_to_an_ipv6_literal_endpoint() {
        let l = TcpListener::bind("[::1]:0").expect("IPv6 loopback");
        let port = l.local_addr().expect("addr").port();
        let t = thread::spawn(move || {
            let (mut c, _) = l.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).expect("read");
            c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://[::1]:{port}/v1/traces"))
            .body(Bytes::from_static(b"x"))
            .expect("request");
        let resp = PlainHttpClient::new(Duration::from_secs(5))
            .send(&req)
            .expect("send over IPv6");
        assert_eq!(resp.status(), 200);
        let head = t.join().expect("server");
        assert!(head.contains(&format!("host: [::1]:{port}\r\n")), "{head}");
    }

    #[test]
    fn reads_chunked_and_close_delimited_bodies_and_error_statuses() {
        let chunked = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: 1\r\n\r\n";
        let (port, _rx) = server(vec![chunked], 10);
        let c = PlainHttpClient::new(Duration::from_secs(5));
        let resp = c.send(&post(port, b"x")).expect("chunked");
        assert_eq!(resp.body().as_ref(), b"abcde");

        let eof = "HTTP/1.0 503 Service Unavailable\r\nretry-after: 3\r\n\r\nbusy";
        let (port, _rx) = server(vec![eof], 1);
        let c = PlainHttpClient::new(Duration::from_secs(5));
        let resp = c.send(&post(port, b"x")).expect("close-delimited");
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "3");
        assert_eq!(resp.body().as_ref(), b"busy");
    }

    #[test]
    fn a_closed_idle_connection_is_retried_once_on_a_fresh_one() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        // Each connection serves one request, then the server closes it.
        let (port, rx) = server(vec![ok, ok, ok], 1);
        let c = PlainHttpClient::new(Duration::from_secs(5));
        for _ in 0..3 {
            assert_eq!(c.send(&post(port, b"x")).expect("send").status(), 200);
        }
        let conns: Vec<usize> = rx.try_iter().map(|(c, _)| c).collect();
        assert_eq!(conns, vec![0, 1, 2]);
    }

    #[test]
    fn malformed_responses_and_bad_endpoints_are_errors() {
        for bad in [
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 2x0 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        ] {
            let (port, _rx) = server(vec![bad], 1);
            let c = PlainHttpClient::new(Duration::from_secs(5));
            assert!(c.send(&post(port, b"x")).is_err(), "{bad:?} accepted");
        }
        let c = PlainHttpClient::new(Duration::from_secs(1));
        let https = http::Request::builder()
            .uri("https://127.0.0.1:1/v1/traces")
            .body(Bytes::new())
            .expect("req");
        assert!(matches!(c.send(&https), Err(OtlpHttpError::Scheme(_))));
        // Nothing listens on a just-freed port: connection refused, quickly.
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        assert!(matches!(
            c.send(&post(port, b"x")),
            Err(OtlpHttpError::Io(_))
        ));
    }

    #[test]
    fn a_silent_collector_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let c = PlainHttpClient::new(Duration::from_millis(200));
        // Accepted by the kernel's backlog, never answered.
        assert!(c.send(&post(port, b"x")).is_err());
        drop(l);
    }
}
