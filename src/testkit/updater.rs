//! The stand-in updater: a real rustls server on loopback that demands a
//! client certificate from the CA, answers 403 to any identity but
//! `decnet-master` (except on `/health`), implements the updater contract's
//! endpoints and status codes, parses multipart uploads with multer while
//! they stream in (hashing the tarball, keeping only small ones), and can
//! drop the connection after an update-self request or in the middle of an
//! upload, or answer slowly.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::endpoint::listen;
use super::http::{self, Head};
use super::worker::{server_config, SwappableCert};
use crate::error::{Error, Result};
use crate::hex::lower_hex;
use crate::pki::Bundle;

/// The only identity allowed past `/health`.
pub const MASTER_CN: &str = "decnet-master";
/// Tarballs up to this size are kept whole in the ledger.
pub const KEPT_TARBALL_BYTES: usize = 1024 * 1024;
/// How much of an upload [`UpdaterMode::DropMidUpload`] reads before it
/// resets the connection.
pub const DROP_AFTER_BYTES: usize = 64 * 1024;
/// How long a connection may wait for its next request.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How the stand-in answers updates while the mode is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdaterMode {
    /// Install and answer like the real updater.
    #[default]
    Normal,
    /// The new release fails its probe and is rolled back: 409.
    ProbeFailsRolledBack,
    /// The install fails and is not rolled back: 500.
    InstallFails,
    /// Updates fail with a 500 whose body is plain text, not JSON (a proxy
    /// or a crashed handler).
    PlainTextError,
    /// After reading a whole update-self request, close the connection at
    /// once without answering, then for this long (the updater
    /// re-executing) close every connection unanswered, then install it.
    DropAfterSelfUpdate(Duration),
    /// Read the head and [`DROP_AFTER_BYTES`] of an upload's body, then
    /// reset the connection.
    DropMidUpload,
    /// Receive an upload whole, wait this long (a slow install), then
    /// answer as [`UpdaterMode::Normal`].
    Slow(Duration),
}

/// One multipart upload as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// `/update` or `/update-self`.
    pub path: String,
    /// The client certificate's CN.
    pub client_cn: String,
    /// The `content-type` header of the request.
    pub content_type: String,
    /// Every text field (`sha`, `sha256`, `confirm_self`, …).
    pub fields: BTreeMap<String, String>,
    /// The tarball part's file name.
    pub file_name: Option<String>,
    /// The tarball part's content type.
    pub file_content_type: Option<String>,
    /// Bytes in the tarball part.
    pub tarball_len: u64,
    /// Lowercase hex SHA-256 of the tarball part.
    pub tarball_sha256: String,
    /// The tarball part, when at most [`KEPT_TARBALL_BYTES`].
    pub tarball: Option<Vec<u8>>,
    /// The status the stand-in answered (0 when it dropped the connection).
    pub status: u16,
}

/// A release slot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Release {
    sha: String,
    installed_at: String,
}

#[derive(Debug, Default)]
struct Releases {
    active: Option<Release>,
    prev: Option<Release>,
}

impl Releases {
    fn to_json(&self) -> Value {
        let slot = |name: &str, r: &Option<Release>| match r {
            Some(r) => json!({"slot": name, "sha": r.sha, "installed_at": r.installed_at}),
            None => json!({"slot": name, "sha": null, "installed_at": null}),
        };
        json!([slot("active", &self.active), slot("prev", &self.prev)])
    }

    fn install(&mut self, sha: &str) -> Value {
        self.prev = self.active.take();
        self.active = Some(Release {
            sha: sha.to_string(),
            installed_at: now_iso8601(),
        });
        self.to_json()[0].clone()
    }
}

