//! The command line's `enroll` and `updater …`, run as a separate process:
//! the host record `enroll` prints drives a stand-in agent and a stand-in
//! updater served with the bundles it wrote.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};

use decnet_agent_client::pki::Bundle;
use decnet_agent_client::testkit::{StandInUpdater, StandInWorker, TestPki, UpdaterMode};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_decnet-agent-client");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("DECNET_VERIFY_HOSTNAME")
        .output()
        .unwrap()
}

#[track_caller]
fn ok(output: Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[track_caller]
fn fails(output: Output, code: i32) -> String {
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(output.stdout.is_empty());
    stderr
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_enrolled_record_drives_the_agent_and_the_updater() {
    let pki = TestPki::new().unwrap();
    let ca = pki.dir().to_str().unwrap().to_string();
    let agent_port = free_port();
    let record = ok(run(&[
        "--ca-dir",
        &ca,
        "--address",
        "127.0.0.1",
        "--port",
        &agent_port.to_string(),
        "enroll",
        "cli-w1",
        "--san",
        "localhost",
    ]));
    assert_eq!(record["name"], "cli-w1");
    assert_eq!(record["agent_port"], agent_port);
    let worker_dir = pki.dir().join("workers/cli-w1");
    let worker_bundle = Bundle::load(&worker_dir).unwrap();
    assert_eq!(
        record["client_cert_fingerprint"],
        json!(worker_bundle.fingerprint)
    );
    let updater_bundle = Bundle {
        ca_cert_pem: worker_bundle.ca_cert_pem.clone(),
        cert_pem: std::fs::read_to_string(worker_dir.join("updater/updater.crt")).unwrap(),
        key_pem: std::fs::read_to_string(worker_dir.join("updater/updater.key")).unwrap(),
        fingerprint: String::new(),
    };
    let agent = StandInWorker::builder(&worker_bundle)
        .bind(SocketAddr::from(([127, 0, 0, 1], agent_port)))
        .start()
        .unwrap();
    let updater = StandInUpdater::start(&updater_bundle).unwrap();
    assert_eq!(
        record["updater_cert_fingerprint"],
        json!(updater.fingerprint())
    );

    let files = tempfile::tempdir().unwrap();
    let host = files.path().join("host.json");
    std::fs::write(&host, record.to_string()).unwrap();
    let host = host.to_str().unwrap();
    let tarball = files.path().join("release.tgz");
    std::fs::write(&tarball, b"release bytes \x00\x01\x02").unwrap();
    let tarball = tarball.to_str().unwrap();
    let port = updater.port().to_string();
    let base = ["--ca-dir", &ca, "--host-json", host];
    let call = |args: &[&str]| {
        let mut all: Vec<&str> = base.to_vec();
        all.extend(["updater", "--updater-port", &port]);
        all.extend(args);
        run(&all)
    };

    let mut agent_args = base.to_vec();
    agent_args.push("health");
    assert_eq!(ok(run(&agent_args)), json!({"status": "ok"}));
    assert_eq!(agent.ledger().len(), 1);

    assert_eq!(ok(call(&["health"]))["role"], "updater");
    let updated = ok(call(&["update", "--tarball", tarball, "--sha", "abc123"]));
    assert_eq!(updated["release"]["sha"], "abc123");
    let upload = updater.uploads().pop().unwrap();
    assert_eq!(
        upload.tarball.as_deref(),
        Some(&b"release bytes \x00\x01\x02"[..])
    );
    assert_eq!(upload.fields["sha"], "abc123");
    fails(call(&["update-self", "--tarball", tarball]), 11);
    let answered = ok(call(&[
        "update-self",
        "--tarball",
        tarball,
        "--sha",
        "def456",
        "--yes",
    ]));
    assert_eq!(answered["connection_closed"], false);
    assert_eq!(answered["body"]["status"], "self_update_queued");
    updater.set_mode(UpdaterMode::DropAfterSelfUpdate(
        std::time::Duration::from_millis(100),
    ));
    let queued = ok(call(&[
        "update-self",
        "--tarball",
        tarball,
        "--sha",
        "fed789",
        "--yes",
    ]));
    assert_eq!(queued, json!({"connection_closed": true, "body": null}));
    let health = ok(call(&[
        "wait-for-release",
        "fed789",
        "--deadline",
        "20",
        "--interval",
        "0.05",
    ]));
    assert_eq!(health["releases"][0]["sha"], "fed789");
    assert_eq!(ok(call(&["releases"]))["releases"][1]["sha"], "def456");
    assert_eq!(ok(call(&["rollback"]))["release"]["sha"], "def456");

    updater.set_mode(UpdaterMode::ProbeFailsRolledBack);
    let message = fails(call(&["update", "--tarball", tarball]), 19);
    assert!(
        message.contains("HTTP 409") && message.contains("\"rolled_back\":true"),
        "{message}"
    );
    fails(
        call(&[
            "wait-for-release",
            "never",
            "--deadline",
            "0.3",
            "--interval",
            "0.05",
        ]),
        18,
    );

    // A record without an updater pin: refused before any connection.
    let connections = updater.connections();
    let bare = ok(run(&[
        "--ca-dir",
        &ca,
        "--address",
        "127.0.0.1",
        "enroll",
        "cli-w2",
        "--no-updater",
    ]));
    assert_eq!(bare["updater_cert_fingerprint"], Value::Null);
    assert!(!Path::new(&pki.dir().join("workers/cli-w2/updater")).exists());
    let bare_host = files.path().join("bare.json");
    std::fs::write(&bare_host, bare.to_string()).unwrap();
    let message = fails(
        run(&[
            "--ca-dir",
            &ca,
            "--host-json",
            bare_host.to_str().unwrap(),
            "updater",
            "--updater-port",
            &port,
            "health",
        ]),
        17,
    );
    assert!(message.contains("no updater pin is recorded"), "{message}");
    assert_eq!(
        updater.connections(),
        connections,
        "no connection was opened"
    );
    // Enrolling a name twice is refused; --reissue replaces it.
    fails(
        run(&[
            "--ca-dir",
            &ca,
            "--address",
            "127.0.0.1",
            "enroll",
            "cli-w2",
        ]),
        11,
    );
    let again = ok(run(&[
        "--ca-dir",
        &ca,
        "--address",
        "127.0.0.1",
        "enroll",
        "cli-w2",
        "--reissue",
    ]));
    assert_ne!(
        again["client_cert_fingerprint"],
        bare["client_cert_fingerprint"]
    );
}
