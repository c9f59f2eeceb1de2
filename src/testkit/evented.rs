//! Stand-in workers by the ten thousand: a few event loops (one per core,
//! epoll through mio) serve every member, each member with its own
//! certificate (and so its own pin) on its own loopback port, demanding a
//! client certificate from the CA and sending TLS 1.3 session tickets as
//! the reference worker does. A thread per connection, as the full
//! stand-in has, does not scale to 10,000 stand-ins on two cores; this one
//! costs a listening socket per member and a socket and a TLS connection
//! per open connection.
//!
//! Members answer the read-only endpoints (`GET /health`, `GET /status`
//! with nothing deployed); anything else is a 404. For faults, ledgers and
//! the whole contract use [`super::Swarm`].

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{HandshakeKind, RootCertStore, ServerConfig, ServerConnection};
use serde_json::{json, Value};

use super::endpoint::{agent_record, listen};
use super::http;
use super::worker::certified_key;
use crate::error::{Error, Result};
use crate::pki::{CertificateAuthority, LEAF_VALIDITY_DAYS};

/// How long a connection may stay idle when no idle close is asked for
/// (as the full stand-in's read timeout).
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// The token that wakes a loop to stop.
const WAKE: Token = Token(usize::MAX);
/// Stack of each loop thread.
const STACK_BYTES: usize = 512 * 1024;

/// One member of an event-driven swarm.
#[derive(Debug, Clone)]
pub struct EventedMember {
    /// Its host record (uuid `uuid-w<i>`, name `w<i>`, address, port and
    /// the pin of its certificate).
    pub record: Value,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Handshakes an event-driven swarm completed, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServedHandshakes {
    /// Full handshakes (a certificate and its signature).
    pub full: u64,
    /// Resumed handshakes (a session ticket).
    pub resumed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    full: AtomicU64,
    resumed: AtomicU64,
    open: AtomicU64,
}

/// Many stand-in workers served by one event loop per core; dropping the
/// swarm stops the loops and closes every socket.
pub struct EventedSwarm {
    members: Vec<EventedMember>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    loops: Vec<(Arc<Waker>, JoinHandle<()>)>,
}

impl EventedSwarm {
    /// Starts `count` members named `w<first>` onwards, listening on `ip`
    /// (a loopback address; each gets a port of its own), each with its own
    /// certificate (valid for `ip`, 127.0.0.1, ::1 and localhost) issued by
    /// `ca`, trusting client certificates from `ca`. With `idle_close`, a
    /// member closes a connection idle that long (the reference worker
    /// does after about 5 s). Swarms on different loopback addresses do
    /// not share the port range: 10,000 members and 10,000 client
    /// connections would nearly exhaust it on one address.
    pub fn start(
        ca: &CertificateAuthority,
        ip: Ipv4Addr,
        first: usize,
        count: usize,
        idle_close: Option<Duration>,
    ) -> Result<Self> {
        let ip_text = ip.to_string();
        let sans = [ip_text.as_str(), "127.0.0.1", "::1", "localhost"];
        let verifier = client_verifier(ca.cert_pem())?;
        let loop_count = thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(count.max(1));
        let mut shares: Vec<Vec<(TcpListener, Arc<ServerConfig>)>> =
            (0..loop_count).map(|_| Vec::new()).collect();
        let mut members = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("w{}", first + i);
            let bundle = ca.issue(&name, &sans, LEAF_VALIDITY_DAYS)?;
            let (key, fingerprint) = certified_key(&bundle)?;
            let config = member_config(verifier.clone(), key)?;
            let bind = SocketAddr::from((ip, 0));
            let (listener, addr) = listen(bind)?;
            listener
                .set_nonblocking(true)
                .map_err(|e| Error::internal(e.to_string()))?;
            let listener = TcpListener::from_std(listener);
            members.push(EventedMember {
                record: agent_record(&name, addr, Value::String(fingerprint)),
                addr,
            });
            shares[i % loop_count].push((listener, config));
        }
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut loops = Vec::with_capacity(loop_count);
        for (n, listeners) in shares.into_iter().enumerate() {
            let poll = Poll::new().map_err(|e| Error::internal(format!("epoll: {e}")))?;
            let waker = Arc::new(
                Waker::new(poll.registry(), WAKE)
                    .map_err(|e| Error::internal(format!("epoll waker: {e}")))?,
            );
            let mut event_loop = EventLoop::new(poll, listeners, idle_close, counters.clone())?;
            let stop = stop.clone();
            let handle = thread::Builder::new()
                .name(format!("evented-swarm-{n}"))
                .stack_size(STACK_BYTES)
                .spawn(move || event_loop.run(&stop))
                .map_err(|e| Error::internal(e.to_string()))?;
            loops.push((waker, handle));
        }
        Ok(EventedSwarm {
            members,
            counters,
            stop,
            loops,
        })
    }

