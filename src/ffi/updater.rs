//! `decnet_updater`: one worker's updater, its two timeout profiles and its
//! five calls. Fails closed: no unpinned mode.

use std::ffi::c_char;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::client::{decnet_timeouts, hostname_choice};
use super::guard::{self, guard, handle, out_ptr, required_str, write_string, Failure};
use super::identity::decnet_identity;
use super::result::decnet_result;
use crate::error::Error;
use crate::updater::{SelfUpdate, Tarball, UpdaterClient, UpdaterProfile};

/// A client for one worker's updater. Opaque.
///
/// Thread-safe: any number of threads may call any function on one handle
/// at once. Every connection is verified (chain to the CA, hostname when
/// enabled, and always the pin) inside its own TLS handshake.
pub struct decnet_updater {
    inner: UpdaterClient,
}

/// Timeout profiles of the updater, for the `profile` argument.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum decnet_updater_profile {
    /// health, releases, rollback (5 / 30 / 10 s).
    DECNET_UPDATER_PROFILE_CONTROL = 0,
    /// update, update-self (10 / 180 / 120 s).
    DECNET_UPDATER_PROFILE_UPDATE = 1,
}

fn profile_of(value: u32) -> Result<UpdaterProfile, Failure> {
    UpdaterProfile::from_code(value)
        .ok_or_else(|| Error::invalid("profile", "must be 0 (control) or 1 (update)").into())
}

fn store(slot: &mut *mut decnet_updater, inner: UpdaterClient) {
    *slot = Box::into_raw(Box::new(decnet_updater { inner }));
}

/// Makes an updater client from a host-record JSON object: `address`,
/// `name`, and `updater_cert_fingerprint` as the pin; `port` 0 means 8766.
/// A record whose `updater_cert_fingerprint` is missing or null is refused
/// with `DECNET_ERR_PIN_MISMATCH` before any connection (the message says
/// no updater pin is recorded; both last-error fingerprints are empty).
/// No traffic happens yet.
///
/// Ownership: `*out` is owned by the caller; free it with
/// `decnet_updater_free`. `identity` stays the caller's. Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_PIN_MISMATCH`,
/// `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_new_from_host_json(
    identity: *const decnet_identity,
    host_json: *const c_char,
    port: u16,
    hostname_verification: u32,
    out: *mut *mut decnet_updater,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let identity = unsafe { handle(identity, "identity") }?;
        let text = unsafe { required_str(host_json, "host_json") }?;
        let client = UpdaterClient::from_host_json(
            &identity.inner,
            text,
            port,
            hostname_choice(hostname_verification)?,
        )
        .map_err(|e| Failure::from(e).argument_named("host_record", "host_json"))?;
        store(slot, client);
        Ok(())
    })
}

/// Makes an updater client from an address, a port (0 means 8766) and the
/// updater's pin (required: hex SHA-256, any case, `:` allowed). Otherwise
/// as `decnet_updater_new_from_host_json`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_new(
    identity: *const decnet_identity,
    address: *const c_char,
    port: u16,
    pin: *const c_char,
    hostname_verification: u32,
    out: *mut *mut decnet_updater,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let identity = unsafe { handle(identity, "identity") }?;
        let address = unsafe { required_str(address, "address") }?;
        let pin = unsafe { required_str(pin, "pin") }?;
        let client = UpdaterClient::new(
            &identity.inner,
            address,
            port,
            pin,
            hostname_choice(hostname_verification)?,
        )?;
        store(slot, client);
        Ok(())
    })
}

/// Frees an updater client and closes its connections. NULL is a no-op.
/// Call it once, after every thread has finished using the handle.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_free(updater: *mut decnet_updater) {
    if updater.is_null() {
        return;
    }
    guard::release(|| {
        // SAFETY: a handle made by `decnet_updater_new*`, freed once per the contract.
        drop(unsafe { Box::from_raw(updater) });
    });
}

/// Reads the timeouts of `profile` (a `decnet_updater_profile` value).
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (unknown profile), `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_get_timeouts(
    updater: *const decnet_updater,
    profile: u32,
    out: *mut decnet_timeouts,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let out = unsafe { out.as_mut() }.ok_or(Failure::Null("out"))?;
        *out = decnet_timeouts::ZERO;
        let updater = unsafe { handle(updater, "updater") }?;
        *out = updater.inner.timeouts(profile_of(profile)?).into();
        Ok(())
    })
}

/// Replaces the timeouts of `profile` for later calls; `connect_ms`,
/// `read_ms` and `write_ms` must be greater than zero.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_PANIC`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_set_timeouts(
    updater: *const decnet_updater,
    profile: u32,
    timeouts: *const decnet_timeouts,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let updater = unsafe { handle(updater, "updater") }?;
        let t = unsafe { handle(timeouts, "timeouts") }?;
        updater.inner.set_timeouts(profile_of(profile)?, t.into())?;
        Ok(())
    })
}

/// Runs one call: checks `updater` and `out_json`, calls `call`, and hands
/// the JSON answer to the caller.
unsafe fn call(
    updater: *const decnet_updater,
    out_json: *mut *mut c_char,
    call: impl FnOnce(&UpdaterClient) -> Result<Value, Failure>,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out_json, "out_json") }?;
        let updater = unsafe { handle(updater, "updater") }?;
        write_string(slot, call(&updater.inner)?.to_string());
        Ok(())
    })
}

