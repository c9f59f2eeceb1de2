//! TLS for the agent client: the rustls configuration, the certificate
//! verifier that checks chain, hostname and pin inside every handshake, and
//! the ureq connector and transport that carry HTTP over it.
//!
//! This is the only module that knows rustls and ureq's transport API.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
    Tls12Resumption, Tls13ClientSessionValue,
};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct,
    HandshakeKind, NamedGroup, OtherError, SignatureScheme,
};
use socket2::SockRef;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

use crate::error::{Error, Result, TimeoutPhase};
use crate::events::{self, Event, Level};
use crate::identity::Identity;
use crate::pki;

/// Size of each connection's input and output buffers. It bounds the
/// response head (a worker's is well under 1 KiB); bodies stream through.
/// A fleet keeps one connection per host, so this is most of a kept-alive
/// host's memory: 16 KiB each way holds one full TLS record's plaintext.
const BUFFER_SIZE: usize = 16 * 1024;
/// Sealed request bytes held back before they are sent anyway.
const FLUSH_THRESHOLD: usize = 16 * 1024;

/// The crypto provider used for every TLS connection and signature.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
    /// The expected SHA-256 of the worker's leaf certificate, lowercase hex.
    pub pin: Option<String>,
}

/// Detail carried inside rustls when the pin does not match.
#[derive(Debug)]
struct PinMismatchDetail {
    expected: String,
    actual: String,
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
struct PeerVerifier {
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    policy: PeerPolicy,
    provider: Arc<CryptoProvider>,
    verifications: AtomicU64,
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
            if &actual != expected {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(PinMismatchDetail {
                        expected: expected.clone(),
                        actual,
                    })),
                )));
            }
        }
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

fn webpki_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let kind = match error {
        W::CertExpired { .. } => CertificateError::Expired,
        W::CertNotValidYet { .. } => CertificateError::NotValidYet,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertNotValidForName(_) => CertificateError::NotValidForName,
        W::InvalidSignatureForPublicKey
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => CertificateError::BadSignature,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(kind)
}

/// TLS 1.3 tickets one client keeps (rustls holds them per server name,
/// eight to a name; a client talks to one worker).
const TICKETS_KEPT: usize = 8;

/// A client's ticket store that keeps TLS 1.3 tickets only. rustls'
/// `Tls12Resumption::Disabled` stops TLS 1.2 tickets but still saves and
/// offers TLS 1.2 session ids; a TLS 1.2 resumption reuses the old master
/// secret with no fresh key exchange, so no TLS 1.2 session is ever kept.
#[derive(Debug)]
struct Tls13OnlyStore(ClientSessionMemoryCache);