fn now_iso8601() -> String {
    let t = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

struct Shared {
    mode: Mutex<UpdaterMode>,
    releases: Arc<Mutex<Releases>>,
    uploads: Mutex<Vec<Upload>>,
    requests: Mutex<Vec<(String, String, String)>>,
    connections: AtomicU64,
    stop: AtomicBool,
    /// Set while the updater "re-executes": requests get no answer.
    restarting: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running stand-in updater. Stops accepting when dropped.
pub struct StandInUpdater {
    addr: SocketAddr,
    cert: Arc<SwappableCert>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl StandInUpdater {
    /// Starts an updater on `127.0.0.1` with an ephemeral port, presenting
    /// `bundle` (its certificate and key; its CA verifies clients).
    pub fn start(bundle: &Bundle) -> Result<Self> {
        let cert = Arc::new(SwappableCert::new(bundle)?);
        let config = Arc::new(server_config(
            cert.clone(),
            &bundle.ca_cert_pem,
            false,
            true,
        )?);
        let bind = SocketAddr::from(([127, 0, 0, 1], 0));
        let (listener, addr) = listen(bind)?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(UpdaterMode::Normal),
            releases: Arc::new(Mutex::new(Releases::default())),
            uploads: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            restarting: Arc::new(AtomicBool::new(false)),
        });
        let accept_shared = shared.clone();
        let accept = thread::Builder::new()
            .name("stand-in-updater-accept".into())
            .spawn(move || accept_loop(listener, config, accept_shared))
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(StandInUpdater {
            addr,
            cert,
            shared,
            accept: Some(accept),
        })
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Fingerprint of the certificate it presents (the updater pin).
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint()
    }

    /// Applies `mode` to later requests.
    pub fn set_mode(&self, mode: UpdaterMode) {
        *lock(&self.shared.mode) = mode;
    }

    /// Every upload received so far, in order.
    pub fn uploads(&self) -> Vec<Upload> {
        lock(&self.shared.uploads).clone()
    }

    /// Every request received so far as (method, path, client CN).
    pub fn requests(&self) -> Vec<(String, String, String)> {
        lock(&self.shared.requests).clone()
    }

    /// Accepted TCP connections.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Makes `sha` the active release (and the old one the previous).
    pub fn install(&self, sha: &str) {
        lock(&self.shared.releases).install(sha);
    }
}

impl Drop for StandInUpdater {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
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
            .name(format!("stand-in-updater-conn-{id}"))
            .spawn(move || serve(stream, config, shared));
    }
}

type TlsStream = StreamOwned<ServerConnection, TcpStream>;

/// The CN of the client certificate the handshake verified.
fn client_cn(conn: &ServerConnection) -> String {
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            let cn = cert.subject().iter_common_name().next()?;
            cn.as_str().ok().map(str::to_string)
        })
        .unwrap_or_default()
}

fn serve(mut tcp: TcpStream, config: Arc<ServerConfig>, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(IDLE_LIMIT));
    let Ok(mut conn) = ServerConnection::new(config) else {
        return;
    };
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            let _ = conn.write_tls(&mut tcp);
            return;
        }
    }
    let cn = client_cn(&conn);
    let mut stream = StreamOwned::new(conn, tcp);
    let mut pending = Vec::new();
    loop {
        let head = match http::read_head(&mut stream, &mut pending) {
            Ok(Some(head)) => head,
            _ => return,
        };
        lock(&shared.requests).push((head.method.clone(), head.path.clone(), cn.clone()));
        if shared.restarting.load(Ordering::SeqCst) {
            return;
        }
        let mode = *lock(&shared.mode);
        match handle(&mut stream, &mut pending, &shared, &head, &cn, mode) {
            Ok(Some((status, body))) => {
                let body = body.to_string();
                if http::write_response(&mut stream, status, body.as_bytes()).is_err() || head.close
                {
                    return;
                }
            }
            // Hung up on purpose, or the connection failed.
            Ok(None) | Err(_) => return,
        }
    }
}

