//! TLS for the agent client: the rustls configuration, the certificate
//! verifier that checks chain, hostname and pin inside every handshake, and
//! the ureq connector and transport that carry HTTP over it.
//!
//! This is the only module that knows rustls and ureq's transport API. One
//! file per concept: [`verify`] (chain, hostname, pin), [`resumption`] (the
//! TLS 1.3 ticket store), [`session`] (a worker's configuration, counters
//! and warm connection), [`handshake`] (connect and handshake under one
//! deadline), [`classify`] (rustls errors into the taxonomy),
//! [`transport`] (HTTP/1.1 bytes under phase deadlines) and [`connector`]
//! (what ureq calls).

mod classify;
mod connector;
mod handshake;
mod resumption;
mod session;
mod transport;
mod verify;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;

pub(crate) use classify::{timeout_phase, StaleConnection};
pub(crate) use connector::{DeferredResolver, PinnedConnector};
pub(crate) use session::TlsSession;

/// The crypto provider used for every TLS connection and signature, one
/// for the process (every host's configuration shares it).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The origin of a pin the caller gave directly (not from a host record).
pub(crate) const CALLER_PIN: &str = "the pin given for this client";

/// A pinned certificate fingerprint and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Pin {
    /// SHA-256 of the worker's leaf certificate, 64 lowercase hex.
    pub fingerprint: String,
    /// Where the caller got it (a host record's field, `--pin`), for the
    /// pin-mismatch message.
    pub origin: String,
}

/// What a client's connections must prove about the worker.
#[derive(Debug, Clone)]
pub(crate) struct PeerPolicy {
    /// `host:port`, for error messages.
    pub address: String,
    /// The IP literal or DNS name to connect to (no brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The name or IP the worker's certificate is checked against.
    pub server_name: ServerName<'static>,
    /// Whether the certificate must be valid for `server_name`.
    pub verify_hostname: bool,
    /// The expected SHA-256 of the worker's leaf certificate.
    pub pin: Option<Pin>,
}

/// How many handshakes a client completed, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeCounts {
    /// Full handshakes: the certificate verifier ran in each (chain,
    /// hostname when enabled, pin when set).
    pub full: u64,
    /// Resumed TLS 1.3 handshakes (PSK with a fresh ECDHE): each continued
    /// a session a full, pinned handshake of the same client established,
    /// and the pin was checked again against that session's certificate.
    pub resumed: u64,
}
