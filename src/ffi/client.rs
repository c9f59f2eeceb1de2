//! `decnet_client`: one worker agent, its timeout profiles and the nine RPCs.

use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::guard::{
    self, guard, handle, optional_str, out_ptr, required_json, required_str, str_array,
    write_string, Failure,
};
use super::identity::decnet_identity;
use super::result::decnet_result;
use crate::client::{
    AgentClient, HandshakeCounts, HostRecord, HostnameVerification, Profile, Timeouts,
};
use crate::error::Error;

/// A client for one worker agent. Opaque.
///
/// Thread-safe: any number of threads may call any function on one handle
/// at once; each call blocks only its own thread and all share one
/// keep-alive connection pool. Every connection is verified (chain to the
/// CA, hostname when enabled, pin when set) inside its own TLS handshake.
pub struct decnet_client {
    /// Shared with the completion threads running its submitted calls.
    pub(super) inner: Arc<AgentClient>,
}

/// Hostname verification choices for the `hostname_verification` argument.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum decnet_hostname_verification {
    /// Check only the chain to the CA (and the pin, if any).
    DECNET_HOSTNAME_OFF = 0,
    /// Check the worker's address against its certificate's names.
    DECNET_HOSTNAME_ON = 1,
    /// Read `DECNET_VERIFY_HOSTNAME` (`true`/`false`); on when unset.
    DECNET_HOSTNAME_FROM_ENV = 2,
}

/// Timeout profiles for the `profile` argument.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum decnet_profile {
    /// health, status, deploy, mutate, teardown, self-destruct, topology state.
    DECNET_PROFILE_CONTROL = 0,
    /// Long synchronous deployments (not used by the RPCs themselves).
    DECNET_PROFILE_DEPLOY = 1,
    /// topology apply.
    DECNET_PROFILE_TOPOLOGY_APPLY = 2,
    /// topology teardown.
    DECNET_PROFILE_TOPOLOGY_TEARDOWN = 3,
}

/// The timeouts of one profile, in milliseconds. Each bounds one phase as
/// a whole, whatever the worker's pace: `connect` name resolution, the TCP
/// connect and the whole TLS handshake; `write` sending the whole request;
/// `read` waiting for and reading the whole answer, head and body; `pool`
/// is kept for the contract's table and has no effect.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct decnet_timeouts {
    /// Connect and handshake, ms.
    pub connect_ms: u64,
    /// Response headers; response body, ms.
    pub read_ms: u64,
    /// Sending the request, ms.
    pub write_ms: u64,
    /// Waiting for a pooled connection, ms (no effect).
    pub pool_ms: u64,
}

impl decnet_timeouts {
    /// All zero: what an out-parameter holds until a call fills it.
    pub(super) const ZERO: decnet_timeouts = decnet_timeouts {
        connect_ms: 0,
        read_ms: 0,
        write_ms: 0,
        pool_ms: 0,
    };
}

impl From<Timeouts> for decnet_timeouts {
    fn from(t: Timeouts) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        decnet_timeouts {
            connect_ms: ms(t.connect),
            read_ms: ms(t.read),
            write_ms: ms(t.write),
            pool_ms: ms(t.pool),
        }
    }
}

impl From<&decnet_timeouts> for Timeouts {
    fn from(t: &decnet_timeouts) -> Self {
        Timeouts {
            connect: Duration::from_millis(t.connect_ms),
            read: Duration::from_millis(t.read_ms),
            write: Duration::from_millis(t.write_ms),
            pool: Duration::from_millis(t.pool_ms),
        }
    }
}

pub(super) fn hostname_choice(value: u32) -> Result<HostnameVerification, Failure> {
    match value {
        0 => Ok(HostnameVerification::Off),
        1 => Ok(HostnameVerification::On),
        2 => Ok(HostnameVerification::FromEnvironment),
        _ => Err(Error::invalid(
            "hostname_verification",
            "must be 0 (off), 1 (on) or 2 (from the environment)",
        )
        .into()),
    }
}

pub(super) fn profile_of(value: u32) -> Result<Profile, Failure> {
    Profile::from_code(value).ok_or_else(|| Error::invalid("profile", "must be 0 to 3").into())
}

