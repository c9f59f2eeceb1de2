//! The stand-in worker agent: a real rustls server on loopback that demands
//! a client certificate from the CA, speaks HTTP/1.1 with keep-alive,
//! implements every endpoint of the contract with its status codes, keeps a
//! ledger of what it received and injects faults on demand.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Value};

use super::endpoint::{agent_record, listen};
use super::http::{self, Request};
use crate::error::{Error, Result};
use crate::json;
use crate::pki::{self, Bundle};
use crate::topology;

/// How long a connection may wait for its handshake or its next request
/// when no fault says otherwise.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Stack of each stand-in thread: small, so hundreds of stand-ins fit in
/// one process.
const STACK_BYTES: usize = 256 * 1024;

/// A misbehaviour the stand-in applies to every request while it is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behave like the real worker.
    #[default]
    None,
    /// Wait this long before answering.
    Stall(Duration),
    /// Close a kept-alive connection that has been idle this long.
    CloseIdleAfter(Duration),
    /// Answer 200 with a body of this many bytes.
    OversizedBody(usize),
    /// Send the headers and half the body, then drop the connection.
    ResetMidBody,
    /// Answer 200 with a body that is not JSON.
    NonJsonBody,
    /// Send the response one byte per interval.
    Drip(Duration),
    /// Read the request, then close without answering.
    CloseAfterRequest,
    /// Answer 500 with `{"detail": "simulated worker failure"}`.
    ServerError,
    /// Send the response headers, then wait this long before the body.
    StallAfterHeaders(Duration),
    /// Answer with the start of a TLS record (header and a few bytes of a
    /// longer record), then drop the connection.
    TruncatedRecord,
    /// Drop each new connection right after its TLS handshake.
    CloseAfterHandshake,
    /// Accept TCP connections and never send a byte.
    SilentTcp,
    /// Send the TLS handshake one byte per interval.
    TrickleHandshake(Duration),
    /// Wait this long after the ClientHello before answering it, then
    /// complete the handshake and serve normally.
    SlowHandshake(Duration),
    /// Send the response head one byte per interval, then the body at once.
    TrickleHead(Duration),
    /// Send the response head at once, then the body one byte per interval.
    TrickleBody(Duration),
    /// After the handshake, never read the request (a large request then
    /// fills the socket buffers and the client's send blocks).
    StopReading,
    /// Answer with a response head that holds one header line of this many
    /// bytes.
    OversizedHead(usize),
    /// Read the ClientHello, then close the TCP connection.
    CloseDuringHandshake,
    /// Read the ClientHello, then reset the TCP connection.
    ResetDuringHandshake,
    /// Read the request, then answer with a TLS record that does not
    /// decrypt (the client's TLS layer fails after the request was sent).
    CorruptRecord,
    /// Answer 200 with exactly this body.
    RawBody(&'static str),
    /// A deploy that fails part-way: the first this-many deckies of the
    /// config come up, then `/deploy` answers 500; the status snapshot
    /// then also has the reference's `runtime` map (`{name: {"running":
    /// true}}` for the deckies up). Every other endpoint behaves.
    DeployFailsAfter(usize),
}

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// The parsed JSON body; `Null` when the body was empty.
    pub body: Value,
    /// Which accepted connection carried it (counts from 1).
    pub connection: u64,
    /// The fault applied to its answer.
    pub fault: Fault,
}

#[derive(Debug, Default)]
struct AgentState {
    deckies: Option<Vec<String>>,
    topology: Option<(String, String)>,
}

/// The certificate the stand-in presents; swappable between connections.
#[derive(Debug)]
pub(super) struct SwappableCert {
    current: RwLock<(Arc<CertifiedKey>, String)>,
}

impl SwappableCert {
    /// Presents `bundle`'s certificate.
    pub(super) fn new(bundle: &Bundle) -> Result<Self> {
        Ok(SwappableCert {
            current: RwLock::new(certified_key(bundle)?),
        })
    }

    /// Fingerprint of the certificate presented now.
    pub(super) fn fingerprint(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }
}

