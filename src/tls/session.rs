//! One worker's TLS session: its two configurations (resuming or not), the
//! handshake counters, the warm connection, and opening a verified
//! connection.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::client::{Resumption, Tls12Resumption};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, HandshakeKind};
use ureq::unversioned::transport::Transport;

use super::resumption::Tls13OnlyStore;
use super::transport::{Counted, TlsTransport};
use super::verify::{self, PeerVerifier};
use super::{provider, HandshakeCounts, PeerPolicy};
use crate::error::{Error, Result};
use crate::events::{self, Event, Level};
use crate::identity::Identity;
use crate::pki;

/// Everything needed to open verified connections to one worker. Shared by
/// the ureq connector and the client (for `connect()` and counters).
///
/// Resumption: TLS 1.3 only, from an in-memory ticket store that belongs to
/// this session alone (so a ticket is only ever offered to the worker whose
/// full, verified and pinned handshake with this very client issued it;
/// rustls also offers it only under the verifier and client certificate
/// that made it). rustls does not run the verifier on a resumed handshake;
/// the pin is checked again after it against the certificate the session
/// carries over. TLS 1.2 resumption stays off: its session ids and tickets
/// are not bound to a fresh key exchange.
pub(crate) struct TlsSession {
    /// Offers stored tickets.
    resuming: Arc<ClientConfig>,
    /// Never resumes: made from `resuming` the first time resumption is
    /// off, so a fleet's hosts do not each carry a second configuration.
    full_only: OnceLock<Arc<ClientConfig>>,
    /// Whether new connections may resume.
    resumption: AtomicBool,
    verifier: Arc<PeerVerifier>,
    pub(super) policy: Arc<PeerPolicy>,
    full_handshakes: AtomicU64,
    resumed_handshakes: AtomicU64,
    /// A verified connection opened by [`TlsSession::open_warm`], handed to
    /// the next request instead of a new one.
    warm: Mutex<Option<TlsTransport>>,
    /// The total every connection opened from now is counted in (a
    /// fleet's), once set.
    counted_in: OnceLock<Arc<AtomicUsize>>,
    /// Its connections free their exchange buffers whenever they go idle.
    releases_idle_buffers: AtomicBool,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    /// Builds the TLS configuration for one worker: TLS 1.2 and 1.3 only,
    /// the identity's certificate as client certificate, its CA as the only
    /// trust anchor, TLS 1.3 resumption from a store of its own (on until
    /// [`TlsSession::set_resumption`] turns it off).
    pub(crate) fn new(identity: &Identity, policy: PeerPolicy) -> Result<Self> {
        // One copy for the session and its verifier.
        let policy = Arc::new(policy);
        let provider = provider();
        let verifier = Arc::new(PeerVerifier {
            anchors: identity.trust_anchors(),
            ca_cert_path: identity.ca_cert_path().display().to_string(),
            policy: policy.clone(),
            provider: provider.clone(),
            verifications: AtomicU64::new(0),
        });
        let mut resuming = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::internal(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(identity.client_cert_resolver());
        resuming.resumption = Resumption::store(Arc::new(Tls13OnlyStore::default()))
            .tls12_resumption(Tls12Resumption::Disabled);
        Ok(TlsSession {
            resuming: Arc::new(resuming),
            full_only: OnceLock::new(),
            resumption: AtomicBool::new(true),
            verifier,
            policy,
            full_handshakes: AtomicU64::new(0),
            resumed_handshakes: AtomicU64::new(0),
            warm: Mutex::new(None),
            counted_in: OnceLock::new(),
            releases_idle_buffers: AtomicBool::new(false),
        })
    }

    /// Counts every connection opened from now in `total` while it lives;
    /// the first total set stays.
    pub(crate) fn count_connections_in(&self, total: Arc<AtomicUsize>) {
        let _ = self.counted_in.set(total);
    }

    /// Makes every connection opened from now free its exchange buffers
    /// whenever it goes idle: for fleets, which keep many idle connections.
    pub(crate) fn release_buffers_when_idle(&self) {
        self.releases_idle_buffers.store(true, Ordering::Relaxed);
    }

    /// Closes the warm connection, if one waits.
    pub(crate) fn drop_warm(&self) {
        let taken = self.warm.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(taken);
    }

    /// Turns TLS 1.3 resumption on or off for connections opened from now.
    pub(crate) fn set_resumption(&self, on: bool) {
        self.resumption.store(on, Ordering::Relaxed);
    }

    /// Whether new connections may resume.
    pub(crate) fn resumption(&self) -> bool {
        self.resumption.load(Ordering::Relaxed)
    }

    /// Handshakes completed, full and resumed.
    pub(crate) fn handshakes(&self) -> HandshakeCounts {
        HandshakeCounts {
            full: self.full_handshakes.load(Ordering::Relaxed),
            resumed: self.resumed_handshakes.load(Ordering::Relaxed),
        }
    }

    /// Times the certificate verifier ran.
    pub(crate) fn verifications(&self) -> u64 {
        self.verifier.verifications.load(Ordering::Relaxed)
    }

    /// Opens and verifies one connection now and keeps it for the next
    /// request.
    pub(crate) fn open_warm(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut transport = self.open(deadline)?;
        transport.mark_warm();
        let mut slot = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(transport);
        Ok(())
    }

    pub(super) fn take_warm(&self) -> Option<TlsTransport> {
        // Checked once out of the slot: no lock is held while it runs.
        let taken = self.warm.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut transport = taken?;
        transport.is_open().then_some(transport)
    }

    pub(super) fn open(&self, deadline: Instant) -> Result<TlsTransport> {
        let started = events::enabled(Level::Info).then(Instant::now);
        let addrs = self.resolve(deadline)?;
        let mut sock = self.connect_tcp(&addrs, deadline)?;
        let connected = started.map(|_| Instant::now());
        let config = if self.resumption() {
            &self.resuming
        } else {
            // Same verifier and client-certificate resolver objects as
            // `resuming`: rustls offers a ticket only under the ones that
            // made it, and this configuration offers none.
            self.full_only.get_or_init(|| {
                let mut full_only = (*self.resuming).clone();
                full_only.resumption = Resumption::disabled();
                Arc::new(full_only)
            })
        };
        let mut conn = ClientConnection::new(config.clone(), self.policy.server_name.clone())
            .map_err(|e| self.tls_error(&e))?;
        // Held-back records are bounded by FLUSH_THRESHOLD plus one output
        // buffer, not by rustls' default limit (which would fail the write).
        conn.set_buffer_limit(None);
        let socket_timeout = self.handshake(&mut conn, &mut sock, deadline)?;
        if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            // rustls skipped the verifier: check the pin again against the
            // certificate the resumed session carries.
            if let Some(mismatch) = self.pin_mismatch(conn.peer_certificates()) {
                conn.send_close_notify();
                let _ = conn.write_tls(&mut sock);
                return Err(mismatch);
            }
            self.resumed_handshakes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.full_handshakes.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(started), Some(connected)) = (started, connected) {
            events::emit(Level::Info, || {
                opened_event(&self.policy.address, &conn, started, connected)
            });
        }
        Ok(TlsTransport::new(
            conn,
            sock,
            self.policy.address.clone(),
            socket_timeout,
            self.counted_in.get().map(Counted::new),
            self.releases_idle_buffers.load(Ordering::Relaxed),
        ))
    }

    /// The pin-mismatch error when `chain`'s leaf is not the pinned
    /// certificate (a missing chain never matches a pin).
    fn pin_mismatch(&self, chain: Option<&[CertificateDer<'_>]>) -> Option<Error> {
        verify::pin_mismatch(&self.policy, chain)
    }
}

/// `connection.opened`: how long the TCP connect (with name resolution)
/// and the handshake took, its kind, the TLS version and the worker's
/// certificate fingerprint.
fn opened_event(
    address: &str,
    conn: &ClientConnection,
    started: Instant,
    connected: Instant,
) -> Event {
    let kind = match conn.handshake_kind() {
        Some(HandshakeKind::Resumed) => "resumed",
        _ => "full",
    };
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2",
        _ => "other",
    };
    let fingerprint = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| pki::fingerprint_der(leaf));
    Event::new(Level::Info, "connection.opened")
        .with("address", address)
        .with_ms("tcp_ms", connected - started)
        .with_ms("handshake_ms", connected.elapsed())
        .with("handshake", kind)
        .with("tls_version", version)
        .with("peer_fingerprint", fingerprint)
}
