//! Fleets over hundreds of stand-in workers on loopback, each with its own
//! certificate and pin, some misbehaving.
//!
//! The tests run one at a time: they time sweeps, count file descriptors
//! and one of them exhausts the descriptor table on purpose.

use std::collections::HashSet;
use std::fs::File;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use decnet_agent_client::fleet::{Call, Flow, HostId, SweepOptions};
use decnet_agent_client::testkit::{raise_fd_limit, Behaviour, Swarm, TestPki};
use decnet_agent_client::{
    Error, ErrorKind, Fleet, HostnameVerification, Outcome, Profile, TimeoutPhase, Timeouts,
};
use serde_json::{json, Value};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    raise_fd_limit(8192).expect("raise the soft fd limit");
    guard
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits (up to 20 s) for the descriptor count to come back to `baseline`
/// (stand-in threads close their ends asynchronously).
fn settle_fds(baseline: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let now = open_fds();
        if now <= baseline || Instant::now() > until {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fleet_of(pki: &TestPki, swarm: &Swarm) -> Fleet {
    Fleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On).unwrap()
}

fn control(fleet: &Fleet, read: Duration) {
    fleet
        .set_timeouts(
            Profile::Control,
            Timeouts {
                connect: Duration::from_secs(5),
                read,
                write: Duration::from_secs(5),
                pool: Duration::from_secs(5),
            },
        )
        .unwrap();
}

fn err_of(outcome: &Outcome) -> &Error {
    match outcome {
        Outcome::Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// 240 workers: every 12th from offset 3 stalls, from 5 shows the wrong
/// certificate, from 7 refuses, from 9 answers 500; the rest are healthy.
fn mixed_behaviours(count: usize, stall: Duration) -> Vec<Behaviour> {
    (0..count)
        .map(|i| match i % 12 {
            3 => Behaviour::Stall(stall),
            5 => Behaviour::WrongCertificate,
            7 => Behaviour::Refuse,
            9 => Behaviour::ServerError,
            _ => Behaviour::Healthy,
        })
        .collect()
}

#[test]
fn every_host_of_a_mixed_fleet_gets_its_own_outcome() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let read = Duration::from_secs(5);
    let swarm = Swarm::start(&pki.ca, &mixed_behaviours(240, Duration::from_secs(12))).unwrap();
    let fleet = fleet_of(&pki, &swarm);
    assert_eq!(fleet.len(), 240);
    control(&fleet, read);

    let mut completion = Vec::new();
    let began = Instant::now();
    let results = fleet
        .sweep_all(&Call::Health, SweepOptions::default(), |r| {
            completion.push(r.host.index);
            Flow::Continue
        })
        .unwrap();
    let wall = began.elapsed();

    assert_eq!(results.len(), 240);
    assert_eq!(completion.len(), 240);
    assert_eq!(completion.iter().collect::<HashSet<_>>().len(), 240);
    for (i, (r, member)) in results.iter().zip(swarm.members()).enumerate() {
        assert_eq!(r.host.index, i, "results are in input order");
        assert_eq!(r.host.name.as_deref(), Some(format!("w{i}").as_str()));
        assert_eq!(r.host.uuid.as_deref(), Some(format!("uuid-w{i}").as_str()));
        let port = member.record["agent_port"].as_u64().unwrap();
        assert_eq!(r.host.address, format!("127.0.0.1:{port}"));
        match member.behaviour {
            Behaviour::Healthy
            | Behaviour::ClosesIdle(_)
            | Behaviour::SlowHandshake(_)
            | Behaviour::DeployFailsAfter(_) => {
                match &r.outcome {
                    Outcome::Ok(v) => assert_eq!(v, &json!({"status": "ok"})),
                    other => panic!("host {i}: {other:?}"),
                }
                assert!(r.elapsed < read, "healthy host {i} took {:?}", r.elapsed);
            }
            Behaviour::Stall(_) => {
                let e = err_of(&r.outcome);
                assert!(
                    matches!(
                        e,
                        Error::Timeout {
                            phase: TimeoutPhase::Read,
                            ..
                        }
                    ),
                    "host {i}: {e:?}"
                );
                assert!(r.elapsed >= read, "stalled host {i} after {:?}", r.elapsed);
            }
            Behaviour::WrongCertificate => match err_of(&r.outcome) {
                Error::PinMismatch {
                    expected, actual, ..
                } => {
                    assert_eq!(
                        expected,
                        member.record["client_cert_fingerprint"].as_str().unwrap()
                    );
                    assert_eq!(actual, &member.worker.as_ref().unwrap().fingerprint());
                }
                other => panic!("host {i}: {other:?}"),
            },
            Behaviour::Refuse => {
                assert_eq!(err_of(&r.outcome).kind(), ErrorKind::Connect, "host {i}")
            }
            Behaviour::ServerError => match err_of(&r.outcome) {
                Error::HttpStatus { status, detail, .. } => {
                    assert_eq!(*status, 500);
                    assert_eq!(detail.as_deref(), Some("simulated worker failure"));
                }
                other => panic!("host {i}: {other:?}"),
            },
        }
    }
    // 20 stalls of 5 s on 64 threads run side by side, not one after another.
    assert!(wall < Duration::from_secs(60), "sweep took {wall:?}");
    // The stalled hosts were the last to complete.
    let last: HashSet<usize> = completion[220..].iter().copied().collect();
    let stalled: HashSet<usize> = (0..240).filter(|i| i % 12 == 3).collect();
    assert_eq!(last, stalled);

    // The second sweep reuses the healthy hosts' kept-alive connections.
    let handshakes: u64 = (0..240)
        .map(|i| fleet.client(i).unwrap().handshake_count())
        .sum();
    let healthy: Vec<usize> = (0..240)
        .filter(|&i| swarm.members()[i].behaviour == Behaviour::Healthy)
        .collect();
    let plan = healthy
        .iter()
        .map(|&i| (HostId::Index(i), Call::Health))
        .collect();
    let again = fleet
        .sweep(plan, SweepOptions::default(), |_| Flow::Continue)
        .unwrap();
    assert!(again.iter().all(|r| r.is_ok()));
    let after: u64 = (0..240)
        .map(|i| fleet.client(i).unwrap().handshake_count())
        .sum();
    assert_eq!(after, handshakes, "no new handshake on the second sweep");
}

#[test]
fn per_host_arguments_reach_their_own_worker() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::Healthy; 12]).unwrap();
    let fleet = fleet_of(&pki, &swarm);
    // Address hosts by uuid, name and index, in an order of their own.
    let plan: Vec<(HostId, Call)> = (0..12)
        .rev()
        .map(|i| {
            let id = match i % 3 {
                0 => HostId::Uuid(format!("uuid-w{i}")),
                1 => HostId::Name(format!("w{i}")),
                _ => HostId::Index(i),
            };
            let config =
                json!({"deckies": [{"name": format!("decky-of-w{i}"), "services": ["ssh"]}]});
            (
                id,
                Call::Deploy {
                    config,
                    dry_run: false,
                    no_cache: i % 2 == 0,
                },
            )
        })
        .collect();
    let results = fleet
        .sweep(plan, SweepOptions::default(), |_| Flow::Continue)
        .unwrap();
    for (position, r) in results.iter().enumerate() {
        let i = 11 - position;
        assert_eq!(r.host.index, i, "results follow the plan's order");
        assert!(r.is_ok(), "{r:?}");
    }
    for (i, member) in swarm.members().iter().enumerate() {
        let ledger = member.worker.as_ref().unwrap().ledger();
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0].path, "/deploy");
        assert_eq!(
            ledger[0].body["config"]["deckies"][0]["name"],
            json!(format!("decky-of-w{i}"))
        );
        assert_eq!(ledger[0].body["no_cache"], json!(i % 2 == 0));
    }
}

