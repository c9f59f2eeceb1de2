//! `decnet_updater_fleet`: many workers' updaters driven as one, for plain
//! sweeps and for rollouts (push, rollback) under a rollout policy given as
//! JSON; per-host results and the summary as JSON text.

use std::ffi::{c_char, c_void};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::client::hostname_choice;
use super::fleet::{call_back, decnet_fleet_callback, decnet_sweep_options, sweep_options};
use super::guard::{
    guard, handle, optional_str, out_ptr, required_json, required_str, write_string, Failure,
};
use super::identity::decnet_identity;
use super::result::decnet_result;
use crate::error::Error;
use crate::rollout::{RolloutPolicy, UpdaterCall, UpdaterFleet};

/// Many workers' updaters driven as one. Opaque. Thread-safe.
///
/// A host record without `updater_cert_fingerprint` is kept and reported
/// (`no-updater-pin` in a rollout, a pin-mismatch error in a sweep) but
/// never contacted.
pub struct decnet_updater_fleet {
    inner: UpdaterFleet,
}

/// Makes an updater fleet from a JSON array of host records: each host's
/// updater at its `address` and `updater_port` (absent: 8766), pinned to
/// its `updater_cert_fingerprint`. A uuid or name used twice, or a bad
/// record, is `DECNET_ERR_INVALID_ARGUMENT` naming its position. No
/// traffic happens yet.
///
/// Ownership: `*out` is owned by the caller; free it with
/// `decnet_updater_fleet_free`. `identity` stays the caller's and may be
/// freed right after this call. Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_fleet_new_from_json(
    identity: *const decnet_identity,
    hosts_json: *const c_char,
    hostname_verification: u32,
    out: *mut *mut decnet_updater_fleet,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let identity = unsafe { handle(identity, "identity") }?;
        let hosts = unsafe { required_json(hosts_json, "hosts_json") }?;
        let fleet = UpdaterFleet::from_json(
            &identity.inner,
            &hosts,
            hostname_choice(hostname_verification)?,
        )
        .map_err(|e| Failure::from(e).argument_named("hosts", "hosts_json"))?;
        *slot = Box::into_raw(Box::new(decnet_updater_fleet { inner: fleet }));
        Ok(())
    })
}

/// Frees an updater fleet and closes its connections. NULL is a no-op.
/// Call once, after every call using it has returned.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_fleet_free(fleet: *mut decnet_updater_fleet) {
    if fleet.is_null() {
        return;
    }
    super::guard::release(|| {
        // SAFETY: a pointer made by `decnet_updater_fleet_new_from_json`,
        // freed once, with no call on it in progress.
        drop(unsafe { Box::from_raw(fleet) });
    });
}

/// Writes the number of hosts to `*out`.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_fleet_size(
    fleet: *const decnet_updater_fleet,
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

