//! Structured events: what the library is doing, handed to one process-wide
//! hook as it happens.
//!
//! Nothing is built while nobody listens: the hook's level is kept in an
//! atomic, and every instrumented place asks [`enabled`] (one relaxed load
//! and a compare) before it so much as reads a clock. An event is built,
//! formatted and dispatched only when a hook is set and wants its level.
//!
//! The hook runs on the thread doing the work, inside the call that raised
//! the event. Events raised on a thread while the hook runs there (the hook
//! calling back into the library) are dropped, never delivered, so a hook
//! cannot recurse into itself; setting or clearing the hook from inside the
//! hook is allowed (no lock is held while it runs). A hook that panics is
//! caught: the event is lost, the call that raised it carries on.
//!
//! Events never carry key material: addresses, durations, counts, the
//! worker's certificate fingerprint, HTTP methods, paths and statuses, and
//! error kinds and messages. Request and response bodies appear only at
//! [`Level::Trace`].
//!
//! The events (name, level, fields):
//!
//! | event                | level | fields |
//! |----------------------|-------|--------|
//! | `connection.opened`  | info  | `address`, `tcp_ms`, `handshake_ms`, `handshake` (`full`/`resumed`), `tls_version`, `peer_fingerprint` |
//! | `connection.reused`  | debug | `address`, `request` (its number on this connection), `warm` (opened by `connect()`) |
//! | `connection.retired` | debug | `address`, `reason`, `requests` |
//! | `connection.failed`  | error | `address`, `kind`, `message` (an explicit `connect()`) |
//! | `request.sent`       | debug | `address`, `method`, `path`, `bytes` (`null` for a multipart upload) |
//! | `request.retried`    | warn  | `address`, `method`, `path`, `reason` (a stale GET sent again) |
//! | `request.answered`   | info  | `address`, `method`, `path`, `status`, `bytes`, `duration_ms` |
//! | `request.failed`     | error | `address`, `method`, `path`, `kind`, `message`, `duration_ms` |
//! | `request.body`       | trace | `address`, `method`, `path`, `body` |
//! | `response.body`      | trace | `address`, `method`, `path`, `status`, `body` |
//! | `fleet.sweep.started` | info | `hosts`, `concurrency`, `deadline_ms` (`null`: none) |
//! | `fleet.sweep.ended`  | info  | `hosts`, `ok`, `failed`, `timed_out` (among the failed), `not_attempted`, `stopped` (by the callback), `duration_ms` |

use std::cell::Cell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::Error;

/// How much an event matters; each level includes those above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// 1: a call failed.
    Error = 1,
    /// 2: something was worked around (a stale connection, a request sent again).
    Warn = 2,
    /// 3: one line per connection and per answered request.
    Info = 3,
    /// 4: connection reuse and retirement, requests as they leave.
    Debug = 4,
    /// 5: request and response bodies.
    Trace = 5,
}

impl Level {
    /// Every level, most severe first.
    pub const ALL: [Level; 5] = [
        Level::Error,
        Level::Warn,
        Level::Info,
        Level::Debug,
        Level::Trace,
    ];

    /// The level's stable number (1 error … 5 trace), as in the C ABI.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The level numbered `code`, if any.
    pub fn from_code(code: u32) -> Option<Level> {
        Level::ALL.into_iter().find(|level| level.code() == code)
    }

    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One event: a level, a name (`request.answered`, …) and named fields in
/// the order they were added.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    level: Level,
    name: &'static str,
    fields: Vec<(&'static str, Value)>,
}

impl Event {
    /// An event with no fields yet.
    pub(crate) fn new(level: Level, name: &'static str) -> Self {
        BUILT.fetch_add(1, Ordering::Relaxed);
        Event {
            level,
            name,
            fields: Vec::with_capacity(8),
        }
    }

    /// Adds a field.
    pub(crate) fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.fields.push((key, value.into()));
        self
    }

    /// Adds a duration field in milliseconds, to the microsecond.
    pub(crate) fn with_ms(self, key: &'static str, duration: Duration) -> Self {
        let ms = (duration.as_micros() as f64) / 1000.0;
        self.with(key, ms)
    }