#[test]
fn callbacks_follow_completion_and_results_follow_the_input() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    // Host 0 answers last, host 4 first.
    let behaviours: Vec<Behaviour> = (0..5)
        .map(|i| Behaviour::Stall(Duration::from_millis(500 * (5 - i))))
        .collect();
    let swarm = Swarm::start(&pki.ca, &behaviours).unwrap();
    let fleet = fleet_of(&pki, &swarm);
    let mut order = Vec::new();
    let mut callback_thread = None;
    let results = fleet
        .sweep_all(
            &Call::Status,
            SweepOptions {
                concurrency: Some(5),
                deadline: None,
            },
            |r| {
                callback_thread = Some(std::thread::current().id());
                order.push(r.host.index);
                Flow::Continue
            },
        )
        .unwrap();
    assert_eq!(order, vec![4, 3, 2, 1, 0]);
    assert_eq!(callback_thread, Some(std::thread::current().id()));
    let indices: Vec<usize> = results.iter().map(|r| r.host.index).collect();
    assert_eq!(indices, vec![0, 1, 2, 3, 4]);
    assert!(results.iter().all(|r| r.is_ok()));
    assert!(results[0].elapsed > results[4].elapsed);
}

#[test]
fn stopping_early_leaves_the_rest_not_attempted() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    // One thread: if it takes the stalled second host before the stop
    // from the first host's callback lands, that host holds it until the
    // stop is in; so at most two are attempted.
    let mut behaviours = vec![Behaviour::Healthy, Behaviour::Stall(Duration::from_secs(3))];
    behaviours.extend([Behaviour::Healthy; 18]);
    let swarm = Swarm::start(&pki.ca, &behaviours).unwrap();
    let fleet = fleet_of(&pki, &swarm);
    control(&fleet, Duration::from_secs(1));
    let mut calls = 0;
    let results = fleet
        .sweep_all(
            &Call::Health,
            SweepOptions {
                concurrency: Some(1),
                deadline: None,
            },
            |_| {
                calls += 1;
                Flow::Stop
            },
        )
        .unwrap();
    assert_eq!(calls, 1, "no callback after the stop");
    assert_eq!(results.len(), 20);
    assert!(results[0].is_ok());
    // The thread may take the stalled host before the stop lands, or not.
    match &results[1].outcome {
        Outcome::NotAttempted => {}
        other => assert_eq!(err_of(other).kind(), ErrorKind::Timeout),
    }
    for (i, r) in results.iter().enumerate().skip(2) {
        assert!(matches!(r.outcome, Outcome::NotAttempted), "{i}: {r:?}");
        assert_eq!(r.elapsed, Duration::ZERO);
        let requests = swarm.members()[i].worker.as_ref().unwrap().ledger().len();
        assert_eq!(requests, 0, "host {i} was not attempted");
    }
}

