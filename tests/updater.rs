//! The updater client against the stand-in updater, over real mutual TLS
//! on loopback: every endpoint, the fail-closed pin rule, the master-only
//! rule, the multipart body, the failure details and update-self's drops.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::expect_kind;
use decnet_agent_client::pki::LEAF_VALIDITY_DAYS;
use decnet_agent_client::testkit::{
    Fault, StandInUpdater, StandInWorker, TestPki, UpdaterMode, DROP_AFTER_BYTES,
};
use decnet_agent_client::{
    Error, ErrorKind, HostnameVerification, Identity, SelfUpdate, Tarball, UpdateFailure,
    UpdaterClient,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

struct Setup {
    pki: TestPki,
    updater: StandInUpdater,
    client: UpdaterClient,
}

fn setup() -> Setup {
    let pki = TestPki::new().expect("test PKI");
    let bundle = pki
        .worker_bundle_for(
            "updater@worker-1",
            &["127.0.0.1", "worker-1", "updater@worker-1"],
        )
        .expect("updater bundle");
    let updater = StandInUpdater::start(&bundle).expect("stand-in updater");
    let client = UpdaterClient::from_host_value(
        &pki.master,
        &record(&updater, Some(updater.fingerprint())),
        updater.port(),
        HostnameVerification::On,
    )
    .expect("client");
    Setup {
        pki,
        updater,
        client,
    }
}

fn record(updater: &StandInUpdater, pin: Option<String>) -> Value {
    json!({
        "uuid": "uuid-worker-1",
        "name": "worker-1",
        "address": "127.0.0.1",
        "agent_port": 1,
        "client_cert_fingerprint": null,
        "updater_cert_fingerprint": pin,
        "updater_port": updater.port(),
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes that are not all alike and include every byte value, CR and LF
/// and runs of dashes (a multipart encoder's worst case).
fn tarball(len: usize, seed: u64) -> Vec<u8> {
    let mut lcg = common::Lcg(seed);
    let mut out: Vec<u8> = (0..len).map(|_| lcg.below(256) as u8).collect();
    let tricky = b"\r\n--\r\n------formdata-ureq-\r\n\r\n";
    if out.len() > tricky.len() * 2 {
        out[100..100 + tricky.len()].copy_from_slice(tricky);
    }
    out
}

fn active_sha(body: &Value) -> Option<String> {
    decnet_agent_client::updater::active_sha(body).map(str::to_string)
}

#[test]
fn every_endpoint_answers_as_the_contract_says() {
    let s = setup();
    let health = s.client.health().unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["role"], "updater");
    assert_eq!(active_sha(&health), None);
    let releases = s.client.releases().unwrap();
    assert_eq!(releases["releases"].as_array().unwrap().len(), 2);

    let first = tarball(10_000, 1);
    let body = s.client.update(Tarball::Bytes(&first), "aaaa111").unwrap();
    assert_eq!(body["status"], "updated");
    assert_eq!(body["release"]["sha"], "aaaa111");
    assert_eq!(body["release"]["slot"], "active");
    assert!(body["release"]["installed_at"].is_string());
    assert_eq!(body["probe"], "ok");

    let second = tarball(20_000, 2);
    s.client.update(Tarball::Bytes(&second), "bbbb222").unwrap();
    let releases = s.client.releases().unwrap();
    assert_eq!(active_sha(&releases).as_deref(), Some("bbbb222"));
    assert_eq!(releases["releases"][1]["sha"], "aaaa111");

    let rolled = s.client.rollback().unwrap();
    assert_eq!(rolled["status"], "rolled_back");
    assert_eq!(rolled["release"]["sha"], "aaaa111");
    // No previous release any more: 404.
    let err = expect_kind(s.client.rollback(), ErrorKind::HttpStatus);
    assert!(
        matches!(err, Error::HttpStatus { status: 404, .. }),
        "{err:?}"
    );

    match s
        .client
        .update_self(Tarball::Bytes(&first), "cccc333")
        .unwrap()
    {
        SelfUpdate::Answered(body) => assert_eq!(body["status"], "self_update_queued"),
        other => panic!("expected an answer, got {other:?}"),
    }
    assert_eq!(
        active_sha(&s.client.health().unwrap()).as_deref(),
        Some("cccc333")
    );
    let paths: Vec<String> = s.updater.requests().into_iter().map(|r| r.1).collect();
    assert_eq!(
        paths,
        [
            "/health",
            "/releases",
            "/update",
            "/update",
            "/releases",
            "/rollback",
            "/rollback",
            "/update-self",
            "/health"
        ]
    );
}

#[test]
fn a_record_without_an_updater_pin_is_refused_before_any_connection() {
    let s = setup();
    for unpinned in [
        record(&s.updater, None),
        json!({"address": "127.0.0.1", "name": "worker-1"}),
    ] {
        let err = expect_kind(
            UpdaterClient::from_host_value(
                &s.pki.master,
                &unpinned,
                s.updater.port(),
                HostnameVerification::On,
            ),
            ErrorKind::PinMismatch,
        );
        let text = err.to_string();
        assert!(text.contains("no updater pin is recorded"), "{text}");
    }
    // The agent's pin is not the updater's: it does not count.
    let mut agent_only = record(&s.updater, None);
    agent_only["client_cert_fingerprint"] = Value::String(s.updater.fingerprint());
    expect_kind(
        UpdaterClient::from_host_value(
            &s.pki.master,
            &agent_only,
            s.updater.port(),
            HostnameVerification::On,
        ),
        ErrorKind::PinMismatch,
    );
    assert_eq!(s.updater.connections(), 0, "the listener saw no connection");
}

#[test]
fn a_wrong_pin_fails_the_handshake_and_sends_nothing() {
    let s = setup();
    let wrong = "ab".repeat(32);
    let client = UpdaterClient::new(
        &s.pki.master,
        "127.0.0.1",
        s.updater.port(),
        &wrong,
        HostnameVerification::On,
    )
    .unwrap();
    expect_kind(client.health(), ErrorKind::PinMismatch);
    expect_kind(
        client.update(Tarball::Bytes(b"x"), ""),
        ErrorKind::PinMismatch,
    );
    // The message says where the wrong pin came from.
    let from_record = UpdaterClient::from_host_value(
        &s.pki.master,
        &record(&s.updater, Some(wrong.clone())),
        s.updater.port(),
        HostnameVerification::On,
    )
    .unwrap();
    let message = expect_kind(from_record.health(), ErrorKind::PinMismatch).to_string();
    assert!(
        message.contains("(from updater_cert_fingerprint of host record worker-1)"),
        "{message}"
    );
    assert!(s.updater.requests().is_empty());
    assert!(s.updater.connections() >= 1);
}

#[test]
fn any_identity_but_the_master_gets_403_except_on_health() {
    let s = setup();
    let bundle = s
        .pki
        .ca
        .issue("intruder", &["127.0.0.1"], LEAF_VALIDITY_DAYS)
        .unwrap();
    let intruder = Identity::from_bundle(&bundle, Path::new("<intruder>")).unwrap();
    let client = UpdaterClient::new(
        &intruder,
        "127.0.0.1",
        s.updater.port(),
        &s.updater.fingerprint(),
        HostnameVerification::On,
    )
    .unwrap();
    client.health().unwrap();
    for result in [
        client.releases(),
        client.update(Tarball::Bytes(b"payload"), "dead"),
        client.rollback(),
    ] {
        match result {
            Err(Error::HttpStatus {
                status: 403,
                detail: Some(detail),
                ..
            }) => {
                assert_eq!(detail, "master certificate required")
            }
            other => panic!("expected 403, got {other:?}"),
        }
    }
    assert!(matches!(
        client.update_self(Tarball::Bytes(b"payload"), "dead"),
        Err(Error::HttpStatus { status: 403, .. })
    ));
    assert!(
        s.updater.uploads().is_empty(),
        "no upload was accepted from the intruder"
    );
    let cns: Vec<String> = s.updater.requests().into_iter().map(|r| r.2).collect();
    assert!(cns.iter().all(|cn| cn == "intruder"), "{cns:?}");
    assert_eq!(
        active_sha(&s.client.health().unwrap()),
        None,
        "nothing was installed"
    );
}

#[test]
fn the_multipart_body_carries_the_exact_bytes_sha_and_sha256() {
    let s = setup();
    let bytes = tarball(300_000, 7);
    s.client.update(Tarball::Bytes(&bytes), "0123abcd").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("release.tar.gz");
    let from_file = tarball(200_001, 8);
    std::fs::write(&path, &from_file).unwrap();
    s.client.update_self(Tarball::File(&path), "").unwrap();

    let uploads = s.updater.uploads();
    assert_eq!(uploads.len(), 2);
    for (upload, sent, sha, path) in [
        (&uploads[0], &bytes, "0123abcd", "/update"),
        (&uploads[1], &from_file, "", "/update-self"),
    ] {
        assert_eq!(upload.path, path);
        assert!(upload
            .content_type
            .starts_with("multipart/form-data; boundary="));
        assert_eq!(upload.file_name.as_deref(), Some("tree.tgz"));
        assert_eq!(
            upload.file_content_type.as_deref(),
            Some("application/gzip")
        );
        assert_eq!(
            upload.tarball.as_deref(),
            Some(sent.as_slice()),
            "the exact bytes"
        );
        assert_eq!(upload.fields["sha"], sha);
        assert_eq!(upload.fields["sha256"], sha256_hex(sent));
        assert_eq!(upload.status, 200);
    }
    assert!(!uploads[0].fields.contains_key("confirm_self"));
    assert_eq!(uploads[1].fields["confirm_self"], "true");
    assert_eq!(
        Tarball::File(&path).sha256().unwrap(),
        sha256_hex(&from_file)
    );
    let missing = dir.path().join("missing.tgz");
    expect_kind(s.client.update(Tarball::File(&missing), "x"), ErrorKind::Io);
}

#[test]
fn a_rolled_back_update_is_409_with_its_detail_fields_and_500_is_not_rolled_back() {
    let s = setup();
    s.client.update(Tarball::Bytes(b"good"), "good1").unwrap();
    s.updater.set_mode(UpdaterMode::ProbeFailsRolledBack);
    let err = expect_kind(
        s.client.update(Tarball::Bytes(b"bad"), "bad1"),
        ErrorKind::HttpStatus,
    );
    let failure = UpdateFailure::from_error(&err).expect("a detail object");
    assert_eq!(failure.status, 409);
    assert_eq!(failure.error.as_deref(), Some("probe failed"));
    assert_eq!(
        failure.stderr.as_deref(),
        Some("agent: health probe timed out\n")
    );
    assert_eq!(failure.rolled_back, Some(true));
    assert_eq!(failure.detail["rolled_back"], true);

    s.updater.set_mode(UpdaterMode::InstallFails);
    let err = expect_kind(
        s.client.update(Tarball::Bytes(b"bad"), "bad2"),
        ErrorKind::HttpStatus,
    );
    let failure = UpdateFailure::from_error(&err).expect("a detail object");
    assert_eq!(failure.status, 500);
    assert_eq!(failure.rolled_back, Some(false));
    assert_eq!(failure.error.as_deref(), Some("install failed"));
    assert_eq!(
        active_sha(&s.client.health().unwrap()).as_deref(),
        Some("good1")
    );

    // A body that is not JSON is kept as text, with no detail.
    s.updater.set_mode(UpdaterMode::PlainTextError);
    match s.client.update(Tarball::Bytes(b"bad"), "bad3") {
        Err(
            ref err @ Error::HttpStatus {
                status: 500,
                ref body,
                detail: None,
            },
        ) => {
            assert_eq!(body, "Internal Server Error");
            assert!(UpdateFailure::from_error(err).is_none());
        }
        other => panic!("expected a plain-text 500, got {other:?}"),
    }

    // A string detail or no detail object: no UpdateFailure, the text stays in the error.
    s.updater.set_mode(UpdaterMode::Normal);
    let err = expect_kind(s.client.rollback(), ErrorKind::HttpStatus);
    assert!(UpdateFailure::from_error(&err).is_none());
}

#[test]
fn update_self_dropped_after_the_request_is_queued_and_confirmed_by_health() {
    let s = setup();
    s.updater
        .set_mode(UpdaterMode::DropAfterSelfUpdate(Duration::from_millis(300)));
    let outcome = s
        .client
        .update_self(Tarball::Bytes(&tarball(50_000, 3)), "feed0001")
        .unwrap();
    assert_eq!(outcome, SelfUpdate::QueuedConnectionClosed);
    assert_eq!(
        s.updater.uploads().len(),
        1,
        "the request arrived whole, once"
    );
    let start = Instant::now();
    let health = s
        .client
        .wait_for_release(
            "feed0001",
            Duration::from_secs(20),
            Duration::from_millis(50),
        )
        .unwrap();
    assert_eq!(active_sha(&health).as_deref(), Some("feed0001"));
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn update_self_dropped_mid_upload_is_a_lost_connection() {
    let s = setup();
    s.updater.set_mode(UpdaterMode::DropMidUpload);
    // Far larger than the socket buffers, so most of it was never sent.
    let big = tarball(16 * 1024 * 1024, 4);
    assert!(big.len() > DROP_AFTER_BYTES * 100);
    match s.client.update_self(Tarball::Bytes(&big), "feed0002") {
        Err(Error::ConnectionLost { .. }) => {}
        other => panic!("expected a lost connection, got {other:?}"),
    }
    expect_kind(
        s.client.update(Tarball::Bytes(&big), "feed0003"),
        ErrorKind::ConnectionLost,
    );
    assert!(s.updater.uploads().is_empty());
    s.updater.set_mode(UpdaterMode::Normal);
    assert_eq!(active_sha(&s.client.health().unwrap()), None);
}

#[test]
fn waiting_for_a_release_that_never_comes_ends_at_the_deadline() {
    let s = setup();
    s.updater.install("old");
    let start = Instant::now();
    let err = expect_kind(
        s.client
            .wait_for_release("new", Duration::from_millis(600), Duration::from_millis(50)),
        ErrorKind::Timeout,
    );
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?} for {err}");
    assert!(
        matches!(
            err,
            decnet_agent_client::Error::Timeout {
                phase: decnet_agent_client::TimeoutPhase::Deadline,
                ..
            }
        ),
        "{err:?}"
    );
    expect_kind(
        s.client
            .wait_for_release("", Duration::from_secs(1), Duration::from_millis(50)),
        ErrorKind::InvalidArgument,
    );
}

#[test]
fn timeouts_are_per_profile_and_tunable() {
    use decnet_agent_client::updater::UpdaterProfile;
    use decnet_agent_client::Timeouts;
    let s = setup();
    let control = s.client.timeouts(UpdaterProfile::Control);
    assert_eq!(
        (control.connect, control.read, control.write),
        (
            Duration::from_secs(5),
            Duration::from_secs(30),
            Duration::from_secs(10)
        )
    );
    let update = s.client.timeouts(UpdaterProfile::Update);
    assert_eq!(
        (update.connect, update.read, update.write),
        (
            Duration::from_secs(10),
            Duration::from_secs(180),
            Duration::from_secs(120)
        )
    );
    let short = Timeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(2),
        write: Duration::from_secs(3),
        pool: Duration::ZERO,
    };
    s.client
        .set_timeouts(UpdaterProfile::Update, short)
        .unwrap();
    assert_eq!(s.client.timeouts(UpdaterProfile::Update), short);
    assert_eq!(s.client.timeouts(UpdaterProfile::Control), control);
    let zero = Timeouts {
        read: Duration::ZERO,
        ..short
    };
    expect_kind(
        s.client.set_timeouts(UpdaterProfile::Control, zero),
        ErrorKind::InvalidArgument,
    );
    // The default port is 8766.
    let client = UpdaterClient::new(
        &s.pki.master,
        "127.0.0.1",
        0,
        &"00".repeat(32),
        HostnameVerification::On,
    )
    .unwrap();
    assert_eq!(client.port(), 8766);
}

/// A stand-in worker (any pinned TLS service will do for a release wait)
/// whose TLS handshake trickles, one byte per `interval`.
fn slow_handshake(pki: &TestPki, interval: Duration) -> StandInWorker {
    let bundle = pki
        .worker_bundle_for("updater@worker-1", &["127.0.0.1", "worker-1"])
        .expect("bundle");
    let worker = StandInWorker::start(&bundle).expect("stand-in");
    worker.set_fault(Fault::TrickleHandshake(interval));
    worker
}

#[test]
fn a_release_wait_ends_within_its_deadline_whatever_each_phase_takes() {
    let pki = TestPki::new().expect("test PKI");
    // About 0.6 s of handshake, then a read that would take 30 s: capped
    // phase by phase, the wait took the handshake plus the whole 1.2 s.
    let worker = slow_handshake(&pki, Duration::from_micros(500));
    let client = UpdaterClient::new(
        &pki.master,
        "127.0.0.1",
        worker.port(),
        &worker.fingerprint(),
        HostnameVerification::On,
    )
    .expect("client");
    let start = Instant::now();
    std::thread::scope(|scope| {
        // Once the first handshake has begun, every answer stalls.
        scope.spawn(|| {
            while worker.connections() == 0 && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(2));
            }
            worker.set_fault(Fault::Stall(Duration::from_secs(30)));
        });
        let deadline = Duration::from_millis(1200);
        let err = expect_kind(
            client.wait_for_release("new", deadline, Duration::from_millis(50)),
            ErrorKind::Timeout,
        );
        let waited = start.elapsed();
        assert!(waited >= deadline, "{waited:?}");
        assert!(
            waited < deadline + Duration::from_millis(300),
            "a 1.2 s wait took {waited:?}"
        );
        assert!(
            matches!(
                err,
                Error::Timeout {
                    phase: decnet_agent_client::TimeoutPhase::Deadline,
                    ..
                }
            ),
            "{err:?}"
        );
    });
}

