//! Pinning fails closed: a host record without a pin, or with a key the
//! record does not have, is refused by field; connecting unpinned takes an
//! explicit opt-out, which is logged at warn.

mod common;

use std::sync::{Arc, Mutex};

use common::expect_kind;
use decnet_agent_client::events::{clear_hook, set_hook, Event, Level};
use decnet_agent_client::testkit::{StandInWorker, TestPki};
use decnet_agent_client::{
    enroll, AgentClient, EnrollRequest, Error, ErrorKind, HostRecord, HostnameVerification,
};
use serde_json::{json, Value};

fn invalid_field(result: Result<HostRecord, Error>) -> (String, String) {
    match expect_kind(result, ErrorKind::InvalidArgument) {
        Error::InvalidArgument { argument, reason } => (argument, reason),
        other => panic!("not an invalid argument: {other:?}"),
    }
}

const PIN: &str = "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01";

#[test]
fn a_record_without_a_pin_is_refused_by_field() {
    for record in [
        json!({"address": "127.0.0.1", "agent_port": 8765}),
        json!({"address": "127.0.0.1", "client_cert_fingerprint": null}),
    ] {
        let (field, reason) = invalid_field(HostRecord::from_value(&record));
        assert_eq!(field, "client_cert_fingerprint");
        assert!(reason.contains("--no-pin"), "{reason}");
        // The explicit opt-out reads it.
        assert_eq!(HostRecord::from_value_unpinned(&record).unwrap().pin, None);
    }
}

#[test]
fn a_misspelt_key_is_refused_by_name_even_when_unpinned_is_allowed() {
    let record = json!({"address": "127.0.0.1", "client_cert_fingerprnt": PIN});
    for result in [
        HostRecord::from_value(&record),
        HostRecord::from_value_unpinned(&record),
    ] {
        let (field, reason) = invalid_field(result);
        assert_eq!(field, "client_cert_fingerprnt");
        assert!(reason.contains("client_cert_fingerprint"), "{reason}");
    }
}

/// A `swarm_hosts` row as the reference master stores and serves it.
#[test]
fn a_reference_master_row_parses_as_stored() {
    let row = json!({"uuid": "u", "name": "w", "address": "10.0.0.5", "agent_port": 8765,
        "status": "enrolled", "last_heartbeat": null, "client_cert_fingerprint": PIN,
        "updater_cert_fingerprint": null, "cert_bundle_path": "/var/lib/decnet/ca/workers/w",
        "enrolled_at": "2026-12-01T10:00:00+00:00", "notes": null, "use_ipvlan": true});
    assert_eq!(HostRecord::from_value(&row).unwrap().pin.as_deref(), Some(PIN));
}

#[test]
fn every_field_of_the_contract_and_of_enrollment_still_parses() {
    let full = json!({"uuid": "u", "name": "w", "address": "10.0.0.5", "agent_port": null,
        "client_cert_fingerprint": PIN, "updater_cert_fingerprint": null, "updater_port": 8766});
    assert_eq!(
        HostRecord::from_value(&full).unwrap().pin.as_deref(),
        Some(PIN)
    );

    let pki = TestPki::new().unwrap();
    let request = EnrollRequest {
        name: "worker-9".into(),
        address: "10.0.0.9".into(),
        sans: vec![],
        agent_port: 0,
        with_updater: true,
        reissue: false,
    };
    let enrolled = enroll(pki.dir(), &request).unwrap();
    let record = HostRecord::from_value(&enrolled.record).unwrap();
    assert!(record.pin.is_some());
}

#[test]
fn a_client_without_a_pin_needs_the_explicit_opt_out_which_warns() {
    let pki = TestPki::new().unwrap();
    let worker = StandInWorker::start(&pki.worker_bundle("w").unwrap()).unwrap();
    let record = HostRecord::new("127.0.0.1", worker.port()).unwrap();

    let refused = AgentClient::new(&pki.master, record.clone(), HostnameVerification::Off);
    match expect_kind(refused, ErrorKind::InvalidArgument) {
        Error::InvalidArgument { argument, reason } => {
            assert_eq!(argument, "pin");
            assert!(reason.contains("new_unpinned"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(worker.connections(), 0, "refused before any connection");

    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = events.clone();
    set_hook(Level::Warn, move |e| sink.lock().unwrap().push(e.clone()));
    let client = AgentClient::new_unpinned(&pki.master, record, HostnameVerification::Off);
    clear_hook();
    let client = client.unwrap();
    assert_eq!(client.health().unwrap(), json!({"status": "ok"}));
    let events = events.lock().unwrap();
    let warned = events
        .iter()
        .find(|e| e.name() == "client.unpinned")
        .expect("a client.unpinned event");
    assert_eq!(warned.level(), Level::Warn);
    assert_eq!(
        warned.field("address"),
        Some(&Value::String(format!("127.0.0.1:{}", worker.port())))
    );
}

#[test]
fn enrolling_without_a_ca_is_not_enrolled_and_says_how_to_fix_it() {
    let empty = tempfile::tempdir().unwrap();
    let request = EnrollRequest {
        name: "worker-9".into(),
        address: "10.0.0.9".into(),
        sans: vec![],
        agent_port: 0,
        with_updater: true,
        reissue: false,
    };
    let missing = empty.path().join("ca");
    for dir in [empty.path().to_path_buf(), missing.clone()] {
        let error = expect_kind(enroll(&dir, &request), ErrorKind::NotEnrolled);
        assert!(
            error
                .to_string()
                .contains(&format!("no CA at {}: run identity-ensure", dir.display())),
            "{error}"
        );
    }
    assert!(!missing.exists(), "nothing created");
}