/// The server configuration of a stand-in: TLS 1.2 and 1.3 (or 1.2 only),
/// `cert` as its certificate and, with `client_auth`, a client certificate
/// required and verified against `client_ca_pem`.
pub(super) fn server_config(
    cert: Arc<SwappableCert>,
    client_ca_pem: &str,
    tls12_only: bool,
    client_auth: bool,
) -> Result<ServerConfig> {
    let provider = crate::tls::provider();
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| Error::invalid("client_ca", e.to_string()))?;
        roots
            .add(ca)
            .map_err(|e| Error::invalid("client_ca", e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::invalid("client_ca", e.to_string()))?;
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| Error::internal(e.to_string()))?;
    let builder = if client_auth {
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Ok(builder.with_cert_resolver(cert))
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone(),
        )
    }
}

/// `bundle`'s certificate and key as rustls presents them, and the
/// certificate's fingerprint.
pub(super) fn certified_key(bundle: &Bundle) -> Result<(Arc<CertifiedKey>, String)> {
    let origin = std::path::Path::new("<stand-in bundle>");
    let cert = pki::parse_cert_pem(bundle.cert_pem.as_bytes(), origin)?;
    let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes())
        .map_err(|e| Error::pki(origin, format!("key: {e}")))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| Error::pki(origin, format!("key: {e}")))?;
    let fingerprint = pki::fingerprint_der(&cert);
    Ok((Arc::new(CertifiedKey::new(vec![cert], signer)), fingerprint))
}

struct Shared {
    fault: Mutex<Fault>,
    ledger: Mutex<Vec<LedgerEntry>>,
    state: Mutex<AgentState>,
    cert: Arc<SwappableCert>,
    handshakes: AtomicU64,
    connections: AtomicU64,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Configures a [`StandInWorker`] before it starts.
pub struct WorkerBuilder {
    bundle: Bundle,
    client_ca_pem: Option<String>,
    bind: SocketAddr,
    tls12_only: bool,
    client_auth: bool,
    tls13_tickets: usize,
}

impl WorkerBuilder {
    /// Ask for no client certificate (a misconfigured worker).
    pub fn no_client_auth(mut self) -> Self {
        self.client_auth = false;
        self
    }

    /// Trust client certificates from this CA instead of the bundle's.
    pub fn client_ca(mut self, pem: &str) -> Self {
        self.client_ca_pem = Some(pem.to_string());
        self
    }

    /// Listen on `addr` instead of `127.0.0.1:0`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Offer TLS 1.2 only.
    pub fn tls12_only(mut self) -> Self {
        self.tls12_only = true;
        self
    }

    /// Send this many TLS 1.3 session tickets after each handshake (rustls'
    /// default is 2; 0 turns resumption off).
    pub fn tls13_tickets(mut self, count: usize) -> Self {
        self.tls13_tickets = count;
        self
    }

    /// Starts listening and serving on background threads.
    pub fn start(self) -> Result<StandInWorker> {
        let client_ca = self
            .client_ca_pem
            .as_deref()
            .unwrap_or(&self.bundle.ca_cert_pem);
        let cert = Arc::new(SwappableCert::new(&self.bundle)?);
        let mut config = server_config(cert.clone(), client_ca, self.tls12_only, self.client_auth)?;
        config.send_tls13_tickets = self.tls13_tickets;
        let config = Arc::new(config);
        let (listener, addr) = listen(self.bind)?;
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::None),
            ledger: Mutex::new(Vec::new()),
            state: Mutex::new(AgentState::default()),
            cert,
            handshakes: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        let accept = thread::Builder::new()
            .name("stand-in-accept".into())
            .stack_size(STACK_BYTES)
            .spawn(move || accept_loop(listener, config, accept_shared))
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(StandInWorker {
            addr,
            shared,
            accept: Some(accept),
        })
    }
}

