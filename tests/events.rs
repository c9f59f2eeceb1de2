//! The structured event hook: which events one call raises, in which
//! order, with which fields; that none carries key material; that nothing
//! is built while nobody listens; and that a panicking, slow or re-entrant
//! hook leaves the call intact.

mod common;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{client_for, expect_kind, setup, Setup};
use decnet_agent_client::events::{self, built_count, clear_hook, set_hook};
use decnet_agent_client::testkit::{Fault, StandInWorker};
use decnet_agent_client::{
    AgentClient, ErrorKind, Event, HostRecord, HostnameVerification, Level, Profile, Timeouts,
};
use serde_json::{json, Value};

/// The hook is process-wide: the tests of this file take turns.
static TURN: Mutex<()> = Mutex::new(());

/// Events seen by a recording hook, cleared when dropped.
struct Recorder {
    _turn: MutexGuard<'static, ()>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    fn start(level: Level) -> Self {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        set_hook(level, move |event| sink.lock().unwrap().push(event.clone()));
        Recorder {
            _turn: turn,
            events,
        }
    }

    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        clear_hook();
    }
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::name).collect()
}

fn field<'a>(events: &'a [Event], name: &str, key: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e.name() == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(events)))
        .field(key)
        .unwrap_or_else(|| panic!("{name} has no {key}"))
}

fn address(s: &Setup) -> String {
    format!("127.0.0.1:{}", s.worker.port())
}

#[test]
fn one_call_raises_its_events_in_order_with_their_fields() {
    let s = setup();
    let recorder = Recorder::start(Level::Trace);
    s.client.health().unwrap();
    let first = recorder.take();
    assert_eq!(
        names(&first),
        [
            "request.sent",
            "connection.opened",
            "request.answered",
            "response.body"
        ]
    );
    for event in &first {
        assert_eq!(event.field("address"), Some(&json!(address(&s))));
    }
    let opened = |key| field(&first, "connection.opened", key);
    assert_eq!(opened("handshake"), "full");
    assert_eq!(opened("tls_version"), "TLS1.3");
    assert_eq!(opened("peer_fingerprint"), &json!(s.worker.fingerprint()));
    assert!(opened("tcp_ms").as_f64().unwrap() >= 0.0);
    assert!(opened("handshake_ms").as_f64().unwrap() > 0.0);
    let answered = |key| field(&first, "request.answered", key);
    assert_eq!(answered("method"), "GET");
    assert_eq!(answered("path"), "/health");
    assert_eq!(answered("status"), 200);
    let body = field(&first, "response.body", "body").as_str().unwrap();
    assert_eq!(answered("bytes"), &json!(body.len()));
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"status": "ok"})
    );
    assert!(answered("duration_ms").as_f64().unwrap() > 0.0);
    assert_eq!(first[0].level(), Level::Debug);
    assert_eq!(first[1].level(), Level::Info);
    assert_eq!(first[3].level(), Level::Trace);

    // The second call rides the pooled connection; a POST shows its body.
    s.client.mutate("d1", &["ssh"], false).unwrap();
    let second = recorder.take();
    assert_eq!(
        names(&second),
        [
            "request.sent",
            "request.body",
            "connection.reused",
            "request.answered",
            "response.body"
        ]
    );
    assert_eq!(field(&second, "connection.reused", "request"), 2);
    assert_eq!(field(&second, "connection.reused", "warm"), false);
    let sent = field(&second, "request.body", "body").as_str().unwrap();
    assert_eq!(field(&second, "request.sent", "bytes"), &json!(sent.len()));
    assert!(sent.contains("\"ssh\""), "{sent}");

    // At info: one line per connection and per answer, no bodies.
    drop(recorder);
    let recorder = Recorder::start(Level::Info);
    s.client.status().unwrap();
    assert_eq!(names(&recorder.take()), ["request.answered"]);
    // The JSON line names level and event first.
    s.client.health().unwrap();
    let line = recorder.take()[0].to_json();
    assert!(
        line.starts_with(r#"{"level":"info","event":"request.answered","address":"#),
        "{line}"
    );
}

