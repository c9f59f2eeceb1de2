//! The agent client: host records, timeout profiles and the nine worker
//! RPCs. The one place that knows the worker agent's endpoints; the
//! exchange itself is in `rpc`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::events::{self, Event, Level};
use crate::identity::Identity;
use crate::json;
use crate::pki;
use crate::rpc::{self, Channel, ProfileTable};
pub use crate::rpc::{
    interpret_response, HostnameVerification, Timeouts, DEFAULT_MAX_RESPONSE_BYTES,
    VERIFY_HOSTNAME_ENV,
};
pub use crate::tls::HandshakeCounts;
use crate::tls::{Pin, CALLER_PIN};
use crate::topology;

/// The worker agent's default port.
pub const DEFAULT_AGENT_PORT: u16 = 8765;

/// The host-record members a client accepts: those it reads or keeps for
/// the updater, then the other columns of the reference master's
/// `swarm_hosts` row (so its records pass as they are stored). Any other
/// key is refused, so a misspelt pin cannot pass unnoticed.
pub const HOST_RECORD_FIELDS: [&str; 13] = [
    "uuid",
    "name",
    "address",
    "agent_port",
    "client_cert_fingerprint",
    "updater_cert_fingerprint",
    "updater_port",
    "status",
    "last_heartbeat",
    "cert_bundle_path",
    "enrolled_at",
    "notes",
    "use_ipvlan",
];

/// A worker as the master records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    /// IPv4, IPv6 or DNS name to connect to.
    pub address: String,
    /// TCP port of the worker agent.
    pub port: u16,
    /// The worker's id.
    pub uuid: Option<String>,
    /// The worker's name.
    pub name: Option<String>,
    /// SHA-256 fingerprint of the worker's certificate, normalised to 64
    /// lowercase hex characters; `None` means no pin.
    pub pin: Option<String>,
    /// Where `pin` came from, named by a pin mismatch so the operator knows
    /// what to fix (for example `client_cert_fingerprint of host record
    /// w1`); `None` when the caller set the pin itself.
    pub pin_origin: Option<String>,
}

impl HostRecord {
    /// A record for `address` and `port` (0 means 8765), with no pin.
    pub fn new(address: &str, port: u16) -> Result<Self> {
        Ok(HostRecord {
            address: check_address(address)?,
            port: if port == 0 { DEFAULT_AGENT_PORT } else { port },
            uuid: None,
            name: None,
            pin: None,
            pin_origin: None,
        })
    }