/// A running stand-in worker. Stops accepting when dropped.
pub struct StandInWorker {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl StandInWorker {
    /// A builder for a worker presenting `bundle` (its certificate and key;
    /// its CA certificate verifies clients).
    pub fn builder(bundle: &Bundle) -> WorkerBuilder {
        WorkerBuilder {
            bundle: bundle.clone(),
            client_ca_pem: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls12_only: false,
            client_auth: true,
            tls13_tickets: 2,
        }
    }

    /// Starts a worker on `127.0.0.1` with an ephemeral port.
    pub fn start(bundle: &Bundle) -> Result<Self> {
        Self::builder(bundle).start()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Fingerprint of the certificate new connections are shown.
    pub fn fingerprint(&self) -> String {
        self.shared.cert.fingerprint()
    }

    /// A host record for this worker, pinned to its current certificate
    /// when `pinned`.
    pub fn host_record(&self, name: &str, pinned: bool) -> Value {
        let pin = if pinned {
            Value::String(self.fingerprint())
        } else {
            Value::Null
        };
        agent_record(name, self.addr, pin)
    }

    /// Presents `bundle`'s certificate to every later connection.
    pub fn swap_certificate(&self, bundle: &Bundle) -> Result<()> {
        let next = certified_key(bundle)?;
        *self
            .shared
            .cert
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// Applies `fault` to every later request.
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
    }

    /// Every request received so far, in order.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        lock(&self.shared.ledger).clone()
    }

    /// Removes and returns the requests received so far (for long runs
    /// that must not keep every request in memory).
    pub fn take_ledger(&self) -> Vec<LedgerEntry> {
        std::mem::take(&mut *lock(&self.shared.ledger))
    }

    /// Completed TLS handshakes.
    pub fn handshakes(&self) -> u64 {
        self.shared.handshakes.load(Ordering::Relaxed)
    }

    /// Accepted TCP connections.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for StandInWorker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn accept_loop(listener: TcpListener, config: Arc<ServerConfig>, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let (config, shared) = (config.clone(), shared.clone());
        let _ = thread::Builder::new()
            .name(format!("stand-in-conn-{id}"))
            .stack_size(STACK_BYTES)
            .spawn(move || serve(stream, config, shared, id));
    }
}

fn serve(mut tcp: TcpStream, config: Arc<ServerConfig>, shared: Arc<Shared>, id: u64) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(IDLE_LIMIT));
    let fault = *lock(&shared.fault);
    let trickle = match fault {
        Fault::SilentTcp => return hold(&shared),
        Fault::CloseDuringHandshake | Fault::ResetDuringHandshake => {
            let mut hello = [0u8; 4096];
            let _ = io::Read::read(&mut tcp, &mut hello);
            if fault == Fault::ResetDuringHandshake {
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            }
            return;
        }
        Fault::TrickleHandshake(interval) => Some(interval),
        Fault::SlowHandshake(delay) => {
            thread::sleep(delay);
            None
        }
        _ => None,
    };
    let Ok(mut conn) = ServerConnection::new(config) else {
        return;
    };
    while conn.is_handshaking() {
        let step = match trickle {
            None => conn.complete_io(&mut tcp).map(|_| ()),
            Some(interval) => trickle_handshake_step(&mut conn, &mut tcp, interval, &shared),
        };
        if step.is_err() {
            // Deliver the alert that explains the failure, if any.
            let _ = conn.write_tls(&mut tcp);
            return;
        }
    }
    shared.handshakes.fetch_add(1, Ordering::Relaxed);
    let fault = *lock(&shared.fault);
    match fault {
        Fault::CloseAfterHandshake => {
            let _ = tcp.shutdown(Shutdown::Both);
            return;
        }
        Fault::StopReading => return hold(&shared),
        _ => {}
    }
    let mut stream = StreamOwned::new(conn, tcp);
    let mut pending = Vec::new();
    loop {
        let idle = match *lock(&shared.fault) {
            Fault::CloseIdleAfter(limit) => limit,
            _ => IDLE_LIMIT,
        };
        let _ = stream.sock.set_read_timeout(Some(idle));
        let request = match http::read_request(&mut stream, &mut pending) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                stream.conn.send_close_notify();
                let _ = stream.flush();
                let _ = stream.sock.shutdown(Shutdown::Both);
                return;
            }
            Err(_) => return,
        };
        let body = if request.body.is_empty() {
            Value::Null
        } else {
            json::from_slice(&request.body).unwrap_or(Value::Null)
        };
        // The fault in force when the request arrived, not when we began waiting.
        let fault = *lock(&shared.fault);
        lock(&shared.ledger).push(LedgerEntry {
            method: request.method.clone(),
            path: request.path.clone(),
            body: body.clone(),
            connection: id,
            fault,
        });
        if respond(&mut stream, &shared, &request, fault).is_err() || request.close {
            return;
        }
    }
}

