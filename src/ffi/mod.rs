//! The C ABI: opaque handles, one result enum, per-thread last-error detail
//! and caller-owned strings.
//!
//! This is the only module with `unsafe`. Every exported function catches
//! panics, checks every pointer, rejects non-UTF-8 text and malformed JSON
//! with a clear code and message, and then calls the Rust API; it holds no
//! logic of its own.
//!
//! Conventions, stated once for every function:
//! - Fallible functions return [`decnet_result`]; `DECNET_OK` is 0. On
//!   failure the detail is available from `decnet_last_error_*` on the same
//!   thread.
//! - Out-parameters are set to NULL (or zero) first, and written only on
//!   success.
//! - Strings passed in are NUL-terminated UTF-8 and borrowed for the call.
//! - Strings returned through `char **` are owned by the caller and freed
//!   with [`decnet_string_free`].

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

mod client;
mod completions;
mod enroll;
mod fleet;
mod guard;
mod identity;
mod last_error;
mod log;
mod pki;
mod result;
mod updater;
mod updater_fleet;

pub use client::*;
pub use completions::*;
pub use enroll::*;
pub use fleet::*;
pub use identity::*;
pub use last_error::*;
pub use log::*;
pub use pki::*;
pub use result::*;
pub use updater::*;
pub use updater_fleet::*;

use std::ffi::{c_char, CString};

/// The library's version, e.g. `"0.1.0"`.
///
/// Returns a static string: never free it.
#[no_mangle]
pub extern "C" fn decnet_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Frees a string returned by this library. NULL is a no-op.
///
/// Pass only pointers received through a `char **` out-parameter of this
/// library, once each.
#[no_mangle]
pub unsafe extern "C" fn decnet_string_free(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    guard::release(|| {
        // SAFETY: the caller passes a pointer made by `CString::into_raw`
        // in `guard::write_string`, exactly once.
        drop(unsafe { CString::from_raw(s) });
    });
}
