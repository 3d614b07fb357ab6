//! Identifiers as ad platforms match them: normalised with Spoor's own rules, then SHA-256
//! as lowercase hex (see the module doc of [`super`] for why).

use crate::identity::Normalize;
use sha2::{Digest, Sha256};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// SHA-256 of `s` (its UTF-8 bytes) as 64 lowercase hex digits. The digits come from a
/// table: formatting each byte with `write!` took as long as the hash itself (`spoor bench
/// export`).
pub fn sha256_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// The e-mail as it is matched: trimmed and lowercased (`mailto:` cut), hashed when
/// `hashed`. `None` when it is not an e-mail address.
pub fn email_key(raw: &str, hashed: bool) -> Option<String> {
    let v = Normalize::Email.apply(raw).ok()?;
    Some(if hashed { sha256_hex(&v) } else { v })
}

/// The phone as it is matched: E.164 (`+` and digits), hashed when `hashed`. `None` when it
/// is not a phone number or has no country code — a national number's hash matches nothing
/// on a platform that hashes E.164.
pub fn phone_key(raw: &str, hashed: bool) -> Option<String> {
    let v = Normalize::Phone {
        default_country_code: None,
    }
    .apply(raw)
    .ok()
    .filter(|v| v.starts_with('+'))?;
    Some(if hashed { sha256_hex(&v) } else { v })
}
