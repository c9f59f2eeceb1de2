//! `decnet_identity`: the master's TLS identity.

use std::ffi::c_char;
use std::path::Path;

use super::guard::{self, guard, handle, optional_str, out_ptr, required_str, write_string};
use super::result::decnet_result;
use crate::identity::Identity;

/// The master's identity (client certificate, key and trusted CA). Opaque.
///
/// Thread-safe: one handle may be used by any number of threads. Clients
/// made from it keep their own reference to its material, so it may be
/// freed while they are still in use.
pub struct decnet_identity {
    pub(crate) inner: Identity,
}

fn hand_out(slot: &mut *mut decnet_identity, inner: Identity) {
    *slot = Box::into_raw(Box::new(decnet_identity { inner }));
}

/// Ensures the CA and the master bundle under `ca_dir` (NULL: the default,
/// `$HOME/.decnet/ca`), creating what is missing in the reference layout,
/// and loads the master identity into `*out`.
///
/// Never regenerates an existing CA: when only one of `ca.key` and `ca.crt`
/// exists it fails with `DECNET_ERR_PKI` and touches nothing. Safe against
/// concurrent processes (a lock file in `ca_dir`).
///
/// Ownership: `*out` is owned by the caller; free it with
/// `decnet_identity_free`. Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT` (`out`),
/// `DECNET_ERR_INVALID_ARGUMENT` (non-UTF-8 `ca_dir`, HOME unset),
/// `DECNET_ERR_IO`, `DECNET_ERR_PKI`, `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_identity_ensure(
    ca_dir: *const c_char,
    out: *mut *mut decnet_identity,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let dir = unsafe { optional_str(ca_dir, "ca_dir") }?;
        hand_out(slot, Identity::ensure(dir.map(Path::new))?);
        Ok(())
    })
}

/// Loads an identity from three PEM files: the CA certificate (the only
/// trust anchor), the client certificate and its private key.
///
/// Ownership: `*out` is owned by the caller; free it with
/// `decnet_identity_free`. Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (non-UTF-8 path), `DECNET_ERR_IO`,
/// `DECNET_ERR_PKI` (unreadable PEM, naming the file), `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_identity_load(
    ca_cert_path: *const c_char,
    cert_path: *const c_char,
    key_path: *const c_char,
    out: *mut *mut decnet_identity,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let ca = unsafe { required_str(ca_cert_path, "ca_cert_path") }?;
        let cert = unsafe { required_str(cert_path, "cert_path") }?;
        let key = unsafe { required_str(key_path, "key_path") }?;
        hand_out(
            slot,
            Identity::load(Path::new(ca), Path::new(cert), Path::new(key))?,
        );
        Ok(())
    })
}

/// Loads the identity of a bundle directory holding `ca.crt`, `worker.crt`
/// and `worker.key` — the master's (`<ca_dir>/master`) or any enrolled
/// bundle — without creating anything.
///
/// Ownership: `*out` is owned by the caller; free it with
/// `decnet_identity_free`. Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (non-UTF-8 path), `DECNET_ERR_NOT_ENROLLED`
/// (a file is missing; the message names it), `DECNET_ERR_IO`,
/// `DECNET_ERR_PKI` (unreadable PEM or a key that does not belong to the
/// certificate), `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_identity_load_dir(
    dir: *const c_char,
    out: *mut *mut decnet_identity,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let dir = unsafe { required_str(dir, "dir") }?;
        hand_out(slot, Identity::load_dir(Path::new(dir))?);
        Ok(())
    })
}

/// Writes the fingerprint of the identity's certificate (64 lowercase hex
/// characters) to `*out`.
///
/// Ownership: `*out` is owned by the caller; free it with
/// `decnet_string_free`. Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_identity_fingerprint(
    identity: *const decnet_identity,
    out: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let identity = unsafe { handle(identity, "identity") }?;
        write_string(slot, identity.inner.fingerprint().to_string());
        Ok(())
    })
}

/// Frees an identity. NULL is a no-op. Clients made from it keep working.
///
/// Call it once per identity, after no other thread uses the handle.
#[no_mangle]
pub unsafe extern "C" fn decnet_identity_free(identity: *mut decnet_identity) {
    if identity.is_null() {
        return;
    }
    guard::release(|| {
        // SAFETY: a handle made by `hand_out`, freed once per the contract.
        drop(unsafe { Box::from_raw(identity) });
    });
}
