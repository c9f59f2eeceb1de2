//! Each host's outcome in a push or rollback, classified as the reference
//! master does, and the summary of a rollout.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::rollout::planner::StopReason;
use crate::updater::{SelfUpdate, UpdateFailure};

/// What a rollout does to each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Upload a release (and optionally the updater's own).
    Push,
    /// Go back to the previous release.
    Rollback,
}

/// One host's outcome class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostStatus {
    /// `/update` answered 200 (push without self-update).
    Updated,
    /// Push: `/update` answered 409, the new release failed its probe and
    /// the updater went back. Rollback: `/rollback` answered 200.
    RolledBack,
    /// Any other answer or a transport failure of `/update` or
    /// `/rollback`.
    Failed,
    /// The agent was updated and update-self was accepted (answered 200 or
    /// closed the connection after the request, as the updater does when
    /// it re-executes); with `verify`, the new release was seen.
    SelfUpdated,
    /// The agent was updated, update-self was refused or failed.
    SelfFailed,
    /// The agent was updated and update-self accepted, but `verify` did not
    /// see the new release in time: queued, not confirmed.
    Queued,
    /// Not started: the rollout stopped first.
    NotAttempted,
    /// The host record has no `updater_cert_fingerprint`; never contacted.
    NoUpdaterPin,
    /// The updater's certificate did not match the recorded pin.
    PinMismatch,
}

impl HostStatus {
    /// Every class, in report order.
    pub fn all() -> [HostStatus; 9] {
        [
            HostStatus::Updated,
            HostStatus::RolledBack,
            HostStatus::Failed,
            HostStatus::SelfUpdated,
            HostStatus::SelfFailed,
            HostStatus::Queued,
            HostStatus::NotAttempted,
            HostStatus::NoUpdaterPin,
            HostStatus::PinMismatch,
        ]
    }

    /// The reference's names (`updated`, `rolled-back`, …) and ours.
    pub fn name(self) -> &'static str {
        match self {
            HostStatus::Updated => "updated",
            HostStatus::RolledBack => "rolled-back",
            HostStatus::Failed => "failed",
            HostStatus::SelfUpdated => "self-updated",
            HostStatus::SelfFailed => "self-failed",
            HostStatus::Queued => "queued",
            HostStatus::NotAttempted => "not-attempted",
            HostStatus::NoUpdaterPin => "no-updater-pin",
            HostStatus::PinMismatch => "pin-mismatch",
        }
    }

    /// Whether this outcome of an attempted host counts against the
    /// failure budget of `operation` (an unconfirmed self-update does: a
    /// safe rollout does not go on on hope).
    pub fn is_failure(self, operation: Operation) -> bool {
        match self {
            HostStatus::Updated | HostStatus::SelfUpdated => false,
            HostStatus::RolledBack => operation == Operation::Push,
            HostStatus::NotAttempted | HostStatus::NoUpdaterPin => false,
            HostStatus::Failed
            | HostStatus::SelfFailed
            | HostStatus::Queued
            | HostStatus::PinMismatch => true,
        }
    }
}

/// One host's report: its class and what the updater said.
#[derive(Debug, Clone, PartialEq)]
pub struct HostReport {
    /// The class.
    pub status: HostStatus,
    /// The HTTP status of the call that decided the class, if one answered.
    pub http_status: Option<u16>,
    /// The updater's `detail.error`, or our error's message.
    pub error: Option<String>,
    /// The updater's `detail.stderr`.
    pub stderr: Option<String>,
    /// The updater's `detail.rolled_back`.
    pub rolled_back: Option<bool>,
    /// Time of `/update` or `/rollback`.
    pub update_time: Option<Duration>,
    /// Time of `/update-self`.
    pub self_update_time: Option<Duration>,
    /// Time waiting for the new release to show.
    pub verify_time: Option<Duration>,
}

impl HostReport {
    /// A report of `status` with nothing else known.
    pub fn bare(status: HostStatus) -> HostReport {
        HostReport {
            status,
            http_status: None,
            error: None,
            stderr: None,
            rolled_back: None,
            update_time: None,
            self_update_time: None,
            verify_time: None,
        }
    }

