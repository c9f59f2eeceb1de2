//! A fleet's sweep niceness: the sweep's worker threads, which do the TLS
//! work, run that many nice levels below the caller; the caller's thread,
//! where the results and callbacks arrive, keeps its priority.
//!
//! One test in its own binary: it sets the process-wide event hook, which
//! runs on the thread doing the work, to read each worker thread's nice.
#![cfg(target_os = "linux")]

mod common;

use std::sync::{Arc, Mutex};

use common::thread_nice;

use decnet_agent_client::events::{self, Level};
use decnet_agent_client::fleet::{Call, Flow, SweepOptions};
use decnet_agent_client::testkit::{Behaviour, Swarm, TestPki};
use decnet_agent_client::{ErrorKind, Fleet, HostnameVerification, Outcome};

/// Sweeps `health` over `fleet` and returns the nice values seen on the
/// threads that answered (the worker threads) and in the callback.
fn sweep_nice_values(fleet: &Fleet, answered_on: &Arc<Mutex<Vec<i32>>>) -> (Vec<i32>, Vec<i32>) {
    answered_on.lock().unwrap().clear();
    let mut in_callback = Vec::new();
    let results = fleet
        .sweep_all(&Call::Health, SweepOptions::default(), |_| {
            in_callback.push(thread_nice());
            Flow::Continue
        })
        .unwrap();
    assert!(
        results.iter().all(|r| matches!(r.outcome, Outcome::Ok(_))),
        "{results:?}"
    );
    let answered = answered_on.lock().unwrap().clone();
    assert_eq!(answered.len(), results.len(), "one answer per host");
    (answered, in_callback)
}

#[test]
fn sweep_worker_threads_run_below_the_caller_and_callbacks_do_not() {
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::Healthy; 6]).unwrap();
    let fleet =
        Fleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On).unwrap();
    let answered_on = Arc::new(Mutex::new(Vec::new()));
    let record = answered_on.clone();
    events::set_hook(Level::Info, move |event| {
        if event.name() == "request.answered" {
            record.lock().unwrap().push(thread_nice());
        }
    });
    let caller = thread_nice();

    // By default the workers run at the caller's priority.
    let (answered, in_callback) = sweep_nice_values(&fleet, &answered_on);
    assert!(
        answered.iter().all(|&n| n == caller),
        "{answered:?} vs {caller}"
    );
    assert!(in_callback.iter().all(|&n| n == caller), "{in_callback:?}");

    fleet.set_sweep_niceness(7).unwrap();
    let (answered, in_callback) = sweep_nice_values(&fleet, &answered_on);
    let lowered = (caller + 7).min(19);
    assert!(
        answered.iter().all(|&n| n == lowered),
        "{answered:?} vs {lowered}"
    );
    assert!(in_callback.iter().all(|&n| n == caller), "{in_callback:?}");
    assert_eq!(
        thread_nice(),
        caller,
        "the caller's own priority is unchanged"
    );

    let error = fleet.set_sweep_niceness(20).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    assert!(error.to_string().contains("niceness"), "{error}");
    events::clear_hook();
}
