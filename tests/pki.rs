//! The PKI against real files, real certificates and independent tools:
//! `openssl` for fingerprints and chain verification, Python `cryptography`
//! for parsing certificates and for making material the way the reference
//! master does.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decnet_agent_client::identity::{ensure_master_bundle, MASTER_DIR};
use decnet_agent_client::pki::{
    self, Bundle, CertificateAuthority, CA_VALIDITY_DAYS, LEAF_VALIDITY_DAYS,
};
use decnet_agent_client::{Error, ErrorKind, Identity};
use serde_json::Value;
use tempfile::TempDir;

const CA_SUBJECT: [(&str, &str); 2] = [("2.5.4.3", "DECNET SWARM Root CA"), ("2.5.4.10", "DECNET")];
const OID_SAN: &str = "2.5.29.17";
const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_EXT_KEY_USAGE: &str = "2.5.29.37";
const OID_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const OID_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";
const BUNDLE_FILES: [&str; 3] = ["ca.crt", "worker.crt", "worker.key"];
/// Names the directory a `race_child` run works in; unset in normal runs.
const RACE_DIR_ENV: &str = "DECNET_PKI_TEST_RACE_DIR";
/// A file whose appearance releases every `race_child` at once.
const RACE_GO_ENV: &str = "DECNET_PKI_TEST_RACE_GO";

/// Inspects certificates (`inspect PATH...`) and makes reference material
/// (`make-reference CA_DIR BUNDLE_DIR LEAF_NAME`), printing JSON.
const PY_SCRIPT: &str = r#"
import datetime, ipaddress, json, os, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

def name_attrs(name):
    return [[a.oid.dotted_string, a.value] for a in name]

def inspect(path):
    data = open(path, "rb").read()
    if b"-----BEGIN" in data:
        cert = x509.load_pem_x509_certificate(data)
    else:
        cert = x509.load_der_x509_certificate(data)
    pk = cert.public_key()
    out = {
        "subject": name_attrs(cert.subject),
        "issuer": name_attrs(cert.issuer),
        "subject_der": cert.subject.public_bytes().hex(),
        "issuer_der": cert.issuer.public_bytes().hex(),
        "serial": str(cert.serial_number),
        "not_before": int(cert.not_valid_before_utc.timestamp()),
        "not_after": int(cert.not_valid_after_utc.timestamp()),
        "signature_oid": cert.signature_algorithm_oid.dotted_string,
        "extension_oids": [e.oid.dotted_string for e in cert.extensions],
        "fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
        "key_type": "rsa" if isinstance(pk, rsa.RSAPublicKey)
            else ("ec" if isinstance(pk, ec.EllipticCurvePublicKey) else "other"),
        "key_size": pk.key_size,
    }
    for ext in cert.extensions:
        v = ext.value
        if ext.oid == ExtensionOID.BASIC_CONSTRAINTS:
            out["basic_constraints"] = {
                "critical": ext.critical, "ca": v.ca, "path_length": v.path_length}
        elif ext.oid == ExtensionOID.KEY_USAGE:
            usages = [u for u in ["digital_signature", "content_commitment",
                                  "key_encipherment", "data_encipherment",
                                  "key_agreement", "key_cert_sign", "crl_sign"]
                      if getattr(v, u)]
            if v.key_agreement:
                usages += [u for u in ["encipher_only", "decipher_only"] if getattr(v, u)]
            out["key_usage"] = {"critical": ext.critical, "usages": usages}
        elif ext.oid == ExtensionOID.EXTENDED_KEY_USAGE:
            out["extended_key_usage"] = {
                "critical": ext.critical, "oids": [o.dotted_string for o in v]}
        elif ext.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            entries = []
            for g in v:
                if isinstance(g, x509.DNSName):
                    entries.append(["dns", g.value])
                elif isinstance(g, x509.IPAddress):
                    entries.append(["ip", str(g.value)])
                else:
                    entries.append(["other", repr(g)])
            out["san"] = {"critical": ext.critical, "entries": entries}
    return out

def write(path, data, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)

def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())

def key_usage(**on):
    names = ["digital_signature", "content_commitment", "key_encipherment",
             "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
             "encipher_only", "decipher_only"]
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})

def make_reference(ca_dir, bundle_dir, leaf_name):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "DECNET SWARM Root CA"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DECNET"),
    ])
    ca_cert = (x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(digital_signature=True, key_cert_sign=True,
                                 crl_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256()))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    os.makedirs(ca_dir, mode=0o700, exist_ok=True)
    write(os.path.join(ca_dir, "ca.key"), pem_key(ca_key), 0o600)
    write(os.path.join(ca_dir, "ca.crt"), ca_pem, 0o644)

    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, leaf_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DECNET"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-worker"),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True, key_encipherment=True),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName(leaf_name),
        ]), critical=False)
        .sign(ca_key, hashes.SHA256()))
    os.makedirs(bundle_dir, mode=0o700, exist_ok=True)
    write(os.path.join(bundle_dir, "ca.crt"), ca_pem, 0o644)
    write(os.path.join(bundle_dir, "worker.crt"),
          leaf.public_bytes(serialization.Encoding.PEM), 0o644)
    write(os.path.join(bundle_dir, "worker.key"), pem_key(leaf_key), 0o600)
    return {"ca_fingerprint": ca_cert.fingerprint(hashes.SHA256()).hex(),
            "leaf_fingerprint": leaf.fingerprint(hashes.SHA256()).hex()}

cmd = sys.argv[1]
if cmd == "inspect":
    result = [inspect(p) for p in sys.argv[2:]]
elif cmd == "make-reference":
    result = make_reference(sys.argv[2], sys.argv[3], sys.argv[4])
else:
    raise SystemExit("unknown command " + cmd)
