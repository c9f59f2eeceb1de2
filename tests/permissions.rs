//! Key and trust files as strict as OpenSSH's: the permission matrix.
//!
//! Each case starts from material the library made (0700 folders, 0600
//! keys, 0644 certificates), loosens one mode, hands one file to another
//! user, or plants one symbolic link, and checks the documented outcome:
//! a `pki` error naming the file, its mode or owner and the fix, or, for
//! links, a load that follows them and a write that never does.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use decnet_agent_client::identity::MASTER_DIR;
use decnet_agent_client::pki::{Bundle, CertificateAuthority};
use decnet_agent_client::{Error, Identity};

/// A uid that owns nothing on these machines.
const STRANGER: u32 = 54_321;

fn fresh_ca() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("ca");
    Identity::ensure(Some(&ca_dir)).expect("a fresh identity");
    (root, ca_dir)
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Asserts that `result` is a `pki` error about `path` whose message
/// holds every one of `words`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, Error>, path: &Path, words: &[&str]) {
    match result {
        Err(Error::Pki { path: got, reason }) => {
            assert_eq!(got, path, "{reason}");
            for word in words {
                assert!(reason.contains(word), "{word:?} missing from: {reason}");
            }
        }
        other => panic!(
            "expected a pki error about {}, got {other:?}",
            path.display()
        ),
    }
}

/// Every way the master identity is loaded: ensure, the bundle folder and
/// the three explicit files.
fn every_load(ca_dir: &Path) -> Vec<(&'static str, Result<Identity, Error>)> {
    let master = ca_dir.join(MASTER_DIR);
    vec![
        ("ensure", Identity::ensure(Some(ca_dir))),
        ("load_dir", Identity::load_dir(&master)),
        (
            "load",
            Identity::load(
                &master.join("ca.crt"),
                &master.join("worker.crt"),
                &master.join("worker.key"),
            ),
        ),
    ]
}

#[test]
fn material_the_library_and_the_reference_write_loads_unchanged() {
    let (_root, ca_dir) = fresh_ca();
    for (how, result) in every_load(&ca_dir) {
        result.unwrap_or_else(|e| panic!("{how}: {e}"));
    }
    CertificateAuthority::load(&ca_dir).unwrap();
    // Tighter than needed is fine too.
    chmod(&ca_dir.join("ca.crt"), 0o600);
    chmod(&ca_dir.join(MASTER_DIR).join("worker.key"), 0o400);
    for (how, result) in every_load(&ca_dir) {
        result.unwrap_or_else(|e| panic!("{how}: {e}"));
    }
}

#[test]
fn a_private_key_open_to_group_or_others_is_refused() {
    for mode in [0o640, 0o604, 0o660, 0o644, 0o666, 0o610] {
        let (_root, ca_dir) = fresh_ca();
        let ca_key = ca_dir.join("ca.key");
        chmod(&ca_key, mode);
        let fix = format!("chmod 600 {}", ca_key.display());
        let shown = format!("{mode:04o}");
        assert_refused(
            CertificateAuthority::load(&ca_dir),
            &ca_key,
            &[&shown, &fix],
        );
        assert_refused(Identity::ensure(Some(&ca_dir)), &ca_key, &[&shown, &fix]);
        chmod(&ca_key, 0o600);

        let master_key = ca_dir.join(MASTER_DIR).join("worker.key");
        chmod(&master_key, mode);
        let fix = format!("chmod 600 {}", master_key.display());
        for (how, result) in every_load(&ca_dir) {
            match result {
                Err(Error::Pki { path, reason }) if path == master_key => {
                    assert!(
                        reason.contains(&fix) && reason.contains(&shown),
                        "{how}: {reason}"
                    )
                }
                other => panic!("{how}, mode {shown}: expected a pki error, got {other:?}"),
            }
        }
    }
}

#[test]
fn a_certificate_or_folder_others_may_change_is_refused() {
    for mode in [0o664, 0o646, 0o666] {
        let (_root, ca_dir) = fresh_ca();
        let ca_crt = ca_dir.join("ca.crt");
        chmod(&ca_crt, mode);
        assert_refused(
            Identity::ensure(Some(&ca_dir)),
            &ca_crt,
            &[&format!("{mode:04o}"), "chmod 644"],
        );
        chmod(&ca_crt, 0o644);
        let master_ca = ca_dir.join(MASTER_DIR).join("ca.crt");
        chmod(&master_ca, mode);
        assert_refused(
            Identity::load_dir(&ca_dir.join(MASTER_DIR)),
            &master_ca,
            &["chmod 644"],
        );
    }
    for mode in [0o770, 0o707, 0o777, 0o730] {
        let (_root, ca_dir) = fresh_ca();
        chmod(&ca_dir, mode);
        assert_refused(
            Identity::ensure(Some(&ca_dir)),
            &ca_dir,
            &[&format!("{mode:04o}"), "chmod 700"],
        );
        assert_refused(CertificateAuthority::load(&ca_dir), &ca_dir, &["chmod 700"]);
        chmod(&ca_dir, 0o700);
        let master = ca_dir.join(MASTER_DIR);
        chmod(&master, mode);
        assert_refused(Identity::ensure(Some(&ca_dir)), &master, &["chmod 700"]);
        assert_refused(Identity::load_dir(&master), &master, &["chmod 700"]);
    }
}