/// Makes a client from a host-record JSON object (`address`,
/// `client_cert_fingerprint`, optional `agent_port`, `uuid`, `name`,
/// `updater_cert_fingerprint`, `updater_port`; any other key is refused)
/// presenting `identity`. A record without `client_cert_fingerprint` is
/// refused: connecting unpinned takes
/// `decnet_client_new_from_host_json_unpinned`. `hostname_verification` is a
/// `decnet_hostname_verification` value. No traffic happens yet.
///
/// Ownership: `*out` is owned by the caller; free it with
/// `decnet_client_free`. `identity` stays the caller's and may be freed
/// right after this call. Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (malformed JSON, or a bad field, named in
/// the message), `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_new_from_host_json(
    identity: *const decnet_identity,
    host_json: *const c_char,
    hostname_verification: u32,
    out: *mut *mut decnet_client,
) -> decnet_result {
    // SAFETY: the caller's pointers follow the module's conventions.
    unsafe {
        new_client(
            identity,
            out,
            hostname_verification,
            Pinning::Required,
            || {
                Ok(HostRecord::from_value(&required_json(
                    host_json,
                    "host_json",
                )?)?)
            },
        )
    }
}

/// Makes a client from an address (IPv4, IPv6 or DNS name) and a port (0
/// means 8765), pinned to `pin` (hex SHA-256 in any case, `:` separators
/// allowed). A `NULL` pin is refused with `DECNET_ERR_INVALID_ARGUMENT`:
/// connecting unpinned takes `decnet_client_new_unpinned`. Otherwise as
/// `decnet_client_new_from_host_json`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_new(
    identity: *const decnet_identity,
    address: *const c_char,
    port: u16,
    pin: *const c_char,
    hostname_verification: u32,
    out: *mut *mut decnet_client,
) -> decnet_result {
    // SAFETY: the caller's pointers follow the module's conventions.
    unsafe {
        new_client(
            identity,
            out,
            hostname_verification,
            Pinning::Required,
            || {
                let address = required_str(address, "address")?;
                let pin = optional_str(pin, "pin")?.ok_or_else(|| {
                    Error::invalid(
                        "pin",
                        "is NULL: pass the worker's SHA-256 fingerprint, or call \
                     decnet_client_new_unpinned to connect unpinned",
                    )
                })?;
                Ok(HostRecord::new(address, port)?.with_pin(Some(pin))?)
            },
        )
    }
}

/// The explicit opt-out of pinning, from a host record:
/// `decnet_client_new_from_host_json` that also accepts a record without
/// `client_cert_fingerprint` (a pin it carries is still checked). The
/// client then accepts any certificate the CA issued for the worker; a
/// warn event `client.unpinned` names it. Ownership and results as
/// `decnet_client_new_from_host_json`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_new_from_host_json_unpinned(
    identity: *const decnet_identity,
    host_json: *const c_char,
    hostname_verification: u32,
    out: *mut *mut decnet_client,
) -> decnet_result {
    // SAFETY: the caller's pointers follow the module's conventions.
    unsafe {
        new_client(
            identity,
            out,
            hostname_verification,
            Pinning::OptedOut,
            || {
                let record = required_json(host_json, "host_json")?;
                Ok(HostRecord::from_value_unpinned(&record)?)
            },
        )
    }
}

/// The explicit opt-out of pinning, from an address and a port (0 means
/// 8765): a client that accepts any certificate the CA issued for the
/// worker; a warn event `client.unpinned` names it. Ownership and results
/// as `decnet_client_new_from_host_json`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_new_unpinned(
    identity: *const decnet_identity,
    address: *const c_char,
    port: u16,
    hostname_verification: u32,
    out: *mut *mut decnet_client,
) -> decnet_result {
    // SAFETY: the caller's pointers follow the module's conventions.
    unsafe {
        new_client(
            identity,
            out,
            hostname_verification,
            Pinning::OptedOut,
            || Ok(HostRecord::new(required_str(address, "address")?, port)?),
        )
    }
}

/// Whether a constructor refuses a record without a pin.
enum Pinning {
    /// `AgentClient::new`: a missing pin is an invalid argument.
    Required,
    /// `AgentClient::new_unpinned`: the caller's explicit opt-out.
    OptedOut,
}

/// The constructors' shared body: checks `out` and `identity`, reads the
/// record with `record`, builds the client as `pinning` says and stores it
/// in `*out`.
///
/// # Safety
/// `identity` and `out` follow the module's conventions, and so do the
/// pointers `record` reads.
unsafe fn new_client(
    identity: *const decnet_identity,
    out: *mut *mut decnet_client,
    hostname_verification: u32,
    pinning: Pinning,
    record: impl FnOnce() -> Result<HostRecord, Failure>,
) -> decnet_result {
    guard(|| {
        // SAFETY: as the caller promised.
        let slot = unsafe { out_ptr(out, "out") }?;
        let identity = unsafe { handle(identity, "identity") }?;
        let record = record()?;
        let hostname = hostname_choice(hostname_verification)?;
        let client = match pinning {
            Pinning::Required => AgentClient::new(&identity.inner, record, hostname)?,
            Pinning::OptedOut => AgentClient::new_unpinned(&identity.inner, record, hostname)?,
        };
        *slot = Box::into_raw(Box::new(decnet_client {
            inner: Arc::new(client),
        }));
        Ok(())
    })
}

