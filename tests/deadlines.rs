//! Every phase of a call has a total deadline that a worker cannot stretch,
//! whatever its pace: connect (TCP and the whole TLS handshake), write
//! (sending the request) and read (the response head and body together).
//!
//! Each test shortens one timeout of the control profile, leaves the others
//! long, drives the stand-in into one fault, and checks the kind, the phase
//! and the time the call took (printed: the README's reliability table
//! quotes these figures; run with `--nocapture` to see them).

mod common;

use std::time::{Duration, Instant};

use common::{setup, Setup};
use decnet_agent_client::testkit::Fault;
use decnet_agent_client::{Error, Profile, TimeoutPhase, Timeouts};
use serde_json::{json, Value};

const SHORT: Duration = Duration::from_millis(1_000);
const LONG: Duration = Duration::from_secs(20);
/// How much later than its timeout a call may end in these tests: the
/// library aims at 10 % + 100 ms; a loaded CI machine gets a full second.
const SLACK: Duration = Duration::from_millis(1_000);

fn profile(connect: Duration, write: Duration, read: Duration) -> Timeouts {
    Timeouts {
        connect,
        read,
        write,
        pool: LONG,
    }
}

/// Runs `call` under `fault` and returns the error and how long it took.
fn timed_failure(
    s: &Setup,
    fault: Fault,
    timeouts: Timeouts,
    call: impl FnOnce(&Setup) -> Result<Value, Error>,
) -> (Error, Duration) {
    s.client.set_timeouts(Profile::Control, timeouts).unwrap();
    s.worker.set_fault(fault);
    let started = Instant::now();
    let result = call(s);
    let took = started.elapsed();
    s.worker.set_fault(Fault::None);
    match result {
        Err(e) => (e, took),
        Ok(value) => panic!("{fault:?}: expected a failure, got {value}"),
    }
}

#[track_caller]
fn expect_timeout(case: &str, error: &Error, took: Duration, phase: TimeoutPhase, limit: Duration) {
    println!("{case}: {error} after {} ms", took.as_millis());
    match error {
        Error::Timeout { phase: got, .. } if *got == phase => {}
        other => panic!("{case}: expected a {phase} timeout, got {other:?}"),
    }
    assert!(took >= limit, "{case}: ended before its timeout: {took:?}");
    assert!(
        took < limit + SLACK,
        "{case}: took {took:?}, limit {limit:?}"
    );
}

#[test]
fn a_worker_that_accepts_tcp_and_never_speaks_times_out_in_the_handshake() {
    let s = setup();
    let (error, took) = timed_failure(&s, Fault::SilentTcp, profile(SHORT, LONG, LONG), |s| {
        s.client.health()
    });
    expect_timeout("silent TCP", &error, took, TimeoutPhase::Handshake, SHORT);
}

#[test]
fn a_trickled_handshake_is_bounded_by_the_connect_timeout() {
    let s = setup();
    // A server flight is over a kilobyte: minutes at this pace.
    let fault = Fault::TrickleHandshake(Duration::from_millis(50));
    let (error, took) = timed_failure(&s, fault, profile(SHORT, LONG, LONG), |s| s.client.health());
    expect_timeout(
        "trickled handshake",
        &error,
        took,
        TimeoutPhase::Handshake,
        SHORT,
    );
}

#[test]
fn a_trickled_response_head_is_bounded_by_the_read_timeout() {
    let s = setup();
    let fault = Fault::TrickleHead(Duration::from_millis(50));
    let (error, took) = timed_failure(&s, fault, profile(LONG, LONG, SHORT), |s| s.client.status());
    expect_timeout("trickled head", &error, took, TimeoutPhase::Read, SHORT);
}

#[test]
fn a_trickled_response_body_is_bounded_by_the_read_timeout() {
    let s = setup();
    let fault = Fault::TrickleBody(Duration::from_millis(50));
    let (error, took) = timed_failure(&s, fault, profile(LONG, LONG, SHORT), |s| s.client.status());
    expect_timeout("trickled body", &error, took, TimeoutPhase::Read, SHORT);
}

#[test]
fn head_and_body_share_one_read_budget() {
    let s = setup();
    // A deployment of 30 deckies answers with a body of ~400 bytes after a
    // head of ~90: dripped 9 ms apart, the head alone takes ~0.8 s of the
    // 1 s read timeout and the body would take ~3.6 s. One budget for both
    // ends the call at 1 s; a budget per part would allow ~1.8 s.
    let deckies: Vec<Value> = (0..30)
        .map(|i| json!({"name": format!("decky-{i:02}"), "services": ["ssh"]}))
        .collect();
    let config = json!({ "deckies": deckies });
    let fault = Fault::Drip(Duration::from_millis(9));
    let (error, took) = timed_failure(&s, fault, profile(LONG, LONG, SHORT), |s| {
        s.client.deploy(&config, false, false)
    });
    expect_timeout("dripped response", &error, took, TimeoutPhase::Read, SHORT);
    assert!(
        took < SHORT + Duration::from_millis(600),
        "head and body had a budget each: {took:?}"
    );
}

#[test]
fn a_worker_that_stops_reading_a_large_request_times_out_in_the_write_phase() {
    let s = setup();
    // Far more than loopback's socket buffers hold for a peer that never
    // reads (~4 MiB here).
    let config = json!({
        "deckies": [{"name": "d", "services": ["ssh"], "padding": "x".repeat(16 << 20)}],
    });
    // Serialising the body happens before the write phase starts; allow
    // for it (debug builds are slow at it).
    let started = Instant::now();
    let body_len = config.to_string().len();
    let serialising = started.elapsed();
    let (error, took) = timed_failure(&s, Fault::StopReading, profile(LONG, SHORT, LONG), |s| {
        s.client.deploy(&config, false, false)
    });
    println!(
        "stopped reading: a {body_len}-byte body takes {} ms to serialise",
        serialising.as_millis()
    );
    println!(
        "stopped reading: {error} after {} ms, of which ~{} ms before the first byte",
        took.as_millis(),
        serialising.as_millis()
    );
    match &error {
        Error::Timeout {
            phase: TimeoutPhase::Write,
            ..
        } => {}
        other => panic!("expected a write timeout, got {other:?}"),
    }
    assert!(took >= SHORT, "ended before its timeout: {took:?}");
    assert!(took < SHORT + serialising * 2 + SLACK, "took {took:?}");
}

#[test]
fn a_stall_before_the_answer_is_a_read_timeout_not_a_double_wait() {
    let s = setup();
    let (error, took) = timed_failure(
        &s,
        Fault::Stall(Duration::from_secs(10)),
        profile(LONG, LONG, SHORT),
        |s| {
            s.client.deploy(
                &json!({"deckies": [{"name": "d", "services": ["ssh"]}]}),
                false,
                false,
            )
        },
    );
    expect_timeout("stalled answer", &error, took, TimeoutPhase::Read, SHORT);
}

#[test]
fn an_oversized_response_head_is_a_protocol_error_naming_the_limit() {
    let s = setup();
    let (error, took) = timed_failure(
        &s,
        Fault::OversizedHead(4 << 20),
        profile(LONG, LONG, LONG),
        |s| s.client.health(),
    );
    println!("oversized head: {error} after {} ms", took.as_millis());
    match &error {
        Error::Protocol { reason } => assert!(reason.contains("16384 bytes"), "{reason}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(took < SLACK, "{took:?}");
}
