//! The rollout policy: how many hosts go first, in what batches, and how
//! many failures halt the rest. Parsed and validated before any traffic.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The longest pause between batches or verify wait accepted (one day).
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A number of hosts, absolute or relative to a total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// Exactly this many hosts (at least 1).
    Count(usize),
    /// This percentage of a total, above 0 and at most 100, rounded up to
    /// whole hosts (at least 1 when the total is not 0).
    Percent(f64),
}

impl Amount {
    /// Parses `"10"`, `"10%"` or `"2.5%"` (what the CLI takes).
    pub fn parse(text: &str, argument: &str) -> Result<Amount> {
        let text = text.trim();
        let amount =
            match text.strip_suffix('%') {
                Some(number) => {
                    let p: f64 = number.trim().parse().map_err(|_| {
                        Error::invalid(argument, format!("not a percentage: {text:?}"))
                    })?;
                    Amount::Percent(p)
                }
                None => Amount::Count(text.parse().map_err(|_| {
                    Error::invalid(argument, format!("not a host count: {text:?}"))
                })?),
            };
        amount.validated(argument)
    }

    /// Reads a JSON non-negative integer or a string [`Amount::parse`] takes.
    pub fn from_json(value: &Value, argument: &str) -> Result<Amount> {
        match value {
            Value::String(text) => Amount::parse(text, argument),
            Value::Number(n) => {
                let count = n.as_u64().ok_or_else(|| {
                    Error::invalid(argument, "a count must be a non-negative integer")
                })?;
                Amount::Count(usize::try_from(count).unwrap_or(usize::MAX)).validated(argument)
            }
            _ => Err(Error::invalid(
                argument,
                "must be a host count or a percentage string such as \"10%\"",
            )),
        }
    }

    /// How many hosts this is out of `total` (never more than `total`).
    pub fn of(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => n.min(total),
            Amount::Percent(p) => {
                let hosts = (total as f64 * p / 100.0).ceil() as usize;
                hosts.clamp(total.min(1), total)
            }
        }
    }

    fn validated(self, argument: &str) -> Result<Amount> {
        match self {
            Amount::Count(0) => Err(Error::invalid(argument, "must be at least 1 host")),
            Amount::Percent(p) if !(p > 0.0 && p <= 100.0) => Err(Error::invalid(
                argument,
                "a percentage must be above 0 and at most 100",
            )),
            amount => Ok(amount),
        }
    }

    fn to_json(self) -> Value {
        match self {
            Amount::Count(n) => Value::from(n),
            Amount::Percent(p) => Value::from(format!("{p}%")),
        }
    }
}

/// How a push or rollback proceeds across hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPolicy {
    /// Hosts that go first, alone; any failure among them stops the
    /// rollout (0: no canary). Default 1.
    pub canary: usize,
    /// The size of each later batch, counted against the hosts after the
    /// canary. Default: all of them in one batch.
    pub batch: Amount,
    /// Failures (counted against every host of the rollout) at which no new
    /// host starts; `None`: no budget beyond the canary.
    pub max_failures: Option<Amount>,
    /// Time between the end of one batch and the start of the next.
    pub pause_between: Duration,
    /// After a host's agent update succeeds, update its updater too.
    pub self_update: bool,
    /// After update-self, wait up to this long for the updater to report
    /// the new release; `None`: do not wait.
    pub verify: Option<Duration>,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            canary: 1,
            batch: Amount::Percent(100.0),
            max_failures: None,
            pause_between: Duration::ZERO,
            self_update: false,
            verify: None,
        }
    }
}

const KEYS: [&str; 6] = [
    "canary",
    "batch",
    "max_failures",
    "pause_between",
    "self_update",
    "verify",
];

