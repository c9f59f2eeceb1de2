//! Enrollment against real files, checked by independent tools: Python
//! `cryptography` for names, SANs and key usages, `openssl` for
//! fingerprints and the chain; then the enrolled bundles serve a stand-in
//! agent and a stand-in updater that the returned host record drives.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::expect_kind;
use decnet_agent_client::enroll::{enroll, EnrollRequest, UPDATER_CERT_FILE, UPDATER_KEY_FILE};
use decnet_agent_client::pki::Bundle;
use decnet_agent_client::testkit::{StandInUpdater, StandInWorker, TestPki};
use decnet_agent_client::{
    AgentClient, ErrorKind, HostRecord, HostnameVerification, Tarball, UpdaterClient,
};
use serde_json::Value;

const PY_INSPECT: &str = r#"
import json, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
out = []
for path in sys.argv[1:]:
    cert = x509.load_pem_x509_certificate(open(path, "rb").read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    out.append({
        "cn": cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
        "issuer_cn": cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
        "dns": san.get_values_for_type(x509.DNSName),
        "ip": [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
        "digital_signature": ku.value.digital_signature,
        "key_encipherment": ku.value.key_encipherment,
        "key_cert_sign": ku.value.key_cert_sign,
        "server_auth": ExtendedKeyUsageOID.SERVER_AUTH in eku,
        "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH in eku,
        "ca": bc.ca,
        "fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
    })
print(json.dumps(out))
"#;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn inspect(paths: &[&Path]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("read_certificates.py");
    fs::write(&script, PY_INSPECT).unwrap();
    let mut args = vec![script.to_str().unwrap()];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    serde_json::from_str(&run("python3", &args)).unwrap()
}

fn openssl_fingerprint(path: &Path) -> String {
    let out = run(
        "openssl",
        &[
            "x509",
            "-in",
            path.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    out.trim()
        .split_once('=')
        .unwrap()
        .1
        .replace(':', "")
        .to_ascii_lowercase()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn request(name: &str, with_updater: bool) -> EnrollRequest {
    EnrollRequest {
        name: name.to_string(),
        address: "127.0.0.1".to_string(),
        sans: vec![
            "worker-1.example".to_string(),
            "10.0.0.7".to_string(),
            "127.0.0.1".to_string(),
        ],
        agent_port: 0,
        with_updater,
        reissue: false,
    }
}

fn strings(value: &Value) -> Vec<String> {
    let mut list: Vec<String> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    list.sort();
    list
}

#[test]
fn enrollment_writes_both_identities_as_the_spec_says() {
    let pki = TestPki::new().unwrap();
    let enrolled = enroll(pki.dir(), &request("worker-1", true)).unwrap();
    let record = &enrolled.record;
    let dir = pki.dir().join("workers/worker-1");
    assert_eq!(enrolled.worker_dir, dir);
    assert_eq!(
        enrolled.updater_dir.as_deref(),
        Some(dir.join("updater").as_path())
    );

    // The host record.
    let keys: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "address",
            "agent_port",
            "client_cert_fingerprint",
            "name",
            "updater_cert_fingerprint",
            "uuid"
        ]
    );
    assert_eq!(record["name"], "worker-1");
    assert_eq!(record["address"], "127.0.0.1");
    assert_eq!(record["agent_port"], 8765);
    let uuid = record["uuid"].as_str().unwrap();
    assert_eq!(uuid.len(), 36);
    assert_eq!(&uuid[14..15], "4", "a version-4 uuid: {uuid}");

    // Files and modes.
    let worker_crt = dir.join("worker.crt");
    let updater_crt = dir.join("updater").join(UPDATER_CERT_FILE);
    assert_eq!(mode(&pki.dir().join("workers")), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("updater")), 0o700);
    assert_eq!(mode(&dir.join("worker.key")), 0o600);
    assert_eq!(mode(&dir.join("updater").join(UPDATER_KEY_FILE)), 0o600);
    assert_eq!(mode(&updater_crt), 0o600);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "updater", "worker.crt", "worker.key"]);
    let mut names: Vec<String> = fs::read_dir(dir.join("updater"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [UPDATER_CERT_FILE, UPDATER_KEY_FILE]);
    assert!(
        fs::read_dir(pki.dir().join("workers")).unwrap().all(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name == "worker-1" || name == ".lock"
        }),
        "no staging folder is left behind"
    );

    // Certificates, read by Python `cryptography` and openssl.
    let certs = inspect(&[&worker_crt, &updater_crt]);
    let (worker, updater) = (&certs[0], &certs[1]);
    assert_eq!(worker["cn"], "worker-1");
    assert_eq!(strings(&worker["dns"]), ["worker-1", "worker-1.example"]);
    assert_eq!(strings(&worker["ip"]), ["10.0.0.7", "127.0.0.1"]);
    assert_eq!(updater["cn"], "updater@worker-1");
    assert_eq!(
        strings(&updater["dns"]),
        ["updater@worker-1", "worker-1", "worker-1.example"]
    );
    assert_eq!(strings(&updater["ip"]), ["10.0.0.7", "127.0.0.1"]);
    for cert in &certs {
        assert_eq!(cert["issuer_cn"], "DECNET SWARM Root CA");
        assert_eq!(cert["digital_signature"], true);
        assert_eq!(cert["key_encipherment"], true);
        assert_eq!(cert["key_cert_sign"], false);
        assert_eq!(cert["server_auth"], true);
        assert_eq!(cert["client_auth"], true);
        assert_eq!(cert["ca"], false);
    }
    assert_eq!(record["client_cert_fingerprint"], worker["fingerprint"]);
    assert_eq!(record["updater_cert_fingerprint"], updater["fingerprint"]);
    assert_eq!(
        record["client_cert_fingerprint"],
        openssl_fingerprint(&worker_crt)
    );
    assert_eq!(
        record["updater_cert_fingerprint"],
        openssl_fingerprint(&updater_crt)
    );
    for cert in [&worker_crt, &updater_crt] {
        let ca = pki.dir().join("ca.crt");
        let out = run(
            "openssl",
            &[
                "verify",
                "-CAfile",
                ca.to_str().unwrap(),
                cert.to_str().unwrap(),
            ],
        );
        assert!(out.trim().ends_with(": OK"), "{out}");
    }
}

