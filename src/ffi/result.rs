//! The one result enum of the C ABI.

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use crate::error::ErrorKind;
use decnet_result::DECNET_ERR_PANIC;

/// The result of every fallible function. Codes 1–12 are the kinds of the
/// Rust error taxonomy (`decnet_agent_client::ErrorKind`) with the same
/// numbers; 13 and 14 exist only at the C boundary.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum decnet_result {
    /// Success.
    DECNET_OK = 0,
    /// An argument was rejected: not UTF-8, malformed JSON, out of range, or
    /// a host record with a bad field. The message names the argument.
    DECNET_ERR_INVALID_ARGUMENT = 1,
    /// A file-system operation failed; the message names the path.
    DECNET_ERR_IO = 2,
    /// Certificate or key material is unreadable, corrupt or inconsistent;
    /// the message names the file.
    DECNET_ERR_PKI = 3,
    /// A bundle directory lacks one of its three files.
    DECNET_ERR_NOT_ENROLLED = 4,
    /// The TCP connection could not be opened (refused, unreachable, DNS).
    DECNET_ERR_CONNECT = 5,
    /// The TLS handshake failed: untrusted or expired worker certificate,
    /// hostname mismatch, or the worker rejected our client certificate.
    DECNET_ERR_TLS = 6,
    /// The worker's certificate does not match the pinned fingerprint. A
    /// security event: do not retry. See `decnet_last_error_expected_fingerprint`.
    DECNET_ERR_PIN_MISMATCH = 7,
    /// A timeout of the call's profile expired.
    DECNET_ERR_TIMEOUT = 8,
    /// The worker answered with a non-2xx status; see
    /// `decnet_last_error_http_status` and `decnet_last_error_http_body`.
    DECNET_ERR_HTTP_STATUS = 9,
    /// The worker's answer broke the protocol (not a JSON object, too large).
    DECNET_ERR_PROTOCOL = 10,
    /// The connection died mid-exchange; see
    /// `decnet_last_error_may_have_reached_worker`.
    DECNET_ERR_CONNECTION_LOST = 11,
    /// A bug inside the library.
    DECNET_ERR_INTERNAL = 12,
    /// A required pointer argument was NULL; the message names it.
    DECNET_ERR_NULL_ARGUMENT = 13,
    /// The library panicked; the call was abandoned.
    DECNET_ERR_PANIC = 14,
}

impl From<ErrorKind> for decnet_result {
    fn from(kind: ErrorKind) -> Self {
        use decnet_result::*;
        match kind {
            ErrorKind::InvalidArgument => DECNET_ERR_INVALID_ARGUMENT,
            ErrorKind::Io => DECNET_ERR_IO,
            ErrorKind::Pki => DECNET_ERR_PKI,
            ErrorKind::NotEnrolled => DECNET_ERR_NOT_ENROLLED,
            ErrorKind::Connect => DECNET_ERR_CONNECT,
            ErrorKind::Tls => DECNET_ERR_TLS,
            ErrorKind::PinMismatch => DECNET_ERR_PIN_MISMATCH,
            ErrorKind::Timeout => DECNET_ERR_TIMEOUT,
            ErrorKind::HttpStatus => DECNET_ERR_HTTP_STATUS,
            ErrorKind::Protocol => DECNET_ERR_PROTOCOL,
            ErrorKind::ConnectionLost => DECNET_ERR_CONNECTION_LOST,
            ErrorKind::Internal => DECNET_ERR_INTERNAL,
        }
    }
}

/// A short, stable name for a result code (`"ok"`, `"pin_mismatch"`,
/// `"null_argument"`, …); `"unknown"` for a value outside the enum.
///
/// Takes the code as an integer so any value is safe to pass. Returns a
/// static string: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn decnet_result_name(result: u32) -> *const c_char {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..=DECNET_ERR_PANIC as u32 + 1)
            .map(|code| {
                let name = match code {
                    0 => "ok",
                    13 => "null_argument",
                    14 => "panic",
                    _ => ErrorKind::from_code(code).map_or("unknown", ErrorKind::name),
                };
                CString::new(name).unwrap_or_default()
            })
            .collect()
    });
    let index = (result as usize).min(names.len() - 1);
    names[index].as_ptr()
}
