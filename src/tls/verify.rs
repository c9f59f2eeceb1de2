//! The certificate verifier: chain to the bundle's CA, hostname, and the
//! SHA-256 pin, checked inside every full handshake; and the pin check run
//! again after a resumed one.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use super::{PeerPolicy, Pin};
use crate::error::Error;
use crate::pki;

/// Detail carried inside rustls when the pin does not match.
#[derive(Debug)]
pub(super) struct PinMismatchDetail {
    pub expected: Pin,
    pub actual: String,
}

impl fmt::Display for PinMismatchDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate pin mismatch")
    }
}

impl std::error::Error for PinMismatchDetail {}

/// Verifies the worker's certificate chain to the bundle's CA (always), its
/// name (when enabled) and the SHA-256 pin (when set). rustls calls it in
/// every full handshake; a resumed one continues a session it verified, and
/// [`TlsSession`] checks the pin again after it.
pub(super) struct PeerVerifier {
    pub anchors: Arc<[rustls::pki_types::TrustAnchor<'static>]>,
    /// Where the anchor came from, for "not issued by" errors.
    pub ca_cert_path: String,
    pub policy: Arc<PeerPolicy>,
    pub provider: Arc<CryptoProvider>,
    pub verifications: AtomicU64,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        if let Some(expected) = &self.policy.pin {
            let actual = pki::fingerprint_der(end_entity);
            if actual != expected.fingerprint {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(PinMismatchDetail {
                        expected: expected.clone(),
                        actual,
                    })),
                )));
            }
        }
        let webpki_error = |e| webpki_error(e, &self.ca_cert_path);
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(webpki_error)?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(webpki_error)?;
        if self.policy.verify_hostname {
            cert.verify_is_valid_for_subject_name(server_name)
                .map_err(webpki_error)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A worker certificate that does not chain to the master's CA: the
/// classifier names the CA file in the error, so the operator sees which
/// CA the worker was not enrolled with.
#[derive(Debug)]
pub(super) struct NotIssuedByCa {
    /// The CA certificate file.
    pub ca_cert_path: String,
    /// webpki's finding (`UnknownIssuer`, `InvalidSignatureForPublicKey`…).
    pub finding: String,
}

impl fmt::Display for NotIssuedByCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not issued by {} ({})", self.ca_cert_path, self.finding)
    }
}

impl std::error::Error for NotIssuedByCa {}

fn webpki_error(error: webpki::Error, ca_cert_path: &str) -> rustls::Error {
    use webpki::Error as W;
    let kind = match error {
        W::CertExpired { .. } => CertificateError::Expired,
        W::CertNotValidYet { .. } => CertificateError::NotValidYet,
        W::CertNotValidForName(_) => CertificateError::NotValidForName,
        W::UnknownIssuer
        | W::InvalidSignatureForPublicKey
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            CertificateError::Other(OtherError(Arc::new(NotIssuedByCa {
                ca_cert_path: ca_cert_path.to_string(),
                finding: format!("{error:?}"),
            })))
        }
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(kind)
}

/// The pin-mismatch error when `chain`'s leaf is not the certificate
/// `policy` pins (a missing chain never matches a pin).
pub(super) fn pin_mismatch(
    policy: &PeerPolicy,
    chain: Option<&[CertificateDer<'_>]>,
) -> Option<Error> {
    let expected = policy.pin.as_ref()?;
    let actual = chain
        .and_then(|chain| chain.first())
        .map(|leaf| pki::fingerprint_der(leaf))
        .unwrap_or_default();
    (actual != expected.fingerprint).then(|| Error::PinMismatch {
        address: policy.address.clone(),
        expected: expected.fingerprint.clone(),
        actual,
        pin_origin: expected.origin.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str) -> CertificateDer<'static> {
        rcgen::generate_simple_self_signed(vec![name.to_string()])
            .unwrap()
            .cert
            .der()
            .clone()
    }

    fn policy(pin: Option<String>) -> PeerPolicy {
        let pin = pin.map(|fingerprint| Pin {
            fingerprint,
            origin: "a test".into(),
        });
        PeerPolicy {
            address: "127.0.0.1:8765".into(),
            host: "127.0.0.1".into(),
            port: 8765,
            server_name: ServerName::try_from("127.0.0.1").unwrap(),
            verify_hostname: true,
            pin,
        }
    }

    /// The check run after every resumed handshake, against the chain the
    /// session carries (a resumed handshake with another client's session
    /// cannot be staged: rustls and the per-client store both forbid it).
    #[test]
    fn the_pin_is_checked_against_a_resumed_sessions_certificate() {
        let (pinned, other) = (cert("pinned"), cert("other"));
        let pinned_fp = pki::fingerprint_der(&pinned);
        let other_fp = pki::fingerprint_der(&other);
        let pinning = policy(Some(pinned_fp.clone()));
        assert!(pin_mismatch(&pinning, Some(std::slice::from_ref(&pinned))).is_none());
        match pin_mismatch(&pinning, Some(&[other.clone(), pinned])) {
            Some(Error::PinMismatch {
                expected,
                actual,
                pin_origin,
                ..
            }) => {
                assert_eq!(pin_origin, "a test");
                assert_eq!(expected, pinned_fp);
                assert_eq!(actual, other_fp);
            }
            other => panic!("expected a pin mismatch, got {other:?}"),
        }
        assert!(pin_mismatch(&pinning, None).is_some(), "no chain, no match");
        assert!(pin_mismatch(&policy(None), Some(&[other])).is_none());
    }
}