#[test]
fn connect_then_call_reports_the_warm_connection() {
    let s = setup();
    let recorder = Recorder::start(Level::Debug);
    s.client.connect().unwrap();
    s.client.health().unwrap();
    let events = recorder.take();
    assert_eq!(
        names(&events),
        [
            "connection.opened",
            "request.sent",
            "connection.reused",
            "request.answered"
        ]
    );
    assert_eq!(field(&events, "connection.reused", "warm"), true);
}

#[test]
fn a_reconnect_after_an_idle_close_retires_the_old_connection_and_resumes() {
    let s = setup();
    s.worker
        .set_fault(Fault::CloseIdleAfter(Duration::from_millis(50)));
    let recorder = Recorder::start(Level::Debug);
    s.client.health().unwrap();
    std::thread::sleep(Duration::from_millis(250));
    s.client.status().unwrap();
    let events = recorder.take();
    assert_eq!(
        names(&events),
        [
            "request.sent",
            "connection.opened",
            "request.answered",
            "request.sent",
            "connection.retired",
            "connection.opened",
            "request.answered"
        ]
    );
    assert_eq!(events[1].field("handshake"), Some(&json!("full")));
    assert_eq!(
        events[4].field("reason"),
        Some(&json!("closed by the worker"))
    );
    assert_eq!(events[4].field("requests"), Some(&json!(1)));
    assert_eq!(events[5].field("handshake"), Some(&json!("resumed")));
    assert_eq!(
        events[5].field("peer_fingerprint"),
        Some(&json!(s.worker.fingerprint()))
    );

    // Resumption off: the reconnect is a full handshake again.
    s.client.set_session_resumption(false);
    std::thread::sleep(Duration::from_millis(250));
    s.client.health().unwrap();
    let events = recorder.take();
    let opened: Vec<&Event> = events
        .iter()
        .filter(|e| e.name() == "connection.opened")
        .collect();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].field("handshake"), Some(&json!("full")));
}

#[test]
fn a_stale_get_is_reported_as_sent_again_then_failed() {
    let s = setup();
    let recorder = Recorder::start(Level::Warn);
    s.client.health().unwrap();
    assert!(
        recorder.take().is_empty(),
        "a good call raises nothing at warn"
    );
    s.worker.set_fault(Fault::CloseAfterRequest);
    expect_kind(s.client.status(), ErrorKind::ConnectionLost);
    let events = recorder.take();
    assert_eq!(names(&events), ["request.retried", "request.failed"]);
    assert_eq!(events[0].level(), Level::Warn);
    assert_eq!(events[0].field("path"), Some(&json!("/status")));
    assert!(events[0].field("reason").unwrap().is_string());
    assert_eq!(events[1].field("kind"), Some(&json!("connection_lost")));

    // A POST is never sent again, so never reported so.
    s.worker.set_fault(Fault::None);
    s.client.health().unwrap();
    s.worker.set_fault(Fault::CloseAfterRequest);
    expect_kind(
        s.client.mutate("d1", &["ssh"], false),
        ErrorKind::ConnectionLost,
    );
    assert_eq!(names(&recorder.take()), ["request.failed"]);
}

