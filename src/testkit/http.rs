//! Minimal HTTP/1.1 framing for the stand-ins: requests parsed by
//! httparse, responses written with a content length.

use std::io::{self, Read, Write};

/// Largest request head or body the stand-in accepts.
const MAX_REQUEST: usize = 64 * 1024 * 1024;

/// One parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub close: bool,
}

/// The head of one request; its body is still on the stream.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    pub path: String,
    pub content_length: usize,
    pub content_type: Option<String>,
    pub close: bool,
}

/// Reads one request from `stream`, keeping bytes beyond it in `pending`.
/// `Ok(None)` means the peer closed cleanly between requests.
pub(crate) fn read_request<S: Read>(
    stream: &mut S,
    pending: &mut Vec<u8>,
) -> io::Result<Option<Request>> {
    let Some(head) = read_head(stream, pending)? else {
        return Ok(None);
    };
    if head.content_length > MAX_REQUEST {
        return Err(invalid("request body too large"));
    }
    let mut chunk = [0u8; 16 * 1024];
    while pending.len() < head.content_length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        pending.extend_from_slice(&chunk[..n]);
    }
    let body = pending.drain(..head.content_length).collect();
    Ok(Some(Request {
        method: head.method,
        path: head.path,
        body,
        close: head.close,
    }))
}

/// Reads the head of one request from `stream` and removes it from
/// `pending`, which keeps the bytes after it (the start of the body).
/// `Ok(None)` means the peer closed cleanly between requests.
pub(crate) fn read_head<S: Read>(
    stream: &mut S,
    pending: &mut Vec<u8>,
) -> io::Result<Option<Head>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((head, head_len)) = parse_head(pending)? {
            pending.drain(..head_len);
            return Ok(Some(head));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return if pending.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// Parses the head of one request at the start of `pending`: the head and
/// its length in bytes, or `Ok(None)` while it is not complete.
pub(crate) fn parse_head(pending: &[u8]) -> io::Result<Option<(Head, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(pending) {
        Ok(httparse::Status::Complete(head_len)) => {
            let mut head = Head {
                method: parsed.method.unwrap_or_default().to_string(),
                path: parsed.path.unwrap_or_default().to_string(),
                content_length: 0,
                content_type: None,
                close: false,
            };
            for h in parsed.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    head.content_length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| invalid("bad content-length"))?;
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(invalid("chunked requests are not supported"));
                } else if h.name.eq_ignore_ascii_case("connection") {
                    head.close = h.value.eq_ignore_ascii_case(b"close");
                } else if h.name.eq_ignore_ascii_case("content-type") {
                    head.content_type = Some(String::from_utf8_lossy(h.value).into_owned());
                }
            }
            Ok(Some((head, head_len)))
        }
        Ok(httparse::Status::Partial) if pending.len() > MAX_REQUEST => {
            Err(invalid("request head too large"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(invalid(&format!("malformed request: {e}"))),
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// The reason phrase of the status codes the stand-in uses.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// The status line and headers of a JSON response of `length` bytes.
pub(crate) fn response_head(status: u16, length: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n",
        reason(status)
    )
    .into_bytes()
}

/// Writes a whole response and flushes it.
pub(crate) fn write_response<W: Write>(stream: &mut W, status: u16, body: &[u8]) -> io::Result<()> {
    let mut out = response_head(status, body.len());
    out.extend_from_slice(body);
    stream.write_all(&out)?;
    stream.flush()
}