print(json.dumps(result))
"#;

// ---------------------------------------------------------------- helpers

fn tmp() -> TempDir {
    tempfile::tempdir().expect("temporary directory")
}

fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Runs `program args`, asserting success; returns stdout.
fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 tool output")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `openssl x509 -noout -fingerprint -sha256`, lowercased, colons removed.
fn openssl_fingerprint(path: &Path) -> String {
    let out = run_tool(
        "openssl",
        &[
            "x509",
            "-in",
            path_str(path),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    let (_, value) = out
        .trim()
        .split_once('=')
        .unwrap_or_else(|| panic!("unexpected openssl output {out:?}"));
    let fp: String = value
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    assert_eq!(fp.len(), 64, "openssl fingerprint {out:?}");
    fp
}

/// Asserts `openssl verify -CAfile ca cert` (plus `extra` options) says OK.
fn openssl_verify(ca: &Path, cert: &Path, extra: &[&str]) {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-CAfile", path_str(ca), path_str(cert)]);
    let out = run_tool("openssl", &args);
    assert_eq!(
        out.trim(),
        format!("{}: OK", cert.display()),
        "openssl verify {extra:?}"
    );
}

/// Writes `script` to a temporary file, runs it with `python3 script args`
/// and parses its stdout as JSON.
fn run_python(script: &str, args: &[&str]) -> Value {
    let dir = tmp();
    let path = dir.path().join("script.py");
    fs::write(&path, script).expect("write script");
    let mut all = vec![path_str(&path)];
    all.extend_from_slice(args);
    let out = run_tool("python3", &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("python printed non-JSON {out:?}: {e}"))
}

/// Parses certificates with Python `cryptography`.
fn inspect(paths: &[&Path]) -> Vec<Value> {
    let mut args = vec!["inspect"];
    args.extend(paths.iter().map(|p| path_str(p)));
    match run_python(PY_SCRIPT, &args) {
        Value::Array(items) => items,
        other => panic!("expected a JSON array, got {other}"),
    }
}

fn inspect_one(path: &Path) -> Value {
    inspect(&[path]).remove(0)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Writes a private key the way the reference and this library do: 0600.
fn write_key(path: impl AsRef<Path>, pem: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(pem.as_ref())
}

fn copy(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

/// The path of a [`Error::Pki`]; panics on any other error.
fn pki_error_path(err: &Error) -> &Path {
    assert_eq!(err.kind(), ErrorKind::Pki, "expected a PKI error: {err:?}");
    match err {
        Error::Pki { path, .. } => path,
        other => panic!("expected Error::Pki, got {other:?}"),
    }
}

/// Asserts `err` is a PKI error about `file` (its path and its message).
fn assert_pki_error_names(err: &Error, file: &Path) {
    assert_eq!(pki_error_path(err), file, "{err}");
    assert!(
        err.to_string().contains(path_str(file)),
        "message {:?} does not name {}",
        err.to_string(),
        file.display()
    );
}

fn subject(pairs: &[(&str, &str)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(oid, value)| serde_json::json!([oid, value]))
            .collect(),
    )
}

fn leaf_subject(name: &str) -> Value {
    subject(&[
        ("2.5.4.3", name),
        ("2.5.4.10", "DECNET"),
        ("2.5.4.11", "swarm-worker"),
    ])
}

fn str_list(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {value}"))
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("expected an integer, got {value}"))
}

/// Asserts a validity window of now−5 min (±60 s) .. now+`days` (±1 day).
fn assert_validity(cert: &Value, now: i64, days: u32, what: &str) {
    let not_before = int(&cert["not_before"]);
    let not_after = int(&cert["not_after"]);
    assert!(
        (not_before - (now - 300)).abs() <= 60,
        "{what}: not_before {not_before} is not now-5min ({})",
        now - 300
    );
    let expected_after = now + i64::from(days) * 86_400;
    assert!(
        (not_after - expected_after).abs() <= 86_400,
        "{what}: not_after {not_after} is not now+{days}d ({expected_after})"
    );
}

/// Asserts the common leaf profile; `san` is the exact expected SAN list.
fn assert_leaf_profile(cert: &Value, ca: &Value, name: &str, san: &[(&str, &str)], now: i64) {
    assert_eq!(cert["subject"], leaf_subject(name), "leaf subject");
    assert_eq!(cert["issuer"], ca["subject"], "leaf issuer");
    assert_eq!(
        cert["issuer_der"], ca["subject_der"],
        "leaf issuer must be byte-identical to the CA subject"
    );
    assert_eq!(
        str_list(&cert["extension_oids"]),
        set(&[
            OID_SAN,
            OID_KEY_USAGE,
            OID_BASIC_CONSTRAINTS,
            OID_EXT_KEY_USAGE
        ]),
        "leaf extensions"
    );
    assert_eq!(
        cert["extension_oids"].as_array().map(Vec::len),
        Some(4),
        "duplicate extensions"
    );
    let bc = &cert["basic_constraints"];
    assert_eq!(bc["critical"], true);
    assert_eq!(bc["ca"], false);
    assert_eq!(bc["path_length"], Value::Null);
    let ku = &cert["key_usage"];
    assert_eq!(ku["critical"], true);
    assert_eq!(
        ku["usages"],
        serde_json::json!(["digital_signature", "key_encipherment"])
    );
    let eku = &cert["extended_key_usage"];
    assert_eq!(eku["critical"], true);
    assert_eq!(
        str_list(&eku["oids"]),
        set(&[OID_SERVER_AUTH, OID_CLIENT_AUTH])
    );
    assert_eq!(eku["oids"].as_array().map(Vec::len), Some(2));
    let expected_san: Vec<Value> = san
        .iter()
        .map(|(kind, value)| serde_json::json!([kind, value]))
        .collect();
    assert_eq!(cert["san"]["entries"], Value::Array(expected_san), "SANs");
    assert_validity(cert, now, LEAF_VALIDITY_DAYS, name);
    let serial = cert["serial"].as_str().expect("serial");
    assert!(
        !serial.starts_with('-') && serial != "0",
        "serial {serial} must be positive"
    );
}

// ------------------------------------------------------------------ tests

#[test]
fn bundle_round_trip_and_missing_files_are_not_enrolled() {
    let root = tmp();
    let ca = CertificateAuthority::ensure(&root.path().join("ca")).expect("CA");
    let bundle = ca
        .issue(
            "worker-1",
            &["10.0.0.7", "worker-1.lan"],
            LEAF_VALIDITY_DAYS,
        )
        .expect("issue");
    assert_eq!(bundle.ca_cert_pem, ca.cert_pem());
    assert_eq!(
        bundle.fingerprint,
        pki::fingerprint(bundle.cert_pem.as_bytes()).unwrap()
    );

    let agent = root.path().join("agent");
    bundle.write(&agent).expect("write");
    assert_eq!(names_in(&agent), set(&BUNDLE_FILES));
    assert_eq!(read(&agent.join("ca.crt")), ca.cert_pem().as_bytes());
    assert_eq!(read(&agent.join("worker.crt")), bundle.cert_pem.as_bytes());
    assert_eq!(read(&agent.join("worker.key")), bundle.key_pem.as_bytes());

    let loaded = Bundle::load(&agent).expect("load");
    assert_eq!(loaded.ca_cert_pem, bundle.ca_cert_pem);
    assert_eq!(loaded.cert_pem, bundle.cert_pem);
    assert_eq!(loaded.key_pem, bundle.key_pem);
    assert_eq!(loaded.fingerprint, bundle.fingerprint);
    let identity = Identity::load_dir(&agent).expect("identity");
    assert_eq!(identity.fingerprint(), bundle.fingerprint);
    assert_eq!(identity.ca_cert().as_ref(), ca.cert_der().as_ref());

    for missing in BUNDLE_FILES {
        let dir = root.path().join(format!("without-{missing}"));
        bundle.write(&dir).expect("write");
        fs::remove_file(dir.join(missing)).unwrap();
        for err in [
            Bundle::load(&dir).expect_err("bundle with a missing file"),
            Identity::load_dir(&dir).expect_err("identity with a missing file"),
        ] {
            assert_eq!(err.kind(), ErrorKind::NotEnrolled, "{missing}: {err:?}");
            match &err {
                Error::NotEnrolled { dir: d, missing: m } => {
                    assert_eq!(d, &dir);
                    assert_eq!(m, missing);
                }
                other => panic!("expected NotEnrolled, got {other:?}"),
            }
        }
    }

    // An empty or absent directory is not enrolled either.
    let absent = root.path().join("never-created");
    assert_eq!(
        Bundle::load(&absent).unwrap_err().kind(),
        ErrorKind::NotEnrolled
    );
}

#[test]
fn fingerprints_match_openssl_for_pem_and_der() {
    let root = tmp();
    let identity = Identity::ensure(Some(root.path())).expect("ensure");
    let ca = CertificateAuthority::load(root.path()).expect("CA");
    let worker = ca
        .issue("fp-worker", &["192.0.2.10"], LEAF_VALIDITY_DAYS)
        .unwrap();
    let agent = root.path().join("agent");
    worker.write(&agent).unwrap();

    let ca_crt = root.path().join("ca.crt");
    let worker_crt = agent.join("worker.crt");
    let master_crt = root.path().join(MASTER_DIR).join("worker.crt");
    let cases = [
        ("CA", &ca_crt, ca.fingerprint()),
        ("worker", &worker_crt, worker.fingerprint.clone()),
        ("master", &master_crt, identity.fingerprint().to_string()),
    ];
    let mut seen = BTreeSet::new();
    for (what, pem_path, ours) in cases {
        let theirs = openssl_fingerprint(pem_path);
        assert_eq!(ours, theirs, "{what} fingerprint vs openssl");
        assert!(seen.insert(theirs.clone()), "{what}: fingerprints collide");
        assert_eq!(pki::fingerprint_file(pem_path).unwrap(), theirs, "{what}");
        assert_eq!(pki::fingerprint(&read(pem_path)).unwrap(), theirs, "{what}");

        let der_path = root.path().join(format!("{what}.der"));
        run_tool(
            "openssl",
            &[
                "x509",
                "-in",
                path_str(pem_path),
                "-outform",
                "DER",
                "-out",
                path_str(&der_path),
            ],
        );
        let der = read(&der_path);
        assert_ne!(der.first(), Some(&b'-'), "{what}: openssl wrote PEM");
        assert_eq!(pki::fingerprint(&der).unwrap(), theirs, "{what} DER");
        assert_eq!(pki::fingerprint_file(&der_path).unwrap(), theirs, "{what}");
        assert_eq!(pki::fingerprint_der(&der), theirs, "{what}");
    }
    assert_eq!(
        pki::fingerprint_file(&ca_crt).unwrap(),
        identity_ca_fingerprint(&identity)
    );

    // Not a certificate at all.
    assert!(pki::fingerprint(b"definitely not a certificate").is_err());
    assert!(pki::fingerprint(b"").is_err());
    let garbage = root.path().join("garbage.crt");
    fs::write(&garbage, b"\x30\x03\x02\x01\x00 not DER").unwrap();
    let err = pki::fingerprint_file(&garbage).unwrap_err();
    assert_pki_error_names(&err, &garbage);
}

fn identity_ca_fingerprint(identity: &Identity) -> String {
    pki::fingerprint(identity.ca_cert().as_ref()).expect("CA DER")
}

#[test]
fn normalize_fingerprint_accepts_case_and_colons_and_rejects_the_rest() {
    let root = tmp();
    let ca = CertificateAuthority::ensure(root.path()).unwrap();
    let lower = ca.fingerprint();
    let upper = lower.to_ascii_uppercase();
    let colons: String = upper
        .as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(colons.len(), 64 + 31);
    for form in [&lower, &upper, &colons, &format!("  {colons}\n")] {
        assert_eq!(pki::normalize_fingerprint(form).unwrap(), lower, "{form:?}");
    }
    // The exact output form of openssl's fingerprint is accepted too.
    let openssl = run_tool(
        "openssl",
        &[
            "x509",
            "-in",
            path_str(&root.path().join("ca.crt")),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    let (_, value) = openssl.trim().split_once('=').unwrap();
    assert_eq!(pki::normalize_fingerprint(value).unwrap(), lower);

    let bad = [
        String::new(),
        lower[..63].to_string(),
        format!("{lower}0"),
        format!("{}g", &lower[..63]),
        format!("{}z", &lower[..63]),
        format!("{}é", &lower[..62]),
        lower[..32].to_string(),
        format!("{lower}{lower}"),
        format!("0x{}", &lower[..62]),
        "-".repeat(64),
    ];
    for text in &bad {
        let err = pki::normalize_fingerprint(text).expect_err(text);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{text:?}: {err:?}");
    }
}

#[test]
fn certificates_carry_the_reference_profile() {
    let root = tmp();
    let ca_dir = root.path().join("ca");
    let now = now_epoch();
    let ca = CertificateAuthority::ensure(&ca_dir).expect("CA");
    let one = ca
        .issue(
            "worker-1",
            &["10.0.0.5", "::1", "worker.example"],
            LEAF_VALIDITY_DAYS,
        )
        .unwrap();
    let two = ca
        .issue("w2", &["w2", "192.168.1.1"], LEAF_VALIDITY_DAYS)
        .unwrap();
    one.write(&root.path().join("one")).unwrap();
    two.write(&root.path().join("two")).unwrap();
    let identity = Identity::ensure(Some(&ca_dir)).expect("master");

    let ca_crt = ca_dir.join("ca.crt");
    let one_crt = root.path().join("one/worker.crt");
    let two_crt = root.path().join("two/worker.crt");
    let master_crt = ca_dir.join(MASTER_DIR).join("worker.crt");
    let parsed = inspect(&[&ca_crt, &one_crt, &two_crt, &master_crt]);
    let [ca_info, one_info, two_info, master_info] = &parsed[..] else {
        panic!("expected four certificates, got {parsed:?}");
    };

    // The CA.
    assert_eq!(ca_info["subject"], subject(&CA_SUBJECT), "CA subject");
    assert_eq!(ca_info["issuer"], ca_info["subject"], "CA is self-issued");
    assert_eq!(ca_info["issuer_der"], ca_info["subject_der"]);
    assert_eq!(ca_info["fingerprint"], ca.fingerprint());
    assert_eq!(
        str_list(&ca_info["extension_oids"]),
        set(&[OID_BASIC_CONSTRAINTS, OID_KEY_USAGE]),
        "CA extensions"
    );
    assert_eq!(ca_info["extension_oids"].as_array().map(Vec::len), Some(2));
    let bc = &ca_info["basic_constraints"];
    assert_eq!(bc["critical"], true);
    assert_eq!(bc["ca"], true);
    assert_eq!(bc["path_length"], 0);
    let ku = &ca_info["key_usage"];
    assert_eq!(ku["critical"], true);
    assert_eq!(
        ku["usages"],
        serde_json::json!(["digital_signature", "key_cert_sign", "crl_sign"])
    );
    assert_validity(ca_info, now, CA_VALIDITY_DAYS, "CA");

    // Two workers: IPs as IP, names as DNS, the name appended once.
    assert_leaf_profile(
        one_info,
        ca_info,
        "worker-1",
        &[
            ("ip", "10.0.0.5"),
            ("ip", "::1"),
            ("dns", "worker.example"),
            ("dns", "worker-1"),
        ],
        now,
    );
    assert_leaf_profile(
        two_info,
        ca_info,
        "w2",
        &[("dns", "w2"), ("ip", "192.168.1.1")],
        now,
    );
    assert_eq!(one_info["fingerprint"], one.fingerprint);
    assert_eq!(two_info["fingerprint"], two.fingerprint);
    assert_ne!(
        one_info["serial"], two_info["serial"],
        "serials must differ"
    );
    assert_ne!(one_info["serial"], ca_info["serial"]);

    // The master.
    assert_leaf_profile(
        master_info,
        ca_info,
        "decnet-master",
        &[("ip", "127.0.0.1"), ("dns", "decnet-master")],
        now,
    );
    assert_eq!(master_info["fingerprint"], identity.fingerprint());

    // An independent verifier accepts the chains, for both TLS roles.
    for leaf in [&one_crt, &two_crt, &master_crt] {
        openssl_verify(&ca_crt, leaf, &[]);
        openssl_verify(&ca_crt, leaf, &["-purpose", "sslserver"]);
        openssl_verify(&ca_crt, leaf, &["-purpose", "sslclient"]);
    }
}

#[test]
fn reference_made_rsa_ca_and_bundle_are_loaded_and_used() {
    let root = tmp();
    let ca_dir = root.path().join("ca");
    let ref_bundle = root.path().join("ref-worker");
    let made = run_python(
        PY_SCRIPT,
        &[
            "make-reference",
            path_str(&ca_dir),
            path_str(&ref_bundle),
            "ref-worker",
        ],
    );
    let ca_crt = ca_dir.join("ca.crt");
    let ca_key = ca_dir.join("ca.key");
    let ca_crt_before = read(&ca_crt);
    let ca_key_before = read(&ca_key);
    assert!(String::from_utf8_lossy(&ca_key_before).starts_with("-----BEGIN PRIVATE KEY-----"));
    let ref_ca_info = inspect_one(&ca_crt);
    assert_eq!(ref_ca_info["key_type"], "rsa");
    assert_eq!(ref_ca_info["key_size"], 4096);

    // Loaded, not regenerated.
    let ca = CertificateAuthority::ensure(&ca_dir).expect("load the reference CA");
    assert_eq!(read(&ca_crt), ca_crt_before, "ca.crt was rewritten");
    assert_eq!(read(&ca_key), ca_key_before, "ca.key was rewritten");
    assert_eq!(ca.cert_pem().as_bytes(), &ca_crt_before[..]);
    assert_eq!(ca.fingerprint(), made["ca_fingerprint"]);
    assert_eq!(ca.fingerprint(), openssl_fingerprint(&ca_crt));

    // It signs leaves that openssl accepts.
    let leaf = ca
        .issue("new-worker", &["198.51.100.4"], LEAF_VALIDITY_DAYS)
        .expect("issue with the RSA CA");
    let leaf_dir = root.path().join("new-worker");
    leaf.write(&leaf_dir).unwrap();
    let leaf_crt = leaf_dir.join("worker.crt");
    openssl_verify(&ca_crt, &leaf_crt, &[]);
    let leaf_info = inspect_one(&leaf_crt);
    assert_eq!(leaf_info["issuer_der"], ref_ca_info["subject_der"]);
    assert_eq!(
        leaf_info["signature_oid"], "1.2.840.113549.1.1.11",
        "an RSA CA signs with sha256WithRSAEncryption"
    );
    assert_leaf_profile(
        &leaf_info,
        &ref_ca_info,
        "new-worker",
        &[("ip", "198.51.100.4"), ("dns", "new-worker")],
        now_epoch(),
    );
    assert_eq!(
        Bundle::load(&leaf_dir).unwrap().fingerprint,
        leaf.fingerprint
    );

    // The master identity is made under the reference CA.
    let identity = Identity::ensure(Some(&ca_dir)).expect("master under the RSA CA");
    assert_eq!(read(&ca_crt), ca_crt_before, "ca.crt was rewritten");
    assert_eq!(read(&ca_key), ca_key_before, "ca.key was rewritten");
    let master = ca_dir.join(MASTER_DIR);
    assert_eq!(read(&master.join("ca.crt")), ca_crt_before);
    openssl_verify(&ca_crt, &master.join("worker.crt"), &[]);
    assert_eq!(
        identity.fingerprint(),
        openssl_fingerprint(&master.join("worker.crt"))
    );
    assert_eq!(identity_ca_fingerprint(&identity), ca.fingerprint());

    // The reference RSA-2048 worker bundle loads.
    let ref_fp = made["leaf_fingerprint"].as_str().unwrap();
    let bundle = Bundle::load(&ref_bundle).expect("reference bundle");
    assert_eq!(bundle.fingerprint, ref_fp);
    assert_eq!(
        bundle.fingerprint,
        openssl_fingerprint(&ref_bundle.join("worker.crt"))
    );
    assert_eq!(bundle.ca_cert_pem.as_bytes(), &ca_crt_before[..]);
    let ref_identity = Identity::load_dir(&ref_bundle).expect("reference identity");
    assert_eq!(ref_identity.fingerprint(), ref_fp);
    let explicit = Identity::load(
        &ref_bundle.join("ca.crt"),
        &ref_bundle.join("worker.crt"),
        &ref_bundle.join("worker.key"),
    )
    .expect("reference identity from three paths");
    assert_eq!(explicit.fingerprint(), ref_fp);
}

#[test]
fn files_and_directories_get_private_modes() {
    let root = tmp();
    let ca_dir = root.path().join("fresh").join("ca");
    Identity::ensure(Some(&ca_dir)).expect("ensure");
    let master = ca_dir.join(MASTER_DIR);
    assert_eq!(mode(&ca_dir), 0o700, "CA dir");
    assert_eq!(mode(&master), 0o700, "master dir");
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600, "ca.key");
    assert_eq!(mode(&master.join("worker.key")), 0o600, "master key");
    for cert in [
        ca_dir.join("ca.crt"),
        master.join("ca.crt"),
        master.join("worker.crt"),
    ] {
        let m = mode(&cert);
        assert_eq!(
            m & !0o644,
            0,
            "{} mode {m:o} is looser than 0644",
            cert.display()
        );
    }

    let ca = CertificateAuthority::load(&ca_dir).unwrap();
    let bundle = ca.issue("modes", &["10.1.1.1"], 30).unwrap();
    let agent = root.path().join("agent").join("bundle");
    bundle.write(&agent).unwrap();
    assert_eq!(mode(&agent), 0o700, "bundle dir");
    assert_eq!(mode(&agent.join("worker.key")), 0o600, "worker.key");

    // A pre-existing, too-open CA directory is tightened.
    let open = root.path().join("open-ca");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(mode(&open), 0o755);
    Identity::ensure(Some(&open)).expect("ensure in a 0755 dir");
    assert_eq!(mode(&open), 0o700, "existing CA dir not tightened");
    assert_eq!(mode(&open.join("ca.key")), 0o600);
    assert_eq!(mode(&open.join(MASTER_DIR)), 0o700);
}

#[test]
fn half_present_ca_is_refused_and_left_untouched() {
    let root = tmp();
    let source = root.path().join("source");
    CertificateAuthority::ensure(&source).unwrap();

    // ca.crt without ca.key.
    let only_cert = root.path().join("only-cert");
    fs::create_dir(&only_cert).unwrap();
    copy(&source.join("ca.crt"), &only_cert.join("ca.crt"));
    let before = read(&only_cert.join("ca.crt"));
    let errors = [
        CertificateAuthority::ensure(&only_cert).expect_err("cert without key"),
        Identity::ensure(Some(&only_cert)).expect_err("cert without key"),
        ensure_master_bundle(&only_cert).expect_err("cert without key"),
    ];
    for err in &errors {
        assert_pki_error_names(err, &only_cert.join("ca.key"));
    }
    assert_eq!(read(&only_cert.join("ca.crt")), before, "ca.crt changed");
    assert!(!only_cert.join("ca.key").exists(), "ca.key was created");
    assert!(
        !only_cert.join(MASTER_DIR).exists(),
        "master bundle created"
    );
    assert!(
        names_in(&only_cert).is_subset(&set(&["ca.crt", ".lock"])),
        "{:?}",
        names_in(&only_cert)
    );

    // ca.key without ca.crt.
    let only_key = root.path().join("only-key");
    fs::create_dir(&only_key).unwrap();
    copy(&source.join("ca.key"), &only_key.join("ca.key"));
    let before = read(&only_key.join("ca.key"));
    let errors = [
        CertificateAuthority::ensure(&only_key).expect_err("key without cert"),
        Identity::ensure(Some(&only_key)).expect_err("key without cert"),
    ];
    for err in &errors {
        assert_pki_error_names(err, &only_key.join("ca.crt"));
    }
    assert_eq!(read(&only_key.join("ca.key")), before, "ca.key changed");
    assert!(!only_key.join("ca.crt").exists(), "ca.crt was created");
    assert!(!only_key.join(MASTER_DIR).exists(), "master bundle created");
    assert!(
        names_in(&only_key).is_subset(&set(&["ca.key", ".lock"])),
        "{:?}",
        names_in(&only_key)
    );
}

#[test]
fn corrupt_material_is_a_pki_error_naming_the_file() {
    let root = tmp();
    let good = root.path().join("good");
    Identity::ensure(Some(&good)).unwrap();
    let good_key = read(&good.join("ca.key"));

    // Garbage ca.crt beside a good key.
    let bad_cert = root.path().join("bad-cert");
    fs::create_dir(&bad_cert).unwrap();
    write_key(bad_cert.join("ca.key"), &good_key).unwrap();
    fs::write(bad_cert.join("ca.crt"), b"this is not a certificate\n").unwrap();
    for err in [
        CertificateAuthority::ensure(&bad_cert).unwrap_err(),
        CertificateAuthority::load(&bad_cert).unwrap_err(),
        Identity::ensure(Some(&bad_cert)).unwrap_err(),
    ] {
        assert_pki_error_names(&err, &bad_cert.join("ca.crt"));
    }
    assert_eq!(
        read(&bad_cert.join("ca.crt")),
        b"this is not a certificate\n"
    );
    assert_eq!(read(&bad_cert.join("ca.key")), good_key);

    // A PEM frame with a body that is not a certificate.
    let framed = root.path().join("framed");
    fs::create_dir(&framed).unwrap();
    write_key(framed.join("ca.key"), &good_key).unwrap();
    fs::write(
        framed.join("ca.crt"),
        b"-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert_pki_error_names(
        &CertificateAuthority::ensure(&framed).unwrap_err(),
        &framed.join("ca.crt"),
    );

    // Truncated ca.key beside a good certificate.
    let bad_key = root.path().join("bad-key");
    fs::create_dir(&bad_key).unwrap();
    copy(&good.join("ca.crt"), &bad_key.join("ca.crt"));
    let truncated = &good_key[..good_key.len() / 2];
    write_key(bad_key.join("ca.key"), truncated).unwrap();
    for err in [
        CertificateAuthority::ensure(&bad_key).unwrap_err(),
        Identity::ensure(Some(&bad_key)).unwrap_err(),
    ] {
        assert_pki_error_names(&err, &bad_key.join("ca.key"));
    }
    assert_eq!(read(&bad_key.join("ca.key")), truncated);

    // A CA key that belongs to another CA certificate.
    let other = root.path().join("other");
    CertificateAuthority::ensure(&other).unwrap();
    let swapped = root.path().join("swapped");
    fs::create_dir(&swapped).unwrap();
    copy(&good.join("ca.crt"), &swapped.join("ca.crt"));
    copy(&other.join("ca.key"), &swapped.join("ca.key"));
    assert_pki_error_names(
        &CertificateAuthority::ensure(&swapped).unwrap_err(),
        &swapped.join("ca.key"),
    );

    // A worker bundle whose key belongs to another certificate.
    let ca = CertificateAuthority::load(&good).unwrap();
    let a = ca.issue("worker-a", &["10.0.0.1"], 30).unwrap();
    let b = ca.issue("worker-b", &["10.0.0.2"], 30).unwrap();
    let mixed = root.path().join("mixed");
    a.write(&mixed).unwrap();
    write_key(mixed.join("worker.key"), &b.key_pem).unwrap();
    for err in [
        Bundle::load(&mixed).unwrap_err(),
        Identity::load_dir(&mixed).unwrap_err(),
    ] {
        assert_pki_error_names(&err, &mixed.join("worker.key"));
    }

    // Garbage worker.crt in a bundle.
    let bad_leaf = root.path().join("bad-leaf");
    a.write(&bad_leaf).unwrap();
    fs::write(bad_leaf.join("worker.crt"), b"garbage").unwrap();
    assert_pki_error_names(
        &Bundle::load(&bad_leaf).unwrap_err(),
        &bad_leaf.join("worker.crt"),
    );

    // A complete master bundle with a foreign key is reported, never replaced.
    let master = good.join(MASTER_DIR);
    write_key(master.join("worker.key"), &b.key_pem).unwrap();
    let before: Vec<Vec<u8>> = BUNDLE_FILES.iter().map(|f| read(&master.join(f))).collect();
    assert_pki_error_names(
        &Identity::ensure(Some(&good)).unwrap_err(),
        &master.join("worker.key"),
    );
    let after: Vec<Vec<u8>> = BUNDLE_FILES.iter().map(|f| read(&master.join(f))).collect();
    assert_eq!(before, after, "the broken master bundle was modified");
}

#[test]
fn interrupted_ca_creation_is_completed_or_discarded() {
    let root = tmp();
    let source = root.path().join("source");
    let source_ca = CertificateAuthority::ensure(&source).unwrap();
    let staged_cert = read(&source.join("ca.crt"));

    // Crash between the two renames: ca.key and ca.crt.new.
    let half = root.path().join("half");
    fs::create_dir(&half).unwrap();
    copy(&source.join("ca.key"), &half.join("ca.key"));
    fs::rename(source.join("ca.crt"), half.join("ca.crt.new")).unwrap();
    let ca = CertificateAuthority::ensure(&half).expect("completes the creation");
    assert_eq!(read(&half.join("ca.crt")), staged_cert);
    assert_eq!(ca.fingerprint(), source_ca.fingerprint());
    assert_eq!(names_in(&half), set(&["ca.crt", "ca.key", ".lock"]));

    // The same crash but the staged certificate is another CA's: refused.
    let foreign = root.path().join("foreign");
    CertificateAuthority::ensure(&foreign).unwrap();
    let mismatched = root.path().join("mismatched");
    fs::create_dir(&mismatched).unwrap();
    write_key(mismatched.join("ca.key"), read(&half.join("ca.key"))).unwrap();
    copy(&foreign.join("ca.crt"), &mismatched.join("ca.crt.new"));
    let err = CertificateAuthority::ensure(&mismatched).unwrap_err();
    assert_pki_error_names(&err, &mismatched.join("ca.crt"));
    assert!(!mismatched.join("ca.crt").exists());

    // Crash before the first rename: only staged files. A fresh CA.
    let staged = root.path().join("staged");
    fs::create_dir(&staged).unwrap();
    copy(&half.join("ca.key"), &staged.join("ca.key.new"));
    copy(&half.join("ca.crt"), &staged.join("ca.crt.new"));
    let fresh = CertificateAuthority::ensure(&staged).expect("fresh CA");
    assert_eq!(names_in(&staged), set(&["ca.crt", "ca.key", ".lock"]));
    assert_eq!(
        fresh.fingerprint(),
        openssl_fingerprint(&staged.join("ca.crt"))
    );
    CertificateAuthority::load(&staged).expect("the fresh CA is consistent");

    // Only a staged key (crash while staging the certificate).
    let key_only = root.path().join("key-only");
    fs::create_dir(&key_only).unwrap();
    copy(&half.join("ca.key"), &key_only.join("ca.key.new"));
    CertificateAuthority::ensure(&key_only).expect("fresh CA");
    assert_eq!(names_in(&key_only), set(&["ca.crt", "ca.key", ".lock"]));
}

#[test]
fn master_bundle_is_reissued_when_incomplete_and_kept_when_complete() {
    let root = tmp();
    let ca_dir = root.path();
    let master = ca_dir.join(MASTER_DIR);
    let first = Identity::ensure(Some(ca_dir)).unwrap();
    let ca_files: Vec<Vec<u8>> = ["ca.crt", "ca.key"]
        .iter()
        .map(|f| read(&ca_dir.join(f)))
        .collect();

    // Complete: loaded unchanged.
    let before: Vec<Vec<u8>> = BUNDLE_FILES.iter().map(|f| read(&master.join(f))).collect();
    let again = Identity::ensure(Some(ca_dir)).unwrap();
    assert_eq!(again.fingerprint(), first.fingerprint());
    let after: Vec<Vec<u8>> = BUNDLE_FILES.iter().map(|f| read(&master.join(f))).collect();
    assert_eq!(before, after, "a complete master bundle was rewritten");

    // Any file missing: re-issued under the same CA.
    let mut fingerprints = BTreeSet::from([first.fingerprint().to_string()]);
    for missing in BUNDLE_FILES {
        fs::remove_file(master.join(missing)).unwrap();
        let reissued = Identity::ensure(Some(ca_dir)).expect("re-issue");
        assert!(
            fingerprints.insert(reissued.fingerprint().to_string()),
            "master bundle without {missing} was not re-issued"
        );
        assert_eq!(names_in(&master), set(&BUNDLE_FILES));
        let bundle = Bundle::load(&master).expect("consistent bundle");
        assert_eq!(bundle.fingerprint, reissued.fingerprint());
        assert_eq!(
            reissued.fingerprint(),
            openssl_fingerprint(&master.join("worker.crt"))
        );
        assert_eq!(mode(&master.join("worker.key")), 0o600);
        openssl_verify(&ca_dir.join("ca.crt"), &master.join("worker.crt"), &[]);
        let ca_after: Vec<Vec<u8>> = ["ca.crt", "ca.key"]
            .iter()
            .map(|f| read(&ca_dir.join(f)))
            .collect();
        assert_eq!(ca_after, ca_files, "the CA changed");
    }
}

/// Child side of [`eight_processes_race_to_one_identity`]: does nothing
/// unless started by it.
#[test]
fn race_child() {
    let Some(dir) = std::env::var_os(RACE_DIR_ENV) else {
        return;
    };
    if let Some(go) = std::env::var_os(RACE_GO_ENV) {
        let go = PathBuf::from(go);
        let deadline = SystemTime::now() + Duration::from_secs(30);
        while !go.exists() {
            assert!(SystemTime::now() < deadline, "never released");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let identity = Identity::ensure(Some(Path::new(&dir))).expect("ensure in child");
    println!(
        "RACE-RESULT ca={} master={}",
        identity_ca_fingerprint(&identity),
        identity.fingerprint()
    );
}

#[test]
fn eight_processes_race_to_one_identity() {
    const CHILDREN: usize = 8;
    let root = tmp();
    let ca_dir = root.path().join("ca");
    let go = root.path().join("go");
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| {
            Command::new(&exe)
                .args(["race_child", "--exact", "--nocapture", "--test-threads=1"])
                .env(RACE_DIR_ENV, &ca_dir)
                .env(RACE_GO_ENV, &go)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    // Give every child time to start and wait at the barrier.
    std::thread::sleep(Duration::from_millis(300));
    fs::write(&go, b"go").unwrap();

    let mut results = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("child output");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "child failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| {
                l.split_once("RACE-RESULT ")
                    .map(|(_, rest)| rest.to_string())
            })
            .unwrap_or_else(|| panic!("child printed no result:\n{stdout}"));
        results.push(line);
    }
    assert_eq!(results.len(), CHILDREN);
    let distinct: BTreeSet<&String> = results.iter().collect();
    assert_eq!(distinct.len(), 1, "children disagree: {results:#?}");

    let ca_fp = openssl_fingerprint(&ca_dir.join("ca.crt"));
    let master_fp = openssl_fingerprint(&ca_dir.join(MASTER_DIR).join("worker.crt"));
    assert_eq!(results[0], format!("ca={ca_fp} master={master_fp}"));
    assert_eq!(
        names_in(&ca_dir),
        set(&["ca.crt", "ca.key", ".lock", MASTER_DIR])
    );
    assert_eq!(names_in(&ca_dir.join(MASTER_DIR)), set(&BUNDLE_FILES));
    for dir in [ca_dir.clone(), ca_dir.join(MASTER_DIR)] {
        for name in names_in(&dir) {
            assert!(
                !name.contains(".tmp-") && !name.ends_with(".new"),
                "leftover {name} in {}",
                dir.display()
            );
        }
    }
    let master = Bundle::load(&ca_dir.join(MASTER_DIR)).expect("master bundle");
    assert_eq!(master.fingerprint, master_fp);
    openssl_verify(
        &ca_dir.join("ca.crt"),
        &ca_dir.join(MASTER_DIR).join("worker.crt"),
        &[],
    );
}

#[test]
fn identity_load_checks_the_key_and_fingerprint_checks_pem_content() {
    let dir = tmp();
    let ca = CertificateAuthority::ensure(dir.path()).unwrap();
    let first = ca.issue("one", &["127.0.0.1"], 30).unwrap();
    let second = ca.issue("two", &["127.0.0.1"], 30).unwrap();
    let ca_path = dir.path().join("ca.crt");
    let cert_path = dir.path().join("one.crt");
    let key_path = dir.path().join("two.key");
    std::fs::write(&cert_path, &first.cert_pem).unwrap();
    write_key(&key_path, &second.key_pem).unwrap();
    let err = Identity::load(&ca_path, &cert_path, &key_path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Pki, "{err}");
    assert_pki_error_names(&err, &key_path);
    write_key(&key_path, &first.key_pem).unwrap();
    let identity = Identity::load(&ca_path, &cert_path, &key_path).unwrap();
    assert_eq!(identity.fingerprint(), first.fingerprint);

    // A certificate followed by stray bytes has no fingerprint: a hash of
    // the whole input would be a pin no peer ever presents.
    let mut padded = pem_to_der(&first.cert_pem);
    padded.extend_from_slice(b"\n\0\0");
    let err = decnet_agent_client::pki::fingerprint(&padded).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("follow the certificate"), "{err}");

    let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
    let err = decnet_agent_client::pki::fingerprint(junk.as_bytes()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// A huge or sparse key, certificate or CA file is a `pki` error naming
/// it, read no further than the bound: never an attempt to allocate its
/// claimed size (which aborted the process).
#[test]
fn huge_and_sparse_pki_files_are_refused_without_reading_them_whole() {
    let root = tmp();
    let ca_dir = root.path().join("ca");
    let ca = CertificateAuthority::ensure(&ca_dir).expect("CA");
    let bundle = ca
        .issue("worker-1", &["10.0.0.7"], LEAF_VALIDITY_DAYS)
        .unwrap();
    for (file, size) in [
        ("worker.key", 1u64 << 40),
        ("worker.crt", 1u64 << 40),
        ("ca.crt", pki_bound() + 1),
    ] {
        let agent = root.path().join(format!("agent-{file}"));
        bundle.write(&agent).expect("write");
        let path = agent.join(file);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(size))
            .expect("sparse file");
        let err = Bundle::load(&agent).expect_err("a huge file must be refused");
        assert_pki_error_names(&err, &path);
        assert!(err.to_string().contains("larger than"), "{err}");
        if file.ends_with(".crt") {
            let err = pki::fingerprint_file(&path).expect_err("huge certificate");
            assert_pki_error_names(&err, &path);
        }
    }
    let ca_key = ca_dir.join("ca.key");
    fs::OpenOptions::new()
        .write(true)
        .open(&ca_key)
        .and_then(|f| f.set_len(1 << 40))
        .expect("sparse CA key");
    let err = CertificateAuthority::load(&ca_dir).expect_err("a huge CA key");
    assert_pki_error_names(&err, &ca_key);
}

fn pki_bound() -> u64 {
    pki::MAX_FILE_BYTES
}
