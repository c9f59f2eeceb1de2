//! The command-line tool, run as a separate process against the stand-in
//! worker.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use decnet_agent_client::testkit::{Fault, StandInWorker, TestPki};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_decnet-agent-client");

struct World {
    pki: TestPki,
    worker: StandInWorker,
    files: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let pki = TestPki::new().unwrap();
        let worker = StandInWorker::start(&pki.worker_bundle("cli-worker").unwrap()).unwrap();
        let files = tempfile::tempdir().unwrap();
        let world = World { pki, worker, files };
        world.write(
            "host.json",
            &world.worker.host_record("cli-worker", true).to_string(),
        );
        world
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.files.path().join(name).to_str().unwrap().to_string()
    }

    /// Runs the tool against the worker with `args` after the global options.
    fn run(&self, args: &[&str]) -> Output {
        let mut full = vec!["--ca-dir", self.pki.dir().to_str().unwrap()];
        let host = self.path("host.json");
        full.extend(["--host-json", &host]);
        full.extend(args);
        run(&full, None)
    }
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("DECNET_VERIFY_HOSTNAME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// The JSON a successful run printed.
#[track_caller]
fn ok(output: Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout}");
    serde_json::from_str(&stdout).unwrap()
}

/// Asserts a failure with `code` and a one-line message naming `kind`.
#[track_caller]
fn fails(output: Output, code: i32, kind: &str) -> String {
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(output.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("decnet-agent-client: {kind}: ")),
        "{stderr}"
    );
    stderr
}

#[test]
fn every_subcommand_has_help() {
    let help = run(&["--help"], None);
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(
        text.contains("17  pin_mismatch"),
        "exit codes documented: {text}"
    );
    let subcommands: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert_eq!(subcommands.len(), 18, "{subcommands:?}");
    for sub in subcommands {
        let out = run(&[sub, "--help"], None);
        assert_eq!(out.status.code(), Some(0), "{sub} --help");
        assert!(
            String::from_utf8(out.stdout).unwrap().contains("Usage:"),
            "{sub}"
        );
    }
}

#[test]
fn every_rpc_subcommand_works_against_the_worker() {
    let w = World::new();
    assert_eq!(ok(w.run(&["health"])), json!({"status": "ok"}));
    assert_eq!(
        ok(w.run(&["connect"]))["connected"],
        json!(format!(
            "AgentClient(name='cli-worker', address='127.0.0.1', port={})",
            w.worker.port()
        ))
    );
    let config = w.write(
        "config.json",
        r#"{"deckies":[{"name":"d1","services":["ssh"]}]}"#,
    );
    assert_eq!(
        ok(w.run(&["deploy", "--config", &config, "--no-cache"]))["status"],
        "accepted"
    );
    assert_eq!(ok(w.run(&["status"]))["deckies"], json!(["d1"]));
    let mutated = ok(w.run(&["mutate", "d1", "ssh", "ftp", "--dry-run"]));
    assert_eq!(
        mutated,
        json!({"status": "dry_run", "decky_id": "d1", "services": ["ssh", "ftp"]})
    );
    assert_eq!(ok(w.run(&["teardown", "d1"]))["decky_id"], "d1");
    let hydrated = w.write(
        "topology.json",
        r#"{"id":"t1","nodes":[{"id":"n1","x":3}]}"#,
    );
    assert_eq!(
        ok(w.run(&["topology-apply", "--hydrated", &hydrated]))["status"],
        "applied"
    );
    assert_eq!(ok(w.run(&["topology-state"]))["topology_id"], "t1");
    assert_eq!(
        ok(w.run(&["topology-teardown", "t1"]))["status"],
        "torn_down"
    );

    let before = w.worker.ledger().len();
    fails(w.run(&["teardown", "--all"]), 11, "invalid_argument");
    fails(w.run(&["self-destruct"]), 11, "invalid_argument");
    assert_eq!(
        w.worker.ledger().len(),
        before,
        "nothing sent without --yes"
    );
    assert_eq!(
        ok(w.run(&["teardown", "--all", "--yes"]))["decky_id"],
        Value::Null
    );
    assert_eq!(
        ok(w.run(&["self-destruct", "--yes"]))["status"],
        "self_destruct_scheduled"
    );

    let body_of = |path: &str| {
        w.worker
            .ledger()
            .into_iter()
            .find(|e| e.path == path)
            .map(|e| e.body)
            .unwrap()
    };
    assert_eq!(
        body_of("/deploy"),
        json!({"config": {"deckies": [{"name": "d1", "services": ["ssh"]}]}, "dry_run": false, "no_cache": true})
    );
    assert_eq!(
        body_of("/mutate"),
        json!({"decky_id": "d1", "services": ["ssh", "ftp"], "dry_run": true})
    );
}

