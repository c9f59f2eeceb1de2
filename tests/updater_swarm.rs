//! The updater fleet over a swarm of stand-in updaters, real mutual TLS on
//! loopback: each behaviour classified as the reference master does, the
//! canary and the failure budget halting the rollout, agent-then-updater
//! order, verify; the stand-ins' own ledgers witness which hosts were
//! touched.

use std::path::PathBuf;
use std::time::Duration;

use decnet_agent_client::fleet::{Flow, Outcome, SweepOptions};
use decnet_agent_client::rollout::{
    Amount, HostStatus, Rollout, RolloutPolicy, StopReason, UpdaterCall, UpdaterFleet, Wave,
};
use decnet_agent_client::testkit::{raise_fd_limit, TestPki, UpdaterBehaviour, UpdaterSwarm};
use decnet_agent_client::{ErrorKind, HostnameVerification, Tarball};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const TARBALL: &[u8] = b"not really gzip, but the updater only hashes it";

struct Setup {
    pki: TestPki,
    swarm: UpdaterSwarm,
    fleet: UpdaterFleet,
    tarball: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup(behaviours: &[UpdaterBehaviour]) -> Setup {
    raise_fd_limit(1024).expect("fd limit");
    let pki = TestPki::new().expect("pki");
    let swarm = UpdaterSwarm::start(&pki.ca, behaviours).expect("swarm");
    let fleet =
        UpdaterFleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On)
            .expect("fleet");
    let dir = tempfile::tempdir().expect("tempdir");
    let tarball = dir.path().join("tree.tgz");
    std::fs::write(&tarball, TARBALL).expect("tarball");
    Setup {
        pki,
        swarm,
        fleet,
        tarball,
        _dir: dir,
    }
}

fn options(concurrency: usize) -> SweepOptions {
    SweepOptions {
        concurrency: Some(concurrency),
        deadline: Some(Duration::from_secs(60)),
    }
}

impl Setup {
    fn push(&self, policy: &RolloutPolicy, concurrency: usize) -> Rollout {
        let mut seen = vec![0usize; self.fleet.len()];
        let rollout = self
            .fleet
            .push(
                &self.tarball,
                SHA,
                None,
                policy,
                options(concurrency),
                |r| {
                    seen[r.host.index] += 1;
                    Flow::Continue
                },
            )
            .expect("push");
        for (i, host) in rollout.hosts.iter().enumerate() {
            assert_eq!(host.host.index, i, "results in input order");
            let expected = usize::from(host.report.status != HostStatus::NotAttempted);
            assert_eq!(seen[i], expected, "host {i} called back {} times", seen[i]);
        }
        rollout
    }

