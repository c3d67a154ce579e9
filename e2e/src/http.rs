//! A raw HTTP/1.1 client over loopback: it sends exactly the bytes a test asks for (bad framing
//! and hostile headers included) and reads the answer by its own framing, so a server that keeps
//! the connection open despite `Connection: close` still yields a complete response.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The longest any request of the harness waits for its answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; `Null` when it is not JSON (a test then fails on the field it reads).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends raw request bytes and reads the whole response (the request says `Connection: close`).
pub fn raw(port: u16, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.write_all(request)?;
    read_response(&mut stream)
}

/// What a server did with a request it should refuse: its answer, or what happened instead.
#[derive(Debug)]
pub enum Refusal {
    Answered(Response),
    /// The connection closed (or was reset) without a complete answer.
    Closed(String),
    /// No answer within the bound.
    Silent,
}

/// Sends `request` and waits at most `bound` for an answer. Write errors are not the end: a
/// server may answer and close before it has read everything (a header too large), and its
/// answer is still what counts. Returns how it ended and when.
pub fn send_within(port: u16, request: &[u8], bound: Duration) -> (Refusal, Duration) {
    let started = Instant::now();
    let outcome = (|| {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(bound))?;
        // A write cut short by the server's close leaves its answer, if any, to be read.
        let _ = stream.write_all(request);
        read_response(&mut stream)
    })();
    let refusal = match outcome {
        Ok(response) => Refusal::Answered(response),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Refusal::Silent
        }
        Err(e) => Refusal::Closed(e.to_string()),
    };
    (refusal, started.elapsed())
}

/// Reads until the response is complete by its own framing, or the peer closes.
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if let Some(response) = complete_response(&bytes) {
            return Ok(response);
        }
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return parse_response(&bytes).ok_or_else(|| {
                std::io::Error::other(format!(
                    "unparseable response: {:?}",
                    String::from_utf8_lossy(&bytes)
                ))
            });
        }
        bytes.extend_from_slice(&buffer[..n]);
    }
}

/// The response, once `bytes` holds all of it.
fn complete_response(bytes: &[u8]) -> Option<Response> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    let body = &bytes[split + 4..];
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let complete = if let Some(length) = length {
        body.len() >= length
    } else if head.contains("transfer-encoding: chunked") {
        dechunk(body).is_some()
    } else {
        status == 204 || status == 304 || (100..200).contains(&status)
    };
    complete.then(|| parse_response(bytes)).flatten()
}

fn parse_response(bytes: &[u8]) -> Option<Response> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&bytes[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(bytes.get(..size)?);
        bytes = bytes.get(size + 2..)?;
    }
}

/// A request with the usual framing; `headers` are added as given. Panics when no answer comes:
/// every caller expects one.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\naccept-encoding: identity\r\n"
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    raw(port, &bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Whether a GET of `path` on `port` is answered 200.
pub fn responds(port: u16, path: &str) -> bool {
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    matches!(raw(port, request.as_bytes()), Ok(r) if r.status == 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A loopback server that does `serve` with each of its first `n` connections.
    fn server(n: usize, serve: fn(TcpStream)) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n).flatten() {
                serve(stream);
            }
        });
        port
    }

    const BOUND: Duration = Duration::from_millis(500);

    #[test]
    fn an_answer_within_the_bound_is_an_answer() {
        let port = server(1, |mut s| {
            let _ = s.write_all(b"HTTP/1.1 431 Too Large\r\ncontent-length: 0\r\n\r\n");
        });
        let (outcome, took) = send_within(port, b"GET / HTTP/1.1\r\n\r\n", BOUND);
        assert!(matches!(outcome, Refusal::Answered(r) if r.status == 431));
        assert!(took < BOUND);
    }

    #[test]
    fn a_server_that_hangs_is_silent_not_an_answer() {
        let port = server(1, |s| {
            std::thread::sleep(Duration::from_secs(2));
            drop(s);
        });
        let (outcome, took) = send_within(port, b"GET / HTTP/1.1\r\n\r\n", BOUND);
        assert!(matches!(outcome, Refusal::Silent), "{outcome:?}");
        assert!(took >= BOUND);
    }

    #[test]
    fn a_dropped_connection_is_closed_not_an_answer() {
        let port = server(1, drop);
        let (outcome, _) = send_within(port, b"GET / HTTP/1.1\r\n\r\n", BOUND);
        assert!(matches!(outcome, Refusal::Closed(_)), "{outcome:?}");
    }
}
