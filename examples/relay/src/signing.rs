//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{payload}"))>`
//! where `key` is the base64 text after `whsec_` decoded, `id` is the
//! `webhook-id` header and `timestamp` the `webhook-timestamp` header (Unix
//! seconds). For POST the payload is the body as sent. A GET has no body, so
//! the relay signs its request target (`/path?query`, exactly as sent) in its
//! place. While a secret is rotated, one signature per secret is sent,
//! separated by spaces; a receiver accepts if any matches.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A decoded signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>`.
    pub fn parse(s: &str) -> Result<Secret, String> {
        let b64 =
            s.strip_prefix("whsec_").ok_or("secret must start with \"whsec_\" (see `cuecast-relay gen-secret`)")?;
        let key = STANDARD.decode(b64).map_err(|e| format!("secret is not valid base64 after \"whsec_\": {e}"))?;
        if key.len() < 16 {
            return Err(format!("secret must hold at least 16 bytes, has {}", key.len()));
        }
        Ok(Secret(key))
    }

    /// A fresh secret from 24 random bytes, as `whsec_<base64>`.
    pub fn generate_text(random: [u8; 24]) -> String {
        format!("whsec_{}", STANDARD.encode(random))
    }
}

/// The `webhook-signature` value for one message, one `v1,` entry per secret.
pub fn sign(secrets: &[Secret], msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut out = String::new();
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_standard_webhooks_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let got = sign(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(got, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_sends_one_signature_per_secret() {
        let a = Secret::parse(&Secret::generate_text([1; 24])).unwrap();
        let b = Secret::parse(&Secret::generate_text([2; 24])).unwrap();
        let both = sign(&[a.clone(), b.clone()], "msg_1", 1, b"{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts, [sign(&[a], "msg_1", 1, b"{}"), sign(&[b], "msg_1", 1, b"{}")]);
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(Secret::parse("abc").is_err());
        assert!(Secret::parse("whsec_%%%").is_err());
        assert!(Secret::parse("whsec_AAAA").is_err(), "too short");
    }
}
