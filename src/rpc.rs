//! One exchange with a worker service over mutual TLS, shared by every
//! client of the crate (the agent's and the updater's): the ureq agent over
//! the verified transport, a profile's timeouts, the stale-GET retry, the
//! rule that a POST is never sent twice, and the mapping of a response or a
//! failure onto the error taxonomy.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde_json::Value;
use ureq::config::Config;
use ureq::http::{Method, Response};
use ureq::unversioned::multipart::Form;
use ureq::{Agent, Body, RequestBuilder};

use crate::error::{Error, Result, TimeoutPhase};
use crate::events::{self, Call};
use crate::identity::Identity;
use crate::json;
use crate::tls::{
    timeout_phase, DeferredResolver, HandshakeCounts, PeerPolicy, Pin, PinnedConnector,
    StaleConnection, TlsSession,
};

/// Default cap on a response body, in bytes (16 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// Environment variable that decides hostname verification when a client
/// is made with [`HostnameVerification::FromEnvironment`].
pub const VERIFY_HOSTNAME_ENV: &str = "DECNET_VERIFY_HOSTNAME";
/// Idle connections kept per client.
const MAX_IDLE_CONNECTIONS: usize = 32;

/// Whether the worker's certificate must name the address dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostnameVerification {
    /// Check the name or IP against the certificate's SANs.
    On,
    /// Check only the chain to the CA (and the pin, if any).
    Off,
    /// Read `DECNET_VERIFY_HOSTNAME` (`true`/`false`); on when unset.
    FromEnvironment,
}

impl HostnameVerification {
    /// Resolves the choice to on (`true`) or off.
    pub fn resolve(self) -> Result<bool> {
        match self {
            HostnameVerification::On => Ok(true),
            HostnameVerification::Off => Ok(false),
            HostnameVerification::FromEnvironment => match std::env::var(VERIFY_HOSTNAME_ENV) {
                Err(std::env::VarError::NotPresent) => Ok(true),
                Ok(value) => match value.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(true),
                    "false" | "0" | "no" | "off" => Ok(false),
                    _ => Err(Error::invalid(
                        VERIFY_HOSTNAME_ENV,
                        format!("{value:?} is neither true nor false"),
                    )),
                },
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(Error::invalid(VERIFY_HOSTNAME_ENV, "is not valid UTF-8"))
                }
            },
        }
    }
}

/// The timeouts of one profile.
///
/// Each bounds one phase of a call as a whole, however the worker paces
/// its bytes: `connect` bounds name resolution, the TCP connect and the
/// entire TLS handshake together; `write` bounds sending the whole request,
/// head and body (also to a worker that stops reading); `read` bounds
/// waiting for the answer and reading all of it, head and body together.
/// A phase that runs out ends the call with [`Error::Timeout`] naming it,
/// within a few milliseconds of the value. `pool` is kept for the
/// contract's table but has no effect: the pool never makes a call wait, it
/// opens a new connection when no idle one is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connection setup: TCP connect and TLS handshake.
    pub connect: Duration,
    /// Waiting for the response headers; reading the response body.
    pub read: Duration,
    /// Sending the request.
    pub write: Duration,
    /// Waiting for a pooled connection (no effect, see above).
    pub pool: Duration,
}

impl Timeouts {
    /// Rejects a zero `connect`, `read` or `write`.
    pub(crate) fn check(&self) -> Result<()> {
        for (name, d) in [
            ("connect", self.connect),
            ("read", self.read),
            ("write", self.write),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(name, "timeout must be greater than zero"));
            }
        }
        Ok(())
    }
}

/// A client's table of timeout profiles, read by every call and changeable
/// while calls run.
#[derive(Debug)]
pub(crate) struct ProfileTable<const N: usize>(RwLock<[Timeouts; N]>);

impl<const N: usize> ProfileTable<N> {
    /// A table holding `defaults`.
    pub(crate) fn new(defaults: [Timeouts; N]) -> Self {
        ProfileTable(RwLock::new(defaults))
    }

    /// The timeouts of profile number `index`.
    pub(crate) fn get(&self, index: usize) -> Timeouts {
        self.0.read().unwrap_or_else(|p| p.into_inner())[index]
    }