    /// Parses a host record from JSON text (see [`HostRecord::from_value`]).
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = json::from_str(text)
            .map_err(|e| Error::invalid("host_record", format!("not JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// Reads a host record from a parsed JSON object. A missing or mistyped
    /// field, a key outside [`HOST_RECORD_FIELDS`], and a missing or null
    /// `client_cert_fingerprint` are invalid-argument errors naming the
    /// field: a record without a pin is read only through the explicit
    /// [`HostRecord::from_value_unpinned`].
    pub fn from_value(value: &Value) -> Result<Self> {
        let record = Self::from_value_unpinned(value)?;
        if record.pin.is_none() {
            return Err(Error::invalid(
                "client_cert_fingerprint",
                "is missing or null, so the worker's certificate cannot be pinned: \
                 add the worker's SHA-256 fingerprint to the record, or opt out \
                 explicitly (CLI --no-pin, C decnet_client_new_from_host_json_unpinned, \
                 Rust HostRecord::from_value_unpinned)",
            ));
        }
        Ok(record)
    }

    /// [`HostRecord::from_value`] that accepts a record with no pin (the
    /// caller's explicit opt-out; a client made from it still needs
    /// [`AgentClient::new_unpinned`]). Unknown keys are still refused.
    pub fn from_value_unpinned(value: &Value) -> Result<Self> {
        let object = value
            .as_object()
            .ok_or_else(|| Error::invalid("host_record", "must be a JSON object"))?;
        if let Some(key) = object
            .keys()
            .find(|key| !HOST_RECORD_FIELDS.contains(&key.as_str()))
        {
            return Err(Error::invalid(
                key,
                format!(
                    "is not a host-record field (known: {})",
                    HOST_RECORD_FIELDS.join(", ")
                ),
            ));
        }
        let address = match object.get("address") {
            Some(Value::String(s)) => check_address(s)?,
            Some(_) => return Err(Error::invalid("address", "must be a string")),
            None => return Err(Error::invalid("address", "is required")),
        };
        let port = match object.get("agent_port") {
            None | Some(Value::Null) => DEFAULT_AGENT_PORT,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(0) => DEFAULT_AGENT_PORT,
                Some(p) if p <= u64::from(u16::MAX) => p as u16,
                _ => {
                    return Err(Error::invalid(
                        "agent_port",
                        "must be an integer from 0 to 65535",
                    ))
                }
            },
            Some(_) => return Err(Error::invalid("agent_port", "must be an integer or null")),
        };
        let pin = match optional_string(object, "client_cert_fingerprint")? {
            Some(text) => Some(pki::normalize_fingerprint(&text).map_err(|_| {
                Error::invalid(
                    "client_cert_fingerprint",
                    "expected 64 hex characters (a SHA-256), optionally separated by ':'",
                )
            })?),
            None => None,
        };
        let uuid = optional_string(object, "uuid")?;
        let name = optional_string(object, "name")?;
        let pin_origin = pin.as_ref().map(|_| {
            let host = name.as_deref().or(uuid.as_deref()).unwrap_or(&address);
            format!("client_cert_fingerprint of host record {host}")
        });
        Ok(HostRecord {
            address,
            port,
            uuid,
            name,
            pin,
            pin_origin,
        })
    }

    /// Sets or clears the pin (any case, `:` separators allowed); its origin
    /// becomes "given by the caller".
    pub fn with_pin(mut self, pin: Option<&str>) -> Result<Self> {
        self.pin_origin = None;
        self.pin = pin
            .map(|text| {
                pki::normalize_fingerprint(text).map_err(|_| {
                    Error::invalid(
                        "pin",
                        "expected 64 hex characters (a SHA-256), optionally separated by ':'",
                    )
                })
            })
            .transpose()?;
        Ok(self)
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        rpc::authority(&self.address, self.port)
    }
}

fn optional_string(object: &Map<String, Value>, field: &str) -> Result<Option<String>> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::invalid(field, "must be a string or null")),
    }
}

/// Accepts an IP literal (IPv6 with or without brackets) or a DNS name.
fn check_address(address: &str) -> Result<String> {
    // Brackets belong only around an IPv6 literal.
    if let Some(inner) = address.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        return match inner.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => Ok(inner.to_string()),
            _ => Err(Error::invalid(
                "address",
                format!("{address:?}: brackets enclose only an IPv6 address"),
            )),
        };
    }
    let bare = address;
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_string());
    }
    if ServerName::try_from(bare).is_err()
        || bare.contains(['/', '?', '#', '@', ' ', ':', '[', ']'])
    {
        return Err(Error::invalid(
            "address",
            format!("{address:?} is neither an IP address nor a DNS name"),
        ));
    }
    Ok(bare.to_string())
}

/// The timeout profiles of the worker contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Profile {
    /// Short control calls (health, status, deploy, mutate, teardown, …).
    Control = 0,
    /// Long synchronous deployments (kept for callers; `/deploy` answers 202
    /// at once and uses `Control`).
    Deploy = 1,
    /// `POST /topology/apply`.
    TopologyApply = 2,
    /// `POST /topology/teardown`.
    TopologyTeardown = 3,
}

impl Profile {
    /// Every profile, in code order.
    pub const ALL: [Profile; 4] = [
        Profile::Control,
        Profile::Deploy,
        Profile::TopologyApply,
        Profile::TopologyTeardown,
    ];

    /// The profile with numeric code `code`.
    pub fn from_code(code: u32) -> Option<Profile> {
        Profile::ALL.get(code as usize).copied()
    }

