//! Per-thread detail of the last failed call.
//!
//! Every pointer returned here points into this thread's record and stays
//! valid until the next failing `decnet_*` call on the same thread replaces
//! the record. Successful calls leave it alone. Never free these pointers.
//! (Each function's own comment says so too: cbindgen copies those, not
//! this one, into the header.)
//!
//! The record lives in thread-local storage. A call made while the thread
//! is exiting (from another thread-local's destructor, after the record is
//! gone) records nothing and reads an empty record; it never aborts.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::ptr;

use super::guard::to_c_string;
use super::result::decnet_result;
use crate::error::{Error, TimeoutPhase};
use crate::updater::UpdateFailure;

/// Which phase of a call ran out of time, for
/// `decnet_last_error_timeout_phase`; the same phases as the Rust
/// `TimeoutPhase`, numbered from 1.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum decnet_timeout_phase {
    /// The last failure was not `DECNET_ERR_TIMEOUT` (or none failed yet).
    #[default]
    DECNET_TIMEOUT_PHASE_NONE = 0,
    /// Resolving the name and opening the TCP connection.
    DECNET_TIMEOUT_PHASE_CONNECT = 1,
    /// The TLS handshake.
    DECNET_TIMEOUT_PHASE_HANDSHAKE = 2,
    /// Sending the request.
    DECNET_TIMEOUT_PHASE_WRITE = 3,
    /// Waiting for and reading the answer.
    DECNET_TIMEOUT_PHASE_READ = 4,
    /// Waiting for a connection from the pool.
    DECNET_TIMEOUT_PHASE_POOL = 5,
    /// An overall deadline over many calls (a fleet sweep's, or the wait
    /// for a release) passed before this call finished.
    DECNET_TIMEOUT_PHASE_DEADLINE = 6,
}

impl From<TimeoutPhase> for decnet_timeout_phase {
    fn from(phase: TimeoutPhase) -> Self {
        use decnet_timeout_phase::*;
        match phase {
            TimeoutPhase::Connect => DECNET_TIMEOUT_PHASE_CONNECT,
            TimeoutPhase::Handshake => DECNET_TIMEOUT_PHASE_HANDSHAKE,
            TimeoutPhase::Write => DECNET_TIMEOUT_PHASE_WRITE,
            TimeoutPhase::Read => DECNET_TIMEOUT_PHASE_READ,
            TimeoutPhase::Pool => DECNET_TIMEOUT_PHASE_POOL,
            TimeoutPhase::Deadline => DECNET_TIMEOUT_PHASE_DEADLINE,
        }
    }
}

#[derive(Default)]
struct LastError {
    result: Option<decnet_result>,
    message: CString,
    http_status: u16,
    http_body: Option<CString>,
    expected_fingerprint: Option<CString>,
    actual_fingerprint: Option<CString>,
    may_have_reached_worker: bool,
    timeout_phase: decnet_timeout_phase,
    update_error: Option<CString>,
    update_stderr: Option<CString>,
    rolled_back: Option<bool>,
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = RefCell::new(LastError::default());
}

fn store(record: LastError) -> decnet_result {
    let result = record.result.unwrap_or(decnet_result::DECNET_ERR_INTERNAL);
    // During thread exit the record may be gone: the result code still
    // tells the caller what happened.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = record;
        }
    });
    result
}

/// Records a library error and returns its code.
pub(crate) fn record(error: &Error) -> decnet_result {
    let mut record = LastError {
        result: Some(error.kind().into()),
        message: to_c_string(error.to_string()),
        may_have_reached_worker: error.may_have_reached_worker(),
        ..LastError::default()
    };
    match error {
        Error::HttpStatus { status, body, .. } => {
            record.http_status = *status;
            record.http_body = Some(to_c_string(body.clone()));
            if let Some(failure) = UpdateFailure::from_error(error) {
                record.update_error = failure.error.map(to_c_string);
                record.update_stderr = failure.stderr.map(to_c_string);
                record.rolled_back = failure.rolled_back;
            }
        }
        Error::PinMismatch {
            expected, actual, ..
        } => {
            record.expected_fingerprint = Some(to_c_string(expected.clone()));
            record.actual_fingerprint = Some(to_c_string(actual.clone()));
        }
        Error::Timeout { phase, .. } => record.timeout_phase = (*phase).into(),
        _ => {}
    }
    store(record)
}

/// Records a NULL pointer argument.
pub(crate) fn record_null(argument: &str) -> decnet_result {
    store(LastError {
        result: Some(decnet_result::DECNET_ERR_NULL_ARGUMENT),
        message: to_c_string(format!("argument `{argument}` must not be NULL")),
        ..LastError::default()
    })
}

/// Records a caught panic.
pub(crate) fn record_panic(message: &str) -> decnet_result {
    store(LastError {
        result: Some(decnet_result::DECNET_ERR_PANIC),
        message: to_c_string(format!("internal panic: {message}")),
        ..LastError::default()
    })
}