#[test]
fn a_sweep_deadline_cuts_hung_workers_short() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let mut behaviours = vec![Behaviour::Healthy; 8];
    behaviours.extend([Behaviour::Stall(Duration::from_secs(20)); 4]);
    let swarm = Swarm::start(&pki.ca, &behaviours).unwrap();
    let fleet = fleet_of(&pki, &swarm);
    // Default timeouts: a stalled host alone would take 15 s.
    let began = Instant::now();
    let mut seen = Vec::new();
    let results = fleet
        .sweep_all(
            &Call::Health,
            SweepOptions {
                concurrency: Some(4),
                deadline: Some(Duration::from_millis(1500)),
            },
            |r| {
                seen.push(r.host.index);
                Flow::Continue
            },
        )
        .unwrap();
    // The hosts the deadline cut short reach the callback too, last.
    assert_eq!(seen.len(), 12);
    assert_eq!(seen[8..], [8, 9, 10, 11]);
    let wall = began.elapsed();
    assert!(wall < Duration::from_secs(5), "sweep took {wall:?}");
    assert!(results[..8].iter().all(|r| r.is_ok()), "{results:?}");
    for r in &results[8..] {
        match err_of(&r.outcome) {
            Error::Timeout {
                phase: TimeoutPhase::Deadline,
                ..
            } => {}
            other => panic!("expected the sweep's deadline, got {other:?}"),
        }
        assert!(r.elapsed <= wall);
    }
}