/// Sets the fleet's default concurrency (1 to 4096; default 64).
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_PANIC`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_fleet_set_concurrency(
    fleet: *const decnet_updater_fleet,
    concurrency: usize,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let fleet = unsafe { handle(fleet, "fleet") }?;
        fleet.inner.set_concurrency(concurrency)?;
        Ok(())
    })
}

/// Sets the fleet's default deadline in milliseconds, for sweeps and
/// rollouts alike; 0 clears it.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_fleet_set_deadline_ms(
    fleet: *const decnet_updater_fleet,
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

/// Runs one updater RPC over every host and writes every host's result to
/// `*out_results_json`: a JSON array in fleet order of objects as
/// `decnet_fleet_call` gives (`index`, `uuid`, `name`, `address`,
/// `elapsed_ms`, `outcome`, `result` or `error`).
///
/// `rpc` is `health`, `releases`, `update`, `update-self` or `rollback`.
/// `tarball_path` and `sha` (the git SHA, may be empty) are required for
/// `update` and `update-self` and must be NULL otherwise; the file is
/// hashed once and streamed from disk to each host. An update-self whose
/// connection the updater closed after the request (it re-executes) is
/// `"outcome": "ok"` with result `{"status": "self_update_queued",
/// "connection_closed": true}`. A host without an updater pin is an error
/// of kind `pin_mismatch` with empty fingerprints, never contacted.
/// `options` and `callback` as in `decnet_fleet_call`.
///
/// Ownership: `*out_results_json` is the caller's; free it with
/// `decnet_string_free`. Thread-safe; blocks until the sweep ends.
///
/// Results: `DECNET_OK` when the sweep ran, whatever each host's outcome;
/// `DECNET_ERR_NULL_ARGUMENT`; `DECNET_ERR_INVALID_ARGUMENT` (unknown RPC,
/// a tarball where none belongs, bad options; nothing was sent);
/// `DECNET_ERR_IO` (the tarball cannot be read); `DECNET_ERR_INTERNAL`;
/// `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_fleet_call(
    fleet: *const decnet_updater_fleet,
    rpc: *const c_char,
    tarball_path: *const c_char,
    sha: *const c_char,
    options: *const decnet_sweep_options,
    callback: decnet_fleet_callback,
    user_data: *mut c_void,
    out_results_json: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out_results_json, "out_results_json") }?;
        let fleet = unsafe { handle(fleet, "fleet") }?;
        let rpc = unsafe { required_str(rpc, "rpc") }?;
        let path = unsafe { optional_str(tarball_path, "tarball_path") }?;
        let sha = unsafe { optional_str(sha, "sha") }?;
        let upload = |make: fn(PathBuf, String) -> UpdaterCall| match (path, sha) {
            (Some(path), Some(sha)) => Ok(make(PathBuf::from(path), sha.to_string())),
            (None, _) => Err(Failure::Null("tarball_path")),
            (_, None) => Err(Failure::Null("sha")),
        };
        let call = match rpc {
            "update" => upload(|tarball, sha| UpdaterCall::Update { tarball, sha })?,
            "update-self" | "update_self" => {
                upload(|tarball, sha| UpdaterCall::UpdateSelf { tarball, sha })?
            }
            other => {
                if path.is_some() || sha.is_some() {
                    return Err(Error::invalid(
                        "tarball_path",
                        "only update and update-self take a tarball and a sha",
                    )
                    .into());
                }
                match other {
                    "health" => UpdaterCall::Health,
                    "releases" => UpdaterCall::Releases,
                    "rollback" => UpdaterCall::Rollback,
                    _ => {
                        return Err(Error::invalid(
                            "rpc",
                            format!(
                                "unknown updater RPC {other:?}; expected health, releases, \
                                 update, update-self or rollback"
                            ),
                        )
                        .into())
                    }
                }
            }
        };
        let options = unsafe { sweep_options(options) };
        let results = fleet.inner.sweep(&call, options, |result| {
            // SAFETY: the caller's callback and user data, on its thread.
            unsafe { call_back(callback, user_data, &result.to_json()) }
        })?;
        let array = Value::Array(results.iter().map(|r| r.to_json()).collect());
        write_string(slot, array.to_string());
        Ok(())
    })
}

/// The policy in `policy_json` (NULL: the defaults).
///
/// # Safety
/// As `required_str`.
unsafe fn policy(policy_json: *const c_char) -> Result<RolloutPolicy, Failure> {
    if policy_json.is_null() {
        return Ok(RolloutPolicy::default());
    }
    // SAFETY: forwarded contract.
    let value = unsafe { required_json(policy_json, "policy_json") }?;
    Ok(RolloutPolicy::from_json(&value)?)
}

