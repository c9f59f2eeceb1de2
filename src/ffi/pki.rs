//! PKI and topology helpers of the C ABI.

use std::ffi::c_char;
use std::path::{Path, PathBuf};

use super::guard::{guard, optional_str, out_ptr, required_str, str_array, write_string, Failure};
use super::result::decnet_result;
use crate::identity::default_ca_dir;
use crate::pki::{self, CertificateAuthority, LEAF_VALIDITY_DAYS};
use crate::topology;

fn ca_dir_or_default(dir: Option<&str>) -> crate::Result<PathBuf> {
    match dir {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => default_ca_dir(),
    }
}

/// Ensures the CA in `ca_dir` (NULL: `$HOME/.decnet/ca`) — loads it, or
/// creates it when neither `ca.key` nor `ca.crt` exists — and writes its
/// certificate's fingerprint to `*out_fingerprint`.
///
/// Ownership: `*out_fingerprint` is owned by the caller; free it with
/// `decnet_string_free`. Thread-safe and safe across processes.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_IO`, `DECNET_ERR_PKI` (half a
/// CA present: nothing is touched), `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_pki_ensure_ca(
    ca_dir: *const c_char,
    out_fingerprint: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out_fingerprint, "out_fingerprint") }?;
        let dir = ca_dir_or_default(unsafe { optional_str(ca_dir, "ca_dir") }?)?;
        write_string(slot, CertificateAuthority::ensure(&dir)?.fingerprint());
        Ok(())
    })
}

/// Issues a worker bundle signed by the CA in `ca_dir` (NULL: default) and
/// writes it to `out_dir` (`ca.crt`, `worker.crt`, `worker.key`; folder 0700,
/// key 0600, each file atomically). `sans` holds `sans_count` names or IP
/// addresses (NULL allowed when the count is 0); `name` is added as a DNS
/// name when not listed. `validity_days` 0 means the default, 825.
///
/// The CA must already exist (see `decnet_pki_ensure_ca`). Writes the new
/// certificate's fingerprint — the pin for the worker's host record — to
/// `*out_fingerprint`, owned by the caller (free with `decnet_string_free`).
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (bad name, SAN or validity),
/// `DECNET_ERR_NOT_ENROLLED` (no CA in `ca_dir`: the message says to run
/// identity-ensure), `DECNET_ERR_IO`, `DECNET_ERR_PKI`, `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_pki_issue_worker_bundle(
    ca_dir: *const c_char,
    name: *const c_char,
    sans: *const *const c_char,
    sans_count: usize,
    validity_days: u32,
    out_dir: *const c_char,
    out_fingerprint: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out_fingerprint, "out_fingerprint") }?;
        let dir = ca_dir_or_default(unsafe { optional_str(ca_dir, "ca_dir") }?)?;
        let name = unsafe { required_str(name, "name") }?;
        let sans = unsafe { str_array(sans, sans_count, "sans") }?;
        let out_dir = unsafe { required_str(out_dir, "out_dir") }?;
        let days = if validity_days == 0 {
            LEAF_VALIDITY_DAYS
        } else {
            validity_days
        };
        let bundle = CertificateAuthority::load(&dir)?.issue(name, &sans, days)?;
        bundle.write(Path::new(out_dir))?;
        write_string(slot, bundle.fingerprint);
        Ok(())
    })
}

/// Writes the fingerprint (lowercase hex SHA-256 of the DER) of the
/// certificate in the file at `path` (PEM or DER) to `*out`, owned by the
/// caller (free with `decnet_string_free`). Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_IO`, `DECNET_ERR_PKI`,
/// `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_fingerprint_file(
    path: *const c_char,
    out: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let path = unsafe { required_str(path, "path") }?;
        write_string(slot, pki::fingerprint_file(Path::new(path))?);
        Ok(())
    })
}

/// Computes the canonical topology hash of the JSON object `hydrated_json`,
/// exactly as the worker does, and writes the 64-character lowercase hex
/// digest to `*out`, owned by the caller (free with `decnet_string_free`).
/// Thread-safe.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (malformed JSON, not an object, nested too
/// deeply, or a number the worker could not read), `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_topology_hash(
    hydrated_json: *const c_char,
    out: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let text = unsafe { required_str(hydrated_json, "hydrated_json") }?;
        let hash = topology::canonical_hash_str(text)
            .map_err(|e| Failure::from(e).argument_named("hydrated", "hydrated_json"))?;
        write_string(slot, hash);
        Ok(())
    })
}
