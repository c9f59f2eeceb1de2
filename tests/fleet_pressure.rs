//! The fleet's promises where an operator leans on them hardest: a sweep
//! deadline ends the work (nothing is sent after a host was reported "not
//! sent", no thread outlives its sweep), stop means stop at concurrency 1,
//! a log hook may call back into the same client, and a release wait ends
//! within its deadline.
//!
//! The tests run one at a time: they count threads and sockets and set the
//! process-wide log hook.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{setup, sweep_threads};
use decnet_agent_client::events::{clear_hook, set_hook};
use decnet_agent_client::fleet::{Call, Flow, SweepOptions};
use decnet_agent_client::testkit::{raise_fd_limit, Behaviour, Fault, Swarm, TestPki};
use decnet_agent_client::{
    Error, ErrorKind, Fleet, HostnameVerification, Level, Outcome, TimeoutPhase, UpdaterClient,
};
use serde_json::json;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    raise_fd_limit(4096).expect("raise the soft fd limit");
    guard
}

fn fleet_of(pki: &TestPki, swarm: &Swarm) -> Fleet {
    Fleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On).unwrap()
}

/// Established TCP connections from this process to `port` (the client's
/// ends only: the stand-in's ends have `port` as their local port).
fn client_connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().unwrap();
            u16::from_str_radix(remote_port, 16).unwrap() == port && fields[3] == "01"
        })
        .count()
}

fn deploy_call() -> Call {
    Call::Deploy {
        config: json!({"deckies": [{"name": "d1", "services": ["ssh"]}]}),
        dry_run: false,
        no_cache: false,
    }
}

#[test]
fn a_post_the_deadline_reports_as_not_sent_is_never_sent() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    // Every handshake takes 0.8 s; the sweep's deadline is 0.4 s.
    let behaviours = vec![Behaviour::SlowHandshake(Duration::from_millis(800)); 10];
    let swarm = Swarm::start(&pki.ca, &behaviours).unwrap();
    let fleet = fleet_of(&pki, &swarm);
    for call in [deploy_call(), Call::SelfDestruct] {
        let began = Instant::now();
        let results = fleet
            .sweep_all(
                &call,
                SweepOptions {
                    concurrency: Some(10),
                    deadline: Some(Duration::from_millis(400)),
                },
                |_| Flow::Continue,
            )
            .unwrap();
        let wall = began.elapsed();
        assert!(wall < Duration::from_secs(2), "the sweep took {wall:?}");
        // Right after it returns, no sweep thread is left.
        assert_eq!(sweep_threads(), 0, "threads outlived the sweep");
        for r in &results {
            match &r.outcome {
                Outcome::Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
                    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Deadline), "{e}");
                    assert!(!e.may_have_reached_worker(), "{e}");
                }
                other => panic!("expected the deadline, got {other:?}"),
            }
        }
        // Well after the handshakes would have finished, no worker has
        // received the request the sweep reported as not sent.
        std::thread::sleep(Duration::from_millis(1500));
        for (i, member) in swarm.members().iter().enumerate() {
            let ledger = member.worker.as_ref().unwrap().ledger();
            assert!(
                ledger.is_empty(),
                "{}: host {i} received {ledger:?} after being reported not sent",
                call.rpc_name()
            );
        }
    }
}

#[test]
fn deadline_cut_sweeps_leave_no_thread_and_no_connection_behind() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::Stall(Duration::from_secs(30))]).unwrap();
    let fleet = fleet_of(&pki, &swarm);
    let port = swarm.members()[0].worker.as_ref().unwrap().addr().port();
    for round in 0..20 {
        let results = fleet
            .sweep_all(
                &deploy_call(),
                SweepOptions {
                    concurrency: Some(1),
                    deadline: Some(Duration::from_millis(150)),
                },
                |_| Flow::Continue,
            )
            .unwrap();
        let error = match &results[0].outcome {
            Outcome::Err(e) => e,
            other => panic!("round {round}: expected a timeout, got {other:?}"),
        };
        assert_eq!(error.timeout_phase(), Some(TimeoutPhase::Deadline));
        // The request had left: the worker may have acted on it.
        assert!(error.may_have_reached_worker(), "round {round}: {error}");
        assert_eq!(
            sweep_threads(),
            0,
            "round {round}: a thread outlived the sweep"
        );
        assert_eq!(
            client_connections_to(port),
            0,
            "round {round}: a connection outlived the sweep"
        );
    }
    // Each round's POST reached the worker once, and only once.
    let posts = swarm.members()[0].worker.as_ref().unwrap().ledger().len();
    assert_eq!(posts, 20);
}

