//! A sweep's per-host results, their JSON form, and the sweep's summary
//! event.

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, Level};

/// Who a result is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Position in the fleet.
    pub index: usize,
    /// The record's uuid.
    pub uuid: Option<String>,
    /// The record's name.
    pub name: Option<String>,
    /// `host:port` dialled.
    pub address: String,
}

/// How one host's call ended.
#[derive(Debug)]
pub enum Outcome {
    /// The worker's parsed answer.
    Ok(Value),
    /// The call failed, with all its detail; a sweep deadline that cut the
    /// host short is [`Error::Timeout`].
    Err(Error),
    /// The sweep was stopped before this host was started.
    NotAttempted,
}

/// One host's result.
#[derive(Debug)]
pub struct HostResult {
    /// The host.
    pub host: HostInfo,
    /// From the start of this host's call to its end (zero when not
    /// attempted; up to the deadline when the deadline cut it short).
    pub elapsed: Duration,
    /// The answer, the error, or not attempted.
    pub outcome: Outcome,
}

impl HostResult {
    /// True when the worker answered with success.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }
}

impl HostResult {
    /// The result as one JSON object, the form the C ABI, the Python
    /// module and the command line share: `index`, `uuid`, `name`,
    /// `address`, `elapsed_ms`, `outcome` (`ok`, `error` or
    /// `not_attempted`) and `result` (the answer) or `error` (see
    /// [`error_to_json`]).
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("index".into(), self.host.index.into());
        object.insert("uuid".into(), self.host.uuid.clone().into());
        object.insert("name".into(), self.host.name.clone().into());
        object.insert("address".into(), self.host.address.clone().into());
        let ms = (self.elapsed.as_secs_f64() * 1e6).round() / 1e3;
        object.insert("elapsed_ms".into(), Value::from(ms));
        match &self.outcome {
            Outcome::Ok(value) => {
                object.insert("outcome".into(), "ok".into());
                object.insert("result".into(), value.clone());
            }
            Outcome::Err(error) => {
                object.insert("outcome".into(), "error".into());
                object.insert("error".into(), error_to_json(error));
            }
            Outcome::NotAttempted => {
                object.insert("outcome".into(), "not_attempted".into());
            }
        }
        Value::Object(object)
    }
}

/// An error with all its detail as a JSON object: `kind` (its stable
/// name), `code`, `message`, `http_status`, `body`, `detail`,
/// `expected_fingerprint`, `actual_fingerprint`, `pin_origin`, `timeout_phase` and
/// `may_have_reached_worker` (`null` or `false` where they do not apply;
/// `false` means no byte of the request left).
pub fn error_to_json(error: &Error) -> Value {
    let (mut status, mut body, mut detail) = (Value::Null, Value::Null, Value::Null);
    let (mut expected, mut actual, mut pin_origin) = (Value::Null, Value::Null, Value::Null);
    match error {
        Error::HttpStatus {
            status: s,
            body: b,
            detail: d,
        } => {
            status = Value::from(*s);
            body = Value::from(b.clone());
            detail = d.clone().map_or(Value::Null, Value::from);
        }
        Error::PinMismatch {
            expected: e,
            actual: a,
            pin_origin: o,
            ..
        } => {
            expected = Value::from(e.clone());
            actual = Value::from(a.clone());
            pin_origin = Value::from(o.clone());
        }
        _ => {}
    }
    serde_json::json!({
        "kind": error.kind().name(),
        "code": error.kind().code(),
        "message": error.to_string(),
        "http_status": status,
        "body": body,
        "detail": detail,
        "expected_fingerprint": expected,
        "actual_fingerprint": actual,
        "pin_origin": pin_origin,
        "timeout_phase": error.timeout_phase().map(|p| p.to_string()),
        "may_have_reached_worker": error.may_have_reached_worker(),
    })
}

/// `fleet.sweep.ended`: how many hosts answered, failed (of which timed
/// out) or were never attempted, whether the callback stopped the sweep,
/// and how long it took.
pub(crate) fn sweep_ended(results: &[HostResult], elapsed: Duration, stopped: bool) -> Event {
    let count =
        |wanted: fn(&Outcome) -> bool| results.iter().filter(|r| wanted(&r.outcome)).count();
    Event::new(Level::Info, "fleet.sweep.ended")
        .with("hosts", results.len())
        .with("ok", count(|o| matches!(o, Outcome::Ok(_))))
        .with("failed", count(|o| matches!(o, Outcome::Err(_))))
        .with(
            "timed_out",
            count(|o| matches!(o, Outcome::Err(e) if e.kind() == ErrorKind::Timeout)),
        )
        .with(
            "not_attempted",
            count(|o| matches!(o, Outcome::NotAttempted)),
        )
        .with("stopped", stopped)
        .with_ms("duration_ms", elapsed)
}

pub(super) fn outcome_of(result: Result<Value>) -> Outcome {
    match result {
        Ok(value) => Outcome::Ok(value),
        Err(e) => Outcome::Err(explain_fd_exhaustion(e)),
    }
}

/// A connect error caused by this process running out of file descriptors
/// says so, with what to do about it.
fn explain_fd_exhaustion(error: Error) -> Error {
    match error {
        Error::Connect { address, reason }
            if reason.contains(&format!("os error {}", libc::EMFILE))
                || reason.contains(&format!("os error {}", libc::ENFILE)) =>
        {
            Error::Connect {
                address,
                reason: format!(
                    "{reason}: this process ran out of file descriptors; \
                     lower the sweep's concurrency or raise RLIMIT_NOFILE"
                ),
            }
        }
        other => other,
    }
}
