//! The updater client: the second mutual-TLS service on a worker, which
//! installs releases of the worker software and rolls them back. The one
//! place that knows the updater's endpoints; the exchange is `rpc`'s, shared
//! with the agent client.
//!
//! The updater installs code as root, so this client fails closed: it has
//! no unpinned mode, and a host record without `updater_cert_fingerprint`
//! is refused before any connection.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use ureq::unversioned::multipart::{Form, Part};

use crate::client::HostRecord;
use crate::error::{Error, Result, TimeoutPhase};
use crate::hex::lower_hex;
use crate::identity::Identity;
use crate::json;
use crate::pki;
use crate::rpc::{self, Channel, HostnameVerification, ProfileTable, Timeouts};
use crate::tls::{HandshakeCounts, Pin, CALLER_PIN};

/// The worker updater's default port.
pub const DEFAULT_UPDATER_PORT: u16 = 8766;
/// The file name the tarball part carries.
pub const TARBALL_FILE_NAME: &str = "tree.tgz";
/// The media type of the tarball part.
pub const TARBALL_MEDIA_TYPE: &str = "application/gzip";

/// The timeout profiles of the updater contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum UpdaterProfile {
    /// health, releases and rollback (5 / 30 / 10 s).
    Control = 0,
    /// update and update-self, which upload a tarball (10 / 180 / 120 s).
    Update = 1,
}

impl UpdaterProfile {
    /// Every profile, in code order.
    pub const ALL: [UpdaterProfile; 2] = [UpdaterProfile::Control, UpdaterProfile::Update];

    /// The profile with numeric code `code`.
    pub fn from_code(code: u32) -> Option<UpdaterProfile> {
        UpdaterProfile::ALL.get(code as usize).copied()
    }

    /// `control` or `update`.
    pub fn name(self) -> &'static str {
        match self {
            UpdaterProfile::Control => "control",
            UpdaterProfile::Update => "update",
        }
    }

    /// The spec's default timeouts for this profile (`pool` has no effect).
    pub fn default_timeouts(self) -> Timeouts {
        let secs = |connect, read, write| Timeouts {
            connect: Duration::from_secs(connect),
            read: Duration::from_secs(read),
            write: Duration::from_secs(write),
            pool: Duration::from_secs(5),
        };
        match self {
            UpdaterProfile::Control => secs(5, 30, 10),
            UpdaterProfile::Update => secs(10, 180, 120),
        }
    }
}

/// The release tarball to upload.
#[derive(Debug, Clone, Copy)]
pub enum Tarball<'a> {
    /// Bytes already in memory.
    Bytes(&'a [u8]),
    /// A file, read twice from disk (once to hash it, once to send it) and
    /// never held in memory whole. It must not change in between: the
    /// updater checks the digest and answers 400 when it differs.
    File(&'a Path),
}

impl Tarball<'_> {
    /// Lowercase hex SHA-256 of the tarball's bytes.
    pub fn sha256(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        match self {
            Tarball::Bytes(bytes) => hasher.update(bytes),
            Tarball::File(path) => {
                let mut file = File::open(path).map_err(|e| Error::io(*path, e))?;
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    match file.read(&mut buffer) {
                        Ok(0) => break,
                        Ok(n) => hasher.update(&buffer[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::io(*path, e)),
                    }
                }
            }
        }
        Ok(lower_hex(&hasher.finalize()))
    }

    fn part(&self) -> Result<Part<'_>> {
        let part = match self {
            Tarball::Bytes(bytes) => Part::bytes(bytes),
            Tarball::File(path) => Part::file(path).map_err(|e| Error::io(*path, e))?,
        };
        part.file_name(TARBALL_FILE_NAME)
            .mime_str(TARBALL_MEDIA_TYPE)
            .map_err(|e| Error::internal(format!("tarball media type: {e}")))
    }
}

/// How an update-self request ended, both being success.
#[derive(Debug, Clone, PartialEq)]
pub enum SelfUpdate {
    /// The updater answered 200 with this body (`status` is
    /// `self_update_queued`).
    Answered(Value),
    /// The whole request was sent, then the updater closed the connection
    /// before or while answering: it re-executes itself, as the contract
    /// says it may. Confirm with [`UpdaterClient::wait_for_release`].
    QueuedConnectionClosed,
}