/// Answers one request whose head was read; `None` means the connection
/// was dropped without an answer.
fn handle(
    stream: &mut TlsStream,
    pending: &mut Vec<u8>,
    shared: &Shared,
    head: &Head,
    cn: &str,
    mode: UpdaterMode,
) -> io::Result<Option<(u16, Value)>> {
    let is_upload =
        head.method == "POST" && matches!(head.path.as_str(), "/update" | "/update-self");
    if is_upload && mode == UpdaterMode::DropMidUpload {
        let mut body = BodyReader::new(stream, pending, head.content_length);
        let mut sink = vec![0u8; DROP_AFTER_BYTES];
        let _ = body.read_exact(&mut sink);
        // Unread bytes and no linger: the peer sees a reset, not an end.
        let _ = socket2::SockRef::from(&stream.sock).set_linger(Some(Duration::ZERO));
        return Ok(None);
    }
    if head.path != "/health" && cn != MASTER_CN {
        discard_body(stream, pending, head.content_length)?;
        return Ok(Some((
            403,
            json!({"detail": "master certificate required"}),
        )));
    }
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/health") => {
            let releases = lock(&shared.releases).to_json();
            Ok(Some((
                200,
                json!({"status": "ok", "role": "updater", "releases": releases}),
            )))
        }
        ("GET", "/releases") => Ok(Some((
            200,
            json!({"releases": lock(&shared.releases).to_json()}),
        ))),
        ("POST", "/rollback") => {
            discard_body(stream, pending, head.content_length)?;
            let mut releases = lock(&shared.releases);
            match releases.prev.take() {
                None => Ok(Some((404, json!({"detail": "no previous release"})))),
                Some(prev) => {
                    releases.active = Some(prev);
                    let active = releases.to_json()[0].clone();
                    Ok(Some((
                        200,
                        json!({"status": "rolled_back", "release": active, "probe": "ok"}),
                    )))
                }
            }
        }
        ("POST", "/update" | "/update-self") => {
            let mut upload = receive_upload(stream, pending, head, cn)?;
            if mode == UpdaterMode::PlainTextError {
                upload.status = 500;
                lock(&shared.uploads).push(upload);
                http::write_response(stream, 500, b"Internal Server Error")?;
                // The answer is complete; end the connection with it.
                return Ok(None);
            }
            if let UpdaterMode::Slow(delay) = mode {
                thread::sleep(delay);
            }
            let answer = judge_upload(shared, &upload, mode);
            upload.status = answer.as_ref().map_or(0, |(status, _)| *status);
            lock(&shared.uploads).push(upload);
            if answer.is_none() {
                // Read everything, answer nothing: a clean close.
                stream.conn.send_close_notify();
                let _ = stream.flush();
                let _ = stream.sock.shutdown(Shutdown::Both);
            }
            Ok(answer)
        }
        _ => {
            discard_body(stream, pending, head.content_length)?;
            Ok(Some((404, json!({"detail": "Not Found"}))))
        }
    }
}

/// The answer to a received upload (`None`: close without one).
fn judge_upload(shared: &Shared, upload: &Upload, mode: UpdaterMode) -> Option<(u16, Value)> {
    let self_update = upload.path == "/update-self";
    if !upload.content_type.starts_with("multipart/form-data") {
        return Some((400, json!({"detail": "multipart/form-data required"})));
    }
    if self_update && upload.fields.get("confirm_self").map(String::as_str) != Some("true") {
        return Some((400, json!({"detail": "confirm_self=true required"})));
    }
    let Some(claimed) = upload.fields.get("sha256") else {
        return Some((400, json!({"detail": "sha256 required"})));
    };
    if upload.file_name.is_none() {
        return Some((400, json!({"detail": "tarball required"})));
    }
    if *claimed != upload.tarball_sha256 {
        return Some((
            400,
            json!({"detail": format!("sha256 mismatch: computed {}, got {claimed}", upload.tarball_sha256)}),
        ));
    }
    let sha = upload.fields.get("sha").cloned().unwrap_or_default();
    match mode {
        UpdaterMode::ProbeFailsRolledBack => Some((
            409,
            json!({"detail": {"error": "probe failed", "stderr": "agent: health probe timed out\n", "rolled_back": true}}),
        )),
        UpdaterMode::InstallFails => Some((
            500,
            json!({"detail": {"error": "install failed", "stderr": "tar: unexpected end of file\n", "rolled_back": false}}),
        )),
        UpdaterMode::DropAfterSelfUpdate(delay) if self_update => {
            let (releases, restarting) = (shared.releases.clone(), shared.restarting.clone());
            restarting.store(true, Ordering::SeqCst);
            thread::spawn(move || {
                thread::sleep(delay);
                lock(&releases).install(&sha);
                restarting.store(false, Ordering::SeqCst);
            });
            None
        }
        _ if self_update => {
            let release = lock(&shared.releases).install(&sha);
            Some((
                200,
                json!({"status": "self_update_queued", "release": release}),
            ))
        }
        _ => {
            let release = lock(&shared.releases).install(&sha);
            Some((
                200,
                json!({"status": "updated", "release": release, "probe": "ok"}),
            ))
        }
    }
}