type TlsStream = StreamOwned<ServerConnection, TcpStream>;

/// Keeps a connection open without a byte in either direction, until the
/// worker stops or the idle limit passes.
fn hold(shared: &Shared) {
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    while waited < IDLE_LIMIT && !shared.stop.load(Ordering::SeqCst) {
        thread::sleep(step);
        waited += step;
    }
}

/// One step of a handshake whose every outgoing byte is sent on its own,
/// one per `interval`.
fn trickle_handshake_step(
    conn: &mut ServerConnection,
    tcp: &mut TcpStream,
    interval: Duration,
    shared: &Shared,
) -> io::Result<()> {
    if conn.wants_write() {
        let mut flight = Vec::new();
        conn.write_tls(&mut flight)?;
        return trickle(tcp, &flight, interval, shared);
    }
    if conn.read_tls(tcp)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    conn.process_new_packets().map_err(io::Error::other)?;
    Ok(())
}

/// Writes `bytes` one at a time, `interval` apart; stops when the worker
/// stops or the peer goes away.
fn trickle<W: Write>(
    out: &mut W,
    bytes: &[u8],
    interval: Duration,
    shared: &Shared,
) -> io::Result<()> {
    for byte in bytes {
        if shared.stop.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        out.write_all(&[*byte])?;
        out.flush()?;
        thread::sleep(interval);
    }
    Ok(())
}

