//! HTTP for the operations tools: a blocking client (ureq; loopback never through a proxy) and a
//! small server for the live view, which answers `GET` on 127.0.0.1 and closes each connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use ureq::Agent;

/// The clients: one for this machine (never through a proxy the environment names), one for
/// other hosts (which honours it).
#[derive(Clone)]
pub struct Client {
    local: Agent,
    remote: Agent,
}

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("not JSON ({e})"))
    }
}

/// Whether `url` is on this machine.
pub fn is_loopback(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Client {
    /// Every call gives up after `timeout`; `connections` kept open per host.
    pub fn new(timeout: Duration, connections: usize) -> Client {
        let agent = |proxy: bool| {
            let builder = Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .max_idle_connections_per_host(connections)
                .max_idle_connections(connections * 8);
            let builder = if proxy { builder } else { builder.proxy(None) };
            builder.build().new_agent()
        };
        Client {
            local: agent(false),
            remote: agent(true),
        }
    }

    fn agent(&self, url: &str) -> &Agent {
        if is_loopback(url) {
            &self.local
        } else {
            &self.remote
        }
    }

    pub fn get(&self, url: &str) -> Result<Answer, String> {
        let response = self
            .agent(url)
            .get(url)
            .call()
            .map_err(|e| format!("{url}: {e}"))?;
        read(url, response)
    }

    /// POSTs `body` with `headers`.
    pub fn post(&self, url: &str, headers: &[(&str, &str)], body: &str) -> Result<Answer, String> {
        let mut request = self.agent(url).post(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send(body.as_bytes())
            .map_err(|e| format!("{url}: {e}"))?;
        read(url, response)
    }
}

fn read(url: &str, mut response: ureq::http::Response<ureq::Body>) -> Result<Answer, String> {
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(Answer { status, body })
}

/// What a server route answers: status, content type, extra headers, body.
pub struct Page {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Page {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Page {
        Page {
            status: 200,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn not_found() -> Page {
        Page {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: b"not found\n".to_vec(),
        }
    }
}

/// The longest request head read.
const MAX_HEAD_BYTES: u64 = 8 * 1024;

/// Reads one request's method and target from `stream` (its headers are read and dropped).
fn request_line(stream: &TcpStream) -> Option<(String, String)> {
    let mut reader = BufReader::new(stream.take(MAX_HEAD_BYTES));
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if line == "\r\n" || line == "\n" => return Some((method, target)),
            Ok(_) => {}
        }
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

/// Answers one connection: `route(path_and_query)` for a `GET` (or `HEAD`), 405 for anything
/// else. Every answer carries `headers` (the caller's security headers) and closes.
pub fn answer(
    mut stream: TcpStream,
    headers: &[(&str, &str)],
    route: &dyn Fn(&str) -> Page,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let Some((method, target)) = request_line(&stream) else {
        return Ok(());
    };
    let page = match method.as_str() {
        "GET" | "HEAD" => route(&target),
        _ => Page {
            status: 405,
            content_type: "text/plain; charset=utf-8",
            headers: vec![("allow", "GET, HEAD".into())],
            body: b"method not allowed\n".to_vec(),
        },
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
        page.status,
        status_text(page.status),
        page.content_type,
        page.body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    for (name, value) in &page.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(&page.body)?;
    }
    stream.flush()
}

/// Binds `address`, which must be on this machine: the live view shows what the operations
/// listeners show, which is nobody else's business.
pub fn bind_loopback(address: &str) -> Result<TcpListener, String> {
    if !is_loopback(&format!("http://{address}")) {
        return Err(format!(
            "{address}: the live view listens on this machine only (127.0.0.1:PORT)"
        ));
    }
    TcpListener::bind(address).map_err(|e| format!("cannot listen on {address}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_told_apart() {
        for url in [
            "http://127.0.0.1:8703",
            "http://localhost/x",
            "http://[::1]:80",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "https://eu-1.origin.example",
            "http://10.0.0.1:9703",
            "http://127.example.org",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
        assert!(bind_loopback("0.0.0.0:0").is_err());
    }
}
