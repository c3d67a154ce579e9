//! The listener's limits against a real origin process: slow bodies hold no place in flight and
//! are cut off at the body deadline (sooner when they trickle below the minimum rate), a body
//! over the cap is refused and never kept (what follows is read and thrown away, under the same
//! rate), the connection cap holds (a connection past it waits and is then served; requests
//! still arriving make room first, then idle ones), idle keep-alive connections close after their
//! timeout, a TLS handshake that does not finish is cut off, and a sender that half-closes after
//! its request still gets its answer.
//!
//! Every wait is bounded; timing assertions leave wide margins (a loaded 2-core machine), and
//! what they prove is also checked through the origin's own counts (`/v1/load`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get, sqlite_store, temp_dir, Entry, Origin};

/// What no test waits longer than for one thing to happen.
const PATIENCE: Duration = Duration::from_secs(20);

fn start(name: &str, extra: &[&str]) -> Origin {
    Origin::start(&sqlite_store(&temp_dir(name)), extra)
}

fn load(origin: &Origin) -> serde_json::Value {
    get(origin.ops_port, "/v1/load").json()
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// A connection that sends a submission's head with `Content-Length: length`, one byte of the
/// body, and then nothing.
fn slow_body(port: u16, length: usize) -> TcpStream {
    let mut stream = connect(port);
    let head = format!(
        "POST /v1/submissions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         idempotency-key: slow-0123456789abcdef\r\nx-harbour-signature: t=1,r=eu,v1=00\r\n\
         content-length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The body's first byte (white space may open a JSON text).
    stream.write_all(b" ").unwrap();
    stream
}

/// Reads until the origin closes the connection (or `PATIENCE` passes): what it sent, and how
/// long that took from `since`.
fn until_closed(stream: &mut TcpStream, since: Instant) -> (String, Duration) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open after {:?}", since.elapsed())
            }
            // A reset is a close too.
            Err(_) => break,
        }
    }
    (
        String::from_utf8_lossy(&bytes).into_owned(),
        since.elapsed(),
    )
}

/// Waits (bounded) until `/v1/load` satisfies `ready`.
fn wait_for_load(origin: &Origin, what: &str, ready: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let load = load(origin);
        if ready(&load) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {load}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request on a kept-alive connection (no `Connection: close`); the status.
fn keep_alive_request(reader: &mut BufReader<TcpStream>, path: &str) -> u16 {
    write!(
        reader.get_mut(),
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    status
}

/// The attack, at the size the cap allows: many connections each holding a body open.
/// With two places in flight, signed submissions are still stored while they stay open, and
/// none of them ever took a place.
#[test]
fn slow_bodies_cannot_hold_a_place_in_flight() {
    let origin = start(
        "slow-hold",
        &[
            "--max-in-flight",
            "2",
            "--body-timeout",
            "120",
            "--min-body-rate",
            "0",
        ],
    );
    let slow: Vec<TcpStream> = (0..40).map(|_| slow_body(origin.port, 16_000)).collect();
    wait_for_load(&origin, "40 slow connections accepted", |l| {
        l["connections"]["accepted"].as_u64() >= Some(40)
    });
    let started = Instant::now();
    for i in 0..10 {
        let entry = Entry::new(
            &format!("held-key-{i:012}"),
            &format!("held{i}@example.org"),
        );
        let reply = origin.submit(&entry);
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let took = started.elapsed();
    let load = load(&origin);
    // Still open: they were there all along, and never in flight.
    assert!(load["connections"]["open"].as_u64() >= Some(40), "{load}");
    assert_eq!(load["shed"], 0, "{load}");
    assert!(load["max_in_flight_seen"].as_u64() <= Some(2), "{load}");
    assert!(
        took < Duration::from_secs(60),
        "10 submissions took {took:?}"
    );
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 10);
    drop(slow);
}

/// The same connections with a body deadline of 2 s: each is answered 408 and closed, after the
/// deadline and well before the wait runs out; nothing was in flight.
#[test]
fn slow_bodies_are_cut_off_at_the_body_deadline() {
    let origin = start("slow-cut", &["--body-timeout", "2", "--min-body-rate", "0"]);
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..20).map(|_| slow_body(origin.port, 16_000)).collect();
    for stream in &mut slow {
        let (answer, took) = until_closed(stream, started);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(took >= Duration::from_millis(1500), "cut after {took:?}");
    }
    let load = load(&origin);
    assert_eq!(load["connections"]["refused_bodies"], 20, "{load}");
    assert_eq!(load["max_in_flight_seen"], 0, "{load}");
    assert_eq!(get(origin.ops_port, "/v1/count").json()["received"], 0);
}

/// A body trickling at 10 bytes a second, under a minimum of 100 (and a body deadline of 120 s):
/// cut off about a second in, long before the deadline.
#[test]
fn a_body_below_the_minimum_rate_is_cut_off_before_the_deadline() {
    let origin = start(
        "trickle",
        &["--body-timeout", "120", "--min-body-rate", "100"],
    );
    let mut stream = slow_body(origin.port, 16_000);
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < PATIENCE {
        if stream.write_all(b" ").is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {took:?}: {answer:?}"
    );
    assert!(took < PATIENCE, "still open after {took:?}");
    assert_eq!(load(&origin)["connections"]["refused_bodies"], 1);
}

/// A `Content-Length` over the cap (32 KiB by default) is refused and never held in flight; what
/// a trickling client sends is thrown away until the minimum rate cuts it off (about a second,
/// though the body deadline is two minutes), and it is then answered 413.
#[test]
fn a_body_over_the_cap_is_refused_and_its_trickle_cut_off() {
    let origin = start("too-large", &["--body-timeout", "120"]);
    let started = Instant::now();
    let mut stream = slow_body(origin.port, 65_536);
    let (answer, took) = until_closed(&mut stream, started);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("body_too_large"), "{answer:?}");
    // Held while it trickles (the minimum rate is judged after the first second), not answered
    // at once: a client that loops on refused bodies pays for each in time, not a round trip.
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(15)).contains(&took),
        "held {took:?}"
    );
    assert_eq!(load(&origin)["max_in_flight_seen"], 0);
    assert_eq!(load(&origin)["connections"]["refused_bodies"], 1);
}