    /// The report of an `/update` (`Push`) or `/rollback` (`Rollback`)
    /// call that took `time`.
    pub fn of_call(
        operation: Operation,
        result: &crate::Result<Value>,
        time: Duration,
    ) -> HostReport {
        let mut report = match result {
            Ok(_) => HostReport {
                http_status: Some(200),
                ..HostReport::bare(match operation {
                    Operation::Push => HostStatus::Updated,
                    Operation::Rollback => HostStatus::RolledBack,
                })
            },
            Err(error) => {
                let status = match (operation, error) {
                    (_, Error::PinMismatch { .. }) => HostStatus::PinMismatch,
                    (Operation::Push, Error::HttpStatus { status: 409, .. }) => {
                        HostStatus::RolledBack
                    }
                    _ => HostStatus::Failed,
                };
                HostReport::of_error(status, error)
            }
        };
        report.update_time = Some(time);
        report
    }

    /// Adds what `/update-self` did (after a successful update), taking
    /// `time`, and what `verify` saw: `None` when not asked, else whether
    /// the new release appeared (and the time waited).
    pub fn with_self_update(
        mut self,
        result: &crate::Result<SelfUpdate>,
        time: Duration,
        verified: Option<(bool, Duration)>,
    ) -> HostReport {
        let update_time = self.update_time;
        self = match result {
            Ok(answer) => {
                let status = match verified {
                    Some((false, _)) => HostStatus::Queued,
                    _ => HostStatus::SelfUpdated,
                };
                let http_status = match answer {
                    SelfUpdate::Answered(_) => Some(200),
                    SelfUpdate::QueuedConnectionClosed => None,
                };
                HostReport {
                    http_status,
                    ..HostReport::bare(status)
                }
            }
            Err(error) => HostReport::of_error(HostStatus::SelfFailed, error),
        };
        self.update_time = update_time;
        self.self_update_time = Some(time);
        self.verify_time = verified.map(|(_, waited)| waited);
        self
    }

    fn of_error(status: HostStatus, error: &Error) -> HostReport {
        let mut report = HostReport::bare(status);
        match UpdateFailure::from_error(error) {
            Some(failure) => {
                report.http_status = Some(failure.status);
                report.error = failure.error.or_else(|| Some(error.to_string()));
                report.stderr = failure.stderr;
                report.rolled_back = failure.rolled_back;
            }
            None => {
                if let Error::HttpStatus { status, .. } = error {
                    report.http_status = Some(*status);
                }
                report.error = Some(error.to_string());
            }
        }
        report
    }

    /// `{"status", "http_status", "error", "stderr", "rolled_back",
    /// "update_ms", "self_update_ms", "verify_ms"}` (absent values null).
    pub fn to_json(&self) -> Value {
        let ms =
            |d: Option<Duration>| d.map_or(Value::Null, |d| Value::from(d.as_secs_f64() * 1e3));
        json!({
            "status": self.status.name(),
            "http_status": self.http_status,
            "error": self.error,
            "stderr": self.stderr,
            "rolled_back": self.rolled_back,
            "update_ms": ms(self.update_time),
            "self_update_ms": ms(self.self_update_time),
            "verify_ms": ms(self.verify_time),
        })
    }
}

/// How many hosts ended in each class, and why the rollout stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Hosts per class, in [`HostStatus::all`] order.
    pub counts: [usize; 9],
    /// Why the rollout ended.
    pub stop: StopReason,
}

