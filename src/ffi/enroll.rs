//! `decnet_enroll`: issue a worker's identities and get its host record.

use std::ffi::c_char;
use std::path::PathBuf;

use super::guard::{guard, optional_str, out_ptr, required_str, str_array, write_string};
use super::result::decnet_result;
use crate::enroll::{enroll, EnrollRequest};
use crate::identity::default_ca_dir;

/// Enrolls worker `name` at `address` with the CA in `ca_dir` (NULL:
/// `$HOME/.decnet/ca`; the CA must exist): writes
/// `<ca_dir>/workers/<name>/{ca.crt,worker.crt,worker.key}` and, with
/// `with_updater`, `<ca_dir>/workers/<name>/updater/{updater.crt,updater.key}`
/// (folders 0700, keys 0600), and writes the host record JSON (`uuid`,
/// `name`, `address`, `agent_port`, `client_cert_fingerprint`,
/// `updater_cert_fingerprint`) to `*out_json`, owned by the caller (free
/// with `decnet_string_free`). `sans` holds `sans_count` extra SANs (NULL
/// when the count is 0); `agent_port` 0 means 8765. A name already
/// enrolled is refused unless `reissue` is true. Thread-safe (enrollments
/// in one CA directory are serialised by a file lock).
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT` (bad name, address or SAN; name already
/// enrolled), `DECNET_ERR_IO`, `DECNET_ERR_PKI`, `DECNET_ERR_NOT_ENROLLED`
/// (no CA in `ca_dir`), `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_enroll(
    ca_dir: *const c_char,
    name: *const c_char,
    address: *const c_char,
    sans: *const *const c_char,
    sans_count: usize,
    agent_port: u16,
    with_updater: bool,
    reissue: bool,
    out_json: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out_json, "out_json") }?;
        let ca_dir = match unsafe { optional_str(ca_dir, "ca_dir") }? {
            Some(dir) => PathBuf::from(dir),
            None => default_ca_dir()?,
        };
        let request = EnrollRequest {
            name: unsafe { required_str(name, "name") }?.to_string(),
            address: unsafe { required_str(address, "address") }?.to_string(),
            sans: unsafe { str_array(sans, sans_count, "sans") }?
                .into_iter()
                .map(str::to_string)
                .collect(),
            agent_port,
            with_updater,
            reissue,
        };
        let enrolled = enroll(&ca_dir, &request)?;
        write_string(slot, enrolled.record.to_string());
        Ok(())
    })
}
