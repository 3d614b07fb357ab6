//! TLS for outgoing connections: webhooks over https, the CLI talking to a server behind
//! TLS.
//!
//! Why this module exists: reqwest is built with rustls but without a bundled crypto
//! provider (the default one, aws-lc-rs, is a C library that would add a minute to every
//! clean build), and uses ring — already built for the NATS client. A rustls client without
//! a provider panics when it is built, so every HTTP client in Spoor, its CLI and its tests is
//! made through [`http_client`] (or calls [`install_crypto_provider`] first — the `spoor`
//! binary does at the top of `main`), which installs
//! ring as the process default once. Server certificates are checked against the system's
//! trust store (rustls-platform-verifier), plus any extra CA a destination names.

use std::sync::Once;

static PROVIDER: Once = Once::new();

/// Makes ring the process-wide rustls crypto provider (idempotent; if something else
/// installed one first, that one stays).
pub fn install_crypto_provider() {
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A `reqwest` client builder that can speak https.
pub fn http_client() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// Parses a PEM bundle of extra trusted CA certificates (a destination's `ca_pem`), so a
/// bad one is refused when it is saved rather than at the first delivery.
pub fn parse_ca_pem(pem: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM text".into());
    }
    Ok(certs)
}