/// The `detail` object of a failed update, update-self or rollback
/// (409: the new release failed its probe and was rolled back; 500: it
/// failed and was not), read from an [`Error::HttpStatus`].
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateFailure {
    /// The HTTP status.
    pub status: u16,
    /// `detail.error`, when it is a string.
    pub error: Option<String>,
    /// `detail.stderr`, when it is a string.
    pub stderr: Option<String>,
    /// `detail.rolled_back`, when it is a boolean.
    pub rolled_back: Option<bool>,
    /// The whole `detail` member as the updater sent it.
    pub detail: Value,
}

impl UpdateFailure {
    /// The detail of `error` when it is an HTTP-status error whose body is
    /// a JSON object with an object `detail`; `None` otherwise (a string
    /// detail or a non-JSON body stays readable in the error itself).
    pub fn from_error(error: &Error) -> Option<UpdateFailure> {
        let Error::HttpStatus { status, body, .. } = error else {
            return None;
        };
        let mut parsed: Value = json::from_str(body).ok()?;
        let detail = parsed.get_mut("detail").map(Value::take)?;
        let object = detail.as_object()?;
        let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_string);
        Some(UpdateFailure {
            status: *status,
            error: text("error"),
            stderr: text("stderr"),
            rolled_back: object.get("rolled_back").and_then(Value::as_bool),
            detail,
        })
    }
}

/// A client for one worker's updater.
///
/// `Send + Sync`. Every connection is verified inside its handshake: chain
/// to the CA, hostname when enabled, and always the pin. Control calls share
/// a keep-alive pool; each upload runs on a connection of its own.
pub struct UpdaterClient {
    address: String,
    port: u16,
    name: Option<String>,
    channel: Channel,
    profiles: ProfileTable<2>,
}

impl fmt::Debug for UpdaterClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl UpdaterClient {
    /// A client for the updater at `address:port` (0 means 8766) whose
    /// certificate has SHA-256 fingerprint `pin` (any case, `:` allowed).
    pub fn new(
        identity: &Identity,
        address: &str,
        port: u16,
        pin: &str,
        hostname: HostnameVerification,
    ) -> Result<Self> {
        let record = HostRecord::new(address, port)?;
        Self::open(
            identity,
            record,
            port,
            Some(pin),
            CALLER_PIN.into(),
            hostname,
        )
    }

