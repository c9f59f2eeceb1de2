//! `decnet_fleet`: many worker agents driven as one, with bounded
//! concurrency, an optional sweep deadline, per-host results as JSON text
//! and a per-host callback on the calling thread.

use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

use serde_json::Value;

use super::client::{decnet_handshake_counts, decnet_timeouts, hostname_choice, profile_of};
use super::guard::{
    guard, handle, optional_str, out_ptr, required_json, required_str, to_c_string, write_string,
    Failure,
};
use super::identity::decnet_identity;
use super::result::decnet_result;
use crate::fleet::{Call, Fleet, Flow, HostId, SweepOptions};

/// Many worker agents driven as one. Opaque.
///
/// Holds one client per host for its whole life, so a second sweep reuses
/// the connections the first one opened. Thread-safe: sweeps may run from
/// several threads at once.
pub struct decnet_fleet {
    pub(super) inner: Fleet,
}

/// Per-call sweep options. Zero in a field means "the fleet's setting".
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct decnet_sweep_options {
    /// Hosts in flight at once (worker threads), 1 to 4096; 0: the fleet's
    /// default (64 unless `decnet_fleet_set_concurrency` changed it).
    pub concurrency: usize,
    /// Milliseconds after which every unfinished host reports a timeout
    /// and the call returns; 0: the fleet's default (none unless
    /// `decnet_fleet_set_deadline_ms` set one).
    pub deadline_ms: u64,
}

/// Called once per host as it completes, with that host's result as a
/// NUL-terminated JSON object (the same object as in the results array).
/// The text is borrowed for the duration of the call: copy it to keep it.
/// Hosts a sweep deadline cuts short are passed when it expires, so unless
/// the callback stops the sweep it sees every host once. Return 0 to go
/// on, non-zero to stop the sweep: no more hosts are started, hosts in
/// flight finish without further callbacks, and hosts never started
/// report `"outcome": "not_attempted"`.
///
/// Called on the thread that called `decnet_fleet_call`, one call at a
/// time, so it needs no locking. It must not free the fleet.
pub type decnet_fleet_callback =
    Option<unsafe extern "C" fn(host_result_json: *const c_char, user_data: *mut c_void) -> c_int>;

/// Makes a fleet from a JSON array of host records (each as for
/// `decnet_client_new_from_host_json`), every host presenting `identity`.
/// Duplicate uuids or names are `DECNET_ERR_INVALID_ARGUMENT` naming both
/// positions (`hosts[2].uuid … hosts[0]`); an empty array is a valid,
/// empty fleet. No traffic happens yet.
///
/// Ownership: `*out` is owned by the caller; free it with
/// `decnet_fleet_free`. `identity` stays the caller's and may be freed
/// right after this call. Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_new(
    identity: *const decnet_identity,
    hosts_json: *const c_char,
    hostname_verification: u32,
    out: *mut *mut decnet_fleet,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let identity = unsafe { handle(identity, "identity") }?;
        let hosts = unsafe { required_json(hosts_json, "hosts_json") }?;
        let fleet = Fleet::from_json(
            &identity.inner,
            &hosts,
            hostname_choice(hostname_verification)?,
        )
        .map_err(|e| Failure::from(e).argument_named("hosts", "hosts_json"))?;
        *slot = Box::into_raw(Box::new(decnet_fleet { inner: fleet }));
        Ok(())
    })
}

/// Frees a fleet and closes its connections. NULL is a no-op. No sweep
/// thread outlives the call that started it, so nothing of this fleet
/// runs afterwards; a sweep started by `decnet_fleet_submit` keeps the
/// fleet's clients until it ends.
///
/// Call once per fleet, after every call using it has returned.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_free(fleet: *mut decnet_fleet) {
    if fleet.is_null() {
        return;
    }
    super::guard::release(|| {
        // SAFETY: the caller passes a pointer made by `decnet_fleet_new`,
        // exactly once, with no call on it in progress.
        drop(unsafe { Box::from_raw(fleet) });
    });
}