/// Opens and verifies one connection now (chain, hostname, pin), so a
/// wrong worker fails before any request; the next call reuses it.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_CONNECT`,
/// `DECNET_ERR_TLS`, `DECNET_ERR_PIN_MISMATCH`, `DECNET_ERR_TIMEOUT`,
/// `DECNET_ERR_PANIC`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_connect(client: *const decnet_client) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let client = unsafe { handle(client, "client") }?;
        client.inner.connect()?;
        Ok(())
    })
}

/// Writes `AgentClient(name='…', address='…', port=…)` to `*out`, owned by
/// the caller (free with `decnet_string_free`). Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_describe(
    client: *const decnet_client,
    out: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let client = unsafe { handle(client, "client") }?;
        write_string(slot, client.inner.describe());
        Ok(())
    })
}

/// Frees a client and closes its connections. NULL is a no-op.
///
/// Call it once, after every thread has finished using the handle.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_free(client: *mut decnet_client) {
    if client.is_null() {
        return;
    }
    guard::release(|| {
        // SAFETY: a handle made by `decnet_client_new*`, freed once per the contract.
        drop(unsafe { Box::from_raw(client) });
    });
}

/// Reads the timeouts of `profile` (a `decnet_profile` value) into `*out`.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (unknown profile), `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_get_timeouts(
    client: *const decnet_client,
    profile: u32,
    out: *mut decnet_timeouts,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let out = unsafe { out.as_mut() }.ok_or(Failure::Null("out"))?;
        *out = decnet_timeouts::ZERO;
        let client = unsafe { handle(client, "client") }?;
        *out = client.inner.timeouts(profile_of(profile)?).into();
        Ok(())
    })
}

/// Replaces the timeouts of `profile` for later calls on this client.
/// `connect_ms`, `read_ms` and `write_ms` must be greater than zero.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_PANIC`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_set_timeouts(
    client: *const decnet_client,
    profile: u32,
    timeouts: *const decnet_timeouts,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let client = unsafe { handle(client, "client") }?;
        let t = unsafe { handle(timeouts, "timeouts") }?;
        client.inner.set_timeouts(profile_of(profile)?, t.into())?;
        Ok(())
    })
}

/// Sets the cap on a response body in bytes (default 16 MiB; at least 1).
/// A larger body fails with `DECNET_ERR_PROTOCOL` without being read into
/// memory.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_PANIC`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_set_max_response_bytes(
    client: *const decnet_client,
    max_bytes: u64,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let client = unsafe { handle(client, "client") }?;
        client.inner.set_max_response_bytes(max_bytes)?;
        Ok(())
    })
}

/// Turns TLS 1.3 session resumption on (`true`, the default) or off for
/// the connections this client opens from now on. A resumed connection
/// continues a session that a full, verified and pinned handshake of this
/// same client established, and its pin is checked again; off, every new
/// connection pays a full handshake and no ticket is kept.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_set_session_resumption(
    client: *const decnet_client,
    on: bool,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let client = unsafe { handle(client, "client") }?;
        client.inner.set_session_resumption(on);
        Ok(())
    })
}

/// The TLS handshakes a client has completed, by kind.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct decnet_handshake_counts {
    /// Full handshakes; the certificate verifier ran in each.
    pub full: u64,
    /// Resumed TLS 1.3 handshakes; the pin was checked again in each.
    pub resumed: u64,
}

impl From<HandshakeCounts> for decnet_handshake_counts {
    fn from(counts: HandshakeCounts) -> Self {
        decnet_handshake_counts {
            full: counts.full,
            resumed: counts.resumed,
        }
    }
}

/// Reads how many handshakes this client has completed, full and resumed,
/// into `*out` (zeroed first).
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_handshake_counts(
    client: *const decnet_client,
    out: *mut decnet_handshake_counts,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let out = unsafe { out.as_mut() }.ok_or(Failure::Null("out"))?;
        *out = decnet_handshake_counts::default();
        let client = unsafe { handle(client, "client") }?;
        *out = client.inner.handshake_counts().into();
        Ok(())
    })
}

