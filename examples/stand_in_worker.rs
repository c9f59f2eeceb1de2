//! Serves stand-in workers for the C and Python test suites.
//!
//! `stand_in_worker DIR` ensures a CA and master identity in `DIR/ca`,
//! starts one worker per behaviour below on 127.0.0.1 (all presenting the
//! certificate written to `DIR/worker.crt`), writes each one's pinned host
//! record to `DIR/hosts/<behaviour>.json`, then creates `DIR/ready` and
//! serves until killed.
//!
//! Behaviours: `ok` (the contract), `close` (reads each request, then hangs
//! up), `stall` (answers after 30 s), `nonjson` (answers 200 with HTML),
//! `oddkey` (answers 200 with [`ODD_KEY_BODY`], whose keys serde_json's
//! `arbitrary_precision` and `raw_value` would misread), `deployfail` (a
//! deploy brings up its first decky, then answers 500; its status then
//! says which deckies run).
//!
//! It also starts stand-in updaters (certificate CN `updater@stand-in`),
//! one per mode, and writes each one's host record, pinned with
//! `updater_cert_fingerprint` and carrying its port as `updater_port`, to
//! `DIR/updaters/<mode>.json`. Modes: `ok` (the contract), `probe` (every
//! update is rolled back: 409), `selfdrop` (update-self installs after
//! 200 ms and closes the connection without answering).

use std::path::Path;
use std::time::Duration;

use decnet_agent_client::pki::{CertificateAuthority, LEAF_VALIDITY_DAYS};
use decnet_agent_client::testkit::{Fault, StandInUpdater, StandInWorker, UpdaterMode};
use decnet_agent_client::Identity;

/// An answer whose object keys must reach every front exactly as written.
/// (Both of serde_json's magic keys, and numbers longer than any machine
/// type.)
const ODD_KEY_BODY: &str = r#"{"$serde_json::private::Number":"1","nested":{"\u0024serde_json::private::Number":true},"data":{"$serde_json::private::RawValue":"7"},"big":123456789012345678901234567890,"f":0.10000000000000000000001}"#;

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: stand_in_worker DIR");
        std::process::exit(2);
    };
    if let Err(e) = serve(Path::new(&dir)) {
        eprintln!("stand_in_worker: {e}");
        std::process::exit(1);
    }
}

fn serve(dir: &Path) -> decnet_agent_client::Result<()> {
    let ca_dir = dir.join("ca");
    Identity::ensure(Some(&ca_dir))?;
    let ca = CertificateAuthority::load(&ca_dir)?;
    let bundle = ca.issue(
        "stand-in",
        &["127.0.0.1", "::1", "localhost"],
        LEAF_VALIDITY_DAYS,
    )?;
    let cert = dir.join("worker.crt");
    std::fs::write(&cert, &bundle.cert_pem)
        .map_err(|e| decnet_agent_client::Error::io(&cert, e))?;
    let hosts = dir.join("hosts");
    std::fs::create_dir_all(&hosts).map_err(|e| decnet_agent_client::Error::io(&hosts, e))?;
    let behaviours = [
        ("ok", Fault::None),
        ("close", Fault::CloseAfterRequest),
        ("stall", Fault::Stall(Duration::from_secs(30))),
        ("nonjson", Fault::NonJsonBody),
        ("oddkey", Fault::RawBody(ODD_KEY_BODY)),
        ("deployfail", Fault::DeployFailsAfter(1)),
    ];
    let mut workers = Vec::new();
    for (name, fault) in behaviours {
        let worker = StandInWorker::start(&bundle)?;
        worker.set_fault(fault);
        let path = hosts.join(format!("{name}.json"));
        let record = worker.host_record(name, true).to_string();
        std::fs::write(&path, record).map_err(|e| decnet_agent_client::Error::io(&path, e))?;
        workers.push(worker);
    }
    let updater_bundle = ca.issue(
        "updater@stand-in",
        &["127.0.0.1", "::1", "localhost"],
        LEAF_VALIDITY_DAYS,
    )?;
    let updater_hosts = dir.join("updaters");
    std::fs::create_dir_all(&updater_hosts)
        .map_err(|e| decnet_agent_client::Error::io(&updater_hosts, e))?;
    let modes = [
        ("ok", UpdaterMode::Normal),
        ("probe", UpdaterMode::ProbeFailsRolledBack),
        (
            "selfdrop",
            UpdaterMode::DropAfterSelfUpdate(Duration::from_millis(200)),
        ),
    ];
    let mut updaters = Vec::new();
    for (name, mode) in modes {
        let updater = StandInUpdater::start(&updater_bundle)?;
        updater.set_mode(mode);
        let record = serde_json::json!({
            "uuid": format!("uuid-{name}"),
            "name": name,
            "address": "127.0.0.1",
            "agent_port": 8765,
            "client_cert_fingerprint": null,
            "updater_cert_fingerprint": updater.fingerprint(),
            "updater_port": updater.port(),
        });
        let path = updater_hosts.join(format!("{name}.json"));
        std::fs::write(&path, record.to_string())
            .map_err(|e| decnet_agent_client::Error::io(&path, e))?;
        updaters.push(updater);
    }
    let ready = dir.join("ready");
    std::fs::write(&ready, b"").map_err(|e| decnet_agent_client::Error::io(&ready, e))?;
    loop {
        std::thread::park();
    }
}
