//! The signature every forwarded submission carries, and its check (used by the origin).
//!
//! HMAC-SHA256 (RFC 2104) with the region's own key over a canonical string:
//!
//! ```text
//! harbour-v1\n{METHOD}\n{path}\n{timestamp_ms}\n{region}\n{idempotency_key}\n{hex sha256(body)}
//! ```
//!
//! sent as one header, `X-Harbour-Signature: t={timestamp_ms},r={region},v1={hex}`, beside
//! `Idempotency-Key`; the origin computes the body digest itself. Binding the region into the
//! MAC, and keying each region separately, means a submission signed for one region verifies
//! nowhere else. (One header rather than one per value: each header is a cost per request at the
//! edge, and campaign, request id and receipt time travel, signed, in the body.)

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use harbour_policy::text::{push_hex, push_u64};

type HmacSha256 = Hmac<Sha256>;

/// Keys shorter than this are refused by configuration.
pub const MIN_KEY_BYTES: usize = 32;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// What a signature covers.
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub timestamp_ms: u64,
    pub region: &'a str,
    pub idempotency_key: &'a str,
    pub body_sha256_hex: &'a str,
}

impl Signed<'_> {
    pub fn canonical(&self) -> String {
        let mut text = String::with_capacity(
            48 + self.path.len() + self.idempotency_key.len() + self.body_sha256_hex.len(),
        );
        for part in ["harbour-v1", self.method, self.path] {
            text.push_str(part);
            text.push('\n');
        }
        push_u64(&mut text, self.timestamp_ms);
        for part in [self.region, self.idempotency_key, self.body_sha256_hex] {
            text.push('\n');
            text.push_str(part);
        }
        text
    }
}

/// A region's key, prepared once: the HMAC state after absorbing the padded key is cloned per
/// signature instead of being recomputed.
#[derive(Clone)]
pub struct SigningKey {
    prepared: HmacSha256,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    pub fn new(secret: &[u8]) -> Option<SigningKey> {
        if secret.len() < MIN_KEY_BYTES {
            return None;
        }
        HmacSha256::new_from_slice(secret)
            .ok()
            .map(|prepared| SigningKey { prepared })
    }

    /// The `X-Harbour-Signature` value: `t=<timestamp ms>,r=<region>,v1=<64 hex digits>`.
    pub fn sign(&self, signed: &Signed) -> String {
        let mut mac = self.prepared.clone();
        mac.update(signed.canonical().as_bytes());
        let mut header = String::with_capacity(96);
        header.push_str("t=");
        push_u64(&mut header, signed.timestamp_ms);
        header.push_str(",r=");
        header.push_str(signed.region);
        header.push_str(",v1=");
        push_hex(&mut header, &mac.finalize().into_bytes());
        header
    }

    /// HMAC of the concatenated `parts`, for harbour's own tokens (whose messages start with a
    /// prefix of their own, so one can never stand in for a forward signature).
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.prepared.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether a received header value signs exactly `signed`: its timestamp and region must be
    /// `signed`'s, and the MAC is compared in constant time.
    pub fn verify(&self, signed: &Signed, header: &str) -> bool {
        let Some(parsed) = SignatureHeader::parse(header) else {
            return false;
        };
        if parsed.timestamp_ms != signed.timestamp_ms || parsed.region != signed.region {
            return false;
        }
        let Some(received) = unhex(parsed.mac_hex) else {
            return false;
        };
        let mut mac = self.prepared.clone();
        mac.update(signed.canonical().as_bytes());
        mac.verify_slice(&received).is_ok()
    }
}

/// A parsed `X-Harbour-Signature` value. Parameters are comma-separated `name=value` pairs in
/// any order (spaces around them ignored); each of `t`, `r`, `v1` exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureHeader<'a> {
    pub timestamp_ms: u64,
    pub region: &'a str,
    pub mac_hex: &'a str,
}

