//! The stand-in updater swarm over real mutual TLS on loopback: each
//! behaviour's answers, classified by the rollout's outcome rules, and the
//! rollout planner driving real updaters (one at a time) with the
//! stand-ins' own ledgers as the witness of which hosts were touched.

use std::time::{Duration, Instant};

use decnet_agent_client::rollout::{
    Amount, HostReport, HostStatus, Operation, Planner, RolloutPolicy, Step, StopReason,
};
use decnet_agent_client::testkit::{raise_fd_limit, TestPki, UpdaterBehaviour, UpdaterSwarm};
use decnet_agent_client::{HostnameVerification, Identity, Tarball, UpdaterClient};
use serde_json::Value;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const TARBALL: &[u8] = b"not really gzip, but the updater only hashes it";

fn client(master: &Identity, record: &Value) -> decnet_agent_client::Result<UpdaterClient> {
    let port = record["updater_port"].as_u64().expect("updater_port") as u16;
    UpdaterClient::from_host_value(master, record, port, HostnameVerification::On)
}

/// One host's push as the policy says: update, then (after success only)
/// update-self and the optional verify.
fn push_one(master: &Identity, record: &Value, policy: &RolloutPolicy) -> HostReport {
    let client = match client(master, record) {
        Ok(client) => client,
        Err(_) => return HostReport::bare(HostStatus::NoUpdaterPin),
    };
    let started = Instant::now();
    let update = client.update(Tarball::Bytes(TARBALL), SHA);
    let report = HostReport::of_call(Operation::Push, &update, started.elapsed());
    if report.status != HostStatus::Updated || !policy.self_update {
        return report;
    }
    let started = Instant::now();
    let self_update = client.update_self(Tarball::Bytes(TARBALL), SHA);
    let self_time = started.elapsed();
    let verified = policy
        .verify
        .filter(|_| self_update.is_ok())
        .map(|deadline| {
            let started = Instant::now();
            let seen = client
                .wait_for_release(SHA, deadline, Duration::from_millis(20))
                .is_ok();
            (seen, started.elapsed())
        });
    report.with_self_update(&self_update, self_time, verified)
}

fn mixed(n: usize) -> Vec<UpdaterBehaviour> {
    (0..n)
        .map(|i| match i % 10 {
            3 => UpdaterBehaviour::RollsBack,
            5 => UpdaterBehaviour::Fails,
            6 => UpdaterBehaviour::DropsSelfUpdate(Duration::from_millis(50)),
            7 => UpdaterBehaviour::WrongPin,
            8 => UpdaterBehaviour::NoPin,
            9 => UpdaterBehaviour::Slow(Duration::from_millis(20)),
            _ => UpdaterBehaviour::Accept,
        })
        .collect()
}

#[test]
fn every_behaviour_is_classified_as_the_reference_master_does() {
    raise_fd_limit(1024).expect("fd limit");
    let pki = TestPki::new().expect("pki");
    let swarm = UpdaterSwarm::start(&pki.ca, &mixed(100)).expect("swarm");
    let policy = RolloutPolicy {
        self_update: true,
        verify: Some(Duration::from_secs(10)),
        ..RolloutPolicy::default()
    };
    for member in swarm.members() {
        let report = push_one(&pki.master, &member.record, &policy);
        let expected = match member.behaviour {
            UpdaterBehaviour::Accept | UpdaterBehaviour::Slow(_) => HostStatus::SelfUpdated,
            UpdaterBehaviour::DropsSelfUpdate(_) => HostStatus::SelfUpdated,
            UpdaterBehaviour::RollsBack => HostStatus::RolledBack,
            UpdaterBehaviour::Fails => HostStatus::Failed,
            UpdaterBehaviour::WrongPin => HostStatus::PinMismatch,
            UpdaterBehaviour::NoPin => HostStatus::NoUpdaterPin,
        };
        let label = member.behaviour.label();
        assert_eq!(report.status, expected, "{label}: {report:?}");
        let paths: Vec<String> = member
            .updater
            .uploads()
            .into_iter()
            .map(|u| u.path)
            .collect();
        match expected {
            // Agent first, updater second.
            HostStatus::SelfUpdated => assert_eq!(paths, ["/update", "/update-self"], "{label}"),
            // A failed agent update never touches the updater.
            HostStatus::RolledBack | HostStatus::Failed => {
                assert_eq!(paths, ["/update"], "{label}")
            }
            _ => assert!(paths.is_empty(), "{label}: {paths:?}"),
        }
        match member.behaviour {
            UpdaterBehaviour::RollsBack => {
                assert_eq!(report.http_status, Some(409));
                assert_eq!(report.rolled_back, Some(true));
                assert!(report.stderr.as_deref().is_some_and(|e| !e.is_empty()));
            }
            UpdaterBehaviour::Fails => assert_eq!(report.rolled_back, Some(false)),
            UpdaterBehaviour::DropsSelfUpdate(_) => {
                assert_eq!(report.http_status, None, "dropped, no answer");
                assert!(report.verify_time.is_some(), "verify confirmed the release");
            }
            _ => {}
        }
    }
}