/// Pushes the release tarball at `tarball_path` (git SHA `sha`, may be
/// empty unless the policy verifies) to every host under the rollout
/// policy `policy_json` (NULL: the defaults), a JSON object such as
/// `{"canary": 1, "batch": "10%", "max_failures": 5, "pause_between": 0,
/// "self_update": true, "verify": 120}` (seconds; unknown members are
/// refused). The canary hosts go first and any failure among them stops
/// the rollout; then batches; once failures reach `max_failures` no new
/// host starts, hosts in flight finish, the rest are `not-attempted`.
/// Each host's agent is updated first and, with `self_update`, its
/// updater only after that succeeded; `verify` then waits for the new
/// release. `sha256` (NULL: not checked) must be the file's SHA-256 (hex,
/// any case): the file is hashed once, before any traffic, and a mismatch
/// is `DECNET_ERR_INVALID_ARGUMENT` then. The file is streamed from disk
/// to each host, never held in memory. `options` as in
/// `decnet_fleet_call`; the deadline bounds the whole rollout.
///
/// `callback` (may be NULL) gets each host's object as it ends (hosts
/// without an updater pin first); non-zero starts no new host.
/// `*out_results_json` is `{"hosts": [...], "summary": {...}}`: one object
/// per host in fleet order (`index`, `uuid`, `name`, `address`, `wave`
/// (`"canary"`, a batch number from 1, or null), `status` (`updated`,
/// `rolled-back`, `failed`, `self-updated`, `self-failed`, `queued`,
/// `not-attempted`, `no-updater-pin`, `pin-mismatch`), `http_status`,
/// `error`, `stderr`, `rolled_back`, `update_ms`, `self_update_ms`,
/// `verify_ms`), and the summary: `stop` (`completed`, `canary-failed`,
/// `failure-budget`, `stopped`) and a count per status.
///
/// Ownership: `*out_results_json` is the caller's; free it with
/// `decnet_string_free`. Thread-safe; blocks until the rollout ends.
///
/// Results: `DECNET_OK` when the rollout ran, however it ended (read
/// `summary.stop`); `DECNET_ERR_NULL_ARGUMENT`;
/// `DECNET_ERR_INVALID_ARGUMENT` (malformed or unknown policy member,
/// digest mismatch, bad options; nothing was sent); `DECNET_ERR_IO` (the
/// tarball cannot be read); `DECNET_ERR_INTERNAL`; `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_fleet_push(
    fleet: *const decnet_updater_fleet,
    tarball_path: *const c_char,
    sha: *const c_char,
    sha256: *const c_char,
    policy_json: *const c_char,
    options: *const decnet_sweep_options,
    callback: decnet_fleet_callback,
    user_data: *mut c_void,
    out_results_json: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out_results_json, "out_results_json") }?;
        let fleet = unsafe { handle(fleet, "fleet") }?;
        let path = unsafe { required_str(tarball_path, "tarball_path") }?;
        let sha = unsafe { required_str(sha, "sha") }?;
        let sha256 = unsafe { optional_str(sha256, "sha256") }?;
        let policy = unsafe { policy(policy_json) }?;
        let options = unsafe { sweep_options(options) };
        let rollout =
            fleet
                .inner
                .push(Path::new(path), sha, sha256, &policy, options, |result| {
                    // SAFETY: the caller's callback and user data, on its thread.
                    unsafe { call_back(callback, user_data, &result.to_json()) }
                })?;
        write_string(slot, rollout.to_json().to_string());
        Ok(())
    })
}

/// Rolls every host back to its previous release under the rollout policy
/// `policy_json` (NULL: the defaults; `self_update` and `verify` do not
/// apply and are refused), with the canary, batches and failure budget of
/// `decnet_updater_fleet_push`. A host that rolled back is `rolled-back`;
/// one with no previous release (404) or any other failure is `failed`.
/// Arguments, results JSON, ownership and results as in
/// `decnet_updater_fleet_push`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_fleet_rollback(
    fleet: *const decnet_updater_fleet,
    policy_json: *const c_char,
    options: *const decnet_sweep_options,
    callback: decnet_fleet_callback,
    user_data: *mut c_void,
    out_results_json: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out_results_json, "out_results_json") }?;
        let fleet = unsafe { handle(fleet, "fleet") }?;
        let policy = unsafe { policy(policy_json) }?;
        let options = unsafe { sweep_options(options) };
        let rollout = fleet.inner.rollback(&policy, options, |result| {
            // SAFETY: the caller's callback and user data, on its thread.
            unsafe { call_back(callback, user_data, &result.to_json()) }
        })?;
        write_string(slot, rollout.to_json().to_string());
        Ok(())
    })
}
