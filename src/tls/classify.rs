//! rustls and socket errors mapped to the taxonomy.

use std::fmt;
use std::io;

use rustls::{AlertDescription, CertificateError};

use super::verify::{NotIssuedByCa, PinMismatchDetail};
use crate::error::{Error, TimeoutPhase};

pub(super) fn rustls_error_of(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Maps a rustls error to the taxonomy: a pin mismatch keeps its own kind;
/// an alert about our certificate says the worker rejected it.
pub(super) fn classify_tls_error(address: &str, e: &rustls::Error) -> Error {
    if let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = e {
        if let Some(pin) = other.0.downcast_ref::<PinMismatchDetail>() {
            return Error::PinMismatch {
                address: address.to_string(),
                expected: pin.expected.fingerprint.clone(),
                actual: pin.actual.clone(),
                pin_origin: pin.expected.origin.clone(),
            };
        }
    }
    let reason = match e {
        rustls::Error::AlertReceived(alert) if is_client_cert_alert(*alert) => {
            format!("client certificate rejected by the worker (alert {alert:?})")
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if other.0.downcast_ref::<NotIssuedByCa>().is_some() =>
        {
            format!("worker certificate rejected: {}", other.0)
        }
        rustls::Error::InvalidCertificate(cert) => {
            format!("worker certificate rejected: {cert:?}")
        }
        other => other.to_string(),
    };
    Error::Tls {
        address: address.to_string(),
        reason,
    }
}

pub(super) fn is_client_cert_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
            // What rustls and OpenSSL send for a client certificate whose
            // signature does not verify against their CA.
            | AlertDescription::DecryptError
    )
}

/// A connection that died on a reused (idle) connection before any byte of
/// the response arrived: the worker most likely closed it while idle.
#[derive(Debug)]
pub(crate) struct StaleConnection {
    pub reason: String,
}

impl fmt::Display for StaleConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reused connection closed: {}", self.reason)
    }
}

impl std::error::Error for StaleConnection {}

/// The phase a ureq timeout reason names; its global timeout is the
/// deadline a caller (a sweep) set for the whole call.
pub(crate) fn timeout_phase(reason: ureq::Timeout) -> TimeoutPhase {
    use ureq::Timeout as T;
    match reason {
        T::Global => TimeoutPhase::Deadline,
        T::Resolve | T::Connect => TimeoutPhase::Connect,
        T::SendRequest | T::SendBody | T::PerWrite => TimeoutPhase::Write,
        _ => TimeoutPhase::Read,
    }
}