#[test]
fn host_record_and_documents_come_from_stdin() {
    let w = World::new();
    let record = w.worker.host_record("cli-worker", true).to_string();
    let ca = w.pki.dir().to_str().unwrap().to_string();
    assert_eq!(
        ok(run(
            &["--ca-dir", &ca, "--host-json", "-", "health"],
            Some(&record)
        )),
        json!({"status": "ok"})
    );
    let config = r#"{"deckies":[{"name":"s1","services":["smb"]}]}"#;
    let host = w.path("host.json");
    let out = run(
        &[
            "--ca-dir",
            &ca,
            "--host-json",
            &host,
            "deploy",
            "--config",
            "-",
        ],
        Some(config),
    );
    assert_eq!(ok(out)["deckies"], json!(["s1"]));
    let out = run(
        &[
            "--ca-dir",
            &ca,
            "--host-json",
            "-",
            "deploy",
            "--config",
            "-",
        ],
        Some(config),
    );
    fails(out, 11, "invalid_argument");
}

#[test]
fn exit_codes_tell_the_error_kind() {
    let w = World::new();
    let wrong_pin = "ab".repeat(32);
    let err = fails(w.run(&["--pin", &wrong_pin, "health"]), 17, "pin_mismatch");
    assert!(
        err.contains(&wrong_pin[..16])
            && err.contains(&w.worker.fingerprint()[..16])
            && err.contains("(from --pin)"),
        "{err}"
    );

    w.worker.set_fault(Fault::Stall(Duration::from_secs(3)));
    fails(w.run(&["--read-timeout", "0.3", "status"]), 18, "timeout");
    w.worker.set_fault(Fault::ServerError);
    let err = fails(w.run(&["teardown", "d1"]), 19, "http_status");
    assert!(
        err.contains("HTTP 500") && err.contains("simulated worker failure"),
        "{err}"
    );
    w.worker.set_fault(Fault::None);
    let err = fails(
        w.run(&["mutate", "ghost", "ssh", "--dry-run"]),
        19,
        "http_status",
    );
    assert!(err.contains("HTTP 404"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let ca = w.pki.dir().to_str().unwrap().to_string();
    fails(
        run(
            &[
                "--ca-dir",
                &ca,
                "--address",
                "127.0.0.1",
                "--port",
                &port,
                "--no-pin",
                "health",
            ],
            None,
        ),
        15,
        "connect",
    );

    let empty = tempfile::tempdir().unwrap();
    let host = w.path("host.json");
    fails(
        run(
            &[
                "--ca-dir",
                empty.path().to_str().unwrap(),
                "--host-json",
                &host,
                "health",
            ],
            None,
        ),
        14,
        "not_enrolled",
    );
    let bad = w.write("bad.json", "{\"address\": 5}");
    fails(
        run(&["--ca-dir", &ca, "--host-json", &bad, "health"], None),
        11,
        "invalid_argument",
    );
    assert_eq!(
        run(&["health", "--no-such-flag"], None).status.code(),
        Some(2)
    );
}

#[test]
fn pki_and_hash_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca_arg = ca.to_str().unwrap();
    let ensured = ok(run(&["--ca-dir", ca_arg, "identity-ensure"], None));
    assert_eq!(
        ensured,
        ok(run(&["--ca-dir", ca_arg, "identity-ensure"], None)),
        "stable on reruns"
    );
    let master = ca.join("master/worker.crt");
    let fp = ok(run(&["fingerprint", master.to_str().unwrap()], None));
    assert_eq!(fp["fingerprint"], ensured["master_fingerprint"]);

    let out = dir.path().join("bundle");
    let enrolled = ok(run(
        &[
            "--ca-dir",
            ca_arg,
            "enroll",
            "w1",
            "--out",
            out.to_str().unwrap(),
            "--san",
            "10.0.0.7",
            "--days",
            "30",
        ],
        None,
    ));
    let on_disk = decnet_agent_client::pki::fingerprint_file(&out.join("worker.crt")).unwrap();
    assert_eq!(enrolled["fingerprint"], json!(on_disk));
    assert!(Path::new(&out.join("worker.key")).exists());

    let text = r#"{"b":1,"a":[1.0,"é"],"updated_at":"x"}"#;
    let expected = decnet_agent_client::topology::canonical_hash_str(text).unwrap();
    assert_eq!(
        ok(run(&["topology-hash", "-"], Some(text)))["version_hash"],
        json!(expected)
    );
    fails(
        run(&["topology-hash", "-"], Some("[1]")),
        11,
        "invalid_argument",
    );
}

/// `openssl x509 -fingerprint -sha256` of a certificate, as bare lowercase
/// hex: computed outside this crate.
fn openssl_fingerprint(cert: &Path, form: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-inform",
            form,
            "-in",
        ])
        .arg(cert)
        .output()
        .expect("openssl (installed by .ci/install)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (_, hex) = text
        .trim()
        .split_once('=')
        .expect("sha256 Fingerprint=AA:BB:..");
    hex.replace(':', "").to_lowercase()
}

