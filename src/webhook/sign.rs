//! Webhook signatures. PURE: no I/O, time passed in.
//!
//! Two schemes are sent on every delivery (DESIGN §8):
//! * `Signature: <hex HMAC-SHA256(secret, raw body)>`: what spatie/laravel-webhook-client's
//!   `DefaultSignatureValidator` checks (`hash_hmac('sha256', $request->getContent(), $secret)`),
//!   keyed with the secret string's bytes exactly as configured.
//! * Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds of the attempt) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`. For a secret
//!   `whsec_<base64>` the key is the base64-decoded part (as every Standard Webhooks library
//!   does); for any other secret the key is the secret string's bytes (so a Standard Webhooks
//!   library must then be given `whsec_` + base64(secret)).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The spatie header name.
pub const SIGNATURE_HEADER: &str = "Signature";
/// Standard Webhooks: the message id (our event id).
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// Standard Webhooks: the attempt time, Unix seconds.
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks: `v1,<base64>`.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

/// Why a secret is refused at configuration time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Empty secret.
    #[error("the webhook secret is empty")]
    Empty,
    /// Longer than 1024 bytes.
    #[error("the webhook secret is longer than 1024 bytes")]
    TooLong,
    /// `whsec_` followed by something that is not base64.
    #[error("a whsec_ secret must be followed by base64")]
    BadBase64,
}

/// A webhook signing secret. Its `Debug` never shows the value, so it cannot end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    raw: String,
    standard_key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Validates a secret and derives its Standard Webhooks key.
    pub fn new(raw: impl Into<String>) -> Result<Self, SecretError> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(SecretError::Empty);
        }
        if raw.len() > 1024 {
            return Err(SecretError::TooLong);
        }
        let standard_key = match raw.strip_prefix("whsec_") {
            Some(b64) => {
                let key = B64.decode(b64).map_err(|_| SecretError::BadBase64)?;
                if key.is_empty() {
                    return Err(SecretError::BadBase64);
                }
                key
            }
            None => raw.as_bytes().to_vec(),
        };
        Ok(Self { raw, standard_key })
    }

    /// The secret as configured (for the spatie `Signature`). Do not log it.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The Standard Webhooks HMAC key.
    pub fn standard_key(&self) -> &[u8] {
        &self.standard_key
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `hex(HMAC-SHA256(secret bytes, body))`, the spatie/laravel-webhook-client `Signature`.
pub fn spatie_signature(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
}

/// `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`, the Standard Webhooks signature.
pub fn standard_signature(key: &[u8], id: &str, timestamp_secs: u64, body: &[u8]) -> String {
    let ts = timestamp_secs.to_string();
    let mac = hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", B64.encode(mac))
}

/// The signature headers of one attempt, in sending order. Without a secret only `webhook-id`
/// and `webhook-timestamp` are sent.
pub fn signature_headers(
    secret: Option<&WebhookSecret>,
    id: &str,
    timestamp_secs: u64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let mut h = Vec::with_capacity(4);
    if let Some(secret) = secret {
        h.push((SIGNATURE_HEADER, spatie_signature(secret.expose(), body)));
    }
    h.push((WEBHOOK_ID_HEADER, id.to_owned()));
    h.push((WEBHOOK_TIMESTAMP_HEADER, timestamp_secs.to_string()));
    if let Some(secret) = secret {
        h.push((
            WEBHOOK_SIGNATURE_HEADER,
            standard_signature(secret.standard_key(), id, timestamp_secs, body),
        ));
    }
    h
}

/// Verifies a Standard Webhooks `webhook-signature` header value (space-separated list of
/// `v1,<sig>`) in constant time. For receivers written in Rust and for tests.
pub fn verify_standard(
    key: &[u8],
    id: &str,
    timestamp_secs: u64,
    body: &[u8],
    header: &str,
) -> bool {
    use subtle::ConstantTimeEq;
    let expected = standard_signature(key, id, timestamp_secs, body);
    header
        .split(' ')
        .any(|candidate| bool::from(candidate.as_bytes().ct_eq(expected.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published Standard Webhooks (svix) vector.
    #[test]
    fn standard_webhooks_published_vector() {
        let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = standard_signature(
            secret.standard_key(),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify_standard(
            secret.standard_key(),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
            &format!("v1,bogus {sig}"),
        ));
        assert!(!verify_standard(
            secret.standard_key(),
            "msg_other",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
            &sig,
        ));
    }

    #[test]
    fn secrets_are_validated_and_redacted() {
        assert_eq!(WebhookSecret::new(""), Err(SecretError::Empty));
        assert_eq!(WebhookSecret::new("whsec_!!"), Err(SecretError::BadBase64));
        assert_eq!(WebhookSecret::new("whsec_"), Err(SecretError::BadBase64));
        let s = WebhookSecret::new("hunter2").unwrap();
        assert_eq!(s.standard_key(), b"hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn headers_without_secret_are_unsigned() {
        let h = signature_headers(None, "evt_1", 5, b"{}");
        let names: Vec<_> = h.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [WEBHOOK_ID_HEADER, WEBHOOK_TIMESTAMP_HEADER]);
        let s = WebhookSecret::new("k").unwrap();
        assert_eq!(signature_headers(Some(&s), "evt_1", 5, b"{}").len(), 4);
    }
}