/// Answers one request, applying `fault`. An error ends the connection.
fn respond(
    stream: &mut TlsStream,
    shared: &Shared,
    request: &Request,
    fault: Fault,
) -> io::Result<()> {
    match fault {
        Fault::Stall(delay) => thread::sleep(delay),
        Fault::CloseAfterRequest => return hang_up(stream),
        Fault::NonJsonBody => return http::write_response(stream, 200, b"<html>not json</html>"),
        Fault::RawBody(body) => return http::write_response(stream, 200, body.as_bytes()),
        Fault::TruncatedRecord => {
            // Application data, TLS 1.2 framing, announcing 64 bytes; send 10.
            let _ = stream
                .sock
                .write_all(&[0x17, 0x03, 0x03, 0x00, 0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
            return hang_up(stream);
        }
        Fault::CorruptRecord => {
            // Application data, TLS 1.2 framing, 32 bytes no key decrypts.
            let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
            record.extend_from_slice(&[0x5a; 32]);
            stream.sock.write_all(&record)?;
            return hang_up(stream);
        }
        Fault::ServerError => {
            let body = detail("simulated worker failure").to_string();
            return http::write_response(stream, 500, body.as_bytes());
        }
        Fault::OversizedBody(size) => {
            stream.write_all(&http::response_head(200, size))?;
            let chunk = vec![b' '; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len());
                stream.write_all(&chunk[..n])?;
                left -= n;
            }
            return stream.flush();
        }
        _ => {}
    }
    let (status, body) = route(shared, request, fault);
    let body = body.to_string().into_bytes();
    match fault {
        Fault::ResetMidBody => {
            stream.write_all(&http::response_head(status, body.len()))?;
            stream.write_all(&body[..body.len() / 2])?;
            stream.flush()?;
            hang_up(stream)
        }
        Fault::StallAfterHeaders(delay) => {
            stream.write_all(&http::response_head(status, body.len()))?;
            stream.flush()?;
            thread::sleep(delay);
            stream.write_all(&body)?;
            stream.flush()
        }
        Fault::Drip(interval) => {
            let mut bytes = http::response_head(status, body.len());
            bytes.extend_from_slice(&body);
            trickle(stream, &bytes, interval, shared)
        }
        Fault::TrickleHead(interval) => {
            trickle(
                stream,
                &http::response_head(status, body.len()),
                interval,
                shared,
            )?;
            stream.write_all(&body)?;
            stream.flush()
        }
        Fault::TrickleBody(interval) => {
            stream.write_all(&http::response_head(status, body.len()))?;
            stream.flush()?;
            trickle(stream, &body, interval, shared)
        }
        Fault::OversizedHead(size) => {
            let mut head = b"HTTP/1.1 200 OK\r\nx-padding: ".to_vec();
            head.resize(head.len() + size, b'a');
            head.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\n{}");
            stream.write_all(&head)?;
            stream.flush()
        }
        _ => http::write_response(stream, status, &body),
    }
}

/// Drops the TCP connection without a TLS close_notify.
fn hang_up(stream: &mut TlsStream) -> io::Result<()> {
    let _ = stream.sock.shutdown(Shutdown::Both);
    Err(io::ErrorKind::ConnectionAborted.into())
}

fn detail(message: impl Into<String>) -> Value {
    json!({ "detail": message.into() })
}

fn validation_error(location: &[&str], message: &str) -> (u16, Value) {
    (
        422,
        json!({"detail": [{"loc": location, "msg": message, "type": "value_error"}]}),
    )
}

/// The worker's endpoints.
fn route(shared: &Shared, request: &Request, fault: Fault) -> (u16, Value) {
    let body = if request.body.is_empty() {
        None
    } else {
        match json::from_slice(&request.body) {
            Ok(value) => Some(value),
            Err(_) => return validation_error(&["body"], "JSON decode error"),
        }
    };
    let mut state = lock(&shared.state);
    match (request.method.as_str(), request.path.as_str(), body) {
        ("GET", "/health", _) => (200, json!({"status": "ok"})),
        ("GET", "/status", _) => {
            let deckies = state.deckies.clone().unwrap_or_default();
            let mut snapshot = json!({
                "deployed": state.deckies.is_some(),
                "deckies": deckies,
            });
            if let Fault::DeployFailsAfter(_) = fault {
                let runtime: serde_json::Map<String, Value> = deckies
                    .iter()
                    .map(|name| (name.clone(), json!({"running": true})))
                    .collect();
                snapshot["runtime"] = Value::Object(runtime);
            }
            (200, snapshot)
        }
        ("POST", "/deploy", Some(body)) => match fault {
            Fault::DeployFailsAfter(up) => {
                let started = deploy(&mut state, &body);
                if let Some(deckies) = state.deckies.as_mut() {
                    deckies.truncate(up);
                }
                match started.0 {
                    202 => (500, detail("deploy failed part-way")),
                    _ => started,
                }
            }
            _ => deploy(&mut state, &body),
        },
        ("POST", "/mutate", Some(body)) => mutate(&state, &body),
        ("POST", "/teardown", Some(body)) => {
            let target = body.get("decky_id").cloned().unwrap_or(Value::Null);
            match (&target, state.deckies.as_mut()) {
                (Value::String(name), Some(deckies)) => deckies.retain(|d| d != name),
                (Value::Null, _) => state.deckies = None,
                _ => {}
            }
            (200, json!({"status": "torn_down", "decky_id": target}))
        }
        ("POST", "/self-destruct", _) => (200, json!({"status": "self_destruct_scheduled"})),
        ("POST", "/topology/apply", Some(_)) => apply_topology(&mut state, &request.body),
        ("POST", "/topology/teardown", Some(body)) => match body.get("topology_id") {
            Some(Value::String(id)) => {
                if state
                    .topology
                    .as_ref()
                    .is_some_and(|(current, _)| current == id)
                {
                    state.topology = None;
                }
                (200, json!({"status": "torn_down", "topology_id": id}))
            }
            _ => validation_error(&["body", "topology_id"], "field required"),
        },
        ("GET", "/topology/state", _) => match &state.topology {
            Some((id, hash)) => (
                200,
                json!({"applied": true, "topology_id": id, "version_hash": hash}),
            ),
            None => (200, json!({"applied": false})),
        },
        ("POST", _, None) => validation_error(&["body"], "field required"),
        _ => (404, detail("Not Found")),
    }
}

fn deploy(state: &mut AgentState, body: &Value) -> (u16, Value) {
    let config = &body["config"];
    let Some(deckies) = config.get("deckies").and_then(Value::as_array) else {
        return validation_error(&["body", "config", "deckies"], "field required");
    };
    if deckies.is_empty() {
        return validation_error(&["body", "config", "deckies"], "at least one decky");
    }
    let mut names = Vec::new();
    for (i, decky) in deckies.iter().enumerate() {
        let index = i.to_string();
        let Some(name) = decky.get("name").and_then(Value::as_str) else {
            return validation_error(
                &["body", "config", "deckies", &index, "name"],
                "field required",
            );
        };
        let services_ok = decky
            .get("services")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty() && s.iter().all(Value::is_string));
        if !services_ok {
            return validation_error(
                &["body", "config", "deckies", &index, "services"],
                "at least one service name",
            );
        }
        names.push(name.to_string());
    }
    if body.get("dry_run") != Some(&Value::Bool(true)) {
        state.deckies = Some(names.clone());
    }
    (202, json!({"status": "accepted", "deckies": names}))
}