/// Writes the number of hosts to `*out`.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_size(
    fleet: *const decnet_fleet,
    out: *mut usize,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let fleet = unsafe { handle(fleet, "fleet") }?;
        let out = unsafe { out.as_mut() }.ok_or(Failure::Null("out"))?;
        *out = fleet.inner.len();
        Ok(())
    })
}

/// Sets the timeouts of `profile` (a `decnet_profile`) on every host, as
/// `decnet_client_set_timeouts` does for one.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (unknown profile, zero timeout),
/// `DECNET_ERR_PANIC`. Thread-safe; affects calls that start afterwards.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_set_timeouts(
    fleet: *const decnet_fleet,
    profile: u32,
    timeouts: *const decnet_timeouts,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let fleet = unsafe { handle(fleet, "fleet") }?;
        let t = unsafe { handle(timeouts, "timeouts") }?;
        fleet.inner.set_timeouts(profile_of(profile)?, t.into())?;
        Ok(())
    })
}

/// Turns TLS 1.3 session resumption on (`true`, the default) or off for
/// the new connections of every host, as
/// `decnet_client_set_session_resumption` does for one.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_set_session_resumption(
    fleet: *const decnet_fleet,
    on: bool,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let fleet = unsafe { handle(fleet, "fleet") }?;
        fleet.inner.set_session_resumption(on);
        Ok(())
    })
}

/// Reads the handshakes every host's client has completed, summed, full
/// and resumed, into `*out` (zeroed first).
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_handshake_counts(
    fleet: *const decnet_fleet,
    out: *mut decnet_handshake_counts,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let out = unsafe { out.as_mut() }.ok_or(Failure::Null("out"))?;
        *out = decnet_handshake_counts::default();
        let fleet = unsafe { handle(fleet, "fleet") }?;
        *out = fleet.inner.handshake_counts().into();
        Ok(())
    })
}

/// A fleet's connection budget and what it did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct decnet_connection_budget {
    /// The most connections the fleet's sweeps hold open at once.
    pub max_open_connections: usize,
    /// Connections of the fleet's clients open now.
    pub open_connections: usize,
    /// Times a host's idle connections were closed to stay within it.
    pub evictions: u64,
}

/// Caps the connections the fleet's sweeps hold open at once (at least 1;
/// by default three quarters of the soft limit on open files when the
/// fleet was made), for calls started from now. Before a call would go
/// over, the least recently used idle hosts' kept-alive connections are
/// closed; calling them again costs a new connection with a resumed TLS
/// handshake. A sweep never runs more hosts at once than the cap.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (0), `DECNET_ERR_PANIC`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_set_max_open_connections(
    fleet: *const decnet_fleet,
    limit: usize,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let fleet = unsafe { handle(fleet, "fleet") }?;
        fleet.inner.set_max_open_connections(limit)?;
        Ok(())
    })
}

/// Reads the fleet's connection budget, its open connections and its
/// evictions into `*out` (zeroed first).
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_connection_budget(
    fleet: *const decnet_fleet,
    out: *mut decnet_connection_budget,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let out = unsafe { out.as_mut() }.ok_or(Failure::Null("out"))?;
        *out = decnet_connection_budget::default();
        let fleet = unsafe { handle(fleet, "fleet") }?;
        *out = decnet_connection_budget {
            max_open_connections: fleet.inner.max_open_connections(),
            open_connections: fleet.inner.open_connections(),
            evictions: fleet.inner.connection_evictions(),
        };
        Ok(())
    })
}

/// Sets the fleet's default concurrency: hosts in flight at once, each on
/// one worker thread of the call's pool (1 to 4096; default 64).
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_PANIC`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_set_concurrency(
    fleet: *const decnet_fleet,
    concurrency: usize,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let fleet = unsafe { handle(fleet, "fleet") }?;
        fleet.inner.set_concurrency(concurrency)?;
        Ok(())
    })
}

/// Makes the worker threads of the fleet's sweeps, from the next one on,
/// run `increment` nice levels (0 to 19; default 0) below the thread that
/// calls the sweep, so their TLS work yields the CPU to the caller's other
/// threads (an event loop). Callbacks stay on the calling thread, at its
/// priority. Linux only; elsewhere it has no effect. Under other load a
/// sweep then gets less CPU and takes longer.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (above 19), `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_set_sweep_niceness(
    fleet: *const decnet_fleet,
    increment: u32,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let fleet = unsafe { handle(fleet, "fleet") }?;
        fleet.inner.set_sweep_niceness(increment)?;
        Ok(())
    })
}

