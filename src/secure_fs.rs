//! Private, crash-safe file operations for key material, and the checks
//! that refuse material others could read or change.
//!
//! Directories are created 0700 and files written through a temporary file
//! that is created with its final mode, fsync'd, renamed into place, and
//! followed by an fsync of the directory. A reader therefore sees either the
//! old complete file or the new complete file, and a key is never readable
//! by others, not even for an instant.
//!
//! Loading is as strict as OpenSSH with a private key: a key whose mode
//! grants anything to group or others, a certificate or key directory that
//! group or others may write, or any of them owned by neither the calling
//! user nor root, is refused with an error naming the file, its mode, its
//! owner and the fix. Symbolic links are followed on load (the checks apply
//! to what they lead to); a write never follows one: the temporary file is
//! created exclusively and the rename replaces a link, never its target.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Mode of private key files.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificate files.
pub const CERT_MODE: u32 = 0o644;
/// Mode of directories holding key material.
pub const DIR_MODE: u32 = 0o700;

/// Marks the temporary files this module writes: `.<name>.tmp-<unique>`.
const TEMP_MARK: &str = ".tmp-";

/// What a file holds, which decides who else may touch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrecy {
    /// A private key: nobody but its owner may read or write it.
    PrivateKey,
    /// A certificate: anyone may read it, nobody but its owner may change
    /// it (whoever can replace `ca.crt` chooses whom the master trusts).
    Certificate,
}

/// Creates `dir` (and missing parents) with mode 0700. An existing `dir`
/// must pass [`check_dir`]; one that group or others may only read is
/// tightened to 0700. Parents that already exist are left alone.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io(dir, e))?;
    let meta = check_dir(dir)?;
    if meta.permissions().mode() & 0o777 != DIR_MODE && meta.uid() == effective_uid() {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// Refuses a directory of key material that others may change: one owned
/// by neither the calling user nor root, or writable by group or others.
/// A symbolic link to a directory is followed; the checks apply to the
/// directory it leads to.
pub fn check_dir(dir: &Path) -> Result<Metadata> {
    let meta = fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::pki(dir, "is not a directory"));
    }
    check_owner(dir, &meta)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::pki(
            dir,
            format!(
                "directory mode {mode:04o} lets group or others add, remove or replace its files; fix: chmod 700 {}",
                dir.display()
            ),
        ));
    }
    Ok(meta)
}

/// Reads a key or certificate file after checking, on the opened file
/// itself, that nobody but its owner can change it (nor, for a key, read
/// it) and that it belongs to the calling user or root.
pub fn read_checked(path: &Path, secrecy: Secrecy) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::pki(path, "is not a regular file"));
    }
    check_owner(path, &meta)?;
    let mode = meta.permissions().mode() & 0o7777;
    let (forbidden, what, fix) = match secrecy {
        Secrecy::PrivateKey => (0o077, "read or change this private key", "chmod 600"),
        Secrecy::Certificate => (0o022, "replace this certificate", "chmod 644"),
    };
    if mode & forbidden != 0 {
        return Err(Error::pki(
            path,
            format!(
                "mode {mode:04o} lets group or others {what} (owner uid {}); refused as OpenSSH refuses an unprotected key; fix: {fix} {}",
                meta.uid(),
                path.display()
            ),
        ));
    }
    read_bounded(path, file, &meta)
}

/// The largest key, certificate or CA file read: far above any real PEM
/// bundle, far below what could exhaust memory.
pub const MAX_PKI_FILE_BYTES: u64 = 1 << 20;

/// Reads at most [`MAX_PKI_FILE_BYTES`] of an opened file; a larger (or
/// sparse, or growing) file is a `pki` error naming it, never an attempt
/// to allocate its claimed size.
fn read_bounded(path: &Path, file: File, meta: &Metadata) -> Result<Vec<u8>> {
    let too_big = || {
        Error::pki(
            path,
            format!(
                "is larger than {MAX_PKI_FILE_BYTES} bytes, more than any key or certificate file; refused"
            ),
        )
    };
    if meta.len() > MAX_PKI_FILE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_PKI_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_PKI_FILE_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn check_owner(path: &Path, meta: &Metadata) -> Result<()> {
    let me = effective_uid();
    let owner = meta.uid();
    if owner == me || owner == 0 {
        return Ok(());
    }
    Err(Error::pki(
        path,
        format!(
            "owned by uid {owner}, neither the calling user (uid {me}) nor root, who could replace it; fix: chown {me} {}",
            path.display()
        ),
    ))
}

/// Writes `contents` to `path` atomically with the given mode.
///
/// The temporary file lives beside `path` (same file system) under a fresh
/// name, created exclusively, so neither a concurrent writer nor a planted
/// file or link can be written through.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = create_temp_beside(path, contents, mode)?;
    let result = fs::rename(&tmp, path)
        .map_err(|e| Error::io(path, e))
        .and_then(|()| sync_parent(path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` (which must not exist, not even as a dangling link) with
/// `mode`, writes and fsyncs it. A failure after the file was created
/// removes it.
pub fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e));
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

/// Renames `from` to `to` and makes the rename durable.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    sync_parent(to)
}

/// Reads a whole certificate file with no ownership checks, at most
/// [`MAX_PKI_FILE_BYTES`], mapping errors to [`Error::Io`] with the path.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    read_bounded(path, file, &meta)
}

/// Fsyncs the directory that holds `path`, so a rename survives a crash.
fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(parent, e))
}

/// Writes `contents` to a new temporary file beside `path` and returns its
/// name. Names hold the process id, a per-process counter and the clock, and
/// an existing name (a leftover of a killed process that had the same pid,
/// as pid 1 in every container) is skipped, never reused.
fn create_temp_beside(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for _ in 0..16 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let unique = format!(
            "{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = path.with_file_name(format!(".{name}{TEMP_MARK}{unique}"));
        match write_new_file(&tmp, contents, mode) {
            Ok(()) => return Ok(tmp),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                last = Some(source);
            }
            Err(other) => return Err(other),
        }
    }
    Err(Error::io(
        path,
        last.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()),
    ))
}

/// Removes the temporary files a killed writer left in `dir`: regular files
/// named as [`write_atomic`] names them, never links or anything else. Call
/// it only while holding `dir`'s [`DirLock`], which every writer of `dir`
/// holds: no live writer can then own one of them.
pub fn remove_leftover_temporaries(dir: &Path, _lock: &DirLock) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.starts_with('.')
            && name.split_once(TEMP_MARK).is_some_and(|(_, unique)| {
                !unique.is_empty() && unique.chars().all(|c| c.is_ascii_digit() || c == '-')
            });
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if ours && regular {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_parent(&dir.join("."))?;
    }
    Ok(removed)
}

/// An exclusive advisory lock on `<dir>/.lock`, held until dropped.
///
/// Serialises every process that creates or repairs material in `dir`.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Blocks until this process holds the lock of `dir`. A symbolic link
    /// planted at `.lock` is refused, never followed.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(KEY_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.lock().map_err(|e| Error::io(&path, e))?;
        Ok(DirLock { _file: file })
    }
}