#[test]
fn every_failure_is_reported_with_its_kind() {
    let s = setup();
    let recorder = Recorder::start(Level::Error);

    s.worker.set_fault(Fault::ServerError);
    expect_kind(s.client.health(), ErrorKind::HttpStatus);
    s.worker.set_fault(Fault::NonJsonBody);
    expect_kind(s.client.health(), ErrorKind::Protocol);
    s.worker.set_fault(Fault::Stall(Duration::from_millis(600)));
    let mut short = s.client.timeouts(Profile::Control);
    short.read = Duration::from_millis(150);
    s.client.set_timeouts(Profile::Control, short).unwrap();
    expect_kind(s.client.health(), ErrorKind::Timeout);
    s.worker.set_fault(Fault::None);

    let other = s.pki.worker_bundle("worker-2").unwrap();
    let impostor = StandInWorker::start(&other).unwrap();
    let mut record = HostRecord::from_value_unpinned(&impostor.host_record("w", false)).unwrap();
    record.pin = Some(s.worker.fingerprint());
    let pinned = AgentClient::new(&s.pki.master, record, HostnameVerification::On).unwrap();
    expect_kind(pinned.health(), ErrorKind::PinMismatch);
    let port = impostor.port();
    drop(impostor);
    let unreachable = AgentClient::new_unpinned(
        &s.pki.master,
        HostRecord::new("127.0.0.1", port).unwrap(),
        HostnameVerification::On,
    )
    .unwrap();
    expect_kind(unreachable.connect(), ErrorKind::Connect);
    expect_kind(unreachable.status(), ErrorKind::Connect);

    let events = recorder.take();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.name(), e.field("kind").unwrap().as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("request.failed", "http_status"),
            ("request.failed", "protocol"),
            ("request.failed", "timeout"),
            ("request.failed", "pin_mismatch"),
            ("connection.failed", "connect"),
            ("request.failed", "connect"),
        ]
    );
    assert!(events.iter().all(|e| e.level() == Level::Error));
    let message = events[0].field("message").unwrap().as_str().unwrap();
    assert!(message.contains("simulated worker failure"), "{message}");
}

#[test]
fn no_event_carries_key_material() {
    let s = setup();
    let recorder = Recorder::start(Level::Trace);
    s.client.connect().unwrap();
    s.client.health().unwrap();
    s.client
        .deploy(
            &json!({"mode": "unihost", "deckies": [{"name": "d1", "services": ["ssh"]}]}),
            true,
            false,
        )
        .ok();
    s.worker.set_fault(Fault::ServerError);
    s.client.status().ok();
    let text: String = recorder.take().iter().map(|e| e.to_json() + "\n").collect();
    assert!(text.lines().count() >= 8, "{text}");
    let master_key = std::fs::read_to_string(s.pki.dir().join("master/worker.key")).unwrap();
    let ca_key = std::fs::read_to_string(s.pki.dir().join("ca.key")).unwrap();
    for pem in [master_key, ca_key] {
        assert!(pem.contains("PRIVATE KEY"));
        let base64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(base64.len() > 40);
        assert!(!text.contains(&base64));
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            // Any 24 consecutive characters of the key's text.
            for start in (0..line.len().saturating_sub(24)).step_by(8) {
                assert!(!text.contains(&line[start..start + 24]), "key text leaked");
            }
        }
    }
    assert!(!text.contains("PRIVATE KEY"));
}

#[test]
fn nothing_is_built_while_no_hook_wants_it() {
    let s = setup();
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    clear_hook();
    assert_eq!(events::hook_level(), None);
    let before = built_count();
    s.client.health().unwrap();
    s.client.mutate("d1", &["ssh"], false).unwrap();
    s.worker.set_fault(Fault::ServerError);
    expect_kind(s.client.health(), ErrorKind::HttpStatus);
    s.worker.set_fault(Fault::None);
    assert_eq!(built_count(), before, "no hook: nothing built");

    // A hook that wants errors only: a good call builds nothing either.
    set_hook(Level::Error, |_| {});
    assert_eq!(events::hook_level(), Some(Level::Error));
    s.client.status().unwrap();
    assert_eq!(built_count(), before, "good calls raise nothing at error");
    s.worker.set_fault(Fault::ServerError);
    expect_kind(s.client.health(), ErrorKind::HttpStatus);
    assert_eq!(built_count(), before + 1, "the failure is built");
    clear_hook();
    drop(turn);
}

#[test]
fn a_panicking_hook_is_contained() {
    let s = setup();
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    set_hook(Level::Trace, |event| {
        panic!("hook panics on {}", event.name())
    });
    for _ in 0..3 {
        assert_eq!(s.client.health().unwrap(), json!({"status": "ok"}));
    }
    s.worker.set_fault(Fault::ServerError);
    let error = expect_kind(s.client.health(), ErrorKind::HttpStatus);
    assert!(error.to_string().contains("simulated worker failure"));
    clear_hook();
}

