//! TLS 1.3 resumption that keeps every connection bound to its pin.
//!
//! The stand-in issues tickets (rustls' stateful session cache) and closes
//! idle connections, as the reference worker does after ~5 s; each test
//! reconnects and checks, from both ends, which kind of handshake it got.

mod common;

use std::time::Duration;

use common::{client_for, expect_kind, setup};
use decnet_agent_client::testkit::{Fault, StandInWorker};
use decnet_agent_client::{ErrorKind, HandshakeCounts};

const IDLE_CLOSE: Duration = Duration::from_millis(50);

fn after_idle_close() {
    std::thread::sleep(IDLE_CLOSE * 4);
}

fn counts(full: u64, resumed: u64) -> HandshakeCounts {
    HandshakeCounts { full, resumed }
}

#[test]
fn a_reconnect_after_the_workers_idle_close_resumes_and_is_still_pinned() {
    let s = setup();
    s.worker.set_fault(Fault::CloseIdleAfter(IDLE_CLOSE));
    s.client.health().unwrap();
    for _ in 0..3 {
        after_idle_close();
        s.client.status().unwrap();
    }
    assert_eq!(s.client.handshake_counts(), counts(1, 3));
    assert_eq!(s.client.verification_count(), 1, "the verifier ran once");
    assert_eq!(s.worker.handshakes(), 4, "four connections, one each");
}

#[test]
fn a_worker_restarted_with_another_certificate_gets_a_full_handshake_and_pin_mismatch() {
    let s = setup();
    s.worker.set_fault(Fault::CloseIdleAfter(IDLE_CLOSE));
    s.client.health().unwrap();
    let addr = s.worker.addr();
    drop(s.worker);
    // Same address, another certificate, and no session state: a restart.
    let other = s.pki.worker_bundle("worker-1").unwrap();
    let restarted = StandInWorker::builder(&other).bind(addr).start().unwrap();
    after_idle_close();
    expect_kind(s.client.health(), ErrorKind::PinMismatch);
    assert_eq!(s.client.handshake_counts(), counts(1, 0));
    assert_eq!(
        s.client.verification_count(),
        2,
        "the verifier saw the new certificate"
    );
    assert!(restarted.ledger().is_empty());
}

/// The decided outcome: a worker that keeps its session state but presents
/// another certificate is still the peer that completed the pinned
/// handshake (it holds that session's secret), so a resumed connection to
/// it succeeds; the first full handshake, which a restart or the switch
/// forces, fails with `pin_mismatch`.
#[test]
fn a_worker_that_keeps_its_sessions_but_changes_certificate_fails_at_the_next_full_handshake() {
    let s = setup();
    s.worker.set_fault(Fault::CloseIdleAfter(IDLE_CLOSE));
    s.client.health().unwrap();
    s.worker
        .swap_certificate(&s.pki.worker_bundle("worker-1").unwrap())
        .unwrap();
    after_idle_close();
    s.client.health().unwrap();
    assert_eq!(s.client.handshake_counts(), counts(1, 1));
    s.client.set_session_resumption(false);
    after_idle_close();
    expect_kind(s.client.health(), ErrorKind::PinMismatch);
    assert_eq!(s.client.verification_count(), 2);
}

#[test]
fn a_second_client_never_resumes_the_first_ones_session() {
    let s = setup();
    s.worker.set_fault(Fault::CloseIdleAfter(IDLE_CLOSE));
    s.client.health().unwrap();
    after_idle_close();
    s.client.health().unwrap();
    assert_eq!(s.client.handshake_counts(), counts(1, 1));
    // Same identity, same worker, same pin: still its own ticket store.
    let second = client_for(&s.pki, &s.worker, true);
    second.health().unwrap();
    assert_eq!(second.handshake_counts(), counts(1, 0));
    assert_eq!(second.verification_count(), 1);
}

#[test]
fn with_the_switch_off_every_reconnect_is_a_full_handshake() {
    let s = setup();
    assert!(s.client.session_resumption(), "on by default");
    s.client.set_session_resumption(false);
    assert!(!s.client.session_resumption());
    s.worker.set_fault(Fault::CloseIdleAfter(IDLE_CLOSE));
    for _ in 0..4 {
        s.client.health().unwrap();
        after_idle_close();
    }
    assert_eq!(s.client.handshake_counts(), counts(4, 0));
    assert_eq!(s.client.verification_count(), 4);
    // Off, no ticket was kept either: back on, the first reconnect is full
    // and the next one resumes.
    s.client.set_session_resumption(true);
    s.client.health().unwrap();
    after_idle_close();
    s.client.health().unwrap();
    assert_eq!(s.client.handshake_counts(), counts(5, 1));
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_tickets_keep_memory_bounded() {
    let s = setup();
    let pki = &s.pki;
    // A worker that hands out 100 tickets per handshake and closes each
    // connection after its answer.
    let generous = StandInWorker::builder(&pki.worker_bundle("worker-1").unwrap())
        .tls13_tickets(100)
        .start()
        .unwrap();
    generous.set_fault(Fault::CloseIdleAfter(Duration::from_millis(1)));
    let client = client_for(pki, &generous, true);
    client.health().unwrap();
    let before = resident_kib();
    // Until the worker has offered 10,000 tickets (bounded in count and time).
    let started = std::time::Instant::now();
    for _ in 0..1_000 {
        if generous.handshakes() >= 100 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        client.health().unwrap();
    }
    let grown = resident_kib().saturating_sub(before);
    let handshakes = client.handshake_counts();
    println!(
        "{} tickets offered over {handshakes:?}: resident memory grew {grown} KiB",
        generous.handshakes() * 100
    );
    assert!(generous.handshakes() >= 100, "{}", generous.handshakes());
    assert!(handshakes.resumed >= 99, "{handshakes:?}");
    // Each ticket holds the worker's certificate chain (~1 KiB here): kept
    // unbounded, 10,000 of them would be over 10 MiB.
    assert!(grown < 3 * 1024, "resident memory grew {grown} KiB");
}

#[test]
fn a_tls_1_2_worker_is_never_resumed() {
    let s = setup();
    // TLS 1.2 resumption would reuse the old master secret with no fresh
    // key exchange: it stays off, even against a worker that offers it.
    let worker = StandInWorker::builder(&s.pki.worker_bundle("worker-1").unwrap())
        .tls12_only()
        .start()
        .unwrap();
    worker.set_fault(Fault::CloseIdleAfter(IDLE_CLOSE));
    let client = client_for(&s.pki, &worker, true);
    for _ in 0..3 {
        client.health().unwrap();
        after_idle_close();
    }
    assert_eq!(client.handshake_counts(), counts(3, 0));
    assert_eq!(worker.handshakes(), 3);
}
