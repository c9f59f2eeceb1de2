//! Completion queues over real TLS on loopback: every call completes once,
//! the descriptor is readable while completions wait, threads stay
//! within their bound and below the caller's priority, withdrawn and
//! dropped calls are never sent, and a dropped queue's threads end.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{client_for, nice_in_stat, setup, thread_nice};
use decnet_agent_client::completions::{Completion, Completions};
use decnet_agent_client::fleet::Call;
use decnet_agent_client::testkit::{Fault, StandInWorker, TestPki};
use decnet_agent_client::{AgentClient, ErrorKind};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use serde_json::json;

/// Tests that count the process's completion threads run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the queue's descriptor becomes readable within `wait`.
fn readable(queue: &Completions, wait: Duration) -> bool {
    let fd = queue.notify_fd();
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec::try_from(wait).unwrap();
    poll(&mut fds, Some(&timeout)).unwrap() == 1
}

/// Pops completions as the descriptor reports them until `count` came.
fn collect(queue: &Completions, count: usize) -> Vec<Completion> {
    let started = Instant::now();
    let mut done = Vec::new();
    while done.len() < count {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {} came",
            done.len()
        );
        if readable(queue, Duration::from_secs(1)) {
            while let Some(completion) = queue.pop() {
                done.push(completion);
            }
        }
    }
    done
}

fn health(
    client: &Arc<AgentClient>,
) -> impl FnOnce() -> decnet_agent_client::Result<serde_json::Value> {
    let client = client.clone();
    move || Call::Health.run(&client)
}

/// The nice values of this process's completion threads, from
/// `/proc/self/task/*/stat`.
fn completion_thread_nice() -> Vec<i32> {
    let mut values = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim_end() != "decnet-completi" {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        values.push(nice_in_stat(&stat));
    }
    values
}

#[test]
fn every_call_completes_once_and_the_descriptor_is_readable_while_some_wait() {
    let _serial = serial();
    let s = setup();
    let client = Arc::new(s.client);
    let queue = Completions::new(4, 0).unwrap();
    assert!(
        !readable(&queue, Duration::ZERO),
        "readable before any call"
    );

    for tag in 1..=20 {
        queue.submit(tag, health(&client)).unwrap();
    }
    let teardown = Call::from_json("teardown", &json!({"decky_id": "d1"})).unwrap();
    let c = client.clone();
    queue.submit(21, move || teardown.run(&c)).unwrap();
    let done = collect(&queue, 21);
    let tags: BTreeSet<u64> = done.iter().map(|c| c.tag).collect();
    assert_eq!(tags, (1..=21).collect(), "each tag exactly once");
    assert_eq!(done.len(), 21);
    for completion in &done {
        let answer = completion.outcome.as_ref().unwrap();
        if completion.tag == 21 {
            assert_eq!(completion.to_json()["outcome"], "ok");
        } else {
            assert_eq!(answer, &json!({"status": "ok"}));
        }
    }
    assert!(queue.threads() <= 4, "{} threads", queue.threads());
    assert!(
        !readable(&queue, Duration::ZERO),
        "readable with none waiting"
    );
    assert!(queue.pop().is_none());
    let ledger = s.worker.ledger();
    assert_eq!(ledger.iter().filter(|e| e.path == "/health").count(), 20);
    assert_eq!(ledger.iter().filter(|e| e.path == "/teardown").count(), 1);

    // Three finished calls: readable while any waits; quiet once popping
    // finds none.
    for tag in 30..33 {
        queue.submit(tag, health(&client)).unwrap();
    }
    let started = Instant::now();
    while queue.waiting() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5));
    }
    for left in (0..3).rev() {
        assert!(readable(&queue, Duration::ZERO), "{} waiting", left + 1);
        assert!(queue.pop().is_some());
        assert_eq!(queue.waiting(), left);
    }
    assert!(queue.pop().is_none());
    assert!(!readable(&queue, Duration::ZERO));

    // A tag names one call until its completion is popped.
    queue.submit(40, health(&client)).unwrap();
    assert_eq!(
        queue.submit(40, health(&client)).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(collect(&queue, 1)[0].tag, 40);
    queue.submit(40, health(&client)).unwrap();
    assert_eq!(collect(&queue, 1)[0].tag, 40);
}