/// The tarball: a file path, or `len` bytes at `data` (NULL only when
/// `len` is 0).
///
/// # Safety
/// `path` as in `required_str`; `data` readable for `len` bytes.
unsafe fn tarball<'a>(
    path: *const c_char,
    data: *const u8,
    len: usize,
) -> Result<Tarball<'a>, Failure> {
    if !path.is_null() {
        // SAFETY: forwarded contract.
        let path = unsafe { required_str(path, "tarball_path") }?;
        return Ok(Tarball::File(Path::new(path)));
    }
    if len == 0 {
        return Ok(Tarball::Bytes(&[]));
    }
    if data.is_null() {
        return Err(Failure::Null("tarball_data"));
    }
    // SAFETY: `data` is readable for `len` bytes per the contract.
    Ok(Tarball::Bytes(unsafe {
        std::slice::from_raw_parts(data, len)
    }))
}

/// `GET /health`. On success `*out_json` holds the updater's JSON object,
/// owned by the caller (free with `decnet_string_free`).
///
/// Every call below follows the same rules. Thread-safe. Results:
/// `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_INVALID_ARGUMENT`,
/// `DECNET_ERR_IO` (tarball file), `DECNET_ERR_CONNECT`, `DECNET_ERR_TLS`,
/// `DECNET_ERR_PIN_MISMATCH`, `DECNET_ERR_TIMEOUT`,
/// `DECNET_ERR_HTTP_STATUS` (status, body and, for a `detail` object,
/// `decnet_last_error_update_*` in the last-error detail),
/// `DECNET_ERR_PROTOCOL`, `DECNET_ERR_CONNECTION_LOST`, `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_health(
    updater: *const decnet_updater,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe { call(updater, out_json, |u| Ok(u.health()?)) }
}

/// `GET /releases`. See `decnet_updater_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_releases(
    updater: *const decnet_updater,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe { call(updater, out_json, |u| Ok(u.releases()?)) }
}

/// `POST /rollback` to the previous release (404 when none). See
/// `decnet_updater_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_rollback(
    updater: *const decnet_updater,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe { call(updater, out_json, |u| Ok(u.rollback()?)) }
}

/// `POST /update` of a tarball: the file at `tarball_path` (streamed from
/// disk) when it is not NULL, else the `tarball_len` bytes at
/// `tarball_data`; `sha` (may be empty, not NULL) is sent for provenance and
/// the SHA-256 is computed here. A 409 (rolled back) or 500 is
/// `DECNET_ERR_HTTP_STATUS` with `decnet_last_error_update_error`,
/// `_update_stderr` and `_rolled_back` set. See `decnet_updater_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_update(
    updater: *const decnet_updater,
    tarball_path: *const c_char,
    tarball_data: *const u8,
    tarball_len: usize,
    sha: *const c_char,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe {
        call(updater, out_json, |u| {
            let tarball = tarball(tarball_path, tarball_data, tarball_len)?;
            Ok(u.update(tarball, required_str(sha, "sha")?)?)
        })
    }
}

/// `POST /update-self` (with `confirm_self=true`), the tarball as in
/// `decnet_updater_update`. Two successes: the updater answered, and
/// `*out_json` holds its body with `*out_connection_closed` false; or the
/// whole request was sent and the updater closed the connection before or
/// while answering (it re-executes itself), and `*out_json` is NULL with
/// `*out_connection_closed` true: confirm with
/// `decnet_updater_wait_for_release`. A connection lost during the upload
/// is `DECNET_ERR_CONNECTION_LOST`. See `decnet_updater_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_update_self(
    updater: *const decnet_updater,
    tarball_path: *const c_char,
    tarball_data: *const u8,
    tarball_len: usize,
    sha: *const c_char,
    out_connection_closed: *mut bool,
    out_json: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let closed = unsafe { out_connection_closed.as_mut() }
            .ok_or(Failure::Null("out_connection_closed"))?;
        *closed = false;
        let slot = unsafe { out_ptr(out_json, "out_json") }?;
        let updater = unsafe { handle(updater, "updater") }?;
        let tarball = unsafe { tarball(tarball_path, tarball_data, tarball_len) }?;
        let sha = unsafe { required_str(sha, "sha") }?;
        match updater.inner.update_self(tarball, sha)? {
            SelfUpdate::Answered(body) => write_string(slot, body.to_string()),
            SelfUpdate::QueuedConnectionClosed => *closed = true,
        }
        Ok(())
    })
}

/// Polls `GET /health` every `interval_ms` until the active release has git
/// SHA `sha`, for at most `deadline_ms` (every poll is capped by the time
/// left); `*out_json` then holds that health body. Past the deadline:
/// `DECNET_ERR_TIMEOUT` (phase `DECNET_TIMEOUT_PHASE_DEADLINE`). Only an
/// older release and transient failures keep polling (a refused or lost
/// connection, as while the updater re-executes itself, or a poll's own
/// timeout); a pin mismatch, TLS failure or HTTP error returns at once.
/// See `decnet_updater_health`.
#[no_mangle]
pub unsafe extern "C" fn decnet_updater_wait_for_release(
    updater: *const decnet_updater,
    sha: *const c_char,
    deadline_ms: u64,
    interval_ms: u64,
    out_json: *mut *mut c_char,
) -> decnet_result {
    // SAFETY: forwarded contract.
    unsafe {
        call(updater, out_json, |u| {
            Ok(u.wait_for_release(
                required_str(sha, "sha")?,
                Duration::from_millis(deadline_ms),
                Duration::from_millis(interval_ms),
            )?)
        })
    }
}
