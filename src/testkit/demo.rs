//! The self-contained loopback demo: a temporary CA, a stand-in worker, and
//! every RPC through the public client with the pin on.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Fault, StandInWorker, TestPki};
use crate::client::{AgentClient, HostRecord, HostnameVerification};
use crate::error::{Error, Result};

/// How long the demo's worker keeps an idle connection open.
const IDLE_CLOSE: Duration = Duration::from_millis(100);

fn print(out: &mut dyn Write, line: std::fmt::Arguments<'_>) -> Result<()> {
    writeln!(out, "{line}").map_err(|e| Error::io("<output>", e))
}

/// Runs one call, printing its name, latency and result (or error).
fn step(out: &mut dyn Write, name: &str, call: impl FnOnce() -> Result<Value>) -> Result<Value> {
    let started = Instant::now();
    let result = call();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match &result {
        Ok(value) => print(out, format_args!("  {name:<32} {ms:>8.3} ms  {value}"))?,
        Err(e) => print(
            out,
            format_args!("  {name:<32} {ms:>8.3} ms  error[{}]: {e}", e.kind().name()),
        )?,
    }
    result
}

/// Runs the demo, writing a report to `out`. Fails if any call does not
/// behave as the contract says.
pub fn run_demo(out: &mut dyn Write) -> Result<()> {
    let started = Instant::now();
    let pki = TestPki::new()?;
    print(
        out,
        format_args!(
            "CA and master identity created in {} ({:.1} ms)\n  master certificate sha256 {}",
            pki.dir().display(),
            started.elapsed().as_secs_f64() * 1e3,
            pki.master.fingerprint()
        ),
    )?;
    let bundle = pki.worker_bundle("demo-worker")?;
    let worker = StandInWorker::start(&bundle)?;
    // The reference worker closes idle connections after ~5 s.
    worker.set_fault(Fault::CloseIdleAfter(IDLE_CLOSE));
    let record = worker.host_record("demo-worker", true);
    print(
        out,
        format_args!(
            "stand-in worker on {} (pinned {}…)",
            worker.addr(),
            &bundle.fingerprint[..16]
        ),
    )?;
    let client = AgentClient::new(
        &pki.master,
        HostRecord::from_value(&record)?,
        HostnameVerification::On,
    )?;
    print(out, format_args!("{}", client.describe()))?;

    let config = json!({
        "mode": "unihost", "interface": "eth0", "subnet": "192.0.2.0/24",
        "gateway": "192.0.2.1", "log_file": null, "ipvlan": false, "mutate_interval": null,
        "deckies": [
            {"name": "decky-01", "ip": "192.0.2.10", "services": ["ssh", "http"],
             "distro": "debian", "base_image": "debian:bookworm-slim", "hostname": "files01"},
            {"name": "decky-02", "ip": "192.0.2.11", "services": ["smb"],
             "distro": "ubuntu", "base_image": "ubuntu:22.04", "hostname": "print02"}
        ]
    });
    let hydrated = json!({
        "topology": {"id": "demo-topology", "name": "demo", "updated_at": "2026-11-27T00:00:00Z"},
        "nodes": [{"id": "n1", "kind": "decky", "x": 10, "y": 20, "label": "décor"}]
    });

    step(out, "connect", || {
        client
            .connect()
            .map(|()| json!({"handshakes": client.handshake_count()}))
    })?;
    step(out, "health", || client.health())?;
    step(out, "status", || client.status())?;
    step(out, "deploy", || client.deploy(&config, false, false))?;
    step(out, "status", || client.status())?;
    step(out, "mutate (dry run)", || {
        client.mutate("decky-01", &["ssh", "ftp"], true)
    })?;
    step(out, "mutate", || {
        client.mutate("decky-01", &["ssh", "ftp"], false)
    })?;
    step(out, "teardown decky-02", || {
        client.teardown(Some("decky-02"))
    })?;
    step(out, "apply topology (hash computed)", || {
        client.apply_topology(&hydrated, None)
    })?;
    step(out, "topology state", || client.topology_state())?;
    step(out, "teardown topology", || {
        client.teardown_topology("demo-topology")
    })?;
    step(out, "teardown everything", || client.teardown(None))?;
    step(out, "self-destruct", || client.self_destruct())?;
    // The worker has closed the idle connection: the reconnect resumes the
    // pinned TLS 1.3 session.
    std::thread::sleep(IDLE_CLOSE * 4);
    step(out, "health after the idle close", || client.health())?;
    let handshakes = client.handshake_counts();
    print(
        out,
        format_args!(
            "{} requests over {} full and {} resumed TLS handshake(s): the verifier ran {} time(s), the pin was checked in every one",
            worker.ledger().len(),
            handshakes.full,
            handshakes.resumed,
            client.verification_count()
        ),
    )?;
    if handshakes.resumed == 0 {
        return Err(Error::internal(
            "the reconnect after the idle close did not resume",
        ));
    }

    let mut wrong = record.clone();
    wrong["client_cert_fingerprint"] = Value::String("ab".repeat(32));
    let impostor = AgentClient::new(
        &pki.master,
        HostRecord::from_value(&wrong)?,
        HostnameVerification::On,
    )?;
    match step(out, "health with a wrong pin", || impostor.health()) {
        Err(Error::PinMismatch { .. }) => print(
            out,
            format_args!("wrong pin refused with the pin-mismatch kind, as it must be"),
        ),
        Err(other) => Err(Error::internal(format!(
            "expected a pin mismatch, got {other}"
        ))),
        Ok(_) => Err(Error::internal("a wrong pin was accepted")),
    }
}