    /// The spec's name (`control`, `deploy`, `topology-apply`, `topology-teardown`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Control => "control",
            Profile::Deploy => "deploy",
            Profile::TopologyApply => "topology-apply",
            Profile::TopologyTeardown => "topology-teardown",
        }
    }

    /// The spec's default timeouts for this profile.
    pub fn default_timeouts(self) -> Timeouts {
        let secs = |connect, read, write, pool| Timeouts {
            connect: Duration::from_secs(connect),
            read: Duration::from_secs(read),
            write: Duration::from_secs(write),
            pool: Duration::from_secs(pool),
        };
        match self {
            Profile::Control => secs(5, 15, 5, 5),
            Profile::Deploy => secs(10, 600, 30, 5),
            Profile::TopologyApply => secs(10, 600, 30, 5),
            Profile::TopologyTeardown => secs(10, 300, 30, 5),
        }
    }
}

/// A client for one worker agent.
///
/// `Send + Sync`: share it between threads (`Arc<AgentClient>`); calls block
/// only their own thread and share one keep-alive connection pool. Every
/// connection is verified — chain, hostname when enabled, pin when set —
/// inside its own TLS handshake.
pub struct AgentClient {
    record: HostRecord,
    channel: Channel,
    profiles: ProfileTable<4>,
}

impl fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl AgentClient {
    /// A client for the worker in `record`, presenting `identity`. A record
    /// without a pin is refused (invalid argument `pin`); connecting
    /// unpinned takes [`AgentClient::new_unpinned`].
    pub fn new(
        identity: &Identity,
        record: HostRecord,
        hostname: HostnameVerification,
    ) -> Result<Self> {
        if record.pin.is_none() {
            return Err(Error::invalid(
                "pin",
                format!(
                    "no pin for {}: give the worker's SHA-256 fingerprint, or opt out \
                     explicitly (AgentClient::new_unpinned, --no-pin)",
                    record.authority()
                ),
            ));
        }
        Self::open(identity, record, hostname)
    }

    /// The explicit opt-out of pinning: a client that accepts any
    /// certificate the CA issued for the worker (a pin in `record`, if any,
    /// is still checked). Raises a warn event `client.unpinned` naming the
    /// worker.
    pub fn new_unpinned(
        identity: &Identity,
        record: HostRecord,
        hostname: HostnameVerification,
    ) -> Result<Self> {
        if record.pin.is_none() {
            events::emit(Level::Warn, || {
                Event::new(Level::Warn, "client.unpinned").with("address", record.authority())
            });
        }
        Self::open(identity, record, hostname)
    }

    fn open(
        identity: &Identity,
        record: HostRecord,
        hostname: HostnameVerification,
    ) -> Result<Self> {
        let channel = Channel::new(
            identity,
            &record.address,
            record.port,
            record.pin.clone().map(|fingerprint| Pin {
                fingerprint,
                origin: record
                    .pin_origin
                    .clone()
                    .unwrap_or_else(|| CALLER_PIN.to_string()),
            }),
            hostname,
        )?;
        Ok(AgentClient {
            record,
            channel,
            profiles: ProfileTable::new(Profile::ALL.map(Profile::default_timeouts)),
        })
    }

    /// A client from a host-record JSON text.
    pub fn from_host_json(
        identity: &Identity,
        host_json: &str,
        hostname: HostnameVerification,
    ) -> Result<Self> {
        Self::new(identity, HostRecord::from_json(host_json)?, hostname)
    }

    /// The host record this client talks to.
    pub fn host(&self) -> &HostRecord {
        &self.record
    }

    /// `AgentClient(name='…', address='…', port=…)`.
    pub fn describe(&self) -> String {
        let name = match &self.record.name {
            Some(name) => format!("'{name}'"),
            None => "None".to_string(),
        };
        format!(
            "AgentClient(name={name}, address='{}', port={})",
            self.record.address, self.record.port
        )
    }

