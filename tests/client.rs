//! The agent client over real TLS on loopback against the stand-in worker.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_for, expect_kind, setup};
use decnet_agent_client::testkit::{Fault, StandInWorker, TestPki};
use decnet_agent_client::{
    AgentClient, Error, ErrorKind, HandshakeCounts, HostRecord, HostnameVerification, Profile,
    TimeoutPhase, Timeouts,
};
use serde_json::{json, Value};

fn deploy_config() -> Value {
    json!({
        "mode": "unihost", "interface": "eth0", "subnet": "192.0.2.0/24",
        "gateway": "192.0.2.1", "log_file": null, "ipvlan": false, "mutate_interval": 30,
        "deckies": [{"name": "d1", "ip": "192.0.2.10", "services": ["ssh"],
                     "distro": "debian", "base_image": "debian", "hostname": "h1"}]
    })
}

fn short(read_ms: u64) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_millis(read_ms),
        write: Duration::from_secs(2),
        pool: Duration::from_secs(1),
    }
}

#[test]
fn every_rpc_sends_what_the_contract_says() {
    let s = setup();
    let c = &s.client;
    assert_eq!(c.health().unwrap(), json!({"status": "ok"}));
    assert_eq!(c.status().unwrap()["deployed"], json!(false));
    let deployed = c.deploy(&deploy_config(), false, true).unwrap();
    assert_eq!(deployed, json!({"status": "accepted", "deckies": ["d1"]}));
    let dry = c.mutate("d1", &["ssh", "http"], true).unwrap();
    assert_eq!(dry["status"], "dry_run");
    let mutated = c.mutate("d1", &["ssh", "http"], false).unwrap();
    assert_eq!(
        mutated,
        json!({"status": "accepted", "decky_id": "d1", "services": ["ssh", "http"]})
    );
    assert_eq!(
        c.teardown(Some("d1")).unwrap(),
        json!({"status": "torn_down", "decky_id": "d1"})
    );
    assert_eq!(
        c.teardown(None).unwrap(),
        json!({"status": "torn_down", "decky_id": null})
    );
    let hydrated = json!({"topology": {"id": "t1"}, "nodes": [{"id": "n", "x": 1}]});
    let hash = decnet_agent_client::topology::canonical_hash(&hydrated).unwrap();
    let applied = c.apply_topology(&hydrated, Some(&hash)).unwrap();
    assert_eq!(applied, json!({"status": "applied", "version_hash": hash}));
    assert_eq!(c.topology_state().unwrap()["topology_id"], "t1");
    assert_eq!(
        c.teardown_topology("t1").unwrap(),
        json!({"status": "torn_down", "topology_id": "t1"})
    );
    assert_eq!(
        c.self_destruct().unwrap(),
        json!({"status": "self_destruct_scheduled"})
    );

    let seen: Vec<(String, String, Value)> = s
        .worker
        .ledger()
        .into_iter()
        .map(|e| (e.method, e.path, e.body))
        .collect();
    let expected = vec![
        ("GET", "/health", Value::Null),
        ("GET", "/status", Value::Null),
        (
            "POST",
            "/deploy",
            json!({"config": deploy_config(), "dry_run": false, "no_cache": true}),
        ),
        (
            "POST",
            "/mutate",
            json!({"decky_id": "d1", "services": ["ssh", "http"], "dry_run": true}),
        ),
        (
            "POST",
            "/mutate",
            json!({"decky_id": "d1", "services": ["ssh", "http"], "dry_run": false}),
        ),
        ("POST", "/teardown", json!({"decky_id": "d1"})),
        ("POST", "/teardown", json!({"decky_id": null})),
        (
            "POST",
            "/topology/apply",
            json!({"hydrated": hydrated, "version_hash": hash}),
        ),
        ("GET", "/topology/state", Value::Null),
        ("POST", "/topology/teardown", json!({"topology_id": "t1"})),
        ("POST", "/self-destruct", Value::Null),
    ];
    let expected: Vec<(String, String, Value)> = expected
        .into_iter()
        .map(|(m, p, b)| (m.to_string(), p.to_string(), b))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn apply_without_hash_computes_the_canonical_one() {
    let s = setup();
    let hydrated = json!({"id": "t9", "nodes": [{"name": "é", "updated_at": "x", "w": 2.5}]});
    let answer = s.client.apply_topology(&hydrated, None).unwrap();
    let expected = decnet_agent_client::topology::canonical_hash(&hydrated).unwrap();
    assert_eq!(answer["version_hash"], json!(expected));
    let err = expect_kind(
        s.client
            .apply_topology(&json!({"id": "t9"}), Some(&"0".repeat(64))),
        ErrorKind::HttpStatus,
    );
    assert!(
        matches!(err, Error::HttpStatus { status: 400, .. }),
        "{err:?}"
    );
}

#[test]
fn worker_error_statuses_carry_code_body_and_detail() {
    let s = setup();
    let c = &s.client;
    // 404: dry-run mutate with no deployment.
    match c.mutate("ghost", &["ssh"], true) {
        Err(Error::HttpStatus {
            status: 404,
            detail: Some(d),
            body,
        }) => {
            assert_eq!(d, "no active deployment");
            assert!(body.contains("no active deployment"));
        }
        other => panic!("expected 404, got {other:?}"),
    }
    // 422: the worker's own validation (a decky without services passes the
    // local check, which only asks for a name).
    let config = json!({"deckies": [{"name": "d1"}]});
    match c.deploy(&config, false, false) {
        Err(Error::HttpStatus {
            status: 422,
            detail: Some(d),
            ..
        }) => {
            assert!(d.starts_with('['), "422 detail is the validation list: {d}")
        }
        other => panic!("expected 422, got {other:?}"),
    }
    // 409: a second topology while one is applied.
    c.apply_topology(&json!({"id": "a"}), None).unwrap();
    match c.apply_topology(&json!({"id": "b"}), None) {
        Err(Error::HttpStatus {
            status: 409,
            body,
            detail,
        }) => {
            assert!(body.contains("already applied"));
            assert_eq!(detail.as_deref(), Some("topology 'a' is already applied"));
        }
        other => panic!("expected 409, got {other:?}"),
    }
}

#[test]
fn deploy_config_is_checked_before_any_traffic() {
    let s = setup();
    for bad in [
        json!([]),
        json!({}),
        json!({"deckies": []}),
        json!({"deckies": {}}),
        json!({"deckies": [{"ip": "1.2.3.4"}]}),
        json!({"deckies": [{"name": 7}]}),
        json!({"deckies": ["d1"]}),
    ] {
        expect_kind(
            s.client.deploy(&bad, false, false),
            ErrorKind::InvalidArgument,
        );
    }
    assert!(s.worker.ledger().is_empty());
    assert_eq!(s.worker.connections(), 0);
}

#[test]
fn pin_accepts_any_spelling_and_refuses_a_wrong_one() {
    let s = setup();
    let fp = s.worker.fingerprint();
    let upper = fp.to_uppercase();
    let colons: Vec<String> = fp
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .collect();
    for pin in [fp.clone(), upper, colons.join(":")] {
        let mut record = s.worker.host_record("w", false);
        record["client_cert_fingerprint"] = json!(pin);
        let client = AgentClient::new(
            &s.pki.master,
            HostRecord::from_value(&record).unwrap(),
            HostnameVerification::On,
        )
        .unwrap();
        client.health().unwrap();
    }
    let mut record = s.worker.host_record("w", false);
    let wrong = format!("{}{}", &fp[..63], if fp.ends_with('0') { '1' } else { '0' });
    record["client_cert_fingerprint"] = json!(wrong);
    let client = AgentClient::new(
        &s.pki.master,
        HostRecord::from_value(&record).unwrap(),
        HostnameVerification::On,
    )
    .unwrap();
    match client.health() {
        Err(Error::PinMismatch {
            address,
            expected,
            actual,
            pin_origin,
        }) => {
            assert_eq!(pin_origin, "client_cert_fingerprint of host record w");
            assert_eq!(address, format!("127.0.0.1:{}", s.worker.port()));
            assert_eq!(expected, wrong);
            assert_eq!(actual, fp);
        }
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    let message = expect_kind(client.connect(), ErrorKind::PinMismatch).to_string();
    assert!(
        message.contains(&wrong[..16])
            && message.contains(&fp[..16])
            && message.contains("(from client_cert_fingerprint of host record w)"),
        "{message}"
    );
    // A pin the caller set itself is named as such.
    let by_hand = HostRecord::from_value(&record)
        .unwrap()
        .with_pin(Some(&wrong))
        .unwrap();
    let by_hand = AgentClient::new(&s.pki.master, by_hand, HostnameVerification::On).unwrap();
    let message = expect_kind(by_hand.health(), ErrorKind::PinMismatch).to_string();
    assert!(
        message.contains("(from the pin given for this client)"),
        "{message}"
    );
    assert_eq!(
        s.worker.ledger().len(),
        3,
        "only the three well-pinned calls reached the worker"
    );
}

#[test]
fn swapped_certificate_fails_the_next_full_handshake_with_pin_mismatch() {
    let s = setup();
    // A resumed session continues the pinned one (tests/resumption.rs);
    // here every connection pays a full handshake.
    s.client.set_session_resumption(false);
    s.worker
        .set_fault(Fault::CloseIdleAfter(Duration::from_millis(50)));
    s.client.health().unwrap();
    let verified = s.client.verification_count();
    let replacement = s.pki.worker_bundle("worker-1").unwrap();
    s.worker.swap_certificate(&replacement).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    expect_kind(s.client.health(), ErrorKind::PinMismatch);
    assert!(
        s.client.verification_count() > verified,
        "the reconnect ran the verifier"
    );
}

#[test]
fn reconnect_after_idle_close_is_verified_again_and_posts_are_sent_once() {
    let s = setup();
    s.worker
        .set_fault(Fault::CloseIdleAfter(Duration::from_millis(50)));
    s.client.deploy(&deploy_config(), false, false).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.client.mutate("d1", &["ssh"], false).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.client.health().unwrap();
    // One full handshake, then two resumed ones (TLS 1.3 tickets): the
    // verifier ran once, the pin was checked in all three.
    assert_eq!(s.client.handshake_count(), 3);
    assert_eq!(
        s.client.handshake_counts(),
        HandshakeCounts {
            full: 1,
            resumed: 2
        }
    );
    assert_eq!(s.client.verification_count(), 1);
    assert_eq!(s.worker.handshakes(), 3);
    let posts: Vec<String> = s
        .worker
        .ledger()
        .into_iter()
        .filter(|e| e.method == "POST")
        .map(|e| e.path)
        .collect();
    assert_eq!(posts, ["/deploy", "/mutate"]);
}

#[test]
fn a_post_whose_connection_dies_is_not_resent_and_says_it_may_have_arrived() {
    let s = setup();
    s.worker.set_fault(Fault::CloseAfterRequest);
    match s.client.teardown(None) {
        Err(Error::ConnectionLost {
            may_have_reached_worker: true,
            ..
        }) => {}
        other => panic!("expected a lost connection, got {other:?}"),
    }
    assert_eq!(s.worker.ledger().len(), 1, "the POST was sent exactly once");
    s.worker.set_fault(Fault::None);
    s.client.health().unwrap();
}

#[test]
fn connect_verifies_now_and_the_first_call_reuses_that_handshake() {
    let s = setup();
    s.client.connect().unwrap();
    // In TLS 1.3 the client finishes first; give the worker's thread a moment.
    let until = Instant::now() + Duration::from_secs(2);
    while s.worker.handshakes() == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(s.worker.handshakes(), 1);
    assert!(s.worker.ledger().is_empty(), "connect sends no request");
    s.client.status().unwrap();
    assert_eq!(s.worker.handshakes(), 1);
    assert_eq!(s.worker.connections(), 1);
    assert_eq!(s.client.handshake_count(), 1);
}

#[test]
fn hostname_checks_follow_the_choice() {
    let pki = TestPki::new().unwrap();
    let bundle = pki.worker_bundle_for("elsewhere", &["10.9.8.7"]).unwrap();
    let worker = StandInWorker::start(&bundle).unwrap();
    let record = HostRecord::from_value(&worker.host_record("w", true)).unwrap();
    let on = AgentClient::new(&pki.master, record.clone(), HostnameVerification::On).unwrap();
    let err = expect_kind(on.health(), ErrorKind::Tls);
    assert!(err.to_string().contains("NotValidForName"), "{err}");
    let off = AgentClient::new(&pki.master, record, HostnameVerification::Off).unwrap();
    off.health().unwrap();
}

#[test]
fn untrusted_or_expired_worker_certificates_are_tls_errors() {
    let pki = TestPki::new().unwrap();
    let stranger = TestPki::new().unwrap();
    let foreign = stranger.worker_bundle("w").unwrap();
    // The foreign worker must still accept our client certificate, so the
    // failure is ours to report.
    let worker = StandInWorker::builder(&foreign)
        .client_ca(pki.ca.cert_pem())
        .start()
        .unwrap();
    let client = client_for(&pki, &worker, false);
    // Both CAs carry the reference subject, so webpki finds the issuer by
    // name and then rejects the signature.
    let err = expect_kind(client.health(), ErrorKind::Tls);
    let ca_file = pki.master.ca_cert_path().display().to_string();
    assert!(ca_file.ends_with("/master/ca.crt"), "{ca_file}");
    assert!(
        err.to_string().contains(&format!(
            "worker certificate rejected: not issued by {ca_file} ("
        )),
        "{err}"
    );

    let expired = pki.expired_worker_bundle("w").unwrap();
    let worker = StandInWorker::start(&expired).unwrap();
    let err = expect_kind(client_for(&pki, &worker, false).health(), ErrorKind::Tls);
    assert!(err.to_string().contains("Expired"), "{err}");
}

#[test]
fn a_worker_that_rejects_our_certificate_is_a_tls_error_in_both_versions() {
    let pki = TestPki::new().unwrap();
    let other = TestPki::new().unwrap();
    let bundle = pki.worker_bundle("w").unwrap();
    for tls12 in [false, true] {
        let mut builder = StandInWorker::builder(&bundle).client_ca(other.ca.cert_pem());
        if tls12 {
            builder = builder.tls12_only();
        }
        let worker = builder.start().unwrap();
        let client = client_for(&pki, &worker, true);
        let err = expect_kind(client.health(), ErrorKind::Tls);
        assert!(
            err.to_string().contains("client certificate rejected"),
            "tls12={tls12}: {err}"
        );
    }
}

#[test]
fn tls12_workers_work() {
    let pki = TestPki::new().unwrap();
    let bundle = pki.worker_bundle("w").unwrap();
    let worker = StandInWorker::builder(&bundle)
        .tls12_only()
        .start()
        .unwrap();
    let client = client_for(&pki, &worker, true);
    client.health().unwrap();
    client.status().unwrap();
    assert_eq!(worker.handshakes(), 1);
}

#[test]
fn nothing_listening_is_a_connect_error() {
    let pki = TestPki::new().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = AgentClient::new_unpinned(
        &pki.master,
        HostRecord::new("127.0.0.1", port).unwrap(),
        HostnameVerification::On,
    )
    .unwrap();
    expect_kind(client.health(), ErrorKind::Connect);
    expect_kind(client.connect(), ErrorKind::Connect);
    let unresolvable = AgentClient::new_unpinned(
        &pki.master,
        HostRecord::new("no-such-host.invalid", 8765).unwrap(),
        HostnameVerification::On,
    )
    .unwrap();
    expect_kind(unresolvable.health(), ErrorKind::Connect);
}

#[test]
fn a_stalled_worker_times_out_within_the_read_timeout() {
    let s = setup();
    s.client.set_timeouts(Profile::Control, short(300)).unwrap();
    s.worker.set_fault(Fault::Stall(Duration::from_secs(3)));
    let started = Instant::now();
    match s.client.status() {
        Err(Error::Timeout {
            phase: TimeoutPhase::Read,
            ..
        }) => {}
        other => panic!("expected a read timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1000),
        "{took:?}"
    );
}

#[test]
fn each_topology_call_runs_under_its_own_profile() {
    let s = setup();
    // Every call waits 1.5 s for its answer. The control profile allows it;
    // the two topology profiles, cut to 300 ms, do not: a call that used the
    // wrong profile would succeed here.
    s.client
        .set_timeouts(Profile::TopologyApply, short(300))
        .unwrap();
    s.client
        .set_timeouts(Profile::TopologyTeardown, short(300))
        .unwrap();
    s.worker
        .set_fault(Fault::Stall(Duration::from_millis(1_500)));
    s.client.health().unwrap();
    let hydrated = json!({"id": "profile-check"});
    for (call, result) in [
        ("apply", s.client.apply_topology(&hydrated, None)),
        (
            "apply (text)",
            s.client.apply_topology_json(&hydrated.to_string(), None),
        ),
        ("teardown", s.client.teardown_topology("profile-check")),
    ] {
        match result {
            Err(Error::Timeout {
                phase: TimeoutPhase::Read,
                ..
            }) => {}
            other => panic!("{call}: expected a read timeout, got {other:?}"),
        }
    }
    // And the other way round: long topology profiles, short control.
    s.client
        .set_timeouts(Profile::TopologyApply, short(5_000))
        .unwrap();
    s.client
        .set_timeouts(Profile::TopologyTeardown, short(5_000))
        .unwrap();
    s.client.set_timeouts(Profile::Control, short(300)).unwrap();
    expect_kind(s.client.topology_state(), ErrorKind::Timeout);
    s.client.apply_topology(&hydrated, None).unwrap();
    s.client.teardown_topology("profile-check").unwrap();
}

#[test]
fn a_dripping_worker_is_bounded_by_the_read_timeout_as_a_whole() {
    let s = setup();
    s.client.set_timeouts(Profile::Control, short(400)).unwrap();
    s.worker.set_fault(Fault::Drip(Duration::from_millis(20)));
    let started = Instant::now();
    expect_kind(s.client.status(), ErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn an_oversized_body_is_a_protocol_error_and_is_not_read_into_memory() {
    let s = setup();
    s.client.set_max_response_bytes(1024 * 1024).unwrap();
    s.worker.set_fault(Fault::OversizedBody(256 * 1024 * 1024));
    let before = resident_kib();
    let err = expect_kind(s.client.status(), ErrorKind::Protocol);
    assert!(err.to_string().contains("exceeds"), "{err}");
    let grown = resident_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "resident memory grew by {grown} KiB");
}

#[test]
fn malformed_answers_are_protocol_or_lost_connection_errors() {
    let s = setup();
    s.worker.set_fault(Fault::NonJsonBody);
    expect_kind(s.client.health(), ErrorKind::Protocol);
    // Half a body, then the connection drops: the answer was cut short by
    // the network, not malformed by the worker.
    s.worker.set_fault(Fault::ResetMidBody);
    match s.client.health() {
        Err(Error::ConnectionLost {
            may_have_reached_worker: true,
            ..
        }) => {}
        other => panic!("expected a lost connection, got {other:?}"),
    }
    s.worker.set_fault(Fault::None);
    s.client.health().unwrap();
}

#[test]
fn eight_threads_share_one_client_and_few_connections() {
    let s = setup();
    let client = Arc::new(s.client);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || {
                for n in 0..500 {
                    if (i + n) % 2 == 0 {
                        client.health().unwrap();
                    } else {
                        client.status().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.worker.ledger().len(), 4000);
    let handshakes = s.worker.handshakes();
    assert!(handshakes <= 32, "{handshakes} handshakes for 4000 calls");
}

#[test]
fn ipv6_literals_work() {
    let pki = TestPki::new().unwrap();
    let bundle = pki.worker_bundle("w6").unwrap();
    let Ok(worker) = StandInWorker::builder(&bundle)
        .bind("[::1]:0".parse().unwrap())
        .start()
    else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let record = json!({"address": "::1", "agent_port": worker.port(), "client_cert_fingerprint": worker.fingerprint()});
    let client =
        AgentClient::from_host_json(&pki.master, &record.to_string(), HostnameVerification::On)
            .unwrap();
    client.health().unwrap();
    let bracketed = HostRecord::new("[::1]", worker.port()).unwrap();
    assert_eq!(bracketed.authority(), format!("[::1]:{}", worker.port()));
    AgentClient::new_unpinned(&pki.master, bracketed, HostnameVerification::On)
        .unwrap()
        .health()
        .unwrap();
}

#[test]
fn host_records_are_parsed_strictly_and_name_the_bad_field() {
    let unpinned =
        |text: &str| HostRecord::from_value_unpinned(&serde_json::from_str(text).unwrap()).unwrap();
    let ok = unpinned(
        r#"{"address":"10.0.0.5","agent_port":null,"uuid":"u","name":"n","client_cert_fingerprint":null}"#,
    );
    assert_eq!(
        (ok.port, ok.pin.as_deref(), ok.name.as_deref()),
        (8765, None, Some("n"))
    );
    assert_eq!(unpinned(r#"{"address":"h","agent_port":0}"#).port, 8765);
    for (text, field) in [
        ("[1]", "host_record"),
        ("{", "host_record"),
        (r#"{"agent_port":1}"#, "address"),
        (r#"{"address":5}"#, "address"),
        (r#"{"address":"bad host/name"}"#, "address"),
        (r#"{"address":"[example.com]"}"#, "address"),
        (r#"{"address":"[10.0.0.1]"}"#, "address"),
        (r#"{"address":"h","agent_port":70000}"#, "agent_port"),
        (r#"{"address":"h","agent_port":"80"}"#, "agent_port"),
        (
            r#"{"address":"h","client_cert_fingerprint":"abc"}"#,
            "client_cert_fingerprint",
        ),
        (r#"{"address":"h","name":3}"#, "name"),
        (r#"{"address":"h"}"#, "client_cert_fingerprint"),
        (
            r#"{"address":"h","client_cert_fingerprint":null}"#,
            "client_cert_fingerprint",
        ),
        (r#"{"address":"h","extra":1}"#, "extra"),
    ] {
        match HostRecord::from_json(text) {
            Err(Error::InvalidArgument { argument, .. }) => assert_eq!(argument, field, "{text}"),
            other => panic!("{text}: expected invalid {field}, got {other:?}"),
        }
    }
}

#[test]
fn describe_profiles_and_caps() {
    let s = setup();
    assert_eq!(
        s.client.describe(),
        format!(
            "AgentClient(name='worker-1', address='127.0.0.1', port={})",
            s.worker.port()
        )
    );
    let control = s.client.timeouts(Profile::Control);
    assert_eq!(
        (
            control.connect.as_secs(),
            control.read.as_secs(),
            control.write.as_secs(),
            control.pool.as_secs()
        ),
        (5, 15, 5, 5)
    );
    let apply = s.client.timeouts(Profile::TopologyApply);
    assert_eq!(
        (
            apply.connect.as_secs(),
            apply.read.as_secs(),
            apply.write.as_secs()
        ),
        (10, 600, 30)
    );
    assert_eq!(
        s.client.timeouts(Profile::TopologyTeardown).read.as_secs(),
        300
    );
    assert_eq!(s.client.timeouts(Profile::Deploy).read.as_secs(), 600);
    s.client.set_timeouts(Profile::Deploy, short(1234)).unwrap();
    assert_eq!(
        s.client.timeouts(Profile::Deploy).read,
        Duration::from_millis(1234)
    );
    let mut zero = short(10);
    zero.read = Duration::ZERO;
    expect_kind(
        s.client.set_timeouts(Profile::Control, zero),
        ErrorKind::InvalidArgument,
    );
    assert_eq!(s.client.max_response_bytes(), 16 * 1024 * 1024);
    expect_kind(
        s.client.set_max_response_bytes(0),
        ErrorKind::InvalidArgument,
    );
}

#[test]
fn a_get_on_a_dead_reused_connection_is_retried_once_and_a_post_never() {
    let s = setup();
    s.client.health().unwrap();
    // The worker now reads each request and hangs up without answering: on
    // the reused connection that looks like an idle close, so the GET is
    // sent once more on a new connection (which fails for real).
    s.worker.set_fault(Fault::CloseAfterRequest);
    expect_kind(s.client.status(), ErrorKind::ConnectionLost);
    let paths: Vec<String> = s.worker.ledger().into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["/health", "/status", "/status"]);

    s.worker.set_fault(Fault::None);
    s.client.health().unwrap();
    s.worker.set_fault(Fault::CloseAfterRequest);
    match s.client.mutate("d1", &["ssh"], false) {
        Err(Error::ConnectionLost {
            may_have_reached_worker: true,
            ..
        }) => {}
        other => panic!("expected a lost connection, got {other:?}"),
    }
    let posts = s
        .worker
        .ledger()
        .iter()
        .filter(|e| e.method == "POST")
        .count();
    assert_eq!(posts, 1, "a POST is never sent twice");
}

#[test]
fn a_topology_given_as_text_is_sent_and_hashed_exactly_as_written() {
    let s = setup();
    // serde_json (with arbitrary precision) would read this inner object as
    // the number 1, and a float like 1.50 as 1.5: neither may happen on
    // the way to the worker, which hashes the text it receives.
    let text = r#"{"id": "raw", "a": {"$serde_json::private::Number": "1"},
                   "n": 123456789012345678901234567890, "f": 1.50}"#;
    let expected = decnet_agent_client::topology::canonical_hash_str(text).unwrap();
    let answer = s.client.apply_topology_json(text, None).unwrap();
    assert_eq!(answer["version_hash"], json!(expected));
    expect_kind(
        s.client.apply_topology_json("[1, 2]", None),
        ErrorKind::InvalidArgument,
    );
    let err = expect_kind(
        s.client
            .apply_topology_json(r#"{"id": "raw"}"#, Some(&"0".repeat(64))),
        ErrorKind::HttpStatus,
    );
    assert!(err.to_string().contains("400"), "{err}");
}

#[test]
fn an_answer_keyed_like_serde_jsons_private_number_comes_back_exactly() {
    let s = setup();
    let body = r#"{"$serde_json::private::Number":"1","nested":{"\u0024serde_json::private::Number":true}}"#;
    s.worker.set_fault(Fault::RawBody(body));
    let answer = s.client.health().unwrap();
    assert_eq!(
        answer,
        json!({
            "$serde_json::private::Number": "1",
            "nested": {"$serde_json::private::Number": true},
        }),
        "{answer}"
    );
    assert_eq!(
        answer.to_string(),
        r#"{"$serde_json::private::Number":"1","nested":{"$serde_json::private::Number":true}}"#
    );
}

/// serde_json's other magic key (`raw_value`'s) is an ordinary key too, and
/// numbers keep the worker's own literals, however long.
#[test]
fn an_answer_keyed_like_serde_jsons_raw_value_and_long_numbers_come_back_exactly() {
    let s = setup();
    let body = r#"{"data":{"$serde_json::private::RawValue":"7"},"big":123456789012345678901234567890,"f":0.10000000000000000000001,"e":1e+400,"neg":-0.0}"#;
    s.worker.set_fault(Fault::RawBody(body));
    let answer = s.client.health().unwrap();
    assert_eq!(
        answer["data"],
        json!({"$serde_json::private::RawValue": "7"}),
        "{answer}"
    );
    assert_eq!(
        answer.to_string(),
        r#"{"big":123456789012345678901234567890,"data":{"$serde_json::private::RawValue":"7"},"e":1e+400,"f":0.10000000000000000000001,"neg":-0.0}"#
    );
}