#[test]
fn a_name_already_enrolled_is_refused_unless_reissue_is_asked() {
    let pki = TestPki::new().unwrap();
    let first = enroll(pki.dir(), &request("worker-2", true)).unwrap();
    let err = expect_kind(
        enroll(pki.dir(), &request("worker-2", false)),
        ErrorKind::InvalidArgument,
    );
    assert!(err.to_string().contains("already enrolled"), "{err}");
    let dir = pki.dir().join("workers/worker-2");
    assert_eq!(
        decnet_agent_client::pki::fingerprint_file(&dir.join("worker.crt")).unwrap(),
        first.record["client_cert_fingerprint"].as_str().unwrap(),
        "the refused enrollment changed nothing"
    );

    let mut again = request("worker-2", false);
    again.reissue = true;
    let second = enroll(pki.dir(), &again).unwrap();
    assert_ne!(
        second.record["client_cert_fingerprint"],
        first.record["client_cert_fingerprint"]
    );
    assert_eq!(second.record["updater_cert_fingerprint"], Value::Null);
    assert!(
        !dir.join("updater").exists(),
        "the old updater identity is gone"
    );
    let bundle = Bundle::load(&dir).unwrap();
    assert_eq!(
        bundle.fingerprint,
        second.record["client_cert_fingerprint"].as_str().unwrap()
    );

    for bad in ["", "../x", ".hidden", "a/b", "a b", &"x".repeat(56)] {
        expect_kind(
            enroll(pki.dir(), &request(bad, true)),
            ErrorKind::InvalidArgument,
        );
    }
    let mut bad_address = request("worker-3", true);
    bad_address.address = "not an address".into();
    expect_kind(enroll(pki.dir(), &bad_address), ErrorKind::InvalidArgument);
    assert!(!pki.dir().join("workers/worker-3").exists());
}

