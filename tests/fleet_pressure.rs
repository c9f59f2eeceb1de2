//! The fleet's promises under pressure: a sweep deadline ends the work it
//! cuts (no request leaves afterwards, no thread outlives the sweep), a
//! stop stops the next host, and a hook may call back into the client it
//! is raised from.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use decnet_agent_client::events::{self, Level};
use decnet_agent_client::fleet::{error_to_json, Call, Flow, SweepOptions};
use decnet_agent_client::testkit::{raise_fd_limit, Behaviour, Fault, Swarm, TestPki};
use decnet_agent_client::{Error, Fleet, HostnameVerification, Outcome, TimeoutPhase};
use serde_json::json;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    raise_fd_limit(8192).expect("raise the soft fd limit");
    guard
}

fn fleet_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("decnet-fleet"))
        .count()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn fleet_of(pki: &TestPki, swarm: &Swarm) -> Fleet {
    Fleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On).unwrap()
}

/// Ten hosts whose handshake is slower than the deadline: each is cut with
/// nothing sent, no fleet thread outlives the sweep, and seconds later no
/// worker has received the deploy.
#[test]
fn a_deadline_cut_deploy_is_never_sent_afterwards() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::Healthy; 10]).unwrap();
    for member in swarm.members() {
        let worker = member.worker.as_ref().unwrap();
        worker.set_fault(Fault::TrickleHandshake(Duration::from_millis(2)));
    }
    let fleet = fleet_of(&pki, &swarm);
    let call = Call::from_json(
        "deploy",
        &json!({"config": {"deckies": [{"name": "d1", "services": ["ssh"]}]}}),
    )
    .unwrap();
    let (threads, fds) = (fleet_threads(), open_fds());
    let began = Instant::now();
    let options = SweepOptions {
        concurrency: Some(10),
        deadline: Some(Duration::from_millis(400)),
    };
    let results = fleet.sweep_all(&call, options, |_| Flow::Continue).unwrap();
    let took = began.elapsed();
    assert_eq!(
        fleet_threads(),
        threads,
        "fleet threads right after the sweep"
    );
    assert!(took < Duration::from_secs(2), "the sweep took {took:?}");
    for result in &results {
        match &result.outcome {
            Outcome::Err(
                e @ Error::Timeout {
                    phase: TimeoutPhase::Deadline,
                    ..
                },
            ) => assert_eq!(error_to_json(e)["may_have_reached_worker"], false, "{e:?}"),
            other => panic!("expected a deadline timeout, got {other:?}"),
        }
    }
    thread::sleep(Duration::from_secs(3));
    for member in swarm.members() {
        let ledger = member.worker.as_ref().unwrap().ledger();
        assert!(ledger.is_empty(), "{} received {ledger:?}", member.record);
    }
    // The stand-ins notice the closed connections at their next trickled
    // byte; the client holds nothing any more.
    let settle = Instant::now();
    while open_fds() > fds && settle.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open_fds(), fds, "descriptors after the sweep");
}

/// Twenty deadline-cut sweeps against one stalled host leave no thread.
#[test]
fn deadline_cut_sweeps_leave_no_thread() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::Stall(Duration::from_secs(3))]).unwrap();
    let fleet = fleet_of(&pki, &swarm);
    let threads = fleet_threads();
    let options = SweepOptions {
        concurrency: None,
        deadline: Some(Duration::from_millis(150)),
    };
    for _ in 0..20 {
        let results = fleet
            .sweep_all(&Call::Health, options, |_| Flow::Continue)
            .unwrap();
        assert!(matches!(
            results[0].outcome,
            Outcome::Err(Error::Timeout {
                phase: TimeoutPhase::Deadline,
                ..
            })
        ));
        assert_eq!(fleet_threads(), threads, "fleet threads after a sweep");
    }
}

/// A canary at concurrency 1 stopped after host 1 never touches host 2.
#[test]
fn a_canary_stopped_after_host_one_never_touches_host_two() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::Healthy; 2]).unwrap();
    let second = swarm.members()[1].worker.as_ref().unwrap();
    for run in 0..20 {
        let fleet = fleet_of(&pki, &swarm);
        let options = SweepOptions {
            concurrency: Some(1),
            deadline: None,
        };
        let results = fleet
            .sweep_all(&Call::Status, options, |_| Flow::Stop)
            .unwrap();
        assert!(results[0].is_ok(), "run {run}: {:?}", results[0]);
        assert!(
            matches!(results[1].outcome, Outcome::NotAttempted),
            "run {run}: {:?}",
            results[1]
        );
        assert_eq!(second.connections(), 0, "run {run}: host 2 was contacted");
    }
}

/// A hook that calls health() on the same client from every event,
/// `connection.retired` included, with several threads on that client:
/// nothing deadlocks.
#[test]
fn a_hook_may_call_the_same_client_from_every_event() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::ClosesIdle(Duration::from_millis(30))]).unwrap();
    let fleet = Arc::new(fleet_of(&pki, &swarm));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (fleet, seen) = (fleet.clone(), seen.clone());
        events::set_hook(Level::Trace, move |event| {
            seen.lock().unwrap().push(event.name().to_string());
            let _ = fleet.client(0).unwrap().health();
            if event.name() == "request.sent" {
                // Long enough for the worker to close the idle connection
                // the call is about to take from the pool: ureq retires it.
                thread::sleep(Duration::from_millis(100));
            }
        });
    }
    let (tx, rx) = mpsc::channel();
    for _ in 0..4 {
        let (fleet, tx) = (fleet.clone(), tx.clone());
        thread::spawn(move || {
            for _ in 0..8 {
                let _ = fleet.client(0).unwrap().health();
                thread::sleep(Duration::from_millis(60));
            }
            let _ = tx.send(());
        });
    }
    drop(tx);
    let until = Instant::now() + Duration::from_secs(60);
    for n in 0..4 {
        let left = until.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            events::clear_hook();
            panic!("thread {n} of 4 never finished: a hook deadlocked the client");
        }
    }
    events::clear_hook();
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|name| name == "connection.retired"),
        "no connection.retired raised: {seen:?}"
    );
}