/// Sets the fleet's default sweep deadline in milliseconds; 0 clears it.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_set_deadline_ms(
    fleet: *const decnet_fleet,
    deadline_ms: u64,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let fleet = unsafe { handle(fleet, "fleet") }?;
        let deadline = (deadline_ms > 0).then(|| Duration::from_millis(deadline_ms));
        fleet.inner.set_deadline(deadline)?;
        Ok(())
    })
}

/// Runs one RPC over the fleet and writes every host's result to
/// `*out_results_json`.
///
/// `rpc` is one of `health`, `status`, `topology-state`, `self-destruct`,
/// `deploy`, `mutate`, `teardown`, `apply-topology`, `teardown-topology`.
/// `plan_json` NULL sends it without arguments to every host (for the RPCs
/// that take none). Otherwise it is a JSON array, each host at most once,
/// of host references (an index, or a uuid or name string) or of objects
/// `{"host": <ref>, "args": {...}}` with that host's own arguments, named
/// as in the single-host calls: `config`, `dry_run`, `no_cache` (deploy);
/// `decky_id`, `services`, `dry_run` (mutate); `decky_id` (teardown, null
/// for all); `hydrated` (an object or its JSON text, sent verbatim),
/// `version_hash` (apply-topology); `topology_id` (teardown-topology).
/// `options` may be NULL (the fleet's settings). `callback` may be NULL;
/// see `decnet_fleet_callback` for when it is called.
///
/// `*out_results_json` is a JSON array with one object per planned host,
/// in plan order: `index`, `uuid`, `name`, `address`, `elapsed_ms`,
/// `outcome` (`"ok"`, `"error"` or `"not_attempted"`), and `result` (the
/// worker's answer) or `error` (`kind`, `code`, `message`, `http_status`,
/// `body`, `detail`, `expected_fingerprint`, `actual_fingerprint`,
/// `may_have_reached_worker`). A sweep deadline gives unfinished hosts
/// `kind` `"timeout"`; a process out of file descriptors gives the
/// affected hosts `kind` `"connect"` with a message that says so.
///
/// Ownership: `*out_results_json` is the caller's; free it with
/// `decnet_string_free`. Thread-safe; blocks the calling thread until the
/// sweep ends (or its deadline).
///
/// Results: `DECNET_OK` when the sweep ran, whatever each host's outcome;
/// `DECNET_ERR_NULL_ARGUMENT`; `DECNET_ERR_INVALID_ARGUMENT` (unknown RPC,
/// malformed plan, unknown or repeated host, bad options; nothing was
/// sent); `DECNET_ERR_INTERNAL` (no worker thread could start);
/// `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_call(
    fleet: *const decnet_fleet,
    rpc: *const c_char,
    plan_json: *const c_char,
    options: *const decnet_sweep_options,
    callback: decnet_fleet_callback,
    user_data: *mut c_void,
    out_results_json: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out_results_json, "out_results_json") }?;
        let fleet = unsafe { handle(fleet, "fleet") }?;
        // SAFETY: forwarded contract.
        let plan = unsafe { plan_of(fleet, rpc, plan_json) }?;
        // SAFETY: NULL or a readable struct per the contract.
        let options = unsafe { sweep_options(options) };
        let results = fleet.inner.sweep(plan, options, |result| {
            // SAFETY: the caller's callback and user data, on its thread.
            unsafe { call_back(callback, user_data, &result.to_json()) }
        })?;
        let array = Value::Array(results.iter().map(|r| r.to_json()).collect());
        write_string(slot, array.to_string());
        Ok(())
    })
}

