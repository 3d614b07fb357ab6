//! TLS for PostgreSQL sync destinations, with libpq's meaning of the settings.
//!
//! `sslmode` in the URL decides *whether* TLS is used (tokio-postgres: `disable`, `prefer` —
//! the default: TLS when the server offers it — or `require`). What is *verified* follows
//! libpq: without a trusted CA (`postgres.ca_pem`, libpq's `sslrootcert`) the connection is
//! encrypted but the server's certificate is not checked — most servers run a self-signed
//! certificate, and refusing it would only push users to `disable`. That protects against
//! eavesdropping, not against an active impostor; with `ca_pem` the certificate must chain to
//! one of those CAs and name the host (libpq's `verify-full`).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS connector for a destination.
pub fn connector(ca_pem: Option<&str>) -> Result<MakeRustlsConnect, String> {
    let config = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            crate::tls::add_pem_roots(&mut roots, pem)
                .map_err(|e| format!("postgres.ca_pem: {e}"))?;
            crate::tls::client_config_with_roots(roots)?
        }
        None => {
            let (provider, builder) = crate::tls::client_config()?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Accepts any server certificate but still checks that the server holds its key (the
/// handshake signatures), as libpq does under `sslmode=require` without a root certificate.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
