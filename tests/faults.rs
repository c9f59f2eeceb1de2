//! The fault matrix: what each misbehaving worker or network gives the
//! caller. The README's reliability table is taken from these tests.
//!
//! The tests run one at a time (they count file descriptors and time calls).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{client_for, expect_kind, setup, Setup};
use decnet_agent_client::testkit::{Fault, StandInWorker, TestPki};
use decnet_agent_client::{
    AgentClient, Error, ErrorKind, HostRecord, HostnameVerification, Profile, TimeoutPhase,
    Timeouts,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn with_read_timeout(s: &Setup, read: Duration) {
    let t = Timeouts {
        connect: Duration::from_secs(2),
        read,
        write: Duration::from_secs(2),
        pool: Duration::from_secs(1),
    };
    s.client.set_timeouts(Profile::Control, t).unwrap();
}

#[test]
fn worker_stalls_after_the_headers() {
    let _serial = serial();
    let s = setup();
    with_read_timeout(&s, Duration::from_millis(400));
    s.worker
        .set_fault(Fault::StallAfterHeaders(Duration::from_secs(5)));
    let started = Instant::now();
    match s.client.status() {
        Err(Error::Timeout {
            phase: TimeoutPhase::Read,
            ..
        }) => {}
        other => panic!("expected a read timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn worker_drips_one_byte_at_a_time_and_the_read_timeout_bounds_the_call() {
    let _serial = serial();
    let s = setup();
    with_read_timeout(&s, Duration::from_millis(500));
    // Headers and body together are ~130 bytes: 13 s at this pace.
    s.worker.set_fault(Fault::Drip(Duration::from_millis(100)));
    let started = Instant::now();
    expect_kind(s.client.status(), ErrorKind::Timeout);
    let took = started.elapsed();
    // The read timeout bounds the wait for the headers and the whole body,
    // never each byte: at most twice the read timeout plus scheduling slack.
    assert!(took < Duration::from_millis(1_500), "{took:?}");
}

#[test]
fn truncated_tls_record_is_a_lost_connection() {
    let _serial = serial();
    let s = setup();
    s.worker.set_fault(Fault::TruncatedRecord);
    match s.client.status() {
        Err(Error::ConnectionLost { .. }) => {}
        other => panic!("expected a lost connection, got {other:?}"),
    }
    s.worker.set_fault(Fault::None);
    s.client.status().unwrap();
}

/// A TCP server that answers any ClientHello with a TLS 1.1 ServerHello.
fn tls11_only_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut hello = [0u8; 4096];
        let _ = sock.read(&mut hello);
        let mut body = vec![0x03, 0x02]; // server_version TLS 1.1
        body.extend_from_slice(&[0x42; 32]); // random
        body.extend_from_slice(&[0x00, 0xc0, 0x13, 0x00]); // no session id, ECDHE_RSA_AES128_CBC_SHA, null compression
        let mut handshake = vec![0x02, 0x00, 0x00, body.len() as u8];
        handshake.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x02, 0x00, handshake.len() as u8];
        record.extend_from_slice(&handshake);
        let _ = sock.write_all(&record);
        let _ = sock.read(&mut hello);
    });
    (port, handle)
}

#[test]
fn a_tls_1_1_only_server_is_a_tls_error() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let (port, server) = tls11_only_server();
    let record = HostRecord::new("127.0.0.1", port).unwrap();
    let client = AgentClient::new_unpinned(&pki.master, record, HostnameVerification::On).unwrap();
    let err = expect_kind(client.health(), ErrorKind::Tls);
    assert!(
        err.to_string().contains("ServerDoesNotSupportTls12Or13"),
        "{err}"
    );
    server.join().unwrap();
}

#[test]
fn a_server_that_asks_for_no_client_certificate_still_gets_its_own_checked() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let bundle = pki.worker_bundle("lax").unwrap();
    let worker = StandInWorker::builder(&bundle)
        .no_client_auth()
        .start()
        .unwrap();
    // The worker chose not to authenticate us; our checks of it still run.
    client_for(&pki, &worker, true).health().unwrap();
    let mut wrong = worker.host_record("lax", false);
    wrong["client_cert_fingerprint"] = serde_json::json!("00".repeat(32));
    let impostor = AgentClient::new(
        &pki.master,
        HostRecord::from_value(&wrong).unwrap(),
        HostnameVerification::On,
    )
    .unwrap();
    expect_kind(impostor.health(), ErrorKind::PinMismatch);
}

#[test]
fn a_server_that_closes_right_after_the_handshake_is_a_lost_connection() {
    let _serial = serial();
    let s = setup();
    s.worker.set_fault(Fault::CloseAfterHandshake);
    match s.client.deploy(
        &serde_json::json!({"deckies": [{"name": "d"}]}),
        false,
        false,
    ) {
        Err(Error::ConnectionLost {
            may_have_reached_worker: true,
            ..
        }) => {}
        other => panic!("expected a lost connection, got {other:?}"),
    }
    expect_kind(s.client.health(), ErrorKind::ConnectionLost);
    assert!(s.worker.ledger().is_empty(), "the worker read nothing");
}

#[test]
fn a_name_that_does_not_resolve_is_a_connect_error() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let record = HostRecord::new("worker.does-not-exist.invalid", 8765).unwrap();
    let client = AgentClient::new_unpinned(&pki.master, record, HostnameVerification::On).unwrap();
    let err = expect_kind(client.health(), ErrorKind::Connect);
    assert!(err.to_string().contains("cannot resolve"), "{err}");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn two_thousand_failed_connects_leak_no_file_descriptor() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = AgentClient::new_unpinned(
        &pki.master,
        HostRecord::new("127.0.0.1", port).unwrap(),
        HostnameVerification::On,
    )
    .unwrap();
    let before = open_fds();
    for _ in 0..2_000 {
        expect_kind(client.health(), ErrorKind::Connect);
    }
    let after = open_fds();
    assert_eq!(
        before, after,
        "file descriptors before and after 2,000 failed connects"
    );
}

#[test]
fn a_worker_that_closes_or_resets_during_the_handshake_is_a_connect_error() {
    let _serial = serial();
    let s = setup();
    // A restarting worker, not a certificate problem: `connect`, not `tls`.
    for fault in [Fault::CloseDuringHandshake, Fault::ResetDuringHandshake] {
        s.worker.set_fault(fault);
        let err = expect_kind(s.client.health(), ErrorKind::Connect);
        assert!(
            err.to_string().contains("TLS handshake"),
            "{fault:?}: {err}"
        );
    }
    s.worker.set_fault(Fault::None);
    s.client.health().unwrap();
}

#[test]
fn a_tls_failure_after_the_request_was_sent_may_have_reached_the_worker() {
    let _serial = serial();
    let s = setup();
    s.worker.set_fault(Fault::CorruptRecord);
    let config = serde_json::json!({"deckies": [{"name": "d", "services": ["ssh"]}]});
    match s.client.deploy(&config, false, false) {
        Err(Error::ConnectionLost {
            may_have_reached_worker: true,
            reason,
            ..
        }) => assert!(reason.contains("TLS"), "{reason}"),
        other => {
            panic!("expected a lost connection that may have reached the worker, got {other:?}")
        }
    }
    assert_eq!(s.worker.ledger().len(), 1, "the worker read the request");
}