/// A pin mismatch while waiting is a security event, final at once: not a
/// deadline timeout after the whole wait.
#[test]
fn a_pin_mismatch_while_waiting_for_a_release_comes_back_at_once() {
    let s = setup();
    s.updater.install("old");
    let wrong = "ab".repeat(32);
    let client = UpdaterClient::new(
        &s.pki.master,
        "127.0.0.1",
        s.updater.port(),
        &wrong,
        HostnameVerification::On,
    )
    .expect("client");
    let start = Instant::now();
    let err = client.wait_for_release("new", Duration::from_secs(20), Duration::from_millis(50));
    let waited = start.elapsed();
    match err {
        Err(Error::PinMismatch { expected, .. }) => assert_eq!(expected, wrong),
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    assert!(waited < Duration::from_secs(3), "took {waited:?}");

    // A refused connection (an updater re-executing itself) keeps polling
    // until the deadline.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let refused = UpdaterClient::new(
        &s.pki.master,
        "127.0.0.1",
        port,
        &s.updater.fingerprint(),
        HostnameVerification::On,
    )
    .expect("client");
    let start = Instant::now();
    let err = expect_kind(
        refused.wait_for_release("new", Duration::from_millis(500), Duration::from_millis(50)),
        ErrorKind::Timeout,
    );
    assert!(start.elapsed() >= Duration::from_millis(500), "{err}");
}