#[test]
fn verify_says_queued_when_the_release_never_shows() {
    let pki = TestPki::new().expect("pki");
    // The updater re-executes far later than verify waits.
    let behaviours = [UpdaterBehaviour::DropsSelfUpdate(Duration::from_secs(30))];
    let swarm = UpdaterSwarm::start(&pki.ca, &behaviours).expect("swarm");
    let policy = RolloutPolicy {
        self_update: true,
        verify: Some(Duration::from_millis(400)),
        ..RolloutPolicy::default()
    };
    let report = push_one(&pki.master, &swarm.members()[0].record, &policy);
    assert_eq!(report.status, HostStatus::Queued);
    assert!(report.verify_time.unwrap() >= Duration::from_millis(400));
}

/// Drives `planner` over the pinned members one host at a time; returns
/// each member's report (not attempted when never started) and the end.
fn roll_out(
    master: &Identity,
    swarm: &UpdaterSwarm,
    policy: &RolloutPolicy,
) -> (Vec<HostReport>, StopReason) {
    let records: Vec<&Value> = swarm.members().iter().map(|m| &m.record).collect();
    let mut reports: Vec<HostReport> = records
        .iter()
        .map(|r| match r["updater_cert_fingerprint"] {
            Value::Null => HostReport::bare(HostStatus::NoUpdaterPin),
            _ => HostReport::bare(HostStatus::NotAttempted),
        })
        .collect();
    let eligible: Vec<usize> = (0..records.len())
        .filter(|&i| reports[i].status == HostStatus::NotAttempted)
        .collect();
    let mut planner = Planner::new(policy, eligible.len());
    for _ in 0..=eligible.len() {
        match planner.next(Instant::now()) {
            Step::Start(position, _) => {
                let host = eligible[position];
                reports[host] = push_one(master, records[host], policy);
                planner.finish(position, reports[host].status.is_failure(Operation::Push));
            }
            Step::Done(reason) => return (reports, reason),
            Step::Wait(_) => panic!("nothing in flight at concurrency 1"),
        }
    }
    panic!("the rollout did not end");
}

#[test]
fn a_failing_canary_stops_the_rollout_before_any_other_upload() {
    raise_fd_limit(1024).expect("fd limit");
    let pki = TestPki::new().expect("pki");
    let mut behaviours = vec![UpdaterBehaviour::Accept; 100];
    behaviours[0] = UpdaterBehaviour::NoPin;
    behaviours[1] = UpdaterBehaviour::RollsBack;
    let swarm = UpdaterSwarm::start(&pki.ca, &behaviours).expect("swarm");
    let (reports, reason) = roll_out(&pki.master, &swarm, &RolloutPolicy::default());
    assert_eq!(reason, StopReason::CanaryFailed);
    assert_eq!(reports[0].status, HostStatus::NoUpdaterPin);
    assert_eq!(reports[1].status, HostStatus::RolledBack, "the canary");
    let ledgers = swarm.ledgers();
    assert_eq!(ledgers[1].len(), 1);
    for (i, ledger) in ledgers.iter().enumerate().skip(2) {
        assert_eq!(reports[i].status, HostStatus::NotAttempted);
        assert!(
            ledger.is_empty(),
            "host {i} was not attempted but got {ledger:?}"
        );
    }
}

#[test]
fn the_failure_budget_halts_at_its_count_and_touches_no_other_host() {
    raise_fd_limit(1024).expect("fd limit");
    let pki = TestPki::new().expect("pki");
    // Every third host from 10 on fails: 10, 13, 16, 19, 22 is the 5th.
    let behaviours: Vec<_> = (0..120)
        .map(|i| match i >= 10 && i % 3 == 1 {
            true => UpdaterBehaviour::Fails,
            false => UpdaterBehaviour::Accept,
        })
        .collect();
    let swarm = UpdaterSwarm::start(&pki.ca, &behaviours).expect("swarm");
    let policy = RolloutPolicy {
        batch: Amount::Count(10),
        max_failures: Some(Amount::Count(5)),
        ..RolloutPolicy::default()
    };
    let (reports, reason) = roll_out(&pki.master, &swarm, &policy);
    assert_eq!(reason, StopReason::FailureBudget);
    let ledgers = swarm.ledgers();
    for (i, (report, ledger)) in reports.iter().zip(&ledgers).enumerate() {
        if i <= 22 {
            assert_ne!(report.status, HostStatus::NotAttempted, "host {i}");
            assert_eq!(ledger.len(), 1, "host {i}");
        } else {
            assert_eq!(report.status, HostStatus::NotAttempted, "host {i}");
            assert!(ledger.is_empty(), "host {i} got {} uploads", ledger.len());
        }
    }
    let failed = reports
        .iter()
        .filter(|r| r.status == HostStatus::Failed)
        .count();
    assert_eq!(failed, 5);
}