fn mutate(state: &AgentState, body: &Value) -> (u16, Value) {
    let (Some(decky), Some(services)) = (
        body.get("decky_id").and_then(Value::as_str),
        body.get("services").and_then(Value::as_array),
    ) else {
        return validation_error(&["body"], "decky_id and services are required");
    };
    if body.get("dry_run") == Some(&Value::Bool(true)) {
        return match &state.deckies {
            None => (404, detail("no active deployment")),
            Some(deckies) if !deckies.iter().any(|d| d == decky) => {
                (404, detail(format!("decky '{decky}' not found")))
            }
            Some(_) => (
                200,
                json!({"status": "dry_run", "decky_id": decky, "services": services}),
            ),
        };
    }
    (
        202,
        json!({"status": "accepted", "decky_id": decky, "services": services}),
    )
}

/// Hashes `hydrated` as the worker does: from the document it received,
/// read exactly (every number's literal kept, every key an ordinary key).
fn apply_topology(state: &mut AgentState, raw_body: &[u8]) -> (u16, Value) {
    let body = json::from_slice(raw_body).ok();
    let (Some(hydrated), Some(claimed)) = (
        body.as_ref().and_then(|b| b.get("hydrated")),
        body.as_ref()
            .and_then(|b| b.get("version_hash"))
            .and_then(Value::as_str)
            .map(str::to_string),
    ) else {
        return validation_error(&["body"], "hydrated object and version_hash are required");
    };
    let actual = match topology::canonical_hash(hydrated) {
        Ok(hash) => hash,
        Err(e) => return (400, detail(format!("invalid topology: {e}"))),
    };
    if actual != claimed {
        return (
            400,
            detail(format!(
                "version_hash mismatch: computed {actual}, got {claimed}"
            )),
        );
    }
    let id = hydrated
        .pointer("/topology/id")
        .or_else(|| hydrated.get("id"))
        .and_then(Value::as_str)
        .unwrap_or(&actual)
        .to_string();
    if let Some((current, _)) = &state.topology {
        if *current != id {
            return (
                409,
                detail(format!("topology '{current}' is already applied")),
            );
        }
    }
    state.topology = Some((id, actual.clone()));
    (200, json!({"status": "applied", "version_hash": actual}))
}
