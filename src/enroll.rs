//! Enrollment: issue a worker's agent identity and, optionally, its
//! updater identity from the CA, write both bundles where the master keeps
//! them, and return the host record the master stores.
//!
//! Layout under the CA directory (folders 0700, keys 0600, each file
//! written atomically):
//!
//! ```text
//! <ca_dir>/workers/<name>/ca.crt, worker.crt, worker.key
//! <ca_dir>/workers/<name>/updater/updater.crt, updater.key   (both 0600)
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::client::HostRecord;
use crate::error::{Error, Result};
use crate::pki::{Bundle, CertificateAuthority, CA_CERT_FILE, CA_KEY_FILE, LEAF_VALIDITY_DAYS};
use crate::secure_fs::{self, DirLock, KEY_MODE};

/// Folder of the CA directory that holds one folder per enrolled worker.
pub const WORKERS_DIR: &str = "workers";
/// Folder of a worker's folder that holds its updater identity.
pub const UPDATER_DIR: &str = "updater";
/// The updater's certificate file.
pub const UPDATER_CERT_FILE: &str = "updater.crt";
/// The updater's private key file.
pub const UPDATER_KEY_FILE: &str = "updater.key";

/// What to enroll.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// The worker's name: its certificate CN, a DNS SAN and its folder name
    /// (letters, digits, `-`, `_` and `.`, not starting with `.`; 1 to 55
    /// characters, so that `updater@<name>` fits a CN).
    pub name: String,
    /// The address the master dials (IP or DNS name); also a SAN.
    pub address: String,
    /// Extra subject alternative names (IP addresses or DNS names).
    pub sans: Vec<String>,
    /// The agent's port (0 means 8765).
    pub agent_port: u16,
    /// Also issue an updater identity.
    pub with_updater: bool,
    /// Replace an existing enrollment of the same name instead of refusing.
    pub reissue: bool,
}

/// What an enrollment wrote and the record to store.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The host record: `uuid`, `name`, `address`, `agent_port`,
    /// `client_cert_fingerprint`, `updater_cert_fingerprint` (or null).
    pub record: Value,
    /// `<ca_dir>/workers/<name>`.
    pub worker_dir: PathBuf,
    /// `<ca_dir>/workers/<name>/updater`, when an updater identity was issued.
    pub updater_dir: Option<PathBuf>,
}

/// Enrolls a worker with the CA in `ca_dir` (which must exist: see
/// [`crate::Identity::ensure`]). Refuses, with an invalid-argument error on
/// `name`, a name already enrolled unless `reissue` is set. A first
/// enrollment is written in a temporary folder renamed into place, so a
/// crash leaves either nothing or a whole enrollment; a re-issue replaces
/// each file atomically, certificates before keys.
pub fn enroll(ca_dir: &Path, request: &EnrollRequest) -> Result<Enrolled> {
    check_worker_name(&request.name)?;
    let host = HostRecord::new(&request.address, request.agent_port)?;
    // No CA yet is "not enrolled", as the C header promises, not an I/O error.
    for file in [CA_KEY_FILE, CA_CERT_FILE] {
        if !ca_dir.join(file).exists() {
            return Err(Error::NotEnrolled {
                dir: ca_dir.to_path_buf(),
                missing: file.to_string(),
            });
        }
    }
    let ca = CertificateAuthority::load(ca_dir)?;

    let worker_sans = dedup(
        request
            .sans
            .iter()
            .map(String::as_str)
            .chain([host.address.as_str(), request.name.as_str()]),
    );
    let worker = ca.issue(&request.name, &worker_sans, LEAF_VALIDITY_DAYS)?;
    let updater_name = format!("updater@{}", request.name);
    let updater = if request.with_updater {
        let sans = dedup(
            worker_sans
                .iter()
                .map(String::as_str)
                .chain([updater_name.as_str(), "127.0.0.1"]),
        );
        Some(ca.issue(&updater_name, &sans, LEAF_VALIDITY_DAYS)?)
    } else {
        None
    };

    let workers = ca_dir.join(WORKERS_DIR);
    secure_fs::create_private_dir(&workers)?;
    let lock = DirLock::acquire(&workers)?;
    remove_leftover_staging(&workers, &lock)?;
    let worker_dir = workers.join(&request.name);
    let exists = fs::symlink_metadata(&worker_dir).is_ok();
    if exists && !request.reissue {
        return Err(Error::invalid(
            "name",
            format!(
                "worker {:?} is already enrolled ({}); ask for a re-issue to replace it",
                request.name,
                worker_dir.display()
            ),
        ));
    }
    if exists {
        for dir in [worker_dir.clone(), worker_dir.join(UPDATER_DIR)] {
            secure_fs::remove_leftover_temporaries(&dir, &lock)?;
        }
        write_bundles(&worker_dir, &worker, updater.as_ref())?;
        if updater.is_none() {
            let stale = worker_dir.join(UPDATER_DIR);
            if fs::symlink_metadata(&stale).is_ok() {
                fs::remove_dir_all(&stale).map_err(|e| Error::io(&stale, e))?;
            }
        }
    } else {
        let staging = workers.join(format!(
            ".{}{STAGING_MARK}{}",
            request.name,
            std::process::id()
        ));
        let written = write_bundles(&staging, &worker, updater.as_ref())
            .and_then(|()| secure_fs::rename_durable(&staging, &worker_dir));
        if written.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        written?;
    }

    let record = json!({
        "uuid": uuid::Uuid::new_v4().to_string(),
        "name": request.name,
        "address": host.address,
        "agent_port": host.port,
        "client_cert_fingerprint": worker.fingerprint,
        "updater_cert_fingerprint": updater.as_ref().map(|b| b.fingerprint.clone()),
    });
    Ok(Enrolled {
        record,
        updater_dir: updater.as_ref().map(|_| worker_dir.join(UPDATER_DIR)),
        worker_dir,
    })
}

/// Marks a first enrollment's staging folder: `.<name>.enroll-<pid>`.
const STAGING_MARK: &str = ".enroll-";

/// Removes the staging folders (and the private keys in them) that
/// crashed enrollments left in `workers`, whatever their pid. Every
/// enrollment stages only while holding `workers`' lock, so under `_lock`
/// none of them belongs to a live process. Links and plain files are left
/// alone.
fn remove_leftover_staging(workers: &Path, _lock: &DirLock) -> Result<()> {
    let entries = fs::read_dir(workers).map_err(|e| Error::io(workers, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(workers, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let staging = name.starts_with('.')
            && name
                .rsplit_once(STAGING_MARK)
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()));
        if staging && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

fn write_bundles(dir: &Path, worker: &Bundle, updater: Option<&Bundle>) -> Result<()> {
    worker.write(dir)?;
    if let Some(updater) = updater {
        let updater_dir = dir.join(UPDATER_DIR);
        secure_fs::create_private_dir(&updater_dir)?;
        secure_fs::write_atomic(
            &updater_dir.join(UPDATER_CERT_FILE),
            updater.cert_pem.as_bytes(),
            KEY_MODE,
        )?;
        secure_fs::write_atomic(
            &updater_dir.join(UPDATER_KEY_FILE),
            updater.key_pem.as_bytes(),
            KEY_MODE,
        )?;
    }
    Ok(())
}

/// A worker name is a folder name too: no separators, no dot files.
fn check_worker_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 55
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!("{name:?}: 1 to 55 letters, digits, '-', '_' or '.', not starting with '.'"),
        ))
    }
}

fn dedup<'a>(entries: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in entries {
        if !out.iter().any(|e| e == entry) {
            out.push(entry.to_string());
        }
    }
    out
}