    /// The members, in the order they were started.
    pub fn members(&self) -> &[EventedMember] {
        &self.members
    }

    /// Every member's host record, as a JSON array.
    pub fn host_records(&self) -> Value {
        Value::Array(self.members.iter().map(|m| m.record.clone()).collect())
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when the swarm has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The event loop threads serving every member (one per core at most).
    pub fn loop_threads(&self) -> usize {
        self.loops.len()
    }

    /// TCP connections accepted so far, by all members.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// Connections open now, by all members.
    pub fn open_connections(&self) -> u64 {
        self.counters.open.load(Ordering::Relaxed)
    }

    /// TLS handshakes completed so far, by all members.
    pub fn handshakes(&self) -> ServedHandshakes {
        ServedHandshakes {
            full: self.counters.full.load(Ordering::Relaxed),
            resumed: self.counters.resumed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for EventedSwarm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (waker, _) in &self.loops {
            let _ = waker.wake();
        }
        for (_, handle) in self.loops.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Verifies client certificates against the CA in `ca_pem`; one for the
/// whole swarm.
fn client_verifier(ca_pem: &str) -> Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| Error::invalid("client_ca", e.to_string()))?;
        roots
            .add(ca)
            .map_err(|e| Error::invalid("client_ca", e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
        .build()
        .map_err(|e| Error::invalid("client_ca", e.to_string()))
}

/// A member's TLS configuration: TLS 1.3 and 1.2, its own certificate, a
/// client certificate required, and stateless TLS 1.3 tickets under a key
/// of its own (as Python's ssl module, which the reference worker uses,
/// issues them).
fn member_config(
    verifier: Arc<dyn ClientCertVerifier>,
    key: Arc<rustls::sign::CertifiedKey>,
) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::internal(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| Error::internal(e.to_string()))?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// One accepted connection.
struct Connection {
    tcp: TcpStream,
    tls: ServerConnection,
    /// Request bytes read and not yet answered.
    pending: Vec<u8>,
    last_active: Instant,
    handshake_counted: bool,
    /// Whether WRITABLE is in its registered interest.
    wants_writable: bool,
    /// Close once the answer is written.
    closing: bool,
}

/// What became of a connection after its sockets were serviced.
enum Next {
    Keep,
    Close,
}

/// One loop's members and connections. Tokens below `listeners.len()` are
/// listeners; the rest are connection slots.
struct EventLoop {
    poll: Poll,
    listeners: Vec<(TcpListener, Arc<ServerConfig>)>,
    connections: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    idle_limit: Duration,
    counters: Arc<Counters>,
}

impl EventLoop {
    fn new(
        poll: Poll,
        mut listeners: Vec<(TcpListener, Arc<ServerConfig>)>,
        idle_close: Option<Duration>,
        counters: Arc<Counters>,
    ) -> Result<Self> {
        for (i, (listener, _)) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, Token(i), Interest::READABLE)
                .map_err(|e| Error::internal(format!("epoll: {e}")))?;
        }
        Ok(EventLoop {
            poll,
            listeners,
            connections: Vec::new(),
            free_slots: Vec::new(),
            idle_limit: idle_close.unwrap_or(IDLE_LIMIT),
            counters,
        })
    }

    /// Serves until `stop` is set (and the loop woken).
    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(1024);
        // Idle connections are looked for at a tenth of the idle limit.
        let tick = (self.idle_limit / 10).max(Duration::from_millis(10));
        let mut next_sweep = Instant::now() + tick;
        while !stop.load(Ordering::SeqCst) {
            let wait = next_sweep.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            for event in events.iter() {
                match event.token() {
                    WAKE => {}
                    Token(i) if i < self.listeners.len() => self.accept(i),
                    Token(t) => self.service(t - self.listeners.len()),
                }
            }
            if Instant::now() >= next_sweep {
                self.close_idle();
                next_sweep = Instant::now() + tick;
            }
        }
    }

    /// Accepts every connection waiting on listener `i`.
    fn accept(&mut self, i: usize) {
        loop {
            let (tcp, _) = match self.listeners[i].0.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: all taken; anything else (EMFILE): the
                // client sees a reset or a timeout, as with a real worker.
                Err(_) => return,
            };
            let Ok(tls) = ServerConnection::new(self.listeners[i].1.clone()) else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let slot = self.free_slots.pop().unwrap_or_else(|| {
                self.connections.push(None);
                self.connections.len() - 1
            });
            let mut connection = Connection {
                tcp,
                tls,
                pending: Vec::new(),
                last_active: Instant::now(),
                handshake_counted: false,
                wants_writable: false,
                closing: false,
            };
            let token = Token(self.listeners.len() + slot);
            if self
                .poll
                .registry()
                .register(&mut connection.tcp, token, Interest::READABLE)
                .is_err()
            {
                self.free_slots.push(slot);
                continue;
            }
            self.counters.connections.fetch_add(1, Ordering::Relaxed);
            self.counters.open.fetch_add(1, Ordering::Relaxed);
            self.connections[slot] = Some(connection);
        }
    }