/// A client that sends the whole of a body over the cap reads its 413, each time: the origin
/// reads the rest and throws it away (quickly: it came at once) before it answers and closes.
/// Nothing is held in flight.
#[test]
fn a_client_that_sends_a_body_over_the_cap_whole_reads_its_413() {
    let origin = start("too-large-whole", &[]);
    for round in 0..5 {
        let mut stream = connect(origin.port);
        // Larger than the cap and than what the kernel buffers for an unread socket.
        let body = vec![b' '; 192 * 1024];
        let head = format!(
            "POST /v1/submissions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let (answer, _) = until_closed(&mut stream, Instant::now());
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "round {round}: {answer:?}"
        );
    }
    assert_eq!(load(&origin)["connections"]["refused_bodies"], 5);
    assert_eq!(load(&origin)["max_in_flight_seen"], 0);
}

/// A client that waits for `100 Continue` before sending a body over the cap is answered 413 at
/// once, without the go-ahead (with no rate check and a two-minute body deadline, waiting for
/// its body would hold it past `PATIENCE`).
#[test]
fn a_body_over_the_cap_waiting_for_continue_is_refused_at_once() {
    let origin = start(
        "too-large-continue",
        &["--body-timeout", "120", "--min-body-rate", "0"],
    );
    let mut stream = connect(origin.port);
    let head =
        "POST /v1/submissions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                expect: 100-continue\r\ncontent-length: 65536\r\n\r\n";
    let started = Instant::now();
    stream.write_all(head.as_bytes()).unwrap();
    let (answer, took) = until_closed(&mut stream, started);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(!answer.contains("100 Continue"), "{answer:?}");
    assert!(took < PATIENCE, "waited {took:?}");
}