    fn paths(&self, i: usize) -> Vec<String> {
        let member = &self.swarm.members()[i];
        member
            .updater
            .uploads()
            .into_iter()
            .map(|u| u.path)
            .collect()
    }
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
fn a_push_over_a_mixed_swarm_classifies_every_host_as_the_reference_does() {
    let s = setup(&mixed(100));
    let policy = RolloutPolicy {
        canary: 0,
        self_update: true,
        verify: Some(Duration::from_secs(10)),
        ..RolloutPolicy::default()
    };
    let rollout = s.push(&policy, 16);
    assert_eq!(rollout.summary.stop, StopReason::Completed);
    for (i, member) in s.swarm.members().iter().enumerate() {
        let report = &rollout.hosts[i].report;
        let expected = match member.behaviour {
            UpdaterBehaviour::Accept | UpdaterBehaviour::Slow(_) => HostStatus::SelfUpdated,
            UpdaterBehaviour::DropsSelfUpdate(_) => HostStatus::SelfUpdated,
            UpdaterBehaviour::RollsBack => HostStatus::RolledBack,
            UpdaterBehaviour::Fails => HostStatus::Failed,
            UpdaterBehaviour::WrongPin => HostStatus::PinMismatch,
            UpdaterBehaviour::NoPin => HostStatus::NoUpdaterPin,
        };
        let label = member.behaviour.label();
        assert_eq!(report.status, expected, "{i} {label}: {report:?}");
        let paths = s.paths(i);
        match expected {
            // Agent first, updater second.
            HostStatus::SelfUpdated => assert_eq!(paths, ["/update", "/update-self"], "{label}"),
            // A failed agent update never touches the updater.
            HostStatus::RolledBack | HostStatus::Failed => {
                assert_eq!(paths, ["/update"], "{label}")
            }
            _ => assert!(paths.is_empty(), "{label}: {paths:?}"),
        }
        for upload in member.updater.uploads() {
            assert_eq!(upload.fields["sha"], SHA);
            assert_eq!(upload.tarball.as_deref(), Some(TARBALL));
            assert_eq!(upload.tarball_sha256, upload.fields["sha256"]);
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
            UpdaterBehaviour::NoPin => assert_eq!(rollout.hosts[i].wave, None),
            _ => assert_eq!(rollout.hosts[i].wave, Some(Wave::Batch(1))),
        }
    }
    let summary = &rollout.summary;
    assert_eq!(summary.count(HostStatus::SelfUpdated), 60);
    assert_eq!(summary.count(HostStatus::NoUpdaterPin), 10);
    assert_eq!(summary.count(HostStatus::NotAttempted), 0);
}

#[test]
fn verify_says_queued_when_the_release_never_shows() {
    // The updater re-executes far later than verify waits.
    let s = setup(&[UpdaterBehaviour::DropsSelfUpdate(Duration::from_secs(30))]);
    let policy = RolloutPolicy {
        self_update: true,
        verify: Some(Duration::from_millis(400)),
        ..RolloutPolicy::default()
    };
    let rollout = s.push(&policy, 4);
    let report = &rollout.hosts[0].report;
    assert_eq!(report.status, HostStatus::Queued);
    assert!(report.verify_time.unwrap() >= Duration::from_millis(400));
    assert_eq!(
        rollout.summary.stop,
        StopReason::CanaryFailed,
        "queued fails"
    );
}

#[test]
fn a_failing_canary_stops_the_rollout_before_any_other_upload() {
    let mut behaviours = vec![UpdaterBehaviour::Accept; 100];
    behaviours[0] = UpdaterBehaviour::NoPin;
    behaviours[1] = UpdaterBehaviour::RollsBack;
    let s = setup(&behaviours);
    let rollout = s.push(&RolloutPolicy::default(), 16);
    assert_eq!(rollout.summary.stop, StopReason::CanaryFailed);
    assert_eq!(rollout.hosts[0].report.status, HostStatus::NoUpdaterPin);
    assert_eq!(rollout.hosts[1].report.status, HostStatus::RolledBack);
    assert_eq!(rollout.hosts[1].wave, Some(Wave::Canary));
    assert_eq!(s.paths(1), ["/update"]);
    for i in 2..100 {
        assert_eq!(rollout.hosts[i].report.status, HostStatus::NotAttempted);
        assert!(s.paths(i).is_empty(), "host {i} was not attempted");
    }
    assert_eq!(rollout.summary.count(HostStatus::NotAttempted), 98);
}

/// Every third host from 10 on fails: 10, 13, 16, 19, 22 is the 5th.
fn every_third_fails(n: usize) -> Vec<UpdaterBehaviour> {
    (0..n)
        .map(|i| match i >= 10 && i % 3 == 1 {
            true => UpdaterBehaviour::Fails,
            false => UpdaterBehaviour::Accept,
        })
        .collect()
}

#[test]
fn the_failure_budget_halts_at_its_count_and_touches_no_other_host() {
    let s = setup(&every_third_fails(120));
    let policy = RolloutPolicy {
        batch: Amount::Count(10),
        max_failures: Some(Amount::Count(5)),
        ..RolloutPolicy::default()
    };
    let rollout = s.push(&policy, 1);
    assert_eq!(rollout.summary.stop, StopReason::FailureBudget);
    for (i, host) in rollout.hosts.iter().enumerate() {
        let uploads = s.paths(i).len();
        if i <= 22 {
            assert_ne!(host.report.status, HostStatus::NotAttempted, "host {i}");
            assert_eq!(uploads, 1, "host {i}");
        } else {
            assert_eq!(host.report.status, HostStatus::NotAttempted, "host {i}");
            assert_eq!(uploads, 0, "host {i} was not attempted");
        }
    }
    assert_eq!(rollout.summary.count(HostStatus::Failed), 5);
    assert_eq!(rollout.hosts[22].wave, Some(Wave::Batch(3)));
}

#[test]
fn at_concurrency_the_budget_lets_in_flight_hosts_finish_and_starts_none_after() {
    let s = setup(&every_third_fails(120));
    let policy = RolloutPolicy {
        batch: Amount::Percent(100.0),
        max_failures: Some(Amount::Count(5)),
        ..RolloutPolicy::default()
    };
    let concurrency = 8;
    // Completion order, as the callback sees it.
    let mut seen = Vec::new();
    let rollout = s
        .fleet
        .push(&s.tarball, SHA, None, &policy, options(concurrency), |r| {
            seen.push(r.report.status == HostStatus::Failed);
            Flow::Continue
        })
        .unwrap();
    assert_eq!(rollout.summary.stop, StopReason::FailureBudget);
    let attempted: Vec<usize> = (0..120)
        .filter(|&i| rollout.hosts[i].report.status != HostStatus::NotAttempted)
        .collect();
    // Hosts start in order; once the 5th failure is seen no host starts,
    // so only the hosts in flight then (at most concurrency - 1) follow.
    let last = *attempted.last().unwrap();
    assert_eq!(attempted, (0..=last).collect::<Vec<_>>());
    let halted_at = seen
        .iter()
        .scan(0, |failures, &failed| {
            *failures += usize::from(failed);
            Some(*failures)
        })
        .position(|failures| failures == 5)
        .unwrap()
        + 1;
    assert!(
        (halted_at..halted_at + concurrency).contains(&attempted.len()),
        "{} attempted, the budget was reached at the {halted_at}th result",
        attempted.len()
    );
    assert_eq!(seen.len(), attempted.len(), "every in-flight host reported");
    for (i, host) in rollout.hosts.iter().enumerate() {
        let uploads = s.paths(i).len();
        match host.report.status {
            HostStatus::NotAttempted => assert_eq!(uploads, 0, "host {i}"),
            _ => assert_eq!(uploads, 1, "host {i} finished its upload"),
        }
    }
    assert!(rollout.summary.count(HostStatus::Failed) >= 5);
}

#[test]
fn a_wrong_digest_is_refused_before_any_traffic() {
    let s = setup(&[UpdaterBehaviour::Accept; 3]);
    let wrong = "00".repeat(32);
    let error = s
        .fleet
        .push(
            &s.tarball,
            SHA,
            Some(&wrong),
            &RolloutPolicy::default(),
            options(4),
            |_| Flow::Continue,
        )
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    let right = Tarball::Bytes(TARBALL).sha256().unwrap();
    assert!(error.to_string().contains(&right), "{error}");
    for member in s.swarm.members() {
        assert_eq!(member.updater.connections(), 0);
    }
    let rollout = s
        .fleet
        .push(
            &s.tarball,
            SHA,
            Some(&right.to_uppercase()),
            &RolloutPolicy::default(),
            options(4),
            |_| Flow::Continue,
        )
        .unwrap();
    assert_eq!(rollout.summary.count(HostStatus::Updated), 3);
}

#[test]
fn a_stop_from_the_callback_starts_no_new_host() {
    let s = setup(&[UpdaterBehaviour::Accept; 20]);
    let mut calls = 0;
    let rollout = s
        .fleet
        .push(
            &s.tarball,
            SHA,
            None,
            &RolloutPolicy::default(),
            options(1),
            |_| {
                calls += 1;
                match calls {
                    3 => Flow::Stop,
                    _ => Flow::Continue,
                }
            },
        )
        .unwrap();
    assert_eq!(rollout.summary.stop, StopReason::Stopped);
    assert_eq!(rollout.summary.count(HostStatus::Updated), 3);
    assert_eq!(rollout.summary.count(HostStatus::NotAttempted), 17);
    assert!((3..20).all(|i| s.paths(i).is_empty()));
}

#[test]
fn a_rollback_follows_the_policy_and_plain_sweeps_skip_unpinned_hosts() {
    let mut behaviours = vec![UpdaterBehaviour::Accept; 12];
    behaviours[4] = UpdaterBehaviour::NoPin;
    let s = setup(&behaviours);
    // Hosts 0..8 have a previous release; 8.. have none (404: failed).
    for member in &s.swarm.members()[..8] {
        member.updater.install("old");
        member.updater.install("new");
    }
    let policy = RolloutPolicy {
        batch: Amount::Count(2),
        max_failures: Some(Amount::Count(2)),
        ..RolloutPolicy::default()
    };
    let rollout = s
        .fleet
        .rollback(&policy, options(2), |_| Flow::Continue)
        .unwrap();
    assert_eq!(rollout.summary.stop, StopReason::FailureBudget);
    assert_eq!(rollout.summary.count(HostStatus::RolledBack), 7);
    assert_eq!(rollout.summary.count(HostStatus::NoUpdaterPin), 1);
    assert_eq!(rollout.summary.count(HostStatus::Failed), 2);
    assert_eq!(rollout.hosts[8].report.http_status, Some(404));
    assert_eq!(rollout.hosts[11].report.status, HostStatus::NotAttempted);

    let health = s
        .fleet
        .sweep(&UpdaterCall::Releases, options(4), |_| Flow::Continue)
        .unwrap();
    for (i, result) in health.iter().enumerate() {
        match (&result.outcome, i) {
            (Outcome::Err(e), 4) => assert_eq!(e.kind(), ErrorKind::PinMismatch),
            (Outcome::Ok(body), 0) => assert_eq!(body["releases"][0]["sha"], "old"),
            (Outcome::Ok(_), _) => {}
            (other, _) => panic!("host {i}: {other:?}"),
        }
    }
    assert_eq!(s.swarm.members()[4].updater.connections(), 0);
    assert!(s.pki.dir().exists());
}