#[test]
fn errors_complete_with_their_kind_and_a_panic_is_an_internal_error() {
    let _serial = serial();
    let s = setup();
    let server_error = Arc::new(client_for(&s.pki, &s.worker, true));
    // A worker whose certificate is not the one pinned: a pin mismatch.
    let other = decnet_agent_client::testkit::StandInWorker::start(
        &s.pki.worker_bundle("worker-2").unwrap(),
    )
    .unwrap();
    let mut record = other.host_record("worker-2", true);
    record["client_cert_fingerprint"] = json!(s.worker.fingerprint());
    let wrong = Arc::new(
        AgentClient::new(
            &s.pki.master,
            decnet_agent_client::HostRecord::from_value(&record).unwrap(),
            decnet_agent_client::HostnameVerification::On,
        )
        .unwrap(),
    );
    s.worker.set_fault(Fault::ServerError);

    let queue = Completions::new(2, 0).unwrap();
    queue.submit(1, health(&wrong)).unwrap();
    queue.submit(2, health(&server_error)).unwrap();
    queue
        .submit(3, || -> decnet_agent_client::Result<serde_json::Value> {
            panic!("a job that panics")
        })
        .unwrap();
    let mut done = collect(&queue, 3);
    done.sort_by_key(|c| c.tag);
    let kinds: Vec<ErrorKind> = done
        .iter()
        .map(|c| c.outcome.as_ref().unwrap_err().kind())
        .collect();
    assert_eq!(
        kinds,
        [
            ErrorKind::PinMismatch,
            ErrorKind::HttpStatus,
            ErrorKind::Internal
        ]
    );
    let pin = done[0].to_json();
    assert_eq!(pin["outcome"], "error");
    assert_eq!(pin["error"]["kind"], "pin_mismatch");
    assert_eq!(pin["error"]["may_have_reached_worker"], false);
    assert_eq!(done[1].to_json()["error"]["http_status"], 500);
    // The queue goes on after a panic.
    queue.submit(4, health(&wrong)).unwrap();
    assert_eq!(collect(&queue, 1)[0].tag, 4);
}

#[test]
fn no_more_calls_run_at_once_than_the_queue_has_threads() {
    let _serial = serial();
    let s = setup();
    s.worker.set_fault(Fault::Stall(Duration::from_millis(300)));
    let client = Arc::new(s.client);
    let queue = Completions::new(3, 0).unwrap();
    let started = Instant::now();
    for tag in 0..9 {
        queue.submit(tag, health(&client)).unwrap();
    }
    assert_eq!(queue.threads(), 3);
    let done = collect(&queue, 9);
    // Three waves of three 300 ms answers.
    assert!(
        started.elapsed() >= Duration::from_millis(850),
        "{:?}",
        started.elapsed()
    );
    assert!(done.iter().all(|c| c.outcome.is_ok()));
    assert_eq!(queue.threads(), 3, "idle threads stay for the next calls");
}

/// A one-thread queue whose thread runs tag 1, a `/health` the worker
/// answers after 400 ms, while tag 2, a `/self-destruct`, waits behind it;
/// the worker (and the PKI it was issued from); and when the wait began.
fn health_running_self_destruct_queued() -> (StandInWorker, TestPki, Completions, Instant) {
    let common::Setup {
        pki,
        worker,
        client,
    } = setup();
    worker.set_fault(Fault::Stall(Duration::from_millis(400)));
    let client = Arc::new(client);
    let queue = Completions::new(1, 0).unwrap();
    queue.submit(1, health(&client)).unwrap();
    queue.submit(2, move || client.self_destruct()).unwrap();
    let started = Instant::now();
    while worker.ledger().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(2));
    }
    (worker, pki, queue, started)
}

#[test]
fn a_withdrawn_call_is_never_sent_and_a_running_one_cannot_be_withdrawn() {
    let _serial = serial();
    let (worker, _pki, queue, _) = health_running_self_destruct_queued();
    assert!(!queue.withdraw(1), "tag 1 is running");
    assert!(queue.withdraw(2), "tag 2 is still queued");
    assert!(!queue.withdraw(2), "withdrawn once");
    assert!(!queue.withdraw(3), "no call has tag 3");
    let done = collect(&queue, 1);
    assert_eq!(done[0].tag, 1);
    std::thread::sleep(Duration::from_millis(600));
    assert!(queue.pop().is_none(), "no completion for a withdrawn call");
    let paths: Vec<String> = worker.ledger().into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["/health"]);
}