    /// Reads, answers and writes what connection `slot` is ready for.
    fn service(&mut self, slot: usize) {
        let Some(connection) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let next = connection.service(&self.counters);
        let token = Token(self.listeners.len() + slot);
        match next {
            Next::Close => self.close(slot),
            Next::Keep => {
                let writable = connection.tls.wants_write();
                if writable != connection.wants_writable {
                    let interest = if writable {
                        Interest::READABLE | Interest::WRITABLE
                    } else {
                        Interest::READABLE
                    };
                    if self
                        .poll
                        .registry()
                        .reregister(&mut connection.tcp, token, interest)
                        .is_err()
                    {
                        return self.close(slot);
                    }
                    connection.wants_writable = writable;
                }
            }
        }
    }

    /// Closes every connection idle longer than the idle limit, with a
    /// close_notify first.
    fn close_idle(&mut self) {
        let now = Instant::now();
        for slot in 0..self.connections.len() {
            let idle = self.connections[slot]
                .as_ref()
                .is_some_and(|c| now.duration_since(c.last_active) >= self.idle_limit);
            if idle {
                if let Some(connection) = self.connections[slot].as_mut() {
                    connection.tls.send_close_notify();
                    let _ = connection.tls.write_tls(&mut connection.tcp);
                }
                self.close(slot);
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut connection) = self.connections[slot].take() {
            let _ = self.poll.registry().deregister(&mut connection.tcp);
            self.counters.open.fetch_sub(1, Ordering::Relaxed);
            self.free_slots.push(slot);
        }
    }
}

impl Connection {
    fn service(&mut self, counters: &Counters) -> Next {
        self.last_active = Instant::now();
        let mut peer_closed = false;
        loop {
            match self.tls.read_tls(&mut self.tcp) {
                Ok(0) => {
                    peer_closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Next::Close,
            }
            match self.tls.process_new_packets() {
                Ok(state) => {
                    if state.plaintext_bytes_to_read() > 0 {
                        let start = self.pending.len();
                        self.pending
                            .resize(start + state.plaintext_bytes_to_read(), 0);
                        match self.tls.reader().read(&mut self.pending[start..]) {
                            Ok(n) => self.pending.truncate(start + n),
                            Err(_) => return Next::Close,
                        }
                    }
                    if state.peer_has_closed() {
                        peer_closed = true;
                    }
                }
                Err(_) => {
                    // Tell the client why (a bad certificate, say), then go.
                    let _ = self.tls.write_tls(&mut self.tcp);
                    return Next::Close;
                }
            }
        }
        if !self.handshake_counted && !self.tls.is_handshaking() {
            self.handshake_counted = true;
            let counter = match self.tls.handshake_kind() {
                Some(HandshakeKind::Resumed) => &counters.resumed,
                _ => &counters.full,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if self.answer().is_err() {
            return Next::Close;
        }
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Next::Close,
            }
        }
        let written = !self.tls.wants_write();
        if peer_closed || (self.closing && written) {
            Next::Close
        } else {
            Next::Keep
        }
    }

    /// Answers every whole request in `pending`.
    fn answer(&mut self) -> io::Result<()> {
        while !self.closing {
            let Some((head, head_len)) = http::parse_head(&self.pending)? else {
                return Ok(());
            };
            let whole = head_len + head.content_length;
            if self.pending.len() < whole {
                return Ok(());
            }
            self.pending.drain(..whole);
            let (status, body) = match (head.method.as_str(), head.path.as_str()) {
                ("GET", "/health") => (200, json!({"status": "ok"})),
                ("GET", "/status") => (200, json!({"deployed": false, "deckies": []})),
                _ => (404, json!({"detail": "Not Found"})),
            };
            http::write_response(&mut self.tls.writer(), status, body.to_string().as_bytes())?;
            self.closing = head.close;
        }
        Ok(())
    }
}