/// Runs one RPC: checks `client` and `out_json`, calls `rpc`, and hands
/// the JSON answer to the caller.
unsafe fn rpc(
    client: *const decnet_client,
    out_json: *mut *mut c_char,
    rpc: impl FnOnce(&AgentClient) -> Result<Value, Failure>,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out_json, "out_json") }?;
        let client = unsafe { handle(client, "client") }?;
        write_string(slot, rpc(&client.inner)?.to_string());
        Ok(())
    })
}

/// `GET /health`. On success `*out_json` holds the worker's JSON object,
/// owned by the caller (free with `decnet_string_free`).
///
/// Every RPC below follows the same rules. Thread-safe. Results:
/// `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_INVALID_ARGUMENT`,
/// `DECNET_ERR_CONNECT`, `DECNET_ERR_TLS`, `DECNET_ERR_PIN_MISMATCH`,
/// `DECNET_ERR_TIMEOUT`, `DECNET_ERR_HTTP_STATUS` (status and body in the
/// last-error detail), `DECNET_ERR_PROTOCOL`, `DECNET_ERR_CONNECTION_LOST`,
/// `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_health(
    client: *const decnet_client,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe { rpc(client, out_json, |c| Ok(c.health()?)) }
}

/// `GET /status`: the deployment snapshot. See `decnet_client_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_status(
    client: *const decnet_client,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe { rpc(client, out_json, |c| Ok(c.status()?)) }
}

/// `POST /deploy` of the deployment config `config_json`, checked locally
/// first (an object with a non-empty `deckies` array of objects with a
/// string `name`; otherwise `DECNET_ERR_INVALID_ARGUMENT` and no traffic).
/// Success is the worker's 202. See `decnet_client_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_deploy(
    client: *const decnet_client,
    config_json: *const c_char,
    dry_run: bool,
    no_cache: bool,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe {
        rpc(client, out_json, |c| {
            let config = required_json(config_json, "config_json")?;
            Ok(c.deploy(&config, dry_run, no_cache)?)
        })
    }
}

/// `POST /mutate`: give decky `decky_id` the `services_count` services in
/// `services` (which may be NULL when the count is 0). See
/// `decnet_client_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_mutate(
    client: *const decnet_client,
    decky_id: *const c_char,
    services: *const *const c_char,
    services_count: usize,
    dry_run: bool,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe {
        rpc(client, out_json, |c| {
            let decky = required_str(decky_id, "decky_id")?;
            let services = str_array(services, services_count, "services")?;
            Ok(c.mutate(decky, &services, dry_run)?)
        })
    }
}

/// `POST /teardown` of decky `decky_id`, or of everything when `decky_id`
/// is NULL. See `decnet_client_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_teardown(
    client: *const decnet_client,
    decky_id: *const c_char,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe {
        rpc(client, out_json, |c| {
            Ok(c.teardown(optional_str(decky_id, "decky_id")?)?)
        })
    }
}

/// `POST /self-destruct`: the worker wipes itself. See `decnet_client_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_self_destruct(
    client: *const decnet_client,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe { rpc(client, out_json, |c| Ok(c.self_destruct()?)) }
}

/// `POST /topology/apply` of the JSON object `hydrated_json`, sent exactly
/// as written, with `version_hash`; NULL computes the canonical hash (as
/// `decnet_topology_hash`). Uses the topology-apply profile. See
/// `decnet_client_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_apply_topology(
    client: *const decnet_client,
    hydrated_json: *const c_char,
    version_hash: *const c_char,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe {
        rpc(client, out_json, |c| {
            let hydrated = required_str(hydrated_json, "hydrated_json")?;
            let hash = optional_str(version_hash, "version_hash")?;
            c.apply_topology_json(hydrated, hash)
                .map_err(|e| Failure::from(e).argument_named("hydrated", "hydrated_json"))
        })
    }
}

/// `POST /topology/teardown` of `topology_id`. Uses the topology-teardown
/// profile. See `decnet_client_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_teardown_topology(
    client: *const decnet_client,
    topology_id: *const c_char,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe {
        rpc(client, out_json, |c| {
            Ok(c.teardown_topology(required_str(topology_id, "topology_id")?)?)
        })
    }
}

/// `GET /topology/state`. See `decnet_client_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_topology_state(
    client: *const decnet_client,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe { rpc(client, out_json, |c| Ok(c.topology_state()?)) }
}