impl Summary {
    /// The summary of `reports` for a rollout that ended for `stop`.
    pub fn new<'a>(reports: impl IntoIterator<Item = &'a HostReport>, stop: StopReason) -> Summary {
        let mut counts = [0; 9];
        for report in reports {
            counts[report.status as usize] += 1;
        }
        Summary { counts, stop }
    }

    /// Hosts that ended as `status`.
    pub fn count(&self, status: HostStatus) -> usize {
        self.counts[status as usize]
    }

    /// `{"stop": reason, "<class>": count, …}`.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("stop".into(), Value::from(self.stop.name()));
        for status in HostStatus::all() {
            object.insert(status.name().into(), Value::from(self.count(status)));
        }
        Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, body: Value) -> Error {
        Error::HttpStatus {
            status,
            body: body.to_string(),
            detail: None,
        }
    }

    const T: Duration = Duration::from_millis(7);

    #[test]
    fn update_answers_are_classified_as_the_reference_does() {
        let ok = HostReport::of_call(Operation::Push, &Ok(json!({"status": "updated"})), T);
        assert_eq!(
            (ok.status, ok.http_status, ok.update_time),
            (HostStatus::Updated, Some(200), Some(T))
        );
        let detail =
            json!({"detail": {"error": "probe failed", "stderr": "boom", "rolled_back": true}});
        let rolled = HostReport::of_call(Operation::Push, &Err(http(409, detail.clone())), T);
        assert_eq!(rolled.status, HostStatus::RolledBack);
        assert_eq!(rolled.http_status, Some(409));
        assert_eq!(rolled.error.as_deref(), Some("probe failed"));
        assert_eq!(rolled.stderr.as_deref(), Some("boom"));
        assert_eq!(rolled.rolled_back, Some(true));
        assert!(rolled.status.is_failure(Operation::Push));
        let failed = HostReport::of_call(Operation::Push, &Err(http(500, detail)), T);
        assert_eq!(
            (failed.status, failed.http_status),
            (HostStatus::Failed, Some(500))
        );
        let plain = HostReport::of_call(
            Operation::Push,
            &Err(http(400, json!({"detail": "bad sha256"}))),
            T,
        );
        assert_eq!(
            (plain.status, plain.http_status),
            (HostStatus::Failed, Some(400))
        );
        assert!(plain.error.unwrap().contains("400"));
        let pin = Error::PinMismatch {
            address: "127.0.0.1:1".into(),
            expected: "a".repeat(64),
            actual: "b".repeat(64),
            pin_origin: "a test".into(),
        };
        assert_eq!(
            HostReport::of_call(Operation::Push, &Err(pin), T).status,
            HostStatus::PinMismatch
        );
        let lost = Error::protocol("garbage");
        assert_eq!(
            HostReport::of_call(Operation::Push, &Err(lost), T).status,
            HostStatus::Failed
        );
    }

    #[test]
    fn a_rollback_that_answers_is_rolled_back_and_not_a_failure() {
        let ok = HostReport::of_call(Operation::Rollback, &Ok(json!({})), T);
        assert_eq!(ok.status, HostStatus::RolledBack);
        assert!(!ok.status.is_failure(Operation::Rollback));
        let none = HostReport::of_call(
            Operation::Rollback,
            &Err(http(404, json!({"detail": "no prev"}))),
            T,
        );
        assert_eq!(none.status, HostStatus::Failed);
        let conflict = HostReport::of_call(Operation::Rollback, &Err(http(409, json!({}))), T);
        assert_eq!(
            conflict.status,
            HostStatus::Failed,
            "409 means rolled-back only for /update"
        );
    }

    #[test]
    fn a_dropped_update_self_is_self_updated_and_verify_decides_confirmed_or_queued() {
        let updated = HostReport::of_call(Operation::Push, &Ok(json!({})), T);
        let dropped = Ok(SelfUpdate::QueuedConnectionClosed);
        let r = updated.clone().with_self_update(&dropped, T, None);
        assert_eq!(
            (r.status, r.http_status, r.update_time),
            (HostStatus::SelfUpdated, None, Some(T))
        );
        let r = updated
            .clone()
            .with_self_update(&dropped, T, Some((true, T)));
        assert_eq!(
            (r.status, r.verify_time),
            (HostStatus::SelfUpdated, Some(T))
        );
        let r = updated
            .clone()
            .with_self_update(&dropped, T, Some((false, T)));
        assert_eq!(r.status, HostStatus::Queued);
        assert!(r.status.is_failure(Operation::Push));
        let answered = Ok(SelfUpdate::Answered(
            json!({"status": "self_update_queued"}),
        ));
        let r = updated.clone().with_self_update(&answered, T, None);
        assert_eq!(
            (r.status, r.http_status),
            (HostStatus::SelfUpdated, Some(200))
        );
        let refused = Err(http(500, json!({"detail": {"error": "no", "stderr": "e"}})));
        let r = updated.with_self_update(&refused, T, None);
        assert_eq!(
            (r.status, r.http_status, r.stderr.as_deref()),
            (HostStatus::SelfFailed, Some(500), Some("e"))
        );
    }

    #[test]
    fn the_summary_counts_every_class() {
        let reports = [
            HostReport::bare(HostStatus::Updated),
            HostReport::bare(HostStatus::Updated),
            HostReport::bare(HostStatus::NotAttempted),
            HostReport::bare(HostStatus::NoUpdaterPin),
        ];
        let summary = Summary::new(&reports, StopReason::FailureBudget);
        assert_eq!(summary.count(HostStatus::Updated), 2);
        assert_eq!(summary.count(HostStatus::Failed), 0);
        let j = summary.to_json();
        assert_eq!(j["stop"], "failure-budget");
        assert_eq!(j["not-attempted"], 1);
        assert_eq!(j["no-updater-pin"], 1);
        assert_eq!(
            HostReport::bare(HostStatus::Queued).to_json()["status"],
            "queued"
        );
    }
}