#[test]
fn the_record_drives_the_agent_and_the_updater_served_with_the_enrolled_bundles() {
    let pki = TestPki::new().unwrap();
    let enrolled = enroll(pki.dir(), &request("worker-4", true)).unwrap();
    let worker_bundle = Bundle::load(&enrolled.worker_dir).unwrap();
    let updater_dir = enrolled.updater_dir.clone().unwrap();
    let updater_bundle = Bundle {
        ca_cert_pem: worker_bundle.ca_cert_pem.clone(),
        cert_pem: fs::read_to_string(updater_dir.join(UPDATER_CERT_FILE)).unwrap(),
        key_pem: fs::read_to_string(updater_dir.join(UPDATER_KEY_FILE)).unwrap(),
        fingerprint: enrolled.record["updater_cert_fingerprint"]
            .as_str()
            .unwrap()
            .to_string(),
    };
    let agent = StandInWorker::start(&worker_bundle).unwrap();
    let updater = StandInUpdater::start(&updater_bundle).unwrap();
    assert_eq!(updater.fingerprint(), updater_bundle.fingerprint);

    let mut record = enrolled.record.clone();
    record["agent_port"] = agent.port().into();
    let agent_client = AgentClient::new(
        &pki.master,
        HostRecord::from_value(&record).unwrap(),
        HostnameVerification::On,
    )
    .unwrap();
    assert_eq!(agent_client.health().unwrap()["status"], "ok");
    let updater_client = UpdaterClient::from_host_value(
        &pki.master,
        &record,
        updater.port(),
        HostnameVerification::On,
    )
    .unwrap();
    updater_client
        .update(Tarball::Bytes(b"release"), "abc")
        .unwrap();
    assert_eq!(
        updater_client.releases().unwrap()["releases"][0]["sha"],
        "abc"
    );

    // The pins are the channels' own: each refuses the other's certificate.
    let mut swapped = record.clone();
    swapped["updater_cert_fingerprint"] = record["client_cert_fingerprint"].clone();
    let wrong = UpdaterClient::from_host_value(
        &pki.master,
        &swapped,
        updater.port(),
        HostnameVerification::On,
    )
    .unwrap();
    expect_kind(wrong.health(), ErrorKind::PinMismatch);
}

/// Private keys a crashed enrollment left on disk do not stay there: the
/// next enrollment removes every leftover staging folder (any pid) under
/// the lock, and a re-issue removes the temporary files a crashed re-issue
/// left in the worker's folders.
#[test]
fn leftovers_of_crashed_enrollments_are_removed() {
    let pki = TestPki::new().unwrap();
    let workers = pki.dir().join("workers");
    enroll(pki.dir(), &request("worker-1", true)).unwrap();
    let staged = [
        workers.join(".worker-7.enroll-4242"),
        workers.join(".worker-1.enroll-1"),
        workers.join(format!(".worker-8.enroll-{}", std::process::id())),
    ];
    for dir in &staged {
        fs::create_dir_all(dir.join("updater")).unwrap();
        fs::write(dir.join("worker.key"), "a private key").unwrap();
        fs::write(dir.join("updater/updater.key"), "a private key").unwrap();
    }
    let unrelated = [workers.join(".notes.enroll-x"), workers.join(".enroll-")];
    for dir in &unrelated {
        fs::create_dir_all(dir).unwrap();
    }
    let temporaries = [
        workers.join("worker-1/.worker.key.tmp-4242-0-123456"),
        workers.join("worker-1/updater/.updater.key.tmp-1-3-99"),
    ];
    for file in &temporaries {
        fs::write(file, "a private key").unwrap();
    }

    enroll(pki.dir(), &request("worker-9", false)).unwrap();
    for dir in &staged {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    for dir in &unrelated {
        assert!(dir.exists(), "{} is not a staging folder", dir.display());
    }
    for file in &temporaries {
        assert!(
            file.exists(),
            "only a re-issue of worker-1 cleans its folder"
        );
    }

    let mut again = request("worker-1", true);
    again.reissue = true;
    enroll(pki.dir(), &again).unwrap();
    for file in &temporaries {
        assert!(!file.exists(), "{} is left", file.display());
    }
    Bundle::load(&workers.join("worker-1")).unwrap();
}
