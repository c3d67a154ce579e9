//! TLS on the submissions listener (`--tls-cert`, `--tls-key`): a client that trusts the
//! origin's certificate stores a submission over https; plain HTTP on that port gets no answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{get, sqlite_store, temp_dir, Entry, Origin};

#[test]
fn submissions_over_tls() {
    let dir = temp_dir("tls");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let origin = Origin::start(
        &sqlite_store(&dir),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        origin.log_text().contains("\"tls\":true"),
        "{}",
        origin.log_text()
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connect = || {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config.clone()), name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", origin.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        rustls::StreamOwned::new(connection, tcp)
    };
    let entry = Entry::new("tls-key-0123456789abcdef", "tls@example.org");
    let stored = entry.send_on(&mut connect()).unwrap();
    assert_eq!(stored.status, 201, "{}", stored.body);
    let replayed = entry.send_on(&mut connect()).unwrap();
    assert_eq!(replayed.status, 200);
    assert_eq!(replayed.json()["receipt"], stored.json()["receipt"]);
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 1);

    // Plain HTTP on the TLS port: no HTTP answer, nothing stored.
    let plain = common::try_request(origin.port, "GET", "/health", &[], b"");
    assert!(
        plain
            .as_ref()
            .map_or(true, |r| !r.head.starts_with("HTTP/1.1 2")),
        "{plain:?}"
    );
    let other = Entry::new("tls-key-plain-0123456789", "plain@example.org");
    assert!(common::try_request(
        origin.port,
        "POST",
        "/v1/submissions",
        &[],
        other.body().as_bytes()
    )
    .map_or(true, |r| r.status != 201));
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 1);
}

#[test]
fn a_missing_certificate_is_a_clear_error_at_start() {
    let dir = temp_dir("tls-missing");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_harbour-origin"))
        .args(["--region", "eu", "--listen", "127.0.0.1:0", "--store"])
        .arg(sqlite_store(&dir))
        .args([
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .env("HARBOUR_KEY_EU", common::KEY)
        .env("HARBOUR_PERSON_KEY_EU", common::PERSON_KEY)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--tls-cert /nonexistent/cert.pem"),
        "{stderr}"
    );
}

/// `--tls-client-ca`: a client presenting a certificate issued by that CA (the edge's, in
/// production) is served; one without a certificate, or with one from another CA, does not get
/// past the handshake, and nothing is stored.
#[test]
fn only_clients_with_a_certificate_from_the_client_ca_complete_a_handshake() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = temp_dir("mtls");
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let (edge_ca, other_ca) = (ca("edge CA"), ca("someone else's CA"));
    let client = |issuer: &CertifiedIssuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["edge".to_owned()])
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (cert.der().clone(), key.serialize_der())
    };
    let paths = [
        ("cert.pem", server.cert.pem()),
        ("key.pem", server.signing_key.serialize_pem()),
        ("client-ca.pem", edge_ca.pem()),
    ]
    .map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    });
    let origin = Origin::start(
        &sqlite_store(&dir),
        &[
            "--tls-cert",
            &paths[0],
            "--tls-key",
            &paths[1],
            "--tls-client-ca",
            &paths[2],
        ],
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.cert.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let with_cert = |issuer| {
        let (cert, key) = client(issuer);
        builder
            .clone()
            .with_client_auth_cert(vec![cert], key.try_into().unwrap())
            .unwrap()
    };
    let send = |config: rustls::ClientConfig, key: &str| {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", origin.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let entry = Entry::new(key, &format!("{key}@example.org"));
        entry.send_on(&mut rustls::StreamOwned::new(connection, tcp))
    };
    let edge = send(with_cert(&edge_ca), "mtls-edge-0123456789abcdef").unwrap();
    assert_eq!(edge.status, 201, "{}", edge.body);
    let anonymous = send(
        builder.clone().with_no_client_auth(),
        "mtls-anon-0123456789",
    );
    assert!(anonymous.is_err(), "{anonymous:?}");
    let stranger = send(with_cert(&other_ca), "mtls-other-0123456789");
    assert!(stranger.is_err(), "{stranger:?}");
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 1);
    assert_eq!(get(origin.ops_port, "/v1/count").json()["received"], 1);
    assert!(
        origin.log_text().contains("\"tls_client_ca\":true"),
        "{}",
        origin.log_text()
    );
}
