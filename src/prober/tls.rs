//! TLS client settings of HTTPS probes (rustls with the ring provider): one configuration that
//! verifies against the bundled web PKI roots, one for `tls_verify = false` that accepts any
//! certificate. Built once per prober and shared by every probe.

use std::sync::Arc;

/// TLS client settings shared by every HTTPS probe: verifying against the bundled web PKI
/// roots, or (`tls_verify = false`) accepting any certificate.
pub(super) struct TlsConfigs {
    pub verify: Arc<rustls::ClientConfig>,
    pub insecure: Arc<rustls::ClientConfig>,
}

impl TlsConfigs {
    pub fn new() -> Option<TlsConfigs> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let build = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
        };
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let made = build().and_then(|v| {
            let verify = v.with_root_certificates(roots).with_no_client_auth();
            let insecure = build()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider.clone())))
                .with_no_client_auth();
            Ok((verify, insecure))
        });
        match made {
            Ok((mut verify, mut insecure)) => {
                verify.alpn_protocols = vec![b"http/1.1".to_vec()];
                insecure.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(TlsConfigs {
                    verify: Arc::new(verify),
                    insecure: Arc::new(insecure),
                })
            }
            Err(e) => {
                tracing::error!("TLS setup for health checks failed: {e}");
                None
            }
        }
    }
}

/// `tls_verify = false`: any certificate for any name, though the handshake signature is still
/// checked against the certificate presented.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