    /// Opens and verifies one connection now (chain, hostname, pin), so a
    /// wrong worker fails before any request. The first call then reuses
    /// it: one handshake, not two. With TLS 1.3 a worker that rejects the
    /// client certificate says so only after the handshake, so that failure
    /// surfaces on the first call.
    pub fn connect(&self) -> Result<()> {
        self.channel
            .connect(self.timeouts(Profile::Control).connect)
    }

    /// Closes this client's idle kept-alive connections (and a warm one):
    /// the next call connects again, resuming its TLS session when
    /// resumption is on. A call in flight keeps its connection.
    pub fn close_idle_connections(&self) {
        self.channel.close_idle();
    }

    /// Makes this client's connections free their buffers while idle, as a
    /// fleet's do.
    pub(crate) fn release_buffers_when_idle(&self) {
        self.channel.release_buffers_when_idle();
    }

    /// Counts every connection opened from now in `total` while it lives.
    pub(crate) fn count_connections_in(
        &self,
        total: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        self.channel.count_connections_in(total);
    }

    /// The timeouts of `profile`.
    pub fn timeouts(&self, profile: Profile) -> Timeouts {
        self.profiles.get(profile as usize)
    }

    /// Replaces the timeouts of `profile` for later calls. Zero durations
    /// (other than `pool`) are rejected.
    pub fn set_timeouts(&self, profile: Profile, timeouts: Timeouts) -> Result<()> {
        self.profiles.set(profile as usize, timeouts)
    }

    /// The cap on a response body, in bytes.
    pub fn max_response_bytes(&self) -> u64 {
        self.channel.max_response_bytes()
    }

    /// Sets the cap on a response body (at least 1 byte). A larger body is a
    /// protocol error, and no more than the cap is read into memory.
    pub fn set_max_response_bytes(&self, limit: u64) -> Result<()> {
        self.channel.set_max_response_bytes(limit)
    }

    /// TLS handshakes this client has completed, full and resumed; each
    /// was verified and pinned.
    pub fn handshake_count(&self) -> u64 {
        let counts = self.channel.handshakes();
        counts.full + counts.resumed
    }

    /// TLS handshakes this client has completed, by kind.
    pub fn handshake_counts(&self) -> HandshakeCounts {
        self.channel.handshakes()
    }

    /// Turns TLS 1.3 session resumption on (the default) or off for the
    /// connections this client opens from now on. Off, every new connection
    /// pays a full handshake.
    pub fn set_session_resumption(&self, on: bool) {
        self.channel.set_resumption(on);
    }

    /// Whether new connections may resume a TLS 1.3 session.
    pub fn session_resumption(&self) -> bool {
        self.channel.resumption()
    }

    /// Times this client's certificate verifier ran (one per full handshake).
    pub fn verification_count(&self) -> u64 {
        self.channel.verifications()
    }

    /// `GET /health`.
    pub fn health(&self) -> Result<Value> {
        self.get("/health", Profile::Control)
    }

    /// `GET /status`: the deployment snapshot.
    pub fn status(&self) -> Result<Value> {
        self.get("/status", Profile::Control)
    }

    /// `POST /deploy`. The config's shape is checked before any traffic: an
    /// object whose `deckies` is a non-empty array of objects with a string
    /// `name`. Success is 202 (the worker deploys in the background).
    pub fn deploy(&self, config: &Value, dry_run: bool, no_cache: bool) -> Result<Value> {
        check_deploy_config(config)?;
        let body = json!({"config": config, "dry_run": dry_run, "no_cache": no_cache});
        self.post("/deploy", Some(&body), Profile::Control)
    }

    /// `POST /mutate`: swap `services` on decky `decky_id`.
    pub fn mutate<S: AsRef<str>>(
        &self,
        decky_id: &str,
        services: &[S],
        dry_run: bool,
    ) -> Result<Value> {
        if decky_id.is_empty() {
            return Err(Error::invalid("decky_id", "must not be empty"));
        }
        let services: Vec<&str> = services.iter().map(AsRef::as_ref).collect();
        let body = json!({"decky_id": decky_id, "services": services, "dry_run": dry_run});
        self.post("/mutate", Some(&body), Profile::Control)
    }