#[test]
fn fingerprint_raw_prints_only_the_hex_digits() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ok(run(
        &["--ca-dir", ca.to_str().unwrap(), "identity-ensure"],
        None,
    ));
    let pem = ca.join("master/worker.crt");
    let der = dir.path().join("worker.der");
    let converted = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der)
        .status()
        .unwrap();
    assert!(converted.success());
    let expected = openssl_fingerprint(&pem, "PEM");
    assert_eq!(expected, openssl_fingerprint(&der, "DER"));
    assert_eq!(expected.len(), 64);
    for cert in [&pem, &der] {
        let out = run(&["fingerprint", "--raw", cert.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{expected}\n")
        );
    }
    let json = ok(run(&["fingerprint", pem.to_str().unwrap()], None));
    assert_eq!(json["fingerprint"], json!(expected));
    // An error stays an error line with its kind, never a bare line on stdout.
    fails(
        run(
            &["fingerprint", "--raw", ca.join("ca.key").to_str().unwrap()],
            None,
        ),
        13,
        "pki",
    );
}

#[test]
fn demo_runs_and_ends_with_the_pin_mismatch() {
    let out = Command::new(env!("CARGO_BIN_EXE_decnet-agent-client-demo"))
        .env_remove("DECNET_VERIFY_HOSTNAME")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("self-destruct") && text.contains("pin-mismatch kind"),
        "{text}"
    );
}

/// The first ```sh block under `heading` in the README.
fn readme_block(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split(heading).nth(1).expect("README section");
    let start = section.find("```sh\n").expect("sh block") + "```sh\n".len();
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_string()
}

#[test]
fn the_readme_shell_example_runs() {
    let w = World::new();
    let script = readme_block("## From the shell");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("CA_DIR", w.pki.dir())
        .env("HOST_JSON", w.path("host.json"))
        .env_remove("DECNET_VERIFY_HOSTNAME")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(r#"{"status":"ok"}"#), "{stdout}");
    assert!(
        stdout.contains("exit 19") && stdout.contains("exit 17"),
        "{stdout}"
    );
    assert_eq!(
        w.worker.ledger().len(),
        3,
        "health, mutate and status reached the worker"
    );
}

#[test]
fn an_answer_keyed_like_serde_jsons_private_number_is_printed_exactly() {
    let world = World::new();
    world.worker.set_fault(Fault::RawBody(
        r#"{"$serde_json::private::Number":"1","n":{"\u0024serde_json::private::Number":true}}"#,
    ));
    let output = world.run(&["health"]);
    assert_eq!(output.status.code(), Some(0));
    // Compared as text: serde_json itself (with the crate's features) would
    // misread what the tool printed.
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "{\"$serde_json::private::Number\":\"1\",\"n\":{\"$serde_json::private::Number\":true}}\n"
    );
}

#[test]
fn an_unprotected_master_key_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new();
    let key = world.pki.dir().join("master").join("worker.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let stderr = fails(world.run(&["health"]), 13, "pki");
    assert!(
        stderr.contains(&format!("chmod 600 {}", key.display())) && stderr.contains("0640"),
        "{stderr}"
    );
}