#[test]
fn a_canary_stopped_after_its_first_host_never_touches_the_second() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::Healthy; 4]).unwrap();
    let fleet = fleet_of(&pki, &swarm);
    for run in 0..20 {
        let results = fleet
            .sweep_all(
                &deploy_call(),
                SweepOptions {
                    concurrency: Some(1),
                    deadline: None,
                },
                |_| Flow::Stop,
            )
            .unwrap();
        assert!(results[0].is_ok(), "run {run}: {:?}", results[0]);
        for (i, r) in results.iter().enumerate().skip(1) {
            assert!(
                matches!(r.outcome, Outcome::NotAttempted),
                "run {run}: host {i} was attempted: {r:?}"
            );
        }
    }
    for (i, member) in swarm.members().iter().enumerate() {
        let requests = member.worker.as_ref().unwrap().ledger().len();
        assert_eq!(requests, if i == 0 { 20 } else { 0 }, "host {i}");
    }
}

/// Four threads call `health()` on one client while the hook calls
/// `health()` on the same client from every event `reenter_on` picks;
/// returns how many connections were retired and how often the hook's own
/// call succeeded. Panics if a thread hangs.
fn hammer_with_reentrant_hook(reenter_on: fn(&str) -> bool) -> (usize, usize) {
    let s = setup();
    // Idle connections close after 60 ms, so reused ones are retired often.
    s.worker
        .set_fault(Fault::CloseIdleAfter(Duration::from_millis(60)));
    let client = Arc::new(s.client);
    let retired = Arc::new(AtomicUsize::new(0));
    let reentered = Arc::new(AtomicUsize::new(0));
    {
        let (client, retired, reentered) = (client.clone(), retired.clone(), reentered.clone());
        set_hook(Level::Trace, move |event| {
            if event.name() == "connection.retired" {
                retired.fetch_add(1, Ordering::Relaxed);
            }
            if reenter_on(event.name()) && client.health().is_ok() {
                reentered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let (done, finished) = mpsc::channel();
    for _ in 0..4 {
        let (client, done) = (client.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..15 {
                // A connection the worker closes just as it is reused is a
                // lost connection (a race this fault provokes): not a hang.
                if let Err(e) = client.health() {
                    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
                }
                if i % 3 == 0 {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            done.send(()).unwrap();
        });
    }
    for n in 0..4 {
        if finished.recv_timeout(Duration::from_secs(60)).is_err() {
            clear_hook();
            panic!("thread {n} is stuck: a hook calling the same client deadlocked it");
        }
    }
    clear_hook();
    (
        retired.load(Ordering::Relaxed),
        reentered.load(Ordering::Relaxed),
    )
}

#[test]
fn a_hook_may_call_the_same_client_from_connection_retired() {
    let _serial = serial();
    let (retired, reentered) = hammer_with_reentrant_hook(|name| name == "connection.retired");
    assert!(retired > 0, "no connection was retired");
    assert!(reentered > 0, "the hook never called back");
}

#[test]
fn a_hook_may_call_the_same_client_from_every_event() {
    let _serial = serial();
    let (_, reentered) = hammer_with_reentrant_hook(|_| true);
    assert!(reentered > 0, "the hook never called back");
}

#[test]
fn a_release_wait_ends_within_its_deadline_and_a_pin_mismatch_at_once() {
    let _serial = serial();
    let s = setup();
    // The first poll meets a 0.9 s handshake, then an answer that never
    // comes (the fault changes while the handshake is under way).
    s.worker
        .set_fault(Fault::SlowHandshake(Duration::from_millis(900)));
    let addr = s.worker.addr();
    let worker = &s.worker;
    let updater = UpdaterClient::new(
        &s.pki.master,
        &addr.ip().to_string(),
        addr.port(),
        &s.worker.fingerprint(),
        HostnameVerification::On,
    )
    .unwrap();
    let began = Instant::now();
    let (result, took) = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            worker.set_fault(Fault::Stall(Duration::from_secs(10)));
        });
        let result = updater.wait_for_release(
            "abc123",
            Duration::from_millis(1200),
            Duration::from_millis(50),
        );
        (result, began.elapsed())
    });
    match result {
        Err(Error::Timeout {
            phase: TimeoutPhase::Deadline,
            ..
        }) => {}
        other => panic!("expected the deadline, got {other:?}"),
    }
    assert!(took < Duration::from_millis(1500), "waited {took:?}");

    s.worker.set_fault(Fault::None);
    let wrong = UpdaterClient::new(
        &s.pki.master,
        &addr.ip().to_string(),
        addr.port(),
        &"ab".repeat(32),
        HostnameVerification::On,
    )
    .unwrap();
    let began = Instant::now();
    let result =
        wrong.wait_for_release("abc123", Duration::from_secs(5), Duration::from_millis(50));
    assert!(
        matches!(result, Err(Error::PinMismatch { .. })),
        "expected the pin mismatch, got {result:?}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
}