    /// Replaces profile number `index` after [`Timeouts::check`].
    pub(crate) fn set(&self, index: usize, timeouts: Timeouts) -> Result<()> {
        timeouts.check()?;
        self.0.write().unwrap_or_else(|p| p.into_inner())[index] = timeouts;
        Ok(())
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub(crate) fn authority(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// The verified HTTPS channel to one service of one worker: its TLS
/// session (verifier, pin, warm connection), a keep-alive pool and the
/// response size cap. `Send + Sync`.
pub(crate) struct Channel {
    address: String,
    base_url: String,
    /// The keep-alive pool's agent, made on first use and dropped to close
    /// the idle connections ([`Channel::close_idle`]): a host without a
    /// connection holds none.
    agent: RwLock<Option<Agent>>,
    /// For uploads: no pool, so each upload runs on a connection of its own
    /// and an early close cannot be mistaken for an idle one. Made on first use.
    uploads: OnceLock<Agent>,
    session: Arc<TlsSession>,
    max_response_bytes: AtomicU64,
}

/// An upload that ended without an answer to read.
#[derive(Debug)]
pub(crate) struct UploadFailure {
    /// The failure, mapped to the taxonomy.
    pub error: Error,
    /// True when the whole request had been sent and the service then closed
    /// the connection cleanly before its answer, or cut its answer short.
    pub closed_after_request: bool,
}

impl Channel {
    /// A channel to `host:port` presenting `identity`, whose server
    /// certificate must chain to the identity's CA, name `host` when
    /// `hostname` resolves to on, and match `pin` when it is set.
    pub(crate) fn new(
        identity: &Identity,
        host: &str,
        port: u16,
        pin: Option<Pin>,
        hostname: HostnameVerification,
    ) -> Result<Self> {
        let verify_hostname = hostname.resolve()?;
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| Error::invalid("address", "not usable as a TLS server name"))?;
        let address = authority(host, port);
        let session = Arc::new(TlsSession::new(
            identity,
            PeerPolicy {
                address: address.clone(),
                host: host.to_string(),
                port,
                server_name,
                verify_hostname,
                pin,
            },
        )?);
        Ok(Channel {
            base_url: format!("https://{address}"),
            address,
            agent: RwLock::new(None),
            uploads: OnceLock::new(),
            session,
            max_response_bytes: AtomicU64::new(DEFAULT_MAX_RESPONSE_BYTES),
        })
    }

    /// Counts every connection opened from now in `total` while it lives.
    pub(crate) fn count_connections_in(&self, total: Arc<AtomicUsize>) {
        self.session.count_connections_in(total);
    }

    /// Makes this channel's connections free their buffers while idle.
    pub(crate) fn release_buffers_when_idle(&self) {
        self.session.release_buffers_when_idle();
    }

    /// Closes the idle kept-alive connections and the warm one: the pool
    /// starts empty and the next request connects again (resuming its TLS
    /// session when resumption is on). Requests in flight keep theirs and
    /// close it when they end.
    pub(crate) fn close_idle(&self) {
        let pool = self.agent.write().unwrap_or_else(|p| p.into_inner()).take();
        drop(pool);
        self.session.drop_warm();
    }

    /// The keep-alive pool's agent, made now if there is none.
    fn pooled_agent(&self) -> Agent {
        if let Some(agent) = &*self.agent.read().unwrap_or_else(|p| p.into_inner()) {
            return agent.clone();
        }
        self.agent
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| agent_for(&self.session, MAX_IDLE_CONNECTIONS))
            .clone()
    }

    /// Opens and verifies one connection now; the next request reuses it.
    pub(crate) fn connect(&self, timeout: Duration) -> Result<()> {
        self.session
            .open_warm(timeout)
            .inspect_err(|e| events::connection_failed(&self.address, e))
    }

    /// TLS handshakes completed, by kind; each was verified and pinned.
    pub(crate) fn handshakes(&self) -> HandshakeCounts {
        self.session.handshakes()
    }

    /// Turns TLS 1.3 resumption on or off for connections opened from now.
    pub(crate) fn set_resumption(&self, on: bool) {
        self.session.set_resumption(on);
    }

    /// Whether new connections may resume.
    pub(crate) fn resumption(&self) -> bool {
        self.session.resumption()
    }

    /// Times the certificate verifier ran (one per full handshake).
    pub(crate) fn verifications(&self) -> u64 {
        self.session.verifications()
    }

    /// The cap on a response body, in bytes.
    pub(crate) fn max_response_bytes(&self) -> u64 {
        self.max_response_bytes.load(Ordering::Relaxed)
    }

    /// Sets the cap on a response body (at least 1 byte).
    pub(crate) fn set_max_response_bytes(&self, limit: u64) -> Result<()> {
        if limit == 0 {
            return Err(Error::invalid("max_response_bytes", "must be at least 1"));
        }
        self.max_response_bytes.store(limit, Ordering::Relaxed);
        Ok(())
    }

    /// A GET is idempotent: when it fails on a connection the worker had
    /// closed while idle, before any response byte, it is sent once more on
    /// a new connection.
    pub(crate) fn get(&self, path: &str, timeouts: Timeouts) -> Result<Value> {
        let call = Call::start(&self.address, "GET", path, Some(&[]));
        match self.exchange(Method::GET, path, None, timeouts) {
            Err(Exchange::Stale(reason)) => {
                call.retried(&reason);
                self.exchange(Method::GET, path, None, timeouts)
            }
            other => other,
        }
        .map_err(|e| e.into_error(&self.address, false))
        .and_then(|response| self.read_response(response, &call))
        .inspect_err(|e| call.failed(e))
    }

    /// A POST of a JSON body (or none) is never sent twice; when its
    /// connection dies the error says whether the worker may have received it.
    pub(crate) fn post(
        &self,
        path: &str,
        body: Option<&[u8]>,
        timeouts: Timeouts,
    ) -> Result<Value> {
        let call = Call::start(&self.address, "POST", path, Some(body.unwrap_or_default()));
        self.exchange(Method::POST, path, body, timeouts)
            .map_err(|e| e.into_error(&self.address, true))
            .and_then(|response| self.read_response(response, &call))
            .inspect_err(|e| call.failed(e))
    }

    /// POSTs a multipart form on a connection of its own; never sent twice.
    /// The form's parts must all have known sizes, so the body goes out
    /// with a content length, streamed from its sources.
    pub(crate) fn post_form(
        &self,
        path: &str,
        form: Form<'_>,
        timeouts: Timeouts,
    ) -> std::result::Result<Value, UploadFailure> {
        let url = format!("{}{path}", self.base_url);
        let agent = self.uploads.get_or_init(|| agent_for(&self.session, 0));
        let call = Call::start(&self.address, "POST", path, None);
        if deadline_left().is_some_and(|left| left.is_zero()) {
            let error = not_started(&self.address).into_error(&self.address, true);
            call.failed(&error);
            return Err(UploadFailure {
                error,
                closed_after_request: false,
            });
        }
        let result = with_timeouts(agent.post(&url), timeouts)
            .header("accept", "application/json")
            .send(form);
        events::raise_deferred();
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                // ureq waits for the answer only once the whole request is
                // out; a clean end of stream there means the service read
                // the request and closed (a reset is reported by the
                // transport as a lost connection instead).
                let closed_after_request = matches!(
                    &error,
                    ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof
                );
                let error = Exchange::from(error).into_error(&self.address, true);
                call.failed(&error);
                return Err(UploadFailure {
                    error,
                    closed_after_request,
                });
            }
        };
        self.read_response(response, &call)
            .inspect_err(|e| call.failed(e))
            .map_err(|error| UploadFailure {
                // The answer had begun, so the request was complete.
                closed_after_request: matches!(error, Error::ConnectionLost { .. }),
                error,
            })
    }

    fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        timeouts: Timeouts,
    ) -> std::result::Result<Response<Body>, Exchange> {
        if deadline_left().is_some_and(|left| left.is_zero()) {
            return Err(not_started(&self.address));
        }
        let url = format!("{}{path}", self.base_url);
        let agent = self.pooled_agent();
        let result = if method == Method::GET {
            with_timeouts(agent.get(&url), timeouts)
                .header("accept", "application/json")
                .call()
        } else {
            let request =
                with_timeouts(agent.post(&url), timeouts).header("accept", "application/json");
            match body {
                Some(bytes) => request
                    .header("content-type", "application/json")
                    .send(bytes),
                None => request.send_empty(),
            }
        };
        events::raise_deferred();
        result.map_err(Exchange::from)
    }

    fn read_response(&self, mut response: Response<Body>, call: &Call<'_>) -> Result<Value> {
        let status = response.status().as_u16();
        let limit = self.max_response_bytes();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    Error::protocol(format!("response body exceeds {limit} bytes"))
                }
                other => Exchange::Failed(other).into_error(&self.address, false),
            })?;
        call.answered(status, &bytes);
        interpret_response(status, &bytes)
    }
}