#[test]
fn a_missing_ca_folder_is_reported_with_the_command_that_makes_it() {
    let files = tempfile::tempdir().unwrap();
    let missing = files.path().join("no-ca");
    let ca = missing.to_str().unwrap();
    let hosts = files.path().join("hosts.json");
    let pin = "ab".repeat(32);
    let record = json!({"address": "127.0.0.1", "agent_port": 9, "client_cert_fingerprint": pin});
    std::fs::write(&hosts, json!([record]).to_string()).unwrap();
    let hosts = hosts.to_str().unwrap();
    let out_dir = files.path().join("bundle");
    let calls: [&[&str]; 5] = [
        &["--address", "127.0.0.1", "--pin", &pin, "health"],
        &["--address", "127.0.0.1", "--pin", &pin, "updater", "health"],
        &["fleet", "--hosts", hosts, "health"],
        &["enroll", "w1", "--out", out_dir.to_str().unwrap()],
        &["enroll", "w1", "--address", "10.0.0.9"],
    ];
    for call in calls {
        let mut args = vec!["--ca-dir", ca];
        args.extend(call);
        let output = run(&args, None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{call:?}");
        assert!(
            stderr.contains("identity-ensure") && stderr.contains(ca),
            "{call:?} does not say to run identity-ensure for {ca}: {stderr}"
        );
        assert!(!missing.exists(), "{call:?} created the CA folder");
    }
}

#[test]
fn a_record_without_a_pin_or_with_a_misspelt_key_is_refused() {
    let w = World::new();
    let ca = w.pki.dir().to_str().unwrap().to_string();
    let unpinned = w.worker.host_record("cli-worker", false).to_string();
    let mut misspelt = w.worker.host_record("cli-worker", true);
    let pin = misspelt["client_cert_fingerprint"].take();
    misspelt
        .as_object_mut()
        .unwrap()
        .remove("client_cert_fingerprint");
    misspelt["client_cert_fingerprnt"] = pin;
    let unpinned = w.write("unpinned.json", &unpinned);
    let misspelt = w.write("misspelt.json", &misspelt.to_string());

    let refused = fails(
        run(&["--ca-dir", &ca, "--host-json", &unpinned, "health"], None),
        11,
        "invalid_argument",
    );
    assert!(
        refused.contains("client_cert_fingerprint") && refused.contains("--no-pin"),
        "{refused}"
    );
    let refused = fails(
        run(&["--ca-dir", &ca, "--host-json", &misspelt, "health"], None),
        11,
        "invalid_argument",
    );
    assert!(refused.contains("client_cert_fingerprnt"), "{refused}");
    // --no-pin does not excuse a key the record does not have.
    fails(
        run(
            &[
                "--ca-dir",
                &ca,
                "--host-json",
                &misspelt,
                "--no-pin",
                "health",
            ],
            None,
        ),
        11,
        "invalid_argument",
    );
    assert_eq!(w.worker.connections(), 0, "refused before any connection");

    // --pin stands in for the record's, --no-pin opts out (warned under -v).
    let fp = w.worker.fingerprint();
    ok(run(
        &[
            "--ca-dir",
            &ca,
            "--host-json",
            &unpinned,
            "--pin",
            &fp,
            "health",
        ],
        None,
    ));
    let out = run(
        &[
            "--ca-dir",
            &ca,
            "--host-json",
            &unpinned,
            "--no-pin",
            "-v",
            "health",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(r#""level":"warn","event":"client.unpinned""#),
        "{stderr}"
    );
}

#[test]
fn an_address_without_a_pin_needs_no_pin() {
    let w = World::new();
    let ca = w.pki.dir().to_str().unwrap().to_string();
    let port = w.worker.port().to_string();
    let base = ["--ca-dir", &ca, "--address", "127.0.0.1", "--port", &port];
    let refused = fails(
        run(&[&base[..], &["health"]].concat(), None),
        11,
        "invalid_argument",
    );
    assert!(
        refused.contains("--pin") && refused.contains("--no-pin"),
        "{refused}"
    );
    assert_eq!(w.worker.connections(), 0, "refused before any connection");
    ok(run(&[&base[..], &["--no-pin", "health"]].concat(), None));
    let fp = w.worker.fingerprint();
    ok(run(&[&base[..], &["--pin", &fp, "health"]].concat(), None));
    // The two contradict each other: a usage error.
    let both = run(
        &[&base[..], &["--pin", &fp, "--no-pin", "health"]].concat(),
        None,
    );
    assert_eq!(both.status.code(), Some(2));
}

/// A deploy config read by the CLI reaches the worker as written: a key
/// spelled like serde_json's private number token stays a key (with a
/// string or a number under it), and long numbers keep their literals.
#[test]
fn a_deploy_config_keyed_like_serde_jsons_private_number_reaches_the_worker_as_written() {
    let w = World::new();
    let config = w.write(
        "config.json",
        r#"{"deckies":[{"name":"d1","services":["ssh"]}],"extra":{"$serde_json::private::Number":"12"},"n":{"$serde_json::private::Number":12},"big":123456789012345678901234567890}"#,
    );
    assert_eq!(
        ok(w.run(&["deploy", "--config", &config]))["status"],
        "accepted"
    );
    let ledger = w.worker.ledger();
    let deploy = ledger
        .iter()
        .find(|e| e.path == "/deploy")
        .expect("the deploy reached the worker");
    let sent = &deploy.body["config"];
    assert_eq!(
        sent["extra"],
        json!({"$serde_json::private::Number": "12"}),
        "{sent}"
    );
    assert!(sent["extra"].is_object(), "{sent}");
    assert!(sent["n"].is_object(), "{sent}");
    assert_eq!(sent["n"]["$serde_json::private::Number"].to_string(), "12");
    assert_eq!(sent["big"].to_string(), "123456789012345678901234567890");
}