/// At the cap, a connection whose body is still on its way makes room before a keep-alive
/// connection that was just used: the new entry is served, the slow one is closed, and the
/// kept-alive one still answers. No deadline could have cut the slow one (two minutes, no
/// minimum rate).
#[test]
fn at_the_cap_a_slow_body_makes_room_before_a_busy_keep_alive_connection() {
    let origin = start(
        "cap-order",
        &[
            "--max-connections",
            "2",
            "--idle-timeout",
            "120",
            "--body-timeout",
            "120",
            "--min-body-rate",
            "0",
        ],
    );
    let mut slow = slow_body(origin.port, 1_000);
    wait_for_load(&origin, "the slow body open", |l| {
        l["connections"]["open"] == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut kept = BufReader::new(connect(origin.port));
    assert_eq!(keep_alive_request(&mut kept, "/"), 404);
    let entry = Entry::new("cap-order-0123456789abcdef", "order@example.org");
    let reply = entry.send(origin.port);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let (answer, _) = until_closed(&mut slow, Instant::now());
    assert_eq!(answer, "", "closed without an answer");
    assert_eq!(
        keep_alive_request(&mut kept, "/"),
        404,
        "the kept-alive one still answers"
    );
    let load = load(&origin);
    assert!(load["connections"]["drained"].as_u64() >= Some(1), "{load}");
    assert_eq!(load["connections"]["max_open_seen"], 2, "{load}");
}

/// Below the cap, a connection that never sends a head is cut at the head deadline. Four such
/// connections fill a cap of four; a fifth is not refused but waits in the backlog, and is
/// served once they make room (a request still on its way after `INCOMPLETE_AT_CAP` does, at the
/// cap). The origin never held more than four.
#[test]
fn the_connection_cap_holds_and_a_connection_past_it_waits_its_turn() {
    let origin = start("cap", &["--max-connections", "4", "--head-timeout", "3"]);
    let started = Instant::now();
    let mut alone = connect(origin.port);
    let (answer, took) = until_closed(&mut alone, started);
    assert_eq!(answer, "", "no head, no answer");
    assert!(took >= Duration::from_secs(2), "cut after {took:?}");
    assert_eq!(load(&origin)["connections"]["timed_out"], 1);
    let mut silent: Vec<TcpStream> = (0..4).map(|_| connect(origin.port)).collect();
    wait_for_load(&origin, "4 connections open", |l| {
        l["connections"]["open"] == 4
    });
    let fifth = std::thread::spawn({
        let port = origin.port;
        move || Entry::new("cap-key-0123456789abcdef", "cap@example.org").send(port)
    });
    for stream in &mut silent {
        let (answer, _) = until_closed(stream, started);
        assert_eq!(answer, "", "no head, no answer");
    }
    let reply = fifth.join().unwrap();
    assert_eq!(reply.status, 201, "{}", reply.body);
    let load = load(&origin);
    assert_eq!(load["connections"]["max_open_seen"], 4, "{load}");
    assert_eq!(load["connections"]["cap"], 4, "{load}");
    assert!(load["connections"]["drained"].as_u64() >= Some(1), "{load}");
}

/// A kept-alive connection with nothing more to ask is closed after the idle timeout (2 s).
#[test]
fn an_idle_keep_alive_connection_is_closed_after_its_timeout() {
    let origin = start("idle", &["--idle-timeout", "2"]);
    let mut reader = BufReader::new(connect(origin.port));
    assert_eq!(keep_alive_request(&mut reader, "/v1/submissions"), 405);
    let answered = Instant::now();
    // Still open, and still taking requests, before the timeout.
    assert_eq!(keep_alive_request(&mut reader, "/"), 404);
    let answered_again = Instant::now();
    let (rest, took) = until_closed(reader.get_mut(), answered_again);
    assert_eq!(rest, "");
    assert!(
        took >= Duration::from_millis(500),
        "closed {took:?} after the answer, {:?} after the first",
        answered.elapsed()
    );
    assert!(load(&origin)["connections"]["timed_out"].as_u64() >= Some(1));
}

/// Every connection is an open file. Under a limit of 256 the default cap (4,096) is lowered to
/// what fits, with a warning that says how to raise the limit; a cap given on the command line
/// that does not fit is refused at start, saying why.
#[test]
fn the_connection_cap_fits_the_open_file_limit_or_the_origin_says_why() {
    let store = sqlite_store(&temp_dir("open-files"));
    let mut lowered = Origin::spawn_with_open_files(256, &store, &[]);
    lowered.wait_ready();
    assert_eq!(load(&lowered)["connections"]["cap"], 128);
    assert!(
        lowered
            .log_text()
            .contains("connections capped at 128, not 4096"),
        "{}",
        lowered.log_text()
    );
    let store = sqlite_store(&temp_dir("open-files-given"));
    let mut refused = Origin::spawn_with_open_files(256, &store, &["--max-connections", "4096"]);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = refused.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(2));
    assert!(
        refused
            .log_text()
            .contains("--max-connections 4096 needs about 4224 open files"),
        "{}",
        refused.log_text()
    );
}

/// At the cap, idle keep-alive connections are closed to make room: with a cap of two and both
/// held idle (idle timeout 120 s), a third connection is served once they have been idle for
/// `IDLE_AT_CAP` (a second), long before their idle timeout.
#[test]
fn idle_connections_make_room_at_the_cap() {
    let origin = start(
        "drain",
        &["--max-connections", "2", "--idle-timeout", "120"],
    );
    let mut idle: Vec<BufReader<TcpStream>> = (0..2)
        .map(|_| BufReader::new(connect(origin.port)))
        .collect();
    for reader in &mut idle {
        assert_eq!(keep_alive_request(reader, "/"), 404);
    }
    let started = Instant::now();
    let entry = Entry::new("drain-key-0123456789abcdef", "drain@example.org");
    let reply = entry.send(origin.port);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "served after {took:?}");
    let load = load(&origin);
    assert!(load["connections"]["drained"].as_u64() >= Some(1), "{load}");
    assert_eq!(load["connections"]["max_open_seen"], 2, "{load}");
}

