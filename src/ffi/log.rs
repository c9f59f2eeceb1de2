//! `decnet_set_log_callback`: the library's structured events, handed to
//! one process-wide C callback as JSON text.

use std::ffi::{c_char, c_void};

use super::guard::{guard, to_c_string};
use super::result::decnet_result;
use crate::error::Error;
use crate::events::{self, Level};

/// Levels for `min_level` and the callback's `level`; each includes those
/// above it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum decnet_log_level {
    /// No callback (for `min_level`: remove it).
    DECNET_LOG_OFF = 0,
    /// A call failed (`request.failed`, `connection.failed`).
    DECNET_LOG_ERROR = 1,
    /// Something was worked around (`request.retried`).
    DECNET_LOG_WARN = 2,
    /// One line per connection opened and per answer.
    DECNET_LOG_INFO = 3,
    /// Connection reuse and retirement, requests as they leave.
    DECNET_LOG_DEBUG = 4,
    /// Request and response bodies.
    DECNET_LOG_TRACE = 5,
}

/// Receives one event: `level` (a `decnet_log_level`: 1 error … 5 trace)
/// and `event_json`, one line of JSON such as
/// `{"level":"info","event":"request.answered","address":"10.0.0.5:8765",
/// "method":"GET","path":"/health","status":200,"bytes":15,"duration_ms":2.1}`,
/// plus the `user_data` given to `decnet_set_log_callback`.
///
/// Ownership: `event_json` is borrowed for the duration of the callback
/// only; copy it to keep it. Never free it.
pub type decnet_log_callback =
    Option<unsafe extern "C" fn(level: u32, event_json: *const c_char, user_data: *mut c_void)>;

/// The callback and its `user_data`, as C gave them.
struct CCallback {
    callback: unsafe extern "C" fn(u32, *const c_char, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: the caller of `decnet_set_log_callback` promises the callback may
// be called from any thread with this `user_data` (documented there).
unsafe impl Send for CCallback {}
// SAFETY: as above; the library never touches `user_data` itself.
unsafe impl Sync for CCallback {}

impl CCallback {
    fn deliver(&self, event: &events::Event) {
        let text = to_c_string(event.to_json());
        // SAFETY: the callback and user_data come from the caller, who
        // guarantees they are valid while installed; the text outlives the
        // call.
        unsafe { (self.callback)(event.level().code(), text.as_ptr(), self.user_data) };
    }
}

/// Installs `callback` as the process-wide receiver of the library's
/// events of level `min_level` and every more severe one (a
/// `decnet_log_level`: `DECNET_LOG_INFO` gives errors, warnings and info). It
/// replaces any previous callback. `min_level` 0 or a NULL `callback`
/// removes it: from then on no event is even formatted.
///
/// The events, their fields and levels are listed in the README
/// ("Observability"). None carries key material; request and response
/// bodies appear only at level 5.
///
/// Thread rules: the callback runs on the thread doing the work, inside
/// the library call that raised the event (so concurrent calls on several
/// threads call it concurrently), and delays that call while it runs
/// without spending its timeouts. It may call back into the library: the
/// call works, but events raised on that thread while the callback runs
/// are dropped (never delivered, so it cannot recurse). It may call
/// `decnet_set_log_callback` itself, without deadlock. `user_data` is
/// passed back untouched and must stay valid, and usable from any thread,
/// until the callback is replaced and every library call in progress on
/// other threads has returned (a call already delivering an event may
/// finish with the old callback). The callback must not unwind (no C++
/// exceptions or longjmp out of it).
///
/// Results: `DECNET_OK`, `DECNET_ERR_INVALID_ARGUMENT` (`min_level` above
/// 5; the previous callback stays), `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_set_log_callback(
    min_level: u32,
    callback: decnet_log_callback,
    user_data: *mut c_void,
) -> decnet_result {
    guard(|| {
        if min_level > Level::Trace.code() {
            return Err(
                Error::invalid("min_level", "must be 0 (off) or 1 (error) to 5 (trace)").into(),
            );
        }
        match (Level::from_code(min_level), callback) {
            (Some(level), Some(callback)) => {
                let receiver = CCallback {
                    callback,
                    user_data,
                };
                events::set_hook(level, move |event| receiver.deliver(event));
            }
            _ => events::clear_hook(),
        }
        Ok(())
    })
}

/// The level the installed callback receives (a `decnet_log_level`), or
/// `DECNET_LOG_OFF` (0) when none is installed. Never fails.
#[no_mangle]
pub extern "C" fn decnet_get_log_level() -> u32 {
    events::hook_level().map_or(0, Level::code)
}