    /// The event's level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The event's name, e.g. `connection.opened`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The value of field `key`, if the event has it.
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value)
    }

    /// The fields, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        self.fields.iter().map(|(key, value)| (*key, value))
    }

    /// One line of JSON: `{"level":…,"event":…,<fields>…}`.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 + 32 * self.fields.len());
        out.push_str("{\"level\":\"");
        out.push_str(self.level.name());
        out.push_str("\",\"event\":\"");
        out.push_str(self.name);
        out.push('"');
        for (key, value) in &self.fields {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":");
            out.push_str(&value.to_string());
        }
        out.push('}');
        out
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// What a hook is: called with each event it wants, on the thread that
/// raised it.
type Hook = dyn Fn(&Event) + Send + Sync;

/// The most verbose level the hook wants; 0 when no hook is set.
static MIN_LEVEL: AtomicU8 = AtomicU8::new(0);
/// The hook. Cloned out before it runs, so no lock is held while it does.
static HOOK: RwLock<Option<Arc<Hook>>> = RwLock::new(None);
/// Events built since the process started.
static BUILT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// True while the hook runs on this thread.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Sets the process-wide hook, replacing any other; it receives the events
/// of level `min_level` and every more severe one. A call already running
/// the previous hook on another thread finishes with it.
pub fn set_hook(min_level: Level, hook: impl Fn(&Event) + Send + Sync + 'static) {
    let mut slot = HOOK.write().unwrap_or_else(|p| p.into_inner());
    *slot = Some(Arc::new(hook));
    MIN_LEVEL.store(min_level as u8, Ordering::Relaxed);
}

/// Removes the hook: from now on no event is built.
pub fn clear_hook() {
    let mut slot = HOOK.write().unwrap_or_else(|p| p.into_inner());
    MIN_LEVEL.store(0, Ordering::Relaxed);
    *slot = None;
}

/// The level the hook wants, or `None` when no hook is set.
pub fn hook_level() -> Option<Level> {
    Level::from_code(u32::from(MIN_LEVEL.load(Ordering::Relaxed)))
}

/// How many events the library has built since the process started. It
/// stays put while no hook wants them: the tests check that nothing is
/// formatted then.
pub fn built_count() -> u64 {
    BUILT.load(Ordering::Relaxed)
}

/// Whether an event of `level` would be delivered: one relaxed atomic load.
#[inline]
pub(crate) fn enabled(level: Level) -> bool {
    level as u8 <= MIN_LEVEL.load(Ordering::Relaxed)
}

/// Builds the event with `build` and hands it to the hook, only when the
/// hook wants `level` and this thread is not already running the hook.
#[inline]
pub(crate) fn emit(level: Level, build: impl FnOnce() -> Event) {
    if enabled(level) {
        dispatch(build);
    }
}

thread_local! {
    /// Events built while a lock was held (ours or ureq's), raised by
    /// [`raise_deferred`] once it is released.
    static DEFERRED: std::cell::RefCell<Vec<Event>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Builds the event now, when the hook wants `level`, and raises it at
/// this thread's next [`raise_deferred`]: for events that arise under a
/// lock, so that a hook is never called with a lock held and may call
/// back into the same client.
pub(crate) fn defer(level: Level, build: impl FnOnce() -> Event) {
    if enabled(level) {
        let event = build();
        let _ = DEFERRED.try_with(|queue| queue.borrow_mut().push(event));
    }
}

/// Raises the events [`defer`] queued on this thread, in order. Called
/// where no lock is held: after each request returns from ureq.
pub(crate) fn raise_deferred() {
    let events = DEFERRED
        .try_with(|queue| std::mem::take(&mut *queue.borrow_mut()))
        .unwrap_or_default();
    for event in events {
        dispatch(|| event);
    }
}

/// The slow path, kept out of line so an instrumented function stays as
/// small as it was when nobody listens.
#[cold]
#[inline(never)]
fn dispatch(build: impl FnOnce() -> Event) {
    // Dropped when the hook is running on this thread (or the thread is
    // exiting and its flag is gone).
    let Ok(false) = IN_HOOK.try_with(Cell::get) else {
        return;
    };
    let hook = HOOK.read().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(hook) = hook else {
        return;
    };
    let event = build();
    if !enabled(event.level) {
        return;
    }
    IN_HOOK.with(|flag| flag.set(true));
    let _ = catch_unwind(AssertUnwindSafe(|| hook(&event)));
    IN_HOOK.with(|flag| flag.set(false));
}

/// One request's events: it remembers what they all name, and when the
/// request started (only when some event will need the time).
pub(crate) struct Call<'a> {
    address: &'a str,
    method: &'static str,
    path: &'a str,
    started: Option<Instant>,
}