/// Reads this thread's record; `fallback` when the thread is exiting and
/// the record is gone.
fn read<T>(fallback: T, f: impl FnOnce(&LastError) -> T) -> T {
    LAST_ERROR
        .try_with(|slot| slot.try_borrow().map(|e| f(&e)).ok())
        .ok()
        .flatten()
        .unwrap_or(fallback)
}

/// An empty C string with a static lifetime.
const EMPTY: &std::ffi::CStr = c"";

fn optional(value: &Option<CString>) -> *const c_char {
    value.as_ref().map_or(ptr::null(), |s| s.as_ptr())
}

/// The result code of the last failed call on this thread (`DECNET_OK` if
/// none failed yet).
#[no_mangle]
pub extern "C" fn decnet_last_error_result() -> decnet_result {
    read(decnet_result::DECNET_OK, |e| {
        e.result.unwrap_or(decnet_result::DECNET_OK)
    })
}

/// A one-line, human-readable description of the last failure on this
/// thread; an empty string if none failed yet. Never NULL.
///
/// Owned by the library: valid on this thread until the next failing
/// `decnet_*` call on it. Never free it; copy it to keep it.
#[no_mangle]
pub extern "C" fn decnet_last_error_message() -> *const c_char {
    read(EMPTY.as_ptr(), |e| e.message.as_ptr())
}

/// The HTTP status of the last failure when it was `DECNET_ERR_HTTP_STATUS`;
/// 0 otherwise.
#[no_mangle]
pub extern "C" fn decnet_last_error_http_status() -> u16 {
    read(0, |e| e.http_status)
}

/// The response body of the last failure when it was
/// `DECNET_ERR_HTTP_STATUS`; NULL otherwise.
///
/// Owned by the library: valid on this thread until the next failing
/// `decnet_*` call on it. Never free it; copy it to keep it.
#[no_mangle]
pub extern "C" fn decnet_last_error_http_body() -> *const c_char {
    read(ptr::null(), |e| optional(&e.http_body))
}

/// The pinned fingerprint (64 lowercase hex characters) when the last
/// failure was `DECNET_ERR_PIN_MISMATCH`; NULL otherwise.
///
/// Owned by the library: valid on this thread until the next failing
/// `decnet_*` call on it. Never free it; copy it to keep it.
#[no_mangle]
pub extern "C" fn decnet_last_error_expected_fingerprint() -> *const c_char {
    read(ptr::null(), |e| optional(&e.expected_fingerprint))
}

/// The fingerprint the worker presented when the last failure was
/// `DECNET_ERR_PIN_MISMATCH`; NULL otherwise.
///
/// Owned by the library: valid on this thread until the next failing
/// `decnet_*` call on it. Never free it; copy it to keep it.
#[no_mangle]
pub extern "C" fn decnet_last_error_actual_fingerprint() -> *const c_char {
    read(ptr::null(), |e| optional(&e.actual_fingerprint))
}

/// When the last failure was `DECNET_ERR_CONNECTION_LOST` or
/// `DECNET_ERR_TIMEOUT`: whether some byte of the request had left, so the
/// worker may have acted on it (a POST may have taken effect). False
/// otherwise, and false means no byte of the request left.
#[no_mangle]
pub extern "C" fn decnet_last_error_may_have_reached_worker() -> bool {
    read(false, |e| e.may_have_reached_worker)
}

/// The phase that ran out of time when the last failure was
/// `DECNET_ERR_TIMEOUT`; `DECNET_TIMEOUT_PHASE_NONE` otherwise.
#[no_mangle]
pub extern "C" fn decnet_last_error_timeout_phase() -> decnet_timeout_phase {
    read(decnet_timeout_phase::DECNET_TIMEOUT_PHASE_NONE, |e| {
        e.timeout_phase
    })
}

/// `detail.error` of the last failure when it was `DECNET_ERR_HTTP_STATUS`
/// with a JSON `detail` object (the updater's 409 and 500); NULL otherwise.
///
/// Owned by the library: valid on this thread until the next failing
/// `decnet_*` call on it. Never free it; copy it to keep it.
#[no_mangle]
pub extern "C" fn decnet_last_error_update_error() -> *const c_char {
    read(ptr::null(), |e| optional(&e.update_error))
}

/// `detail.stderr` of the last failure, as `decnet_last_error_update_error`.
///
/// Owned by the library: valid on this thread until the next failing
/// `decnet_*` call on it. Never free it; copy it to keep it.
#[no_mangle]
pub extern "C" fn decnet_last_error_update_stderr() -> *const c_char {
    read(ptr::null(), |e| optional(&e.update_stderr))
}

/// `detail.rolled_back` of the last failure, as
/// `decnet_last_error_update_error`: 1 (the updater rolled the release
/// back), 0 (it did not), -1 (no such field, or another kind of failure).
#[no_mangle]
pub extern "C" fn decnet_last_error_rolled_back() -> i32 {
    read(-1, |e| e.rolled_back.map_or(-1, i32::from))
}
