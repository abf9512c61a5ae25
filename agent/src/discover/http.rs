//! The HTTP/1.1 that ONVIF's SOAP needs, without I/O: one POST request
//! out, one response in (Content-Length, chunked, or until close), all
//! bounded. The socket side is in [`super::client`].

use std::fmt;

/// Most bytes of a response head (status line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most bytes of a response body (the XML reader's own cap).
pub const MAX_BODY: usize = super::xml::MAX_INPUT;

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// `WWW-Authenticate` values (for HTTP Digest on a 401).
    pub challenges: Vec<String>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// More bytes are needed (only when the connection is still open).
    Incomplete,
    /// Not an HTTP response we can read.
    Bad(&'static str),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Incomplete => f.write_str("the answer ended early"),
            HttpError::Bad(what) => write!(f, "bad HTTP answer: {what}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// The request bytes of a SOAP 1.2 POST (`Connection: close`: one request
/// per connection keeps the reader simple; cameras are slow anyway).
pub fn post(host: &str, path: &str, action: &str, body: &str, auth: Option<&str>) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/soap+xml; charset=utf-8; action=\"{action}\"\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: sitewatch-agent\r\n",
        body.len()
    );
    if let Some(a) = auth {
        r.push_str("Authorization: ");
        r.push_str(a);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses `buf`, the bytes read so far; `closed` says the peer closed the
/// connection (then a body without a length ends there).
pub fn parse(buf: &[u8], closed: bool) -> Result<Response, HttpError> {
    let Some(head_end) = find(&buf[..buf.len().min(MAX_HEAD + 4)], b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(HttpError::Bad("headers longer than 16 KiB"));
        }
        return Err(if closed {
            HttpError::Bad("the connection closed inside the headers")
        } else {
            HttpError::Incomplete
        });
    };
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| HttpError::Bad("non-UTF-8 headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Bad("no HTTP/1.x status line"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or(HttpError::Bad("no status code"))?;
    let mut length = None;
    let mut chunked = false;
    let mut challenges = Vec::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            return Err(HttpError::Bad("a header line without `:`"));
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            let n = v
                .parse::<usize>()
                .map_err(|_| HttpError::Bad("a bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Bad("two different Content-Lengths"));
            }
            length = Some(n);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v
                .to_ascii_lowercase()
                .split(',')
                .any(|t| t.trim() == "chunked");
        } else if k.eq_ignore_ascii_case("www-authenticate") && challenges.len() < 8 {
            challenges.push(v.to_owned());
        }
    }
    let rest = &buf[head_end + 4..];
    let body = if chunked {
        dechunk(rest, closed)?
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(HttpError::Bad("a body larger than 64 KiB"));
        }
        match rest.get(..n) {
            Some(b) => b.to_vec(),
            None if closed => return Err(HttpError::Bad("the connection closed inside the body")),
            None => return Err(HttpError::Incomplete),
        }
    } else if closed {
        if rest.len() > MAX_BODY {
            return Err(HttpError::Bad("a body larger than 64 KiB"));
        }
        rest.to_vec()
    } else {
        return Err(HttpError::Incomplete);
    };
    Ok(Response {
        status,
        challenges,
        body,
    })
}

fn dechunk(mut rest: &[u8], closed: bool) -> Result<Vec<u8>, HttpError> {
    let more = || {
        if closed {
            HttpError::Bad("the connection closed inside a chunk")
        } else {
            HttpError::Incomplete
        }
    };
    let mut body = Vec::new();
    loop {
        let line_end = find(&rest[..rest.len().min(1024)], b"\r\n").ok_or_else(|| {
            if rest.len() >= 1024 {
                HttpError::Bad("a chunk size line longer than 1 KiB")
            } else {
                more()
            }
        })?;
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| HttpError::Bad("a bad chunk size"))?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| HttpError::Bad("a bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers are not read: nothing in them matters here.
            return Ok(body);
        }
        if size > MAX_BODY || body.len() + size > MAX_BODY {
            return Err(HttpError::Bad("a body larger than 64 KiB"));
        }
        let chunk = rest.get(..size).ok_or_else(more)?;
        body.extend_from_slice(chunk);
        rest = &rest[size..];
        match rest.get(..2) {
            Some(b"\r\n") => rest = &rest[2..],
            Some(_) => return Err(HttpError::Bad("a chunk without its CRLF")),
            None => return Err(more()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_chunks_and_close() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA",
            false,
        )
        .expect("ok");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        assert_eq!(parse(c, false).expect("chunked").body, b"abc");
        assert_eq!(parse(&c[..c.len() - 9], false), Err(HttpError::Incomplete));
        assert!(matches!(
            parse(&c[..c.len() - 9], true),
            Err(HttpError::Bad(_))
        ));
        let r = parse(b"HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"x\", nonce=\"n\"\r\n\r\nno", true).expect("close");
        assert_eq!(r.status, 401);
        assert_eq!(r.challenges, ["Digest realm=\"x\", nonce=\"n\""]);
        assert_eq!(r.body, b"no");
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n", false),
            Err(HttpError::Incomplete)
        );
        for bad in [
            &b"SSH-2.0\r\n\r\n"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200\r\nContent-Length: 999999999\r\n\r\n",
            b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
            b"HTTP/1.1 200\r\nbroken\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, true), Err(HttpError::Bad(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let req =
            String::from_utf8(post("h:80", "/p", "urn:a", "<x/>", Some("Digest x"))).expect("utf8");
        assert!(req.starts_with("POST /p HTTP/1.1\r\nHost: h:80\r\n"));
        assert!(
            req.contains("Content-Length: 4\r\n") && req.contains("Authorization: Digest x\r\n")
        );
        assert!(req.ends_with("\r\n\r\n<x/>"));
    }
}