impl RolloutPolicy {
    /// Parses a policy object such as `{"canary": 1, "batch": "10%",
    /// "max_failures": 5, "pause_between": 2.5, "self_update": true,
    /// "verify": 120}` (seconds). Missing or null members take their
    /// defaults; unknown members are refused, so a misspelt safety setting
    /// never passes silently.
    pub fn from_json(value: &Value) -> Result<RolloutPolicy> {
        let object = value
            .as_object()
            .ok_or_else(|| Error::invalid("policy", "must be a JSON object"))?;
        if let Some(unknown) = object.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(Error::invalid(
                "policy",
                format!("unknown member {unknown:?} (known: {})", KEYS.join(", ")),
            ));
        }
        let member = |key: &str| object.get(key).filter(|v| !v.is_null());
        let mut policy = RolloutPolicy::default();
        if let Some(v) = member("canary") {
            policy.canary = v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| Error::invalid("canary", "must be a non-negative integer"))?;
        }
        if let Some(v) = member("batch") {
            policy.batch = Amount::from_json(v, "batch")?;
        }
        if let Some(v) = member("max_failures") {
            policy.max_failures = Some(Amount::from_json(v, "max_failures")?);
        }
        if let Some(v) = member("pause_between") {
            policy.pause_between = seconds(v, "pause_between")?;
        }
        if let Some(v) = member("self_update") {
            policy.self_update = v
                .as_bool()
                .ok_or_else(|| Error::invalid("self_update", "must be true or false"))?;
        }
        if let Some(v) = member("verify") {
            policy.verify = Some(seconds(v, "verify")?);
        }
        policy.validate()?;
        Ok(policy)
    }

    /// Checks the members together: `verify` needs `self_update`, and
    /// durations stay within [`MAX_WAIT`].
    pub fn validate(&self) -> Result<()> {
        self.batch.validated("batch")?;
        if let Some(budget) = self.max_failures {
            budget.validated("max_failures")?;
        }
        if self.verify.is_some() && !self.self_update {
            return Err(Error::invalid(
                "verify",
                "confirms an update-self, so it needs self_update",
            ));
        }
        if self.verify.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid("verify", "must be above 0 seconds"));
        }
        for (name, wait) in [
            ("pause_between", Some(self.pause_between)),
            ("verify", self.verify),
        ] {
            if wait.is_some_and(|d| d > MAX_WAIT) {
                return Err(Error::invalid(name, "must be at most one day"));
            }
        }
        Ok(())
    }

    /// The policy as the JSON [`RolloutPolicy::from_json`] reads.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("canary".into(), Value::from(self.canary));
        object.insert("batch".into(), self.batch.to_json());
        object.insert(
            "max_failures".into(),
            self.max_failures.map_or(Value::Null, Amount::to_json),
        );
        object.insert(
            "pause_between".into(),
            Value::from(self.pause_between.as_secs_f64()),
        );
        object.insert("self_update".into(), Value::from(self.self_update));
        object.insert(
            "verify".into(),
            self.verify
                .map_or(Value::Null, |d| Value::from(d.as_secs_f64())),
        );
        Value::Object(object)
    }
}

fn seconds(value: &Value, argument: &str) -> Result<Duration> {
    let secs = value
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= MAX_WAIT.as_secs_f64())
        .ok_or_else(|| Error::invalid(argument, "must be a number of seconds, 0 to 86400"))?;
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_parse_and_round_up() {
        assert_eq!(Amount::parse("10", "b").unwrap(), Amount::Count(10));
        assert_eq!(Amount::parse(" 10% ", "b").unwrap(), Amount::Percent(10.0));
        assert_eq!(Amount::Percent(10.0).of(99), 10);
        assert_eq!(Amount::Percent(10.0).of(100), 10);
        assert_eq!(Amount::Percent(10.0).of(101), 11);
        assert_eq!(Amount::Percent(0.1).of(5), 1);
        assert_eq!(Amount::Percent(100.0).of(7), 7);
        assert_eq!(Amount::Percent(50.0).of(0), 0);
        assert_eq!(Amount::Count(10).of(3), 3);
        for bad in ["0", "0%", "101%", "-1", "x%", "", "nan%", "inf%"] {
            assert!(Amount::parse(bad, "b").is_err(), "{bad:?} accepted");
        }
        assert!(Amount::from_json(&json!(-2), "b").is_err());
        assert!(Amount::from_json(&json!(1.5), "b").is_err());
        assert!(Amount::from_json(&json!(true), "b").is_err());
    }

    #[test]
    fn policy_parses_with_defaults_and_round_trips() {
        let policy = RolloutPolicy::from_json(&json!({})).unwrap();
        assert_eq!(policy, RolloutPolicy::default());
        assert_eq!(policy.canary, 1);
        let text = json!({"canary": 2, "batch": "10%", "max_failures": 5,
            "pause_between": 1.5, "self_update": true, "verify": 30});
        let policy = RolloutPolicy::from_json(&text).unwrap();
        assert_eq!(policy.canary, 2);
        assert_eq!(policy.batch, Amount::Percent(10.0));
        assert_eq!(policy.max_failures, Some(Amount::Count(5)));
        assert_eq!(policy.pause_between, Duration::from_millis(1500));
        assert_eq!(policy.verify, Some(Duration::from_secs(30)));
        assert_eq!(RolloutPolicy::from_json(&policy.to_json()).unwrap(), policy);
    }

    #[test]
    fn policy_refuses_what_it_cannot_honour() {
        for bad in [
            json!([]),
            json!({"max_failure": 5}),
            json!({"canary": -1}),
            json!({"canary": "1"}),
            json!({"batch": 0}),
            json!({"max_failures": "0%"}),
            json!({"pause_between": -1}),
            json!({"pause_between": 1e9}),
            json!({"self_update": "yes"}),
            json!({"verify": 10}),
            json!({"verify": 0, "self_update": true}),
        ] {
            let error = RolloutPolicy::from_json(&bad).unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