/// Reads a request body of a known length: first what `pending` holds,
/// then the stream.
struct BodyReader<'a> {
    stream: &'a mut TlsStream,
    pending: &'a mut Vec<u8>,
    left: usize,
}

impl<'a> BodyReader<'a> {
    fn new(stream: &'a mut TlsStream, pending: &'a mut Vec<u8>, length: usize) -> Self {
        BodyReader {
            stream,
            pending,
            left: length,
        }
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.left);
        if want == 0 {
            return Ok(0);
        }
        let n = if self.pending.is_empty() {
            let n = self.stream.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            n
        } else {
            let n = want.min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            n
        };
        self.left -= n;
        Ok(n)
    }
}

fn discard_body(stream: &mut TlsStream, pending: &mut Vec<u8>, length: usize) -> io::Result<()> {
    io::copy(
        &mut BodyReader::new(stream, pending, length),
        &mut io::sink(),
    )
    .map(drop)
}

/// Streams a multipart body through multer: text fields kept, the tarball
/// hashed as it arrives.
fn receive_upload(
    stream: &mut TlsStream,
    pending: &mut Vec<u8>,
    head: &Head,
    cn: &str,
) -> io::Result<Upload> {
    let content_type = head.content_type.clone().unwrap_or_default();
    let mut upload = Upload {
        path: head.path.clone(),
        client_cn: cn.to_string(),
        content_type: content_type.clone(),
        fields: BTreeMap::new(),
        file_name: None,
        file_content_type: None,
        tarball_len: 0,
        tarball_sha256: String::new(),
        tarball: None,
        status: 0,
    };
    let mut reader = BodyReader::new(stream, pending, head.content_length);
    let Ok(boundary) = multer::parse_boundary(&content_type) else {
        io::copy(&mut reader, &mut io::sink())?;
        return Ok(upload);
    };
    // multer reads its input until the input says "not yet", so a stream
    // that is always ready would be buffered whole: say "not yet" (and wake
    // at once) after every chunk, which keeps one chunk in memory.
    let mut ready = true;
    let chunks = futures_util::stream::poll_fn(|cx| {
        if !ready {
            ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready = false;
        let mut chunk = vec![0u8; 64 * 1024];
        Poll::Ready(match reader.read(&mut chunk) {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some(Ok::<Vec<u8>, io::Error>(chunk))
            }
            Err(e) => Some(Err(e)),
        })
    });
    let mut multipart = multer::Multipart::new(chunks, boundary);
    let parsed: std::result::Result<(), multer::Error> = futures_executor::block_on(async {
        while let Some(mut field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            if name == "tarball" {
                upload.file_name = field.file_name().map(str::to_string);
                upload.file_content_type = field.content_type().map(ToString::to_string);
                let mut hasher = Sha256::new();
                let mut kept = Vec::new();
                while let Some(chunk) = field.chunk().await? {
                    hasher.update(&chunk);
                    upload.tarball_len += chunk.len() as u64;
                    if kept.len() + chunk.len() <= KEPT_TARBALL_BYTES {
                        kept.extend_from_slice(&chunk);
                    }
                }
                upload.tarball_sha256 = lower_hex(&hasher.finalize());
                if upload.tarball_len as usize <= KEPT_TARBALL_BYTES {
                    upload.tarball = Some(kept);
                }
            } else {
                upload.fields.insert(name, field.text().await?);
            }
        }
        Ok(())
    });
    drop(multipart);
    // Whatever multer left unread (after an error) is drained, so the
    // connection stays usable for the answer.
    io::copy(&mut reader, &mut io::sink())?;
    if parsed.is_err() {
        upload.file_name = None;
    }
    Ok(upload)
}