/// A ureq agent over `session`'s verified transport keeping up to `idle`
/// connections.
fn agent_for(session: &Arc<TlsSession>, idle: usize) -> Agent {
    let config: Config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .https_only(true)
        .proxy(None)
        .max_idle_connections(idle)
        .max_idle_connections_per_host(idle)
        .user_agent(concat!("decnet-agent-client/", env!("CARGO_PKG_VERSION")))
        .build();
    Agent::with_parts(
        config,
        PinnedConnector {
            session: session.clone(),
        },
        DeferredResolver,
    )
}

/// Turns a worker's answer into the RPC's result: a 2xx body must be a JSON
/// object and is returned parsed; any other status is
/// [`Error::HttpStatus`] with the body and, when the body is JSON with a
/// `detail` member, that detail as text.
pub fn interpret_response(status: u16, body: &[u8]) -> Result<Value> {
    if (200..300).contains(&status) {
        match json::from_slice(body) {
            Ok(value @ Value::Object(_)) => Ok(value),
            Ok(_) => Err(Error::protocol(format!(
                "HTTP {status} body is JSON but not an object"
            ))),
            Err(e) => Err(Error::protocol(format!(
                "HTTP {status} body is not JSON: {e}"
            ))),
        }
    } else {
        let detail = json::from_slice(body)
            .ok()
            .and_then(|v| v.get("detail").cloned())
            .map(|d| match d {
                Value::String(s) => s,
                other => other.to_string(),
            });
        Err(Error::HttpStatus {
            status,
            body: String::from_utf8_lossy(body).into_owned(),
            detail,
        })
    }
}