impl ClientSessionStore for Tls13OnlyStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.0.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.kx_hint(server_name)
    }

    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.0.insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.0.take_tls13_ticket(server_name)
    }
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
    /// Never resumes.
    full_only: Arc<ClientConfig>,
    /// Whether new connections may resume.
    resumption: AtomicBool,
    verifier: Arc<PeerVerifier>,
    policy: PeerPolicy,
    full_handshakes: AtomicU64,
    resumed_handshakes: AtomicU64,
    /// A verified connection opened by [`TlsSession::open_warm`], handed to
    /// the next request instead of a new one.
    warm: Mutex<Option<TlsTransport>>,
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
        let provider = provider();
        let anchor = webpki::anchor_from_trusted_cert(identity.ca_cert())
            .map_err(|e| {
                Error::invalid(
                    "identity",
                    format!("CA certificate unusable as a trust anchor: {e}"),
                )
            })?
            .to_owned();
        let verifier = Arc::new(PeerVerifier {
            anchors: vec![anchor],
            policy: policy.clone(),
            provider: provider.clone(),
            verifications: AtomicU64::new(0),
        });
        let mut full_only = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::internal(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(vec![identity.cert().clone()], identity.key().clone_key())
            .map_err(|e| {
                Error::invalid(
                    "identity",
                    format!("client certificate or key unusable: {e}"),
                )
            })?;
        full_only.resumption = Resumption::disabled();
        // Same verifier and client-certificate resolver objects: rustls
        // stores them with each ticket and offers it only under them.
        let mut resuming = full_only.clone();
        resuming.resumption = Resumption::store(Arc::new(Tls13OnlyStore(
            ClientSessionMemoryCache::new(TICKETS_KEPT),
        )))
        .tls12_resumption(Tls12Resumption::Disabled);
        Ok(TlsSession {
            resuming: Arc::new(resuming),
            full_only: Arc::new(full_only),
            resumption: AtomicBool::new(true),
            verifier,
            policy,
            full_handshakes: AtomicU64::new(0),
            resumed_handshakes: AtomicU64::new(0),
            warm: Mutex::new(None),
        })
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
        transport.idle = true;
        let mut slot = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(transport);
        Ok(())
    }

    fn take_warm(&self) -> Option<TlsTransport> {
        let mut slot = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        let mut transport = slot.take()?;
        transport.is_open().then_some(transport)
    }

    fn open(&self, deadline: Instant) -> Result<TlsTransport> {
        let started = events::enabled(Level::Info).then(Instant::now);
        let addrs = self.resolve(deadline)?;
        let mut sock = self.connect_tcp(&addrs, deadline)?;
        let connected = started.map(|_| Instant::now());
        let config = if self.resumption() {
            &self.resuming
        } else {
            &self.full_only
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
        Ok(TlsTransport {
            conn,
            sock,
            buffers: LazyBuffers::new(BUFFER_SIZE, BUFFER_SIZE),
            address: self.policy.address.clone(),
            idle: false,
            exchanges: 0,
            between_exchanges: true,
            received: false,
            unsent: 0,
            socket_timeout,
            write_phase: PhaseDeadline::NONE,
            read_phase: None,
        })
    }

    /// Runs the TLS handshake to its end, every socket call bounded by
    /// `deadline`, so a worker that trickles its handshake cannot stretch
    /// it. Returns the timeout the socket is left with.
    ///
    /// (rustls' `complete_io` reads repeatedly inside one call, so a socket
    /// timeout around it would bound each read, not the handshake.)
    fn handshake(
        &self,
        conn: &mut ClientConnection,
        sock: &mut TcpStream,
        deadline: Instant,
    ) -> Result<Option<Duration>> {
        let mut socket_timeout = None;
        while conn.is_handshaking() || conn.wants_write() {
            match arm(sock, &mut socket_timeout, Some(deadline)) {
                Ok(true) => {}
                Ok(false) => return Err(self.timeout(TimeoutPhase::Handshake)),
                Err(e) => return Err(self.connect_error(&e)),
            }
            let io = if conn.wants_write() {
                conn.write_tls(sock).map(|_| ())
            } else {
                match conn.read_tls(sock) {
                    Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {
                        if let Err(e) = conn.process_new_packets() {
                            // Tell the worker why we stop (best effort).
                            let _ = conn.write_tls(sock);
                            return Err(self.tls_error(&e));
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            };
            match io {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
                Err(e) => {
                    // An alert that came before the close explains it.
                    if let Some(tls) = pending_tls_error(conn, sock) {
                        return Err(self.tls_error(&tls));
                    }
                    return Err(Error::Connect {
                        address: self.policy.address.clone(),
                        reason: match e.kind() {
                            io::ErrorKind::UnexpectedEof => {
                                "the worker closed the connection during the TLS handshake".into()
                            }
                            _ => format!("connection failed during the TLS handshake: {e}"),
                        },
                    });
                }
            }
        }
        Ok(socket_timeout)
    }

    /// The worker's addresses: an IP literal as is, a DNS name looked up on
    /// a helper thread so the deadline holds even when the resolver hangs.
    fn resolve(&self, deadline: Instant) -> Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.policy.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.policy.port)]);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let target = (self.policy.host.clone(), self.policy.port);
        thread::Builder::new()
            .name("decnet-resolve".into())
            .spawn(move || {
                let _ = tx.send(target.to_socket_addrs().map(Vec::from_iter));
            })
            .map_err(|e| Error::Connect {
                address: self.policy.address.clone(),
                reason: format!("cannot start a thread to resolve the name: {e}"),
            })?;
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(addrs)) => Ok(addrs),
            Ok(Err(e)) => Err(Error::Connect {
                address: self.policy.address.clone(),
                reason: format!("cannot resolve: {e}"),
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(self.timeout(TimeoutPhase::Connect)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::internal(
                "the resolver thread ended without an answer",
            )),
        }
    }

    fn connect_tcp(&self, addrs: &[SocketAddr], deadline: Instant) -> Result<TcpStream> {
        let mut last = None;
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout(TimeoutPhase::Connect));
            }
            match TcpStream::connect_timeout(addr, left) {
                Ok(sock) => {
                    sock.set_nodelay(true).map_err(|e| self.connect_error(&e))?;
                    return Ok(sock);
                }
                Err(e) if is_timeout(&e) => return Err(self.timeout(TimeoutPhase::Connect)),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => self.connect_error(&e),
            None => Error::Connect {
                address: self.policy.address.clone(),
                reason: "the name resolved to no address".into(),
            },
        })
    }

    /// The pin-mismatch error when `chain`'s leaf is not the pinned
    /// certificate (a missing chain never matches a pin).
    fn pin_mismatch(&self, chain: Option<&[CertificateDer<'_>]>) -> Option<Error> {
        let expected = self.policy.pin.as_ref()?;
        let actual = chain
            .and_then(|chain| chain.first())
            .map(|leaf| pki::fingerprint_der(leaf))
            .unwrap_or_default();
        (actual != *expected).then(|| Error::PinMismatch {
            address: self.policy.address.clone(),
            expected: expected.clone(),
            actual,
        })
    }

    fn connect_error(&self, e: &io::Error) -> Error {
        Error::Connect {
            address: self.policy.address.clone(),
            reason: e.to_string(),
        }
    }

    fn timeout(&self, phase: TimeoutPhase) -> Error {
        Error::Timeout {
            address: self.policy.address.clone(),
            phase,
        }
    }

    fn tls_error(&self, e: &rustls::Error) -> Error {
        classify_tls_error(&self.policy.address, e)
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

fn rustls_error_of(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Maps a rustls error to the taxonomy: a pin mismatch keeps its own kind;
/// an alert about our certificate says the worker rejected it.
fn classify_tls_error(address: &str, e: &rustls::Error) -> Error {
    if let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = e {
        if let Some(pin) = other.0.downcast_ref::<PinMismatchDetail>() {
            return Error::PinMismatch {
                address: address.to_string(),
                expected: pin.expected.clone(),
                actual: pin.actual.clone(),
            };
        }
    }
    let reason = match e {
        rustls::Error::AlertReceived(alert) if is_client_cert_alert(*alert) => {
            format!("client certificate rejected by the worker (alert {alert:?})")
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

fn is_client_cert_alert(alert: AlertDescription) -> bool {
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

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Makes sure the socket's next blocking call returns by `deadline`: its
/// read and write timeouts (`current` remembers them) are shortened when
/// they exceed the time left, and lengthened only when far shorter, so a
/// steady connection rarely pays a system call for it. A call that times
/// out early is simply retried by the caller's loop. `Ok(false)` means the
/// deadline has passed.
fn arm(
    sock: &TcpStream,
    current: &mut Option<Duration>,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let wanted = match deadline {
        None => None,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            Some(left)
        }
    };
    let stale = match (*current, wanted) {
        (current, None) => current.is_some(),
        (None, Some(_)) => true,
        (Some(current), Some(left)) => current > left || current < left / 4,
    };
    if stale {
        sock.set_read_timeout(wanted)?;
        sock.set_write_timeout(wanted)?;
        *current = wanted;
    }
    Ok(true)
}

/// Reads, without blocking, whatever the worker sent before a failed socket
/// call, and returns the TLS error it carries (typically the alert that
/// explains why the worker closed the connection).
fn pending_tls_error(conn: &mut ClientConnection, sock: &mut TcpStream) -> Option<rustls::Error> {
    if sock.set_nonblocking(true).is_err() {
        return None;
    }
    let mut found = None;
    while let Ok(n) = conn.read_tls(sock) {
        if n == 0 {
            break;
        }
        if let Err(tls) = conn.process_new_packets() {
            found = Some(tls);
            break;
        }
    }
    let _ = sock.set_nonblocking(false);
    found
}

/// When one phase of an exchange (sending the request, or receiving the
/// response) must end, and the ureq reason to report when it does. The
/// deadline is taken when the phase starts and never moves, so the phase's
/// timeout bounds it whole however the worker paces its bytes.
#[derive(Debug, Clone, Copy)]
struct PhaseDeadline {
    at: Option<Instant>,
    reason: ureq::Timeout,
}

impl PhaseDeadline {
    const NONE: PhaseDeadline = PhaseDeadline {
        at: None,
        reason: ureq::Timeout::Global,
    };

    fn starting_now(timeout: &NextTimeout) -> Self {
        PhaseDeadline {
            at: deadline_of(timeout),
            reason: timeout.reason,
        }
    }
}

/// The instant a ureq timeout expires, or `None` when it never does.
fn deadline_of(timeout: &NextTimeout) -> Option<Instant> {
    if timeout.after.is_not_happening() {
        None
    } else {
        Some(Instant::now() + *timeout.after)
    }
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

/// The ureq connector: hands out the warm connection when there is one,
/// otherwise opens and verifies a new one. Refuses plain HTTP.
#[derive(Debug)]
pub(crate) struct PinnedConnector {
    pub session: Arc<TlsSession>,
}

impl Connector<()> for PinnedConnector {
    type Out = TlsTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> std::result::Result<Option<Self::Out>, ureq::Error> {
        if !details.needs_tls() {
            return Err(ureq::Error::Other(Box::new(Error::invalid(
                "url",
                "plain HTTP is refused",
            ))));
        }
        if let Some(transport) = self.session.take_warm() {
            return Ok(Some(transport));
        }
        let deadline = deadline_of(&details.timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        self.session
            .open(deadline)
            .map(Some)
            .map_err(|e| ureq::Error::Other(Box::new(e)))
    }
}

/// One verified TLS connection carrying HTTP/1.1 for ureq.
///
/// Each exchange has two phases with a deadline each, fixed when the phase
/// starts: sending the request (the profile's write timeout, head and body
/// together) and receiving the response (the read timeout, head and body
/// together). Every socket call is armed to return by its phase's deadline.
pub(crate) struct TlsTransport {
    conn: ClientConnection,
    sock: TcpStream,
    buffers: LazyBuffers,
    address: String,
    /// Waited in the warm slot before its first request.
    idle: bool,
    /// Requests started on this connection.
    exchanges: u64,
    /// True until the next request's first byte is sent.
    between_exchanges: bool,
    /// Some response byte of the current exchange has arrived.
    received: bool,
    /// Plaintext bytes sealed into records but not yet sent.
    unsent: usize,
    /// The read and write timeout the socket has now.
    socket_timeout: Option<Duration>,
    /// When sending the current request must end.
    write_phase: PhaseDeadline,
    /// When receiving the current response must end; set by the first wait
    /// for it.
    read_phase: Option<PhaseDeadline>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("address", &self.address)
            .field("exchanges", &self.exchanges)
            .finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// Whether this connection sat idle before the current request, so a
    /// failure before any response byte means the worker closed it.
    fn reused(&self) -> bool {
        self.idle || self.exchanges > 1
    }

    /// The error for a connection that died mid-exchange.
    fn lost(&self, reason: String) -> ureq::Error {
        if self.reused() && !self.received {
            return ureq::Error::Other(Box::new(StaleConnection { reason }));
        }
        ureq::Error::Other(Box::new(Error::ConnectionLost {
            address: self.address.clone(),
            reason,
            may_have_reached_worker: self.exchanges > 0,
        }))
    }

    /// The error for a TLS failure after the handshake. A worker that
    /// rejects our certificate in TLS 1.3 says so with an alert that arrives
    /// when the first response is awaited: the request never ran, and the
    /// failure is `tls`. Any other fatal alert ends an exchange the worker
    /// may already have acted on: the connection is lost.
    fn tls_failure(&self, e: &rustls::Error) -> ureq::Error {
        let rejected_our_certificate = matches!(e, rustls::Error::AlertReceived(alert) if is_client_cert_alert(*alert))
            && self.exchanges <= 1
            && !self.received;
        if rejected_our_certificate || self.exchanges == 0 {
            return ureq::Error::Other(Box::new(classify_tls_error(&self.address, e)));
        }
        ureq::Error::Other(Box::new(Error::ConnectionLost {
            address: self.address.clone(),
            reason: format!("TLS failure: {e}"),
            may_have_reached_worker: true,
        }))
    }

    fn io_error(&self, e: io::Error, reason: ureq::Timeout) -> ureq::Error {
        if is_timeout(&e) {
            return ureq::Error::Timeout(reason);
        }
        match rustls_error_of(&e) {
            Some(tls) => self.tls_failure(tls),
            None => self.lost(e.to_string()),
        }
    }

    /// Arms the socket for `phase`; a passed deadline is that phase's
    /// timeout.
    fn arm(&mut self, phase: PhaseDeadline) -> std::result::Result<(), ureq::Error> {
        match arm(&self.sock, &mut self.socket_timeout, phase.at) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ureq::Error::Timeout(phase.reason)),
            Err(e) => Err(self.lost(format!("cannot set the socket timeout: {e}"))),
        }
    }

    /// Whether `e` is the socket's own timeout firing before `deadline`.
    fn early_timeout(e: &io::Error, deadline: Option<Instant>) -> bool {
        is_timeout(e) && deadline.is_some_and(|d| Instant::now() < d)
    }

    /// Peeks at the socket without blocking: `Ok(0)` means closed, `Ok(n)`
    /// bytes are waiting, `WouldBlock` means nothing has arrived.
    fn peek(&self) -> io::Result<usize> {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        SockRef::from(&self.sock).recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(
        &mut self,
        amount: usize,
        timeout: NextTimeout,
    ) -> std::result::Result<(), ureq::Error> {
        if self.between_exchanges {
            self.between_exchanges = false;
            self.exchanges += 1;
            if self.reused() {
                events::emit(Level::Debug, || {
                    Event::new(Level::Debug, "connection.reused")
                        .with("address", self.address.as_str())
                        .with("request", self.exchanges)
                        .with("warm", self.idle && self.exchanges == 1)
                });
            }
            self.received = false;
            self.write_phase = PhaseDeadline::starting_now(&timeout.for_write());
            self.read_phase = None;
        }
        let output = &self.buffers.output()[..amount];
        if let Err(e) = self.conn.writer().write_all(output) {
            return Err(self.io_error(e, self.write_phase.reason));
        }
        // Sealed records wait until the response is awaited (or enough piles
        // up), so a request's head and body leave in one send.
        self.unsent += amount;
        if self.unsent >= FLUSH_THRESHOLD {
            self.flush()?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> std::result::Result<bool, ureq::Error> {
        // The rest of the request is still the write phase's to send.
        self.flush()?;
        let phase = *self
            .read_phase
            .get_or_insert_with(|| PhaseDeadline::starting_now(&timeout.for_read()));
        loop {
            let input = self.buffers.input_append_buf();
            if input.is_empty() {
                // ureq asks for more only while the response head is
                // incomplete: the head does not fit in the buffer.
                return Err(ureq::Error::Other(Box::new(Error::protocol(format!(
                    "the response head exceeds {BUFFER_SIZE} bytes"
                )))));
            }
            match self.conn.reader().read(input) {
                Ok(0) => return self.end_of_stream(),
                Ok(n) => {
                    self.buffers.input_appended(n);
                    self.received = true;
                    self.between_exchanges = true;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return self.end_of_stream(),
                Err(e) => return Err(self.io_error(e, phase.reason)),
            }
            self.arm(phase)?;
            match self.conn.read_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if Self::early_timeout(&e, phase.at) => continue,
                Err(e) => return Err(self.io_error(e, phase.reason)),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the worker why we stop (best effort), then report.
                let _ = self.conn.write_tls(&mut self.sock);
                return Err(self.tls_failure(&e));
            }
        }
    }

    fn is_open(&mut self) -> bool {
        let Some(reason) = self.why_closed() else {
            return true;
        };
        events::emit(Level::Debug, || {
            Event::new(Level::Debug, "connection.retired")
                .with("address", self.address.as_str())
                .with("reason", reason)
                .with("requests", self.exchanges)
        });
        false
    }

    fn is_tls(&self) -> bool {
        true
    }
}

impl TlsTransport {
    /// Why an idle connection cannot be reused, or `None` when it can.
    fn why_closed(&mut self) -> Option<&'static str> {
        // The common case, nothing waiting, costs one system call.
        loop {
            match self.peek() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(0) => return Some("closed by the worker"),
                Err(_) => return Some("socket error"),
                Ok(_) => break,
            }
        }
        // Bytes are waiting (session tickets, an alert, a close): let rustls
        // read them without blocking.
        if self.sock.set_nonblocking(true).is_err() {
            return Some("socket error");
        }
        let closed = loop {
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => break Some("closed by the worker"),
                Ok(_) => match self.conn.process_new_packets() {
                    // Session tickets and other handshake messages are fine;
                    // a close or unrequested data is not.
                    Ok(state) if state.peer_has_closed() => break Some("closed by the worker"),
                    Ok(state) if state.plaintext_bytes_to_read() > 0 => {
                        break Some("unrequested data from the worker")
                    }
                    Ok(_) => {}
                    Err(_) => break Some("TLS error while idle"),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Some("socket error"),
            }
        };
        match closed {
            None if self.sock.set_nonblocking(false).is_err() => Some("socket error"),
            other => other,
        }
    }

    /// Sends every sealed record still held back, within the write phase.
    fn flush(&mut self) -> std::result::Result<(), ureq::Error> {
        let phase = self.write_phase;
        while self.conn.wants_write() {
            self.arm(phase)?;
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if Self::early_timeout(&e, phase.at) => {}
                Err(e) => {
                    // In TLS 1.3 a worker that rejects our certificate sends
                    // its alert and closes: report the alert when it is there.
                    return Err(match pending_tls_error(&mut self.conn, &mut self.sock) {
                        Some(tls) => self.tls_failure(&tls),
                        None => self.io_error(e, phase.reason),
                    });
                }
            }
        }
        self.unsent = 0;
        Ok(())
    }

    fn end_of_stream(&mut self) -> std::result::Result<bool, ureq::Error> {
        if self.reused() && !self.received {
            return Err(self.lost("closed by the worker before any response byte".into()));
        }
        Ok(false)
    }
}

/// The ureq resolver: resolves nothing. ureq resolves before it looks in
/// the pool, and its resolver starts a thread per call when a timeout is
/// set; deferring the lookup to [`TlsSession::open`] means calls on pooled
/// connections do no lookup at all.
#[derive(Debug)]
pub(crate) struct DeferredResolver;

impl Resolver for DeferredResolver {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        Ok(self.empty())
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::testkit::TestPki;

    fn session_pinned_to(pki: &TestPki, pin: Option<String>) -> TlsSession {
        TlsSession::new(
            &pki.master,
            PeerPolicy {
                address: "127.0.0.1:8765".into(),
                host: "127.0.0.1".into(),
                port: 8765,
                server_name: ServerName::try_from("127.0.0.1").unwrap(),
                verify_hostname: true,
                pin,
            },
        )
        .unwrap()
    }

    /// The check run after every resumed handshake, against the chain the
    /// session carries (a resumed handshake with another client's session
    /// cannot be staged: rustls and the per-client store both forbid it).
    #[test]
    fn the_pin_is_checked_against_a_resumed_sessions_certificate() {
        let pki = TestPki::new().unwrap();
        let pinned = pki.worker_bundle("w").unwrap();
        let other = pki.worker_bundle("w").unwrap();
        let der =
            |pem: &str| pki::parse_cert_pem(pem.as_bytes(), std::path::Path::new("test")).unwrap();
        let session = session_pinned_to(&pki, Some(pinned.fingerprint.clone()));
        assert!(session
            .pin_mismatch(Some(&[der(&pinned.cert_pem)]))
            .is_none());
        match session.pin_mismatch(Some(&[der(&other.cert_pem), der(&pinned.cert_pem)])) {
            Some(Error::PinMismatch {
                expected, actual, ..
            }) => {
                assert_eq!(expected, pinned.fingerprint);
                assert_eq!(actual, other.fingerprint);
            }
            other => panic!("expected a pin mismatch, got {other:?}"),
        }
        assert!(session.pin_mismatch(None).is_some(), "no chain, no match");
        let unpinned = session_pinned_to(&pki, None);
        assert!(unpinned
            .pin_mismatch(Some(&[der(&other.cert_pem)]))
            .is_none());
    }
}