fn tls_origin(name: &str, extra: &[&str]) -> (Origin, rustls::ClientConfig) {
    let dir = temp_dir(name);
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let origin = Origin::start(&sqlite_store(&dir), &args);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (origin, config)
}

/// A TLS handshake that never finishes (nothing sent, or half a ClientHello) is cut off after
/// the handshake timeout (1 s); a real client is served beside them.
#[test]
fn a_slow_tls_handshake_is_cut_off() {
    let (origin, config) = tls_origin("tls-slow", &["--handshake-timeout", "1"]);
    let started = Instant::now();
    let mut silent = connect(origin.port);
    let mut partial = connect(origin.port);
    // A TLS record header announcing a 512-byte handshake message, and five bytes of it.
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(client, connect(origin.port));
    let entry = Entry::new("tls-slow-key-0123456789abcdef", "tls-slow@example.org");
    assert_eq!(entry.send_on(&mut tls).unwrap().status, 201);
    for stream in [&mut silent, &mut partial] {
        let (answer, took) = until_closed(stream, started);
        assert_eq!(answer, "");
        assert!(took >= Duration::from_millis(500), "cut after {took:?}");
    }
    let load = load(&origin);
    assert!(
        load["connections"]["timed_out"].as_u64() >= Some(2),
        "{load}"
    );
}

/// SIGTERM: the listener stops taking connections, an idle connection is closed, a request
/// under way (its head in, half its body still to come) is finished and answered, and the
/// process exits cleanly within the 5 s grace.
#[test]
fn sigterm_finishes_requests_under_way_then_exits() {
    let mut origin = start("sigterm", &["--body-timeout", "60"]);
    let mut idle = BufReader::new(connect(origin.port));
    assert_eq!(keep_alive_request(&mut idle, "/"), 404);
    let entry = Entry::new("sigterm-key-0123456789abcdef", "sigterm@example.org");
    let body = entry.body();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut under_way = connect(origin.port);
    let mut head = format!(
        "POST /v1/submissions HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in entry.headers(&body) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    under_way.write_all(head.as_bytes()).unwrap();
    under_way.write_all(first.as_bytes()).unwrap();
    wait_for_load(&origin, "both connections open", |l| {
        l["connections"]["open"] == 2
    });
    let terminated = Instant::now();
    origin.terminate();
    let (rest_of_idle, _) = until_closed(idle.get_mut(), terminated);
    assert_eq!(rest_of_idle, "");
    // The listening socket is closed: a new connection is refused.
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", origin.port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        std::thread::sleep(Duration::from_millis(20));
    }
    under_way.write_all(rest.as_bytes()).unwrap();
    let (answer, _) = until_closed(&mut under_way, terminated);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer:?}");
    let status = origin.wait_exit(PATIENCE).expect("exited");
    assert!(status.success(), "{status}");
    assert!(terminated.elapsed() < PATIENCE);
}

/// The head of a signed submission of `body`, with `extra` header lines.
fn signed_head(entry: &Entry, body: &str, extra: &str) -> String {
    let mut head = format!(
        "POST /v1/submissions HTTP/1.1\r\nhost: 127.0.0.1\r\n{extra}content-length: {}\r\n",
        body.len()
    );
    for (name, value) in entry.headers(body) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A signed submission of 20 KB (under the 32 KiB cap) arriving in pieces, well above the
/// minimum rate: read whole across its frames and stored.
#[test]
fn a_large_body_in_pieces_is_read_whole() {
    let origin = start("pieces", &[]);
    let mut entry = Entry::new("pieces-key-0123456789abcdef", "pieces@example.org");
    entry.fields["note"] = "x".repeat(20_000).into();
    let body = entry.body();
    let mut stream = connect(origin.port);
    let head = signed_head(&entry, &body, "connection: close\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    for piece in body.as_bytes().chunks(4096) {
        stream.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let (answer, _) = until_closed(&mut stream, Instant::now());
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer:?}");
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 1);
}

/// A sender that half-closes its side once the request is written still gets its answer: the
/// listener does not read ahead while a route handles a request (hyper's half-close), so the
/// end of the sender's stream is not taken for a dropped connection.
#[test]
fn a_sender_that_half_closes_after_its_request_is_answered() {
    let origin = start("half-close", &[]);
    let entry = Entry::new("half-close-key-0123456789abcdef", "half@example.org");
    let body = entry.body();
    let mut stream = connect(origin.port);
    let mut request = signed_head(&entry, &body, "");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let (answer, _) = until_closed(&mut stream, Instant::now());
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer:?}");
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 1);
}