thread_local! {
    /// The deadline of the call running on this thread, set by
    /// [`within_deadline`].
    static DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every request it makes on this thread bounded by
/// `deadline`: a request not started by then is never started, and the
/// connect (with its handshake), the send and the receive of one that is
/// are each cut at it. A sweep hands its deadline down this way.
pub(crate) fn within_deadline<T>(deadline: Option<Instant>, f: impl FnOnce() -> T) -> T {
    /// Puts the outer deadline back when `f` returns or unwinds, so a
    /// panic caught further up (the C boundary's guard) cannot leave this
    /// thread's later calls under a deadline that has passed.
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DEADLINE.with(|d| d.replace(deadline)));
    f()
}

/// The time left before this thread's deadline: `Some(ZERO)` once it has
/// passed, `None` without one.
fn deadline_left() -> Option<Duration> {
    DEADLINE
        .with(|d| d.get())
        .map(|d| d.saturating_duration_since(Instant::now()))
}

/// The error for a request the deadline forbids starting.
fn not_started(address: &str) -> Exchange {
    Exchange::Failed(ureq::Error::Other(Box::new(Error::Timeout {
        address: address.to_string(),
        phase: TimeoutPhase::Deadline,
        may_have_reached_worker: false,
    })))
}

/// Applies a profile to one request (see [`Timeouts`] for the mapping),
/// and the thread's deadline, if any, as ureq's global timeout (each
/// phase then ends at the earlier of its own timeout and the deadline).
fn with_timeouts<B>(request: RequestBuilder<B>, t: Timeouts) -> RequestBuilder<B> {
    request
        .config()
        .timeout_global(deadline_left())
        .timeout_resolve(Some(t.connect))
        .timeout_connect(Some(t.connect))
        .timeout_send_request(Some(t.write))
        .timeout_send_body(Some(t.write))
        .timeout_recv_response(Some(t.read))
        .timeout_recv_body(Some(t.read))
        .build()
}

/// How one attempt ended, before it is mapped to the taxonomy.
enum Exchange {
    /// The reused connection was closed by the worker before any response byte.
    Stale(String),
    /// Any other failure.
    Failed(ureq::Error),
}

impl From<ureq::Error> for Exchange {
    fn from(error: ureq::Error) -> Self {
        match error {
            ureq::Error::Other(inner) => match inner.downcast::<StaleConnection>() {
                Ok(stale) => Exchange::Stale(stale.reason),
                Err(inner) => Exchange::Failed(ureq::Error::Other(inner)),
            },
            other => Exchange::Failed(other),
        }
    }
}

impl Exchange {
    fn into_error(self, address: &str, is_post: bool) -> Error {
        let address = address.to_string();
        match self {
            Exchange::Stale(reason) => Error::ConnectionLost {
                address,
                reason,
                may_have_reached_worker: is_post,
            },
            Exchange::Failed(error) => map_ureq_error(error, address),
        }
    }
}

fn map_ureq_error(error: ureq::Error, address: String) -> Error {
    use ureq::Timeout as T;
    match error {
        ureq::Error::Other(inner) => match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::internal(other.to_string()),
        },
        // The transport reports its own timeouts with what it sent; one
        // from ureq itself may follow a sent byte unless it is a connect's.
        ureq::Error::Timeout(which) => Error::Timeout {
            address,
            phase: timeout_phase(which),
            may_have_reached_worker: !matches!(which, T::Resolve | T::Connect),
        },
        ureq::Error::HostNotFound => Error::Connect {
            address,
            reason: "the name does not resolve".into(),
        },
        ureq::Error::ConnectionFailed => Error::Connect {
            address,
            reason: "connection failed".into(),
        },
        ureq::Error::Io(e) => Error::ConnectionLost {
            address,
            reason: e.to_string(),
            may_have_reached_worker: true,
        },
        ureq::Error::BodyExceedsLimit(n) => {
            Error::protocol(format!("response body exceeds {n} bytes"))
        }
        ureq::Error::BadUri(e) => Error::invalid("address", e),
        other @ (ureq::Error::Protocol(_)
        | ureq::Error::LargeResponseHeader(..)
        | ureq::Error::BodyStalled) => Error::protocol(other.to_string()),
        other => Error::internal(other.to_string()),
    }
}