impl<'a> Call<'a> {
    /// Starts a request: `request.sent` (and `request.body` at trace).
    /// `body` is `None` for a multipart upload, whose size and bytes are
    /// not reported.
    pub(crate) fn start(
        address: &'a str,
        method: &'static str,
        path: &'a str,
        body: Option<&[u8]>,
    ) -> Self {
        let call = Call {
            address,
            method,
            path,
            started: enabled(Level::Error).then(Instant::now),
        };
        emit(Level::Debug, || {
            call.event(Level::Debug, "request.sent")
                .with("bytes", body.map(|b| b.len()))
        });
        if let Some(body) = body.filter(|b| !b.is_empty()) {
            emit(Level::Trace, || {
                call.event(Level::Trace, "request.body")
                    .with("body", String::from_utf8_lossy(body).into_owned())
            });
        }
        call
    }

    fn event(&self, level: Level, name: &'static str) -> Event {
        Event::new(level, name)
            .with("address", self.address)
            .with("method", self.method)
            .with("path", self.path)
    }

    fn elapsed(&self) -> Duration {
        self.started.map(|s| s.elapsed()).unwrap_or_default()
    }

    /// The request is sent again after its reused connection turned out closed.
    pub(crate) fn retried(&self, reason: &str) {
        emit(Level::Warn, || {
            self.event(Level::Warn, "request.retried")
                .with("reason", reason)
        });
    }

    /// The worker answered with `status` and `body` (whatever the status).
    pub(crate) fn answered(&self, status: u16, body: &[u8]) {
        emit(Level::Info, || {
            self.event(Level::Info, "request.answered")
                .with("status", status)
                .with("bytes", body.len())
                .with_ms("duration_ms", self.elapsed())
        });
        emit(Level::Trace, || {
            self.event(Level::Trace, "response.body")
                .with("status", status)
                .with("body", String::from_utf8_lossy(body).into_owned())
        });
    }

    /// The request ended with `error`.
    pub(crate) fn failed(&self, error: &Error) {
        emit(Level::Error, || {
            self.event(Level::Error, "request.failed")
                .with("kind", error.kind().name())
                .with("message", error.to_string())
                .with_ms("duration_ms", self.elapsed())
        });
    }
}

/// An explicit connect to `address` failed with `error`.
pub(crate) fn connection_failed(address: &str, error: &Error) {
    emit(Level::Error, || {
        Event::new(Level::Error, "connection.failed")
            .with("address", address)
            .with("kind", error.kind().name())
            .with("message", error.to_string())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// The hook is process-wide: these tests take turns.
    static TURN: Mutex<()> = Mutex::new(());

    #[test]
    fn nothing_is_built_without_a_hook_or_below_its_level() {
        let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        clear_hook();
        let builds = AtomicUsize::new(0);
        let build = |level| {
            builds.fetch_add(1, Ordering::Relaxed);
            Event::new(level, "test")
        };
        emit(Level::Error, || build(Level::Error));
        assert_eq!(builds.load(Ordering::Relaxed), 0, "no hook, no build");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        set_hook(Level::Warn, move |e| sink.lock().unwrap().push(e.to_json()));
        emit(Level::Info, || build(Level::Info));
        assert_eq!(builds.load(Ordering::Relaxed), 0, "info is below warn");
        emit(Level::Warn, || build(Level::Warn).with("n", 1));
        assert_eq!(builds.load(Ordering::Relaxed), 1);
        clear_hook();
        emit(Level::Error, || build(Level::Error));
        assert_eq!(builds.load(Ordering::Relaxed), 1, "cleared, no build");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![r#"{"level":"warn","event":"test","n":1}"#.to_string()]
        );
    }

    #[test]
    fn a_hook_may_raise_events_and_replace_itself_without_recursion() {
        let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        set_hook(Level::Trace, move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
            // Raised inside the hook: dropped.
            emit(Level::Error, || Event::new(Level::Error, "inner"));
            // Replacing the hook from inside it: no deadlock.
            set_hook(Level::Trace, |_| panic!("a panicking hook"));
        });
        emit(Level::Info, || Event::new(Level::Info, "outer"));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        // The panicking replacement is caught; the flag is reset after it.
        emit(Level::Info, || Event::new(Level::Info, "outer"));
        let after = Arc::new(AtomicUsize::new(0));
        let counter = after.clone();
        set_hook(Level::Trace, move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        emit(Level::Info, || Event::new(Level::Info, "outer"));
        assert_eq!(after.load(Ordering::Relaxed), 1);
        clear_hook();
    }
}