impl<'a> SignatureHeader<'a> {
    pub fn parse(value: &'a str) -> Option<SignatureHeader<'a>> {
        let (mut timestamp_ms, mut region, mut mac_hex) = (None, None, None);
        for part in value.split(',') {
            let (name, content) = part.trim().split_once('=')?;
            let slot_was_empty = match name {
                "t" => timestamp_ms.replace(content.parse::<u64>().ok()?).is_none(),
                "r" => region.replace(content).is_none(),
                "v1" => mac_hex.replace(content).is_none(),
                _ => return None,
            };
            if !slot_was_empty {
                return None;
            }
        }
        Some(SignatureHeader {
            timestamp_ms: timestamp_ms?,
            region: region.filter(|r| !r.is_empty())?,
            mac_hex: mac_hex?,
        })
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sample<'a>(body_hash: &'a str) -> Signed<'a> {
        Signed {
            method: "POST",
            path: "/v1/submissions",
            timestamp_ms: 1_764_000_000_000,
            region: "eu",
            idempotency_key: "k-123",
            body_sha256_hex: body_hash,
        }
    }

    #[test]
    fn sha256_known_vectors() {
        // FIPS 180-2 examples.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2 checks the MAC itself; the key is short, so use the raw type.
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signature_vector_is_stable() {
        let body_hash = sha256_hex(br#"{"campaign":"spring-launch"}"#);
        let signed = sample(&body_hash);
        assert_eq!(
            signed.canonical(),
            format!("harbour-v1\nPOST\n/v1/submissions\n1764000000000\neu\nk-123\n{body_hash}")
        );
        let key = SigningKey::new(KEY).unwrap();
        let signature = key.sign(&signed);
        // Computed independently: printf '%s' "$canonical" | openssl dgst -sha256 -hmac "$KEY"
        assert_eq!(
            signature,
            "t=1764000000000,r=eu,v1=3bb73e3f109bd6f849c99093f7a003d29c2faa8f8b24d39713fd4fc5d0a81de0"
        );
        assert!(key.verify(&signed, &signature));
        // Parameter order and spacing do not matter.
        let reordered =
            "v1=3bb73e3f109bd6f849c99093f7a003d29c2faa8f8b24d39713fd4fc5d0a81de0, r=eu, t=1764000000000";
        assert!(key.verify(&signed, reordered));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let body_hash = sha256_hex(b"body");
        let key = SigningKey::new(KEY).unwrap();
        let signature = key.sign(&sample(&body_hash));
        let other_hash = sha256_hex(b"body2");
        let variants = [
            Signed {
                region: "cn",
                ..sample(&body_hash)
            },
            Signed {
                path: "/v1/other",
                ..sample(&body_hash)
            },
            Signed {
                timestamp_ms: 1,
                ..sample(&body_hash)
            },
            Signed {
                idempotency_key: "k-124",
                ..sample(&body_hash)
            },
            Signed {
                method: "PUT",
                ..sample(&body_hash)
            },
            sample(&other_hash),
        ];
        for variant in variants {
            assert!(!key.verify(&variant, &signature), "{variant:?}");
        }
        let other_key = SigningKey::new(b"another key that is long enough!!").unwrap();
        assert!(!other_key.verify(&sample(&body_hash), &signature));
        let mac = signature.rsplit_once("v1=").unwrap().1;
        let junk = [
            String::new(),
            format!("v1={mac}"),
            format!("t=1764000000000,v1={mac}"),
            format!("t=1764000000000,r=,v1={mac}"),
            format!("t=1764000000000,r=eu,r=eu,v1={mac}"),
            format!("t=1764000000000,r=eu,v1={mac},x=1"),
            format!("t=x,r=eu,v1={mac}"),
            "t=1764000000000,r=eu,v1=zz".to_owned(),
            format!("t=1764000000000,r=eu,v2={mac}"),
            signature[1..].to_owned(),
        ];
        for junk in junk {
            assert!(!key.verify(&sample(&body_hash), &junk), "{junk}");
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(SigningKey::new(b"short").is_none());
    }
}
