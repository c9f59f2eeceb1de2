//! Crash safety of the PKI: a process ensuring the master identity is
//! killed with SIGKILL at random moments (125 times), and at the moment a
//! file waits for its rename (25 times). Afterwards the
//! directory holds a complete, valid identity or the next ensure completes
//! it; a half-written key is never accepted; there is never a second CA.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Lcg;
use decnet_agent_client::identity::MASTER_DIR;
use decnet_agent_client::pki::{self, Bundle, CertificateAuthority};
use decnet_agent_client::Identity;

const CHILD_ENV: &str = "DECNET_CRASH_CHILD_DIR";
const TRIALS: usize = 100;

/// In a child process: ensure the identity in the given directory.
#[test]
fn crash_child() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        Identity::ensure(Some(Path::new(&dir))).unwrap();
    }
}

fn spawn_child(dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--test-threads=1", "--quiet"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn ca_fingerprint_if_complete(dir: &Path) -> Option<String> {
    if dir.join("ca.key").exists() && dir.join("ca.crt").exists() {
        Some(
            CertificateAuthority::load(dir)
                .expect("a complete CA on disk must load")
                .fingerprint(),
        )
    } else {
        None
    }
}

/// Every key file present must be complete: atomic renames never expose a
/// half-written one under its final name.
fn assert_no_partial_keys(dir: &Path) {
    for key in [dir.join("ca.key"), dir.join(MASTER_DIR).join("worker.key")] {
        if let Ok(text) = std::fs::read_to_string(&key) {
            assert!(
                text.starts_with("-----BEGIN PRIVATE KEY-----")
                    && text.trim_end().ends_with("-----END PRIVATE KEY-----"),
                "partial key under its final name: {}",
                key.display()
            );
        }
    }
}

/// Files a writer leaves only between writing a file and renaming it into
/// place: the temporary `.<name>.tmp-…` files and the staged `ca.*.new`.
fn unrenamed_files(dir: &Path) -> Vec<String> {
    [dir.to_path_buf(), dir.join(MASTER_DIR)]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains(".tmp-") || name.ends_with(".new"))
        .collect()
}

/// When the child is killed: after a fixed delay, or as soon as a file
/// waiting for its rename appears.
#[derive(Clone, Copy)]
enum Kill {
    After(Duration),
    AtFirstUnrenamedFile,
}

/// Kills one child and checks what the next ensure makes of it. Returns
/// the phase the kill landed in.
fn trial(dir: &Path, kill: Kill) -> &'static str {
    let mut child = spawn_child(dir);
    match kill {
        Kill::After(delay) => std::thread::sleep(delay),
        Kill::AtFirstUnrenamedFile => {
            let started = Instant::now();
            while unrenamed_files(dir).is_empty() && started.elapsed() < Duration::from_secs(10) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
            }
        }
    }
    let _ = child.kill();
    let status = child.wait().unwrap();

    assert_no_partial_keys(dir);
    let before = ca_fingerprint_if_complete(dir);
    let phase = match (&before, Bundle::load(&dir.join(MASTER_DIR))) {
        _ if status.success() => "finished before the kill",
        _ if !unrenamed_files(dir).is_empty() => "killed between a write and its rename",
        (None, _) => "killed before the CA was complete",
        (Some(_), Err(_)) => "killed after the CA, before the master bundle",
        (Some(_), Ok(_)) => "killed after both were written",
    };

    let identity = Identity::ensure(Some(dir)).expect("the next ensure completes the identity");
    let after = ca_fingerprint_if_complete(dir).expect("a CA exists after ensure");
    if let Some(before) = before {
        assert_eq!(before, after, "a second CA was created");
    }
    let bundle = Bundle::load(&dir.join(MASTER_DIR)).expect("a complete master bundle");
    assert_eq!(bundle.fingerprint, identity.fingerprint());
    assert_eq!(
        pki::fingerprint(bundle.ca_cert_pem.as_bytes()).unwrap(),
        after
    );
    let left = unrenamed_files(dir);
    assert!(left.is_empty(), "the next ensure left {left:?} behind");
    phase
}

#[test]
fn sigkill_during_identity_creation_never_leaves_a_broken_or_second_ca() {
    // How long one uninterrupted creation takes here, start-up included.
    let probe = tempfile::tempdir().unwrap();
    let started = Instant::now();
    assert!(spawn_child(probe.path()).wait().unwrap().success());
    let full = started.elapsed().as_micros() as u64;

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}, an uninterrupted run takes {} ms", full / 1000);
    let mut rng = Lcg(seed);
    let mut phases = std::collections::BTreeMap::new();
    for _ in 0..TRIALS {
        let dir = tempfile::tempdir().unwrap();
        let delay = Duration::from_micros(rng.below(full + full / 4));
        *phases
            .entry(trial(dir.path(), Kill::After(delay)))
            .or_insert(0) += 1;
    }
    // Kills aimed at the moment a file waits for its rename.
    for _ in 0..TRIALS / 4 {
        let dir = tempfile::tempdir().unwrap();
        *phases
            .entry(trial(dir.path(), Kill::AtFirstUnrenamedFile))
            .or_insert(0) += 1;
    }
    // Kills during a re-issue of the master bundle over an existing CA.
    let dir = tempfile::tempdir().unwrap();
    Identity::ensure(Some(dir.path())).unwrap();
    let ca = ca_fingerprint_if_complete(dir.path()).unwrap();
    for _ in 0..TRIALS / 4 {
        let _ = std::fs::remove_file(dir.path().join(MASTER_DIR).join("worker.crt"));
        let delay = Duration::from_micros(rng.below(full));
        *phases
            .entry(trial(dir.path(), Kill::After(delay)))
            .or_insert(0) += 1;
        assert_eq!(ca_fingerprint_if_complete(dir.path()).unwrap(), ca);
    }
    println!("kill outcomes: {phases:?}");
    // The test proves something only if kills landed in the window that
    // matters, between a write and its rename, and elsewhere too.
    assert!(
        phases.contains_key("killed between a write and its rename"),
        "no kill landed between a write and its rename: {phases:?}"
    );
    assert!(
        phases.len() >= 3,
        "the kills landed in too few phases: {phases:?}"
    );
}