#[test]
fn a_slow_hook_delays_the_call_but_spends_none_of_its_timeouts() {
    let s = setup();
    // Every phase has 300 ms; the hook takes 400 ms per event.
    let tight = Timeouts {
        connect: Duration::from_millis(300),
        read: Duration::from_millis(300),
        write: Duration::from_millis(300),
        pool: Duration::from_millis(300),
    };
    s.client.set_timeouts(Profile::Control, tight).unwrap();
    let recorder = Recorder::start(Level::Trace);
    let seen = recorder.events.clone();
    set_hook(Level::Trace, move |event| {
        std::thread::sleep(Duration::from_millis(400));
        seen.lock().unwrap().push(event.clone());
    });
    let started = Instant::now();
    s.client.health().unwrap();
    s.client.mutate("d1", &["ssh"], false).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400 * 9));
    let events = recorder.take();
    assert_eq!(events.len(), 9, "{:?}", names(&events));
}

#[test]
fn events_raised_inside_the_hook_are_dropped_and_the_hook_may_call_the_library() {
    let s = setup();
    let client = Arc::new(client_for(&s.pki, &s.worker, true));
    let recorder = Recorder::start(Level::Info);
    let seen = recorder.events.clone();
    let inner = client.clone();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let answers_sink = answers.clone();
    set_hook(Level::Info, move |event| {
        seen.lock().unwrap().push(event.clone());
        if event.name() == "request.answered" {
            // A call from inside the hook: it works, and raises nothing.
            answers_sink.lock().unwrap().push(inner.status().is_ok());
            // Replacing the hook from inside it does not deadlock.
            set_hook(Level::Info, |_| {});
        }
    });
    client.health().unwrap();
    assert_eq!(*answers.lock().unwrap(), [true]);
    assert_eq!(
        names(&recorder.take()),
        ["connection.opened", "request.answered"]
    );
    let paths: Vec<String> = s.worker.ledger().into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["/health", "/status"]);
}

#[test]
fn a_fleet_sweep_reports_its_start_and_end_with_counts() {
    use decnet_agent_client::fleet::{Call, Flow, SweepOptions};
    use decnet_agent_client::Fleet;

    let s = setup();
    let broken = StandInWorker::start(&s.pki.worker_bundle("worker-2").unwrap()).unwrap();
    broken.set_fault(Fault::ServerError);
    let records = [(&s.worker, "a"), (&broken, "b")]
        .iter()
        .map(|(w, name)| HostRecord::from_value(&w.host_record(name, true)).unwrap())
        .collect();
    let fleet = Fleet::new(&s.pki.master, records, HostnameVerification::On).unwrap();
    let recorder = Recorder::start(Level::Info);
    let results = fleet
        .sweep_all(&Call::Health, SweepOptions::default(), |_| Flow::Continue)
        .unwrap();
    assert_eq!(results.len(), 2);
    let events = recorder.take();
    let sweep: Vec<&Event> = events
        .iter()
        .filter(|e| e.name().starts_with("fleet."))
        .collect();
    assert_eq!(sweep.len(), 2, "{:?}", names(&events));
    assert_eq!(sweep[0].name(), "fleet.sweep.started");
    assert_eq!(sweep[0].field("hosts"), Some(&json!(2)));
    assert_eq!(sweep[0].field("deadline_ms"), Some(&Value::Null));
    assert_eq!(sweep[1].name(), "fleet.sweep.ended");
    for (key, value) in [
        ("hosts", json!(2)),
        ("ok", json!(1)),
        ("failed", json!(1)),
        ("timed_out", json!(0)),
        ("not_attempted", json!(0)),
        ("stopped", json!(false)),
    ] {
        assert_eq!(sweep[1].field(key), Some(&value), "{key}");
    }
    // Between them, each host's own events, from its worker thread.
    assert_eq!(events.first().map(Event::name), Some("fleet.sweep.started"));
    assert_eq!(events.last().map(Event::name), Some("fleet.sweep.ended"));
    let failed: Vec<&Event> = events
        .iter()
        .filter(|e| e.name() == "request.failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].field("address"),
        Some(&json!(format!("127.0.0.1:{}", broken.port())))
    );
}
