//! Standard Webhooks signatures (<https://www.standardwebhooks.com>), so a receiver can
//! verify with any off-the-shelf library that a request came from Spoor and was not replayed:
//! `webhook-signature: v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`, where the
//! key is the base64 part of the secret `whsec_<base64>`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Prefix of secrets in their shown form.
pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh random secret of 32 bytes, in its shown form (`whsec_…`).
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", B64.encode(bytes))
}

/// The key bytes of a `whsec_…` secret; `None` if it is not one.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let b = B64.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    (b.len() >= 24 && b.len() <= 64).then_some(b)
}

/// The value of the `webhook-signature` header for a message.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac takes any key length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn matches_the_reference_vector() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_round_trip() {
        let s = new_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert!(secret_key("nope").is_none());
        assert!(secret_key("whsec_!!").is_none());
    }
}