    /// A client from a parsed host record: its `address`, its `name`, and
    /// `updater_cert_fingerprint` as the pin; `port` 0 means 8766. A record
    /// whose `updater_cert_fingerprint` is missing or null is refused, before
    /// any connection, with [`Error::PinMismatch`] (empty `expected`).
    pub fn from_host_value(
        identity: &Identity,
        record: &Value,
        port: u16,
        hostname: HostnameVerification,
    ) -> Result<Self> {
        let host = HostRecord::from_value_unpinned(record)?;
        let pin = match record.get("updater_cert_fingerprint") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                return Err(Error::invalid(
                    "updater_cert_fingerprint",
                    "must be a string or null",
                ))
            }
        };
        let who = host.name.as_deref().or(host.uuid.as_deref());
        let origin = format!(
            "updater_cert_fingerprint of host record {}",
            who.unwrap_or(&host.address)
        );
        Self::open(identity, host, port, pin, origin, hostname)
    }

    /// [`UpdaterClient::from_host_value`] from JSON text.
    pub fn from_host_json(
        identity: &Identity,
        host_json: &str,
        port: u16,
        hostname: HostnameVerification,
    ) -> Result<Self> {
        let value: Value = json::from_str(host_json)
            .map_err(|e| Error::invalid("host_record", format!("not JSON: {e}")))?;
        Self::from_host_value(identity, &value, port, hostname)
    }

    fn open(
        identity: &Identity,
        host: HostRecord,
        port: u16,
        pin: Option<&str>,
        pin_origin: String,
        hostname: HostnameVerification,
    ) -> Result<Self> {
        let port = if port == 0 {
            DEFAULT_UPDATER_PORT
        } else {
            port
        };
        let Some(pin) = pin else {
            return Err(Error::PinMismatch {
                address: rpc::authority(&host.address, port),
                expected: String::new(),
                actual: String::new(),
                pin_origin: String::new(),
            });
        };
        let pin = pki::normalize_fingerprint(pin).map_err(|_| {
            Error::invalid(
                "updater_cert_fingerprint",
                "expected 64 hex characters (a SHA-256), optionally separated by ':'",
            )
        })?;
        let pin = Pin {
            fingerprint: pin,
            origin: pin_origin,
        };
        let channel = Channel::new(identity, &host.address, port, Some(pin), hostname)?;
        Ok(UpdaterClient {
            address: host.address,
            port,
            name: host.name,
            channel,
            profiles: ProfileTable::new(UpdaterProfile::ALL.map(UpdaterProfile::default_timeouts)),
        })
    }

    /// `UpdaterClient(name='…', address='…', port=…)`.
    pub fn describe(&self) -> String {
        let name = match &self.name {
            Some(name) => format!("'{name}'"),
            None => "None".to_string(),
        };
        format!(
            "UpdaterClient(name={name}, address='{}', port={})",
            self.address, self.port
        )
    }

    /// The updater's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The timeouts of `profile`.
    pub fn timeouts(&self, profile: UpdaterProfile) -> Timeouts {
        self.profiles.get(profile as usize)
    }

    /// Replaces the timeouts of `profile` for later calls. Zero durations
    /// (other than `pool`) are rejected.
    pub fn set_timeouts(&self, profile: UpdaterProfile, timeouts: Timeouts) -> Result<()> {
        self.profiles.set(profile as usize, timeouts)
    }

    /// The cap on a response body, in bytes.
    pub fn max_response_bytes(&self) -> u64 {
        self.channel.max_response_bytes()
    }

    /// Sets the cap on a response body (at least 1 byte).
    pub fn set_max_response_bytes(&self, limit: u64) -> Result<()> {
        self.channel.set_max_response_bytes(limit)
    }

    /// Makes this client's connections free their buffers while idle, as a
    /// fleet's do.
    pub(crate) fn release_buffers_when_idle(&self) {
        self.channel.release_buffers_when_idle();
    }

    /// TLS handshakes this client has completed, by kind; each was
    /// verified and pinned.
    pub fn handshake_counts(&self) -> HandshakeCounts {
        self.channel.handshakes()
    }

    /// `GET /health`: `{"status":"ok","role":"updater","releases":[…]}`.
    pub fn health(&self) -> Result<Value> {
        self.channel
            .get("/health", self.timeouts(UpdaterProfile::Control))
    }

    /// `GET /releases`: `{"releases":[…]}`.
    pub fn releases(&self) -> Result<Value> {
        self.channel
            .get("/releases", self.timeouts(UpdaterProfile::Control))
    }

    /// `POST /update` of `tarball`, with `sha` (the git SHA, for provenance;
    /// may be empty) and the tarball's SHA-256, computed here. 200 gives the
    /// parsed body; 409 (rolled back) and 500 are [`Error::HttpStatus`],
    /// whose detail [`UpdateFailure::from_error`] reads. A POST is never
    /// sent twice.
    pub fn update(&self, tarball: Tarball<'_>, sha: &str) -> Result<Value> {
        self.upload("/update", tarball, sha, None, false)
            .map_err(|failure| failure.error)
    }

    /// `POST /update-self` (with `confirm_self=true`): the updater replaces
    /// itself and re-executes, so a connection closed after the whole
    /// request was sent is [`SelfUpdate::QueuedConnectionClosed`]. A
    /// connection lost during the upload is [`Error::ConnectionLost`].
    pub fn update_self(&self, tarball: Tarball<'_>, sha: &str) -> Result<SelfUpdate> {
        self.update_self_hashed(tarball, sha, None)
    }

    /// [`UpdaterClient::update`] of a tarball whose SHA-256 is already
    /// known (`sha256`, lowercase hex), so a fleet hashes it once, not once
    /// per host; `None` computes it here.
    pub(crate) fn update_hashed(
        &self,
        tarball: Tarball<'_>,
        sha: &str,
        sha256: Option<&str>,
    ) -> Result<Value> {
        self.upload("/update", tarball, sha, sha256, false)
            .map_err(|failure| failure.error)
    }

    /// [`UpdaterClient::update_self`] of a tarball whose SHA-256 is
    /// already known (see [`UpdaterClient::update_hashed`]).
    pub(crate) fn update_self_hashed(
        &self,
        tarball: Tarball<'_>,
        sha: &str,
        sha256: Option<&str>,
    ) -> Result<SelfUpdate> {
        match self.upload("/update-self", tarball, sha, sha256, true) {
            Ok(body) => Ok(SelfUpdate::Answered(body)),
            Err(failure) if failure.closed_after_request => Ok(SelfUpdate::QueuedConnectionClosed),
            Err(failure) => Err(failure.error),
        }
    }

    /// `POST /rollback` to the previous release (404 when there is none).
    pub fn rollback(&self) -> Result<Value> {
        self.channel
            .post("/rollback", None, self.timeouts(UpdaterProfile::Control))
    }

    /// Polls `GET /health` until the active release has git SHA `sha`, and
    /// returns that health body; after `deadline` (counted from the call)
    /// the error is an [`Error::Timeout`] in the deadline phase. Every poll,
    /// the stale-connection retry included, is capped by the time left
    /// overall, so the call ends within `deadline` plus a few milliseconds.
    ///
    /// Only two outcomes keep polling, every `interval`: a release that is
    /// not (yet) `sha`, and a transient failure of a poll: a refused or
    /// unreachable connection, a connection lost, a poll's own timeout. An
    /// updater that re-executes itself (update-self) refuses connections
    /// for a moment, so a refusal is not final. Anything else (a pin
    /// mismatch, a TLS failure, an HTTP error, a malformed answer) is
    /// returned at once: waiting would not change it.
    pub fn wait_for_release(
        &self,
        sha: &str,
        deadline: Duration,
        interval: Duration,
    ) -> Result<Value> {
        if sha.is_empty() {
            return Err(Error::invalid("sha", "must not be empty"));
        }
        let until = Instant::now() + deadline;
        let interval = interval.max(Duration::from_millis(10));
        loop {
            if Instant::now() >= until {
                return Err(Error::Timeout {
                    address: rpc::authority(&self.address, self.port),
                    phase: TimeoutPhase::Deadline,
                    may_have_reached_worker: false,
                });
            }
            let poll = self.timeouts(UpdaterProfile::Control);
            match rpc::within_deadline(Some(until), || self.channel.get("/health", poll)) {
                Ok(health) if active_sha(&health) == Some(sha) => return Ok(health),
                Ok(_) => {}
                Err(error) if is_transient(&error) => {}
                Err(error) => return Err(error),
            }
            thread::sleep(interval.min(until.saturating_duration_since(Instant::now())));
        }
    }

    fn upload(
        &self,
        path: &str,
        tarball: Tarball<'_>,
        sha: &str,
        sha256: Option<&str>,
        confirm_self: bool,
    ) -> std::result::Result<Value, rpc::UploadFailure> {
        let digest = match sha256 {
            Some(known) => Ok(known.to_string()),
            None => tarball.sha256(),
        };
        let prepared = digest.and_then(|digest| Ok((digest, tarball.part()?)));
        let (digest, part) = prepared.map_err(|error| rpc::UploadFailure {
            error,
            closed_after_request: false,
        })?;
        let mut form = Form::new().text("sha", sha).text("sha256", &digest);
        if confirm_self {
            form = form.text("confirm_self", "true");
        }
        let form = form.part("tarball", part);
        self.channel
            .post_form(path, form, self.timeouts(UpdaterProfile::Update))
    }
}

/// A poll failure that a restarting updater causes and that may pass.
fn is_transient(error: &Error) -> bool {
    matches!(
        error,
        Error::Connect { .. } | Error::ConnectionLost { .. } | Error::Timeout { .. }
    )
}

/// The `sha` of the release whose `slot` is `active` in a health or
/// releases body.
pub fn active_sha(body: &Value) -> Option<&str> {
    body.get("releases")?
        .as_array()?
        .iter()
        .find(|r| r.get("slot").and_then(Value::as_str) == Some("active"))?
        .get("sha")?
        .as_str()
}