#[test]
fn a_group_readable_ca_folder_of_ours_is_tightened_not_refused() {
    let (_root, ca_dir) = fresh_ca();
    chmod(&ca_dir, 0o750);
    Identity::ensure(Some(&ca_dir)).unwrap();
    assert_eq!(
        fs::metadata(&ca_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn material_owned_by_another_user_is_refused() {
    if !is_root() {
        println!("skipped: changing a file's owner needs root (CI runs as root)");
        return;
    }
    let chown = |path: &Path, uid: u32| std::os::unix::fs::chown(path, Some(uid), None).unwrap();
    let (_root, ca_dir) = fresh_ca();
    let master = ca_dir.join(MASTER_DIR);
    for path in [
        ca_dir.join("ca.key"),
        ca_dir.join("ca.crt"),
        master.join("worker.key"),
        master.join("ca.crt"),
        master.clone(),
        ca_dir.clone(),
    ] {
        chown(&path, STRANGER);
        let owner = format!("uid {STRANGER}");
        assert_refused(Identity::ensure(Some(&ca_dir)), &path, &[&owner, "chown"]);
        chown(&path, 0);
    }
    // Root-owned material is accepted for any caller.
    Identity::ensure(Some(&ca_dir)).unwrap();
}

#[test]
fn symbolic_links_are_followed_on_load_and_checked_where_they_lead() {
    let (root, ca_dir) = fresh_ca();
    // A linked CA folder (say, on an encrypted volume) works.
    let linked = root.path().join("linked-ca");
    symlink(&ca_dir, &linked).unwrap();
    Identity::ensure(Some(&linked)).unwrap();
    Identity::load_dir(&linked.join(MASTER_DIR)).unwrap();

    // A key linked from a protected place loads; from an open one it does not.
    let master = ca_dir.join(MASTER_DIR);
    let vault = root.path().join("vault");
    fs::create_dir(&vault).unwrap();
    chmod(&vault, 0o700);
    let kept = vault.join("master.key");
    fs::rename(master.join("worker.key"), &kept).unwrap();
    symlink(&kept, master.join("worker.key")).unwrap();
    Identity::load_dir(&master).unwrap();
    chmod(&kept, 0o644);
    assert_refused(
        Identity::load_dir(&master),
        &master.join("worker.key"),
        &["0644"],
    );
}

#[test]
fn a_link_planted_where_a_key_is_written_never_redirects_the_write() {
    let (root, ca_dir) = fresh_ca();
    let master = ca_dir.join(MASTER_DIR);
    // The bundle is incomplete, so the next ensure re-issues it; a link
    // planted at the key's name points at a file of the attacker's choice.
    let victim = root.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    fs::remove_file(master.join("worker.crt")).unwrap();
    fs::remove_file(master.join("worker.key")).unwrap();
    symlink(&victim, master.join("worker.key")).unwrap();
    Identity::ensure(Some(&ca_dir)).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    let key = fs::symlink_metadata(master.join("worker.key")).unwrap();
    assert!(key.is_file(), "the key is a regular file again");
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    // A dangling link where a new CA's key goes is replaced, its target
    // never created.
    let new_ca = root.path().join("new-ca");
    fs::create_dir(&new_ca).unwrap();
    chmod(&new_ca, 0o700);
    let elsewhere = root.path().join("elsewhere.key");
    symlink(&elsewhere, new_ca.join("ca.key")).unwrap();
    CertificateAuthority::ensure(&new_ca).unwrap();
    assert!(!elsewhere.exists(), "the write followed the link");
    assert!(fs::symlink_metadata(new_ca.join("ca.key"))
        .unwrap()
        .is_file());

    // A link planted at the lock file is refused, not followed.
    let locked = root.path().join("locked-ca");
    fs::create_dir(&locked).unwrap();
    chmod(&locked, 0o700);
    let lock_target = root.path().join("lock-target");
    symlink(&lock_target, locked.join(".lock")).unwrap();
    assert!(Identity::ensure(Some(&locked)).is_err());
    assert!(!lock_target.exists(), "the lock followed the link");
}

#[test]
fn leftovers_of_a_killed_writer_are_removed_by_the_next_ensure() {
    let (_root, ca_dir) = fresh_ca();
    let master = ca_dir.join(MASTER_DIR);
    let leftovers = [
        master.join(".worker.key.tmp-1-0-123456789"),
        master.join(".worker.crt.tmp-77-3-42"),
        ca_dir.join(".ca.crt.tmp-1-9-5"),
    ];
    for path in &leftovers {
        fs::write(path, "half a key").unwrap();
    }
    // Not ours: a link named like a leftover, and an unrelated dot file.
    let link = master.join(".ca.crt.tmp-1-0-1");
    symlink(ca_dir.join("ca.crt"), &link).unwrap();
    let unrelated = ca_dir.join(".notes.tmp-draft");
    fs::write(&unrelated, "mine").unwrap();

    let bundle_before = Bundle::load(&master).unwrap();
    Identity::ensure(Some(&ca_dir)).unwrap();
    for path in &leftovers {
        assert!(!path.exists(), "{} left behind", path.display());
    }
    assert!(fs::symlink_metadata(&link).is_ok(), "a link was removed");
    assert!(unrelated.exists(), "an unrelated file was removed");
    assert_eq!(
        Bundle::load(&master).unwrap().fingerprint,
        bundle_before.fingerprint
    );
}