/// Deploys one configuration sharded by its deckies' `host_uuid`: each
/// host some decky names gets the configuration with its own deckies only
/// (`ipvlan` turned on when its record's `use_ipvlan` is true, never
/// turned off); hosts no decky names get nothing. With `probe` true, a host
/// whose deploy failed is then asked its status (within the same
/// deadline). `options` and `callback` as in `decnet_fleet_call`.
///
/// `*out_results_json` is a JSON array, one object per host that got a
/// shard, in fleet order: the members of a `decnet_fleet_call` result for
/// the deploy, plus `deckies` (the names sent) and `probe`: null (no
/// probe: the deploy succeeded, or `probe` was false), `{"running":
/// [names], "down": [names]}`, or `{"error": {...}}` (the probe failed).
/// The callback gets the same objects.
///
/// Ownership: `*out_results_json` is the caller's; free it with
/// `decnet_string_free`. Thread-safe; blocks until every shard is done.
///
/// Results: `DECNET_OK` when the deploy ran, whatever each host's outcome;
/// `DECNET_ERR_NULL_ARGUMENT`; `DECNET_ERR_INVALID_ARGUMENT` (malformed
/// JSON, a decky without `host_uuid` or naming no host of the fleet, bad
/// options; nothing was sent); `DECNET_ERR_INTERNAL`; `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_deploy_sharded(
    fleet: *const decnet_fleet,
    config_json: *const c_char,
    probe: bool,
    options: *const decnet_sweep_options,
    callback: decnet_fleet_callback,
    user_data: *mut c_void,
    out_results_json: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out_results_json, "out_results_json") }?;
        let fleet = unsafe { handle(fleet, "fleet") }?;
        let config = unsafe { required_json(config_json, "config_json") }?;
        let options = unsafe { sweep_options(options) };
        let results = fleet
            .inner
            .deploy_sharded(&config, probe, options, |result| {
                // SAFETY: the caller's callback and user data, on its thread.
                unsafe { call_back(callback, user_data, &result.to_json()) }
            })
            .map_err(|e| Failure::from(e).argument_named("config", "config_json"))?;
        let array = Value::Array(results.iter().map(|r| r.to_json()).collect());
        write_string(slot, array.to_string());
        Ok(())
    })
}

/// The options `options` points at (NULL: the fleet's settings).
///
/// # Safety
/// `options` is NULL or points to a readable `decnet_sweep_options`.
pub(super) unsafe fn sweep_options(options: *const decnet_sweep_options) -> SweepOptions {
    // SAFETY: per this function's contract.
    match unsafe { options.as_ref() } {
        None => SweepOptions::default(),
        Some(o) => SweepOptions {
            concurrency: (o.concurrency > 0).then_some(o.concurrency),
            deadline: (o.deadline_ms > 0).then(|| Duration::from_millis(o.deadline_ms)),
        },
    }
}

/// Reads the RPC and plan of `decnet_fleet_call` and `decnet_fleet_submit`.
///
/// # Safety
/// `rpc` and `plan_json` as in `required_str` and `optional_str`.
pub(super) unsafe fn plan_of(
    fleet: &decnet_fleet,
    rpc: *const c_char,
    plan_json: *const c_char,
) -> Result<Vec<(HostId, Call)>, Failure> {
    // SAFETY: forwarded contract.
    let rpc = unsafe { required_str(rpc, "rpc") }?;
    let plan = match unsafe { optional_str(plan_json, "plan_json") }? {
        Some(text) => Some(crate::json::from_str(text).map_err(|e| {
            Failure::Library(crate::Error::invalid(
                "plan_json",
                format!("malformed JSON: {e}"),
            ))
        })?),
        None => None,
    };
    fleet
        .inner
        .plan_from_json(rpc, plan.as_ref())
        .map_err(|e| Failure::from(e).argument_named("plan", "plan_json"))
}

/// Hands `result` to the caller's `callback` (if any) as JSON text and
/// reads whether to go on.
///
/// # Safety
/// `callback` and `user_data` are the caller's, called on its thread.
pub(super) unsafe fn call_back(
    callback: decnet_fleet_callback,
    user_data: *mut c_void,
    result: &Value,
) -> Flow {
    let Some(function) = callback else {
        return Flow::Continue;
    };
    let text = to_c_string(result.to_string());
    // SAFETY: the caller's function pointer and user data, on the caller's
    // thread; the text outlives the call.
    match unsafe { function(text.as_ptr(), user_data) } {
        0 => Flow::Continue,
        _ => Flow::Stop,
    }
}