#[test]
fn a_dropped_queue_sends_nothing_queued_and_its_threads_end_after_the_call_in_flight() {
    let _serial = serial();
    let (worker, _pki, queue, started) = health_running_self_destruct_queued();
    assert_eq!(completion_thread_nice().len(), 1);
    drop(queue);
    while !completion_thread_nice().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the completion thread outlived its call"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let paths: Vec<String> = worker.ledger().into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["/health"], "the queued self-destruct was sent");
}

#[test]
fn completion_threads_run_below_the_callers_priority() {
    let _serial = serial();
    let s = setup();
    s.worker.set_fault(Fault::Stall(Duration::from_millis(300)));
    let client = Arc::new(s.client);
    let caller = thread_nice();
    let queue = Completions::new(2, 7).unwrap();
    queue.submit(1, health(&client)).unwrap();
    queue.submit(2, health(&client)).unwrap();
    let expected = [(caller + 7).min(19); 2];
    let started = Instant::now();
    // Each thread lowers itself as it starts.
    while completion_thread_nice() != expected {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            completion_thread_nice()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(thread_nice(), caller, "the caller keeps its priority");
    collect(&queue, 2);
    assert!(Completions::new(1, 20).is_err());
    assert!(Completions::new(0, 0).is_err());
    assert!(Completions::new(1025, 0).is_err());
}

#[test]
fn detached_work_runs_on_a_completion_thread_and_posts_nothing() {
    let _serial = serial();
    let queue = Completions::new(2, 0).unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    queue
        .detach(move || {
            let name = std::thread::current().name().map(str::to_string);
            sender.send(name).unwrap();
        })
        .unwrap();
    let name = receiver.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(name.as_deref(), Some("decnet-completion"));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(queue.waiting(), 0);
    assert!(queue.pop().is_none());
    assert!(!readable(&queue, Duration::ZERO));
}

#[test]
fn a_streaming_call_posts_its_steps_then_its_completion_and_keeps_its_tag_until_then() {
    let _serial = serial();
    let queue = Completions::new(1, 0).unwrap();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    queue
        .submit_streaming(7, move |progress| {
            for step in 0..3 {
                progress.post(json!({ "step": step }));
            }
            wait.recv_timeout(Duration::from_secs(10)).unwrap();
            Ok(json!("done"))
        })
        .unwrap();
    let steps = collect(&queue, 3);
    assert!(steps.iter().all(|c| c.tag == 7 && c.partial));
    assert_eq!(steps[2].to_json()["outcome"], "progress");
    assert_eq!(steps[2].to_json()["result"], json!({"step": 2}));
    assert_eq!(
        queue.submit(7, || Ok(json!(null))).unwrap_err().kind(),
        ErrorKind::InvalidArgument,
        "the tag is in use until the last completion is popped"
    );
    go.send(()).unwrap();
    let last = collect(&queue, 1).pop().unwrap();
    assert!(!last.partial);
    assert_eq!(last.to_json()["outcome"], "ok");
    queue.submit(7, || Ok(json!(null))).unwrap();
    assert_eq!(collect(&queue, 1)[0].tag, 7);
}

#[test]
fn withdrawing_a_running_streaming_call_asks_it_to_stop() {
    let _serial = serial();
    let queue = Completions::new(1, 0).unwrap();
    queue
        .submit_streaming(1, |progress| {
            let started = Instant::now();
            let mut steps = 0;
            while !progress.stop_asked() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "never asked to stop"
                );
                progress.post(json!(steps));
                steps += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(json!({ "stopped_after": steps }))
        })
        .unwrap();
    collect(&queue, 1); // it is running
    assert!(!queue.withdraw(1), "a running call is not withdrawn");
    let started = Instant::now();
    let last = loop {
        assert!(started.elapsed() < Duration::from_secs(20));
        let Some(completion) = collect(&queue, 1).pop() else {
            continue;
        };
        if !completion.partial {
            break completion;
        }
    };
    assert!(last.outcome.unwrap()["stopped_after"].as_u64().unwrap() >= 1);
}