#[test]
fn descriptors_come_back_and_exhaustion_is_a_connect_error() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let mut behaviours = mixed_behaviours(36, Duration::from_secs(2));
    behaviours.truncate(36);
    let swarm = Swarm::start(&pki.ca, &behaviours).unwrap();
    let baseline = settle_fds(open_fds());
    {
        let fleet = fleet_of(&pki, &swarm);
        control(&fleet, Duration::from_secs(1));
        for _ in 0..2 {
            let results = fleet
                .sweep_all(&Call::Health, SweepOptions::default(), |_| Flow::Continue)
                .unwrap();
            assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 24);
        }

        // Fill the descriptor table, then sweep.
        let mut hog = Vec::new();
        for _ in 0..100_000 {
            match File::open("/dev/null") {
                Ok(f) => hog.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
                    break;
                }
            }
        }
        // Healthy hosts keep their pooled connections; stalled ones (whose
        // connections were dropped at the timeout) need new sockets.
        let stalled: Vec<(HostId, Call)> = (0..36)
            .filter(|i| i % 12 == 3)
            .map(|i| (HostId::Index(i), Call::Health))
            .collect();
        let results = fleet
            .sweep(stalled, SweepOptions::default(), |_| Flow::Continue)
            .unwrap();
        drop(hog);
        for r in &results {
            match err_of(&r.outcome) {
                Error::Connect { reason, .. } => {
                    assert!(reason.contains("ran out of file descriptors"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let after = settle_fds(baseline);
    assert_eq!(after, baseline, "file descriptors before = after");
}

#[test]
fn fleets_check_their_hosts_and_plans() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let empty = Fleet::from_json(&pki.master, &json!([]), HostnameVerification::On).unwrap();
    assert!(empty.is_empty());
    let results = empty
        .sweep_all(&Call::Health, SweepOptions::default(), |_| Flow::Continue)
        .unwrap();
    assert!(results.is_empty());

    let host = |uuid: &str, name: &str| {
        json!({"address": "127.0.0.1", "agent_port": 1, "uuid": uuid, "name": name,
        "client_cert_fingerprint": "00".repeat(32)})
    };
    let dup_uuid = json!([host("a", "x"), host("b", "y"), host("a", "z")]);
    match Fleet::from_json(&pki.master, &dup_uuid, HostnameVerification::On) {
        Err(Error::InvalidArgument { argument, reason }) => {
            assert_eq!(argument, "hosts[2].uuid");
            assert!(reason.contains("hosts[0]"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let dup_name = json!([host("a", "x"), host("b", "x")]);
    match Fleet::from_json(&pki.master, &dup_name, HostnameVerification::On) {
        Err(Error::InvalidArgument { argument, reason }) => {
            assert_eq!(argument, "hosts[1].name");
            assert!(reason.contains("hosts[0]"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let bad = json!([host("a", "x"), {"address": 7}]);
    match Fleet::from_json(&pki.master, &bad, HostnameVerification::On) {
        Err(Error::InvalidArgument { argument, .. }) => assert_eq!(argument, "hosts[1].address"),
        other => panic!("{other:?}"),
    }

    let fleet = Fleet::from_json(
        &pki.master,
        &json!([host("a", "x"), host("b", "y")]),
        HostnameVerification::On,
    )
    .unwrap();
    assert_eq!(fleet.resolve(&HostId::Uuid("b".into())).unwrap(), 1);
    assert_eq!(fleet.resolve(&HostId::Uuid("x".into())).unwrap(), 0);
    assert_eq!(fleet.resolve(&HostId::Name("y".into())).unwrap(), 1);
    assert!(fleet.resolve(&HostId::Index(2)).is_err());
    let twice = vec![
        (HostId::Index(0), Call::Health),
        (HostId::Name("x".into()), Call::Health),
    ];
    match fleet.sweep(twice, SweepOptions::default(), |_| Flow::Continue) {
        Err(Error::InvalidArgument { argument, reason }) => {
            assert_eq!(argument, "plan[1].host");
            assert!(reason.contains("plan[0]"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    for options in [
        SweepOptions {
            concurrency: Some(0),
            deadline: None,
        },
        SweepOptions {
            concurrency: None,
            deadline: Some(Duration::ZERO),
        },
    ] {
        let result = fleet.sweep_all(&Call::Health, options, |_| Flow::Continue);
        assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    // A bad per-host argument is that host's error; the others still run.
    let value: Value = json!({"config": {"deckies": []}});
    let call = Call::from_json("deploy", &value).unwrap();
    let results = fleet
        .sweep(
            vec![(HostId::Index(0), call)],
            SweepOptions::default(),
            |_| Flow::Continue,
        )
        .unwrap();
    assert_eq!(
        err_of(&results[0].outcome).kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn a_sweep_after_every_worker_closed_its_idle_connections_resumes() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(
        &pki.ca,
        &[Behaviour::ClosesIdle(Duration::from_millis(250)); 24],
    )
    .unwrap();
    let sweep_twice = |fleet: &Fleet| {
        for _ in 0..2 {
            let results = fleet
                .sweep_all(&Call::Health, SweepOptions::default(), |_| Flow::Continue)
                .unwrap();
            assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
            std::thread::sleep(Duration::from_millis(700));
        }
        fleet.handshake_counts()
    };
    let resuming = fleet_of(&pki, &swarm);
    let counts = sweep_twice(&resuming);
    assert_eq!((counts.full, counts.resumed), (24, 24), "{counts:?}");
    let full_only = fleet_of(&pki, &swarm);
    full_only.set_session_resumption(false);
    let counts = sweep_twice(&full_only);
    assert_eq!((counts.full, counts.resumed), (48, 0), "{counts:?}");
}
