//! The panic boundary and the pointer checks every exported function uses.

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::Value;

use super::last_error;
use super::result::decnet_result;
use crate::error::Error;

/// Why a call failed at the boundary or inside the library.
pub(crate) enum Failure {
    /// A required pointer was NULL; names the argument.
    Null(&'static str),
    /// The library reported an error.
    Library(Error),
}

impl Failure {
    /// Renames the argument of an invalid-argument error from the Rust
    /// name to the C parameter's name (`hydrated` → `hydrated_json`).
    pub(crate) fn argument_named(self, rust: &str, c: &'static str) -> Self {
        match self {
            Failure::Library(Error::InvalidArgument { argument, reason }) if argument == rust => {
                Failure::Library(Error::InvalidArgument {
                    argument: c.to_string(),
                    reason,
                })
            }
            other => other,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Library(e)
    }
}

/// Runs `body`, catching panics, and turns its outcome into a result code,
/// recording the detail of a failure for `decnet_last_error_*`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> decnet_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => decnet_result::DECNET_OK,
        Ok(Err(Failure::Null(argument))) => last_error::record_null(argument),
        Ok(Err(Failure::Library(error))) => last_error::record(&error),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            last_error::record_panic(&message)
        }
    }
}

/// Borrows a required C string as UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn required_str<'a>(
    ptr: *const c_char,
    argument: &'static str,
) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::Null(argument));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes
        .to_str()
        .map_err(|_| Failure::Library(Error::invalid(argument, "is not valid UTF-8")))
}

/// Borrows an optional C string (NULL means `None`) as UTF-8.
///
/// # Safety
/// As [`required_str`].
pub(crate) unsafe fn optional_str<'a>(
    ptr: *const c_char,
    argument: &'static str,
) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { required_str(ptr, argument) }.map(Some)
    }
}

/// Borrows an array of `count` C strings. `ptr` may be NULL only when
/// `count` is 0.
///
/// # Safety
/// `ptr` points to `count` pointers, each as in [`required_str`].
pub(crate) unsafe fn str_array<'a>(
    ptr: *const *const c_char,
    count: usize,
    argument: &'static str,
) -> Result<Vec<&'a str>, Failure> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(Failure::Null(argument));
    }
    // SAFETY: `ptr` points to `count` readable pointers per the contract.
    let items = unsafe { std::slice::from_raw_parts(ptr, count) };
    items
        .iter()
        // SAFETY: each element as in `required_str`.
        .map(|&item| unsafe { required_str(item, argument) })
        .collect()
}

/// Parses a required JSON argument.
///
/// # Safety
/// As [`required_str`].
pub(crate) unsafe fn required_json(
    ptr: *const c_char,
    argument: &'static str,
) -> Result<Value, Failure> {
    // SAFETY: forwarded contract.
    let text = unsafe { required_str(ptr, argument) }?;
    crate::json::from_str(text)
        .map_err(|e| Failure::Library(Error::invalid(argument, format!("malformed JSON: {e}"))))
}

/// Borrows a required handle.
///
/// # Safety
/// `ptr` is NULL or a live handle of type `T` made by this library.
pub(crate) unsafe fn handle<'a, T>(
    ptr: *const T,
    argument: &'static str,
) -> Result<&'a T, Failure> {
    // SAFETY: non-NULL pointers are live handles per the contract.
    unsafe { ptr.as_ref() }.ok_or(Failure::Null(argument))
}

/// Checks an out-parameter and clears it, so a failure leaves NULL behind.
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn out_ptr<'a, T>(
    out: *mut *mut T,
    argument: &'static str,
) -> Result<&'a mut *mut T, Failure> {
    // SAFETY: non-NULL out-parameters are writable per the contract.
    let slot = unsafe { out.as_mut() }.ok_or(Failure::Null(argument))?;
    *slot = std::ptr::null_mut();
    Ok(slot)
}

/// Hands `text` to the caller as a NUL-terminated string it must free with
/// `decnet_string_free`.
pub(crate) fn write_string(slot: &mut *mut c_char, text: String) {
    *slot = to_c_string(text).into_raw();
}

/// A C string from Rust text; an interior NUL (never produced by JSON
/// serialisation) is replaced rather than truncating the text.
pub(crate) fn to_c_string(text: String) -> CString {
    CString::new(text).unwrap_or_else(|e| {
        let cleaned: Vec<u8> = e
            .into_vec()
            .into_iter()
            .map(|b| if b == 0 { b'?' } else { b })
            .collect();
        CString::new(cleaned).unwrap_or_default()
    })
}

/// Runs a free function's body, swallowing any panic (a free function has
/// no way to report one, and must not unwind into C).
pub(crate) fn release(body: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(body));
}
