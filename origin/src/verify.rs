//! Checks of an incoming submission, in order: the signature header's shape and the MAC over
//! the request (with the region and timestamp the header claims) first, so a stranger learns
//! nothing from the answer but 401; then, for a request harbour really signed, its region tag,
//! its timestamp window, and the body's own region field. Pure, so each refusal is unit-tested.

use harbour_contract::entry::ReceivedEntry;
use harbour_contract::http::METHOD;
use harbour_contract::response::Code;
use harbour_contract::signature::{hex, sha256_hex, SignatureHeader, Signed, SigningKey};
use sha2::{Digest, Sha256};

/// How far a submission's timestamp may be from the origin's clock (RFC 9421 style replay
/// window; harbour's retries stay well within it).
pub const MAX_SKEW_MS: u64 = 300_000;

/// The headers harbour sets, as received.
#[derive(Debug, Default, Clone)]
pub struct Received<'a> {
    /// `X-Harbour-Signature`: `t=<ms>,r=<region>,v1=<hex>`.
    pub signature: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
}

/// A verified submission, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub campaign: String,
    pub idempotency_key: String,
    /// Digest of the canonical `fields` object: what a replay must match.
    pub fields_sha256: String,
    pub platform_country: String,
    pub declared_country: Option<String>,
    /// The notice the visitor was shown, `(locale, version)`: the record of consent.
    pub notice: Option<(String, String)>,
    pub payload: serde_json::Value,
}

pub fn verify(
    region: &str,
    key: &SigningKey,
    path: &str,
    received: &Received,
    body: &[u8],
    now_ms: u64,
) -> Result<Verified, Code> {
    let header = received.signature.unwrap_or("");
    let tag = SignatureHeader::parse(header).ok_or(Code::BadSignature)?;
    let idempotency_key = received.idempotency_key.ok_or(Code::BadSignature)?;
    // A changed body changes its digest and so fails the signature.
    let body_hash = sha256_hex(body);
    let signed = Signed {
        method: METHOD,
        path,
        timestamp_ms: tag.timestamp_ms,
        region: tag.region,
        idempotency_key,
        body_sha256_hex: &body_hash,
    };
    if !key.verify(&signed, header) {
        return Err(Code::BadSignature);
    }
    // Only this region's key made that MAC: a misdirected or old request from harbour itself.
    if tag.region != region {
        return Err(Code::WrongRegion);
    }
    if tag.timestamp_ms.abs_diff(now_ms) > MAX_SKEW_MS {
        return Err(Code::StaleTimestamp);
    }
    let entry = ReceivedEntry::read(body)?;
    if entry.region.as_deref() != Some(region) {
        return Err(Code::WrongRegion);
    }
    Ok(Verified {
        fields_sha256: json_sha256_hex(&entry.fields),
        campaign: entry.campaign,
        idempotency_key: idempotency_key.to_owned(),
        platform_country: entry.platform_country,
        declared_country: entry.declared_country,
        notice: entry.notice,
        payload: entry.payload,
    })
}

/// The SHA-256 of a value's compact JSON text (what `to_string` writes), hashed as it is
/// written rather than gathered into a string first.
fn json_sha256_hex(value: &serde_json::Value) -> String {
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(Sha256::new());
    // Writing to memory only fails if serialization does, which a `Value` never does; the
    // text's digest stays the fallback so the answer is the same either way.
    match serde_json::to_writer(&mut hashing, value) {
        Ok(()) => hex(&hashing.0.finalize()),
        Err(_) => sha256_hex(value.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_digest_is_that_of_their_json_text() {
        let values = [
            serde_json::json!({}),
            serde_json::json!({"email": "ada@example.org", "name": "Zoë \"Z\" \u{1}\n", "n": 12}),
            serde_json::json!({"b": [1, 2.5, null, true], "a": {"x": "ｆｕｌｌ", "y": "😀"}}),
        ];
        for value in values {
            assert_eq!(
                json_sha256_hex(&value),
                sha256_hex(value.to_string().as_bytes()),
                "{value}"
            );
        }
    }

    const KEY: &[u8] = b"eu-secret-0123456789abcdefghijklmnop";
    const PATH: &str = "/v1/submissions";
    const NOW: u64 = 1_764_000_000_000;

    fn body(region: &str) -> Vec<u8> {
        format!(r#"{{"campaign":"c1","region":"{region}","signals":{{"platform_country":"IT","declared_country":"IT"}},"fields":{{"name":"A"}}}}"#).into_bytes()
    }

    fn signature(key: &SigningKey, region: &str, ts: u64, body: &[u8]) -> String {
        key.sign(&Signed {
            method: "POST",
            path: PATH,
            timestamp_ms: ts,
            region,
            idempotency_key: "key-0123456789abcdef",
            body_sha256_hex: &sha256_hex(body),
        })
    }

    fn check(
        region_tag: &str,
        ts: u64,
        body: &[u8],
        tamper: Option<&[u8]>,
    ) -> Result<Verified, Code> {
        let key = SigningKey::new(KEY).unwrap();
        let sig = signature(&key, region_tag, ts, body);
        let received = Received {
            signature: Some(&sig),
            idempotency_key: Some("key-0123456789abcdef"),
        };
        verify("eu", &key, PATH, &received, tamper.unwrap_or(body), NOW)
    }

    #[test]
    fn accepts_a_good_submission() {
        let v = check("eu", NOW, &body("eu"), None).unwrap();
        assert_eq!(v.campaign, "c1");
        assert_eq!(v.platform_country, "IT");
    }

    #[test]
    fn refusals() {
        assert_eq!(check("cn", NOW, &body("cn"), None), Err(Code::WrongRegion));
        assert_eq!(check("eu", NOW, &body("cn"), None), Err(Code::WrongRegion));
        assert_eq!(
            check("eu", NOW - MAX_SKEW_MS - 1, &body("eu"), None),
            Err(Code::StaleTimestamp)
        );
        assert_eq!(
            check("eu", NOW + MAX_SKEW_MS + 1, &body("eu"), None),
            Err(Code::StaleTimestamp)
        );
        assert_eq!(
            check("eu", NOW, &body("eu"), Some(&body("eu")[1..])),
            Err(Code::BadSignature)
        );
    }

    #[test]
    fn forged_signature_is_refused() {
        let key = SigningKey::new(KEY).unwrap();
        let forger = SigningKey::new(b"not-the-region-key-but-long-enough!!").unwrap();
        let b = body("eu");
        let sig = signature(&forger, "eu", NOW, &b);
        let received = Received {
            signature: Some(&sig),
            idempotency_key: Some("key-0123456789abcdef"),
        };
        assert_eq!(
            verify("eu", &key, PATH, &received, &b, NOW),
            Err(Code::BadSignature)
        );
        // Every other check waits for the MAC: a forged request learns only 401, whatever its
        // region tag or timestamp.
        for (tag, ts) in [("cn", NOW), ("eu", NOW - MAX_SKEW_MS - 1), ("cn", 1)] {
            let body = body(tag);
            let sig = signature(&forger, tag, ts, &body);
            let forged = Received {
                signature: Some(&sig),
                idempotency_key: Some("key-0123456789abcdef"),
            };
            assert_eq!(
                verify("eu", &key, PATH, &forged, &body, NOW),
                Err(Code::BadSignature),
                "{tag} {ts}"
            );
        }
        let unsigned = Received {
            signature: None,
            ..received
        };
        assert_eq!(
            verify("eu", &key, PATH, &unsigned, &b, NOW),
            Err(Code::BadSignature)
        );
    }
}