    /// `POST /teardown` of one decky, or of everything when `decky_id` is `None`.
    pub fn teardown(&self, decky_id: Option<&str>) -> Result<Value> {
        let body = json!({ "decky_id": decky_id });
        self.post("/teardown", Some(&body), Profile::Control)
    }

    /// `POST /self-destruct`: the worker wipes itself.
    pub fn self_destruct(&self) -> Result<Value> {
        self.post("/self-destruct", None, Profile::Control)
    }

    /// `POST /topology/apply`. With `version_hash` `None` the canonical hash
    /// of `hydrated` is computed (see [`topology::canonical_hash`]).
    pub fn apply_topology(&self, hydrated: &Value, version_hash: Option<&str>) -> Result<Value> {
        if !hydrated.is_object() {
            return Err(Error::invalid("hydrated", "must be a JSON object"));
        }
        let version_hash = match version_hash {
            Some(hash) => hash.to_string(),
            None => topology::canonical_hash(hydrated)?,
        };
        let body = json!({"hydrated": hydrated, "version_hash": version_hash});
        self.post("/topology/apply", Some(&body), Profile::TopologyApply)
    }

    /// `POST /topology/apply` of a hydrated topology given as JSON text,
    /// sent exactly as written (the worker hashes what it parses, so no
    /// re-serialisation stands between the caller's text and the worker).
    /// The text must be a JSON object the worker can read; with
    /// `version_hash` `None` its canonical hash is computed from the text
    /// (see [`topology::canonical_hash_str`]). The C ABI, the Python module
    /// and the CLI all apply topologies this way.
    pub fn apply_topology_json(&self, hydrated: &str, version_hash: Option<&str>) -> Result<Value> {
        let computed = topology::canonical_hash_str(hydrated)?;
        let version_hash = version_hash.map_or(computed, str::to_string);
        let body = format!(
            "{{\"hydrated\":{},\"version_hash\":{}}}",
            hydrated.trim(),
            Value::String(version_hash)
        );
        self.post_bytes(
            "/topology/apply",
            Some(body.as_bytes()),
            Profile::TopologyApply,
        )
    }

    /// `POST /topology/teardown` of `topology_id`.
    pub fn teardown_topology(&self, topology_id: &str) -> Result<Value> {
        if topology_id.is_empty() {
            return Err(Error::invalid("topology_id", "must not be empty"));
        }
        let body = json!({ "topology_id": topology_id });
        self.post("/topology/teardown", Some(&body), Profile::TopologyTeardown)
    }

    /// `GET /topology/state`.
    pub fn topology_state(&self) -> Result<Value> {
        self.get("/topology/state", Profile::Control)
    }

    fn get(&self, path: &str, profile: Profile) -> Result<Value> {
        self.channel.get(path, self.timeouts(profile))
    }

    fn post(&self, path: &str, body: Option<&Value>, profile: Profile) -> Result<Value> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.post_bytes(path, bytes.as_deref(), profile)
    }

    fn post_bytes(&self, path: &str, body: Option<&[u8]>, profile: Profile) -> Result<Value> {
        self.channel.post(path, body, self.timeouts(profile))
    }
}

/// The local check of a deployment config: an object with a non-empty
/// `deckies` array whose entries are objects with a string `name`.
pub fn check_deploy_config(config: &Value) -> Result<()> {
    let object = config
        .as_object()
        .ok_or_else(|| Error::invalid("config", "must be a JSON object"))?;
    let deckies = match object.get("deckies") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(Error::invalid("config.deckies", "must not be empty")),
        Some(_) => return Err(Error::invalid("config.deckies", "must be an array")),
        None => return Err(Error::invalid("config.deckies", "is required")),
    };
    for (i, decky) in deckies.iter().enumerate() {
        match decky.get("name") {
            Some(Value::String(_)) if decky.is_object() => {}
            _ => {
                return Err(Error::invalid(
                    format!("config.deckies[{i}]"),
                    "must be an object with a string `name`",
                ))
            }
        }
    }
    Ok(())
}
