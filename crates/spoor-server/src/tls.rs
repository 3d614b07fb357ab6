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

use rustls::client::WantsClientCert;
use rustls::pki_types::{pem::PemObject, CertificateDer};
use rustls::{ClientConfig, ConfigBuilder, RootCertStore, WantsVerifier};
use std::sync::{Arc, Once};

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

/// Adds the CA certificates of a PEM text (a destination's `ca_pem`) to `roots`; an
/// unreadable, unusable or empty text is an error (prefixed with the field by the caller).
pub fn add_pem_roots(roots: &mut RootCertStore, pem: &str) -> Result<(), String> {
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let c = c.map_err(|e| format!("not PEM certificates: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("unusable certificate: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("no certificate in the PEM text".into());
    }
    Ok(())
}

/// A rustls client configuration on the ring provider (the one Spoor builds), safe
/// protocol versions, about to be given its certificate verification.
pub fn client_config() -> Result<
    (
        Arc<rustls::crypto::CryptoProvider>,
        ConfigBuilder<ClientConfig, WantsVerifier>,
    ),
    String,
> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    Ok((provider, builder))
}

/// [`client_config`] verifying against `roots`, without client certificates.
pub fn client_config_with_roots(roots: RootCertStore) -> Result<ClientConfig, String> {
    let b: ConfigBuilder<ClientConfig, WantsClientCert> =
        client_config()?.1.with_root_certificates(roots);
    Ok(b.with_no_client_auth())
}
