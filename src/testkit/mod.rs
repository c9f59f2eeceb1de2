//! Test kit: a loopback stand-in worker agent and throw-away PKI, for the
//! tests, the benchmarks and the demo binary. Built only with the `testkit`
//! feature; never part of the C library, the Python wheel or the installed
//! command-line tool.

mod demo;
mod endpoint;
mod evented;
mod http;
mod swarm;
mod updater;
mod worker;

pub use demo::run_demo;
pub use evented::{EventedMember, EventedSwarm, ServedHandshakes};
pub use swarm::{
    raise_fd_limit, serve_evented_swarm, serve_swarm, Behaviour, Member, Swarm, UpdaterBehaviour,
    UpdaterMember, UpdaterSwarm,
};
pub use updater::{
    StandInUpdater, UpdaterMode, Upload, DROP_AFTER_BYTES, KEPT_TARBALL_BYTES, MASTER_CN,
};
pub use worker::{Fault, LedgerEntry, StandInWorker, WorkerBuilder};

use std::path::Path;

use time::{Duration, OffsetDateTime};

use crate::error::Result;
use crate::identity::Identity;
use crate::pki::{Bundle, CertificateAuthority, LEAF_VALIDITY_DAYS};

/// A CA and master identity in a temporary directory, removed on drop.
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA.
    pub ca: CertificateAuthority,
    /// The master identity made by [`Identity::ensure`].
    pub master: Identity,
}

impl TestPki {
    /// Creates a fresh CA and master identity.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| crate::Error::io(std::env::temp_dir(), e))?;
        let master = Identity::ensure(Some(dir.path()))?;
        let ca = CertificateAuthority::load(dir.path())?;
        Ok(TestPki { dir, ca, master })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A worker bundle valid for 127.0.0.1, ::1 and localhost.
    pub fn worker_bundle(&self, name: &str) -> Result<Bundle> {
        self.ca
            .issue(name, &["127.0.0.1", "::1", "localhost"], LEAF_VALIDITY_DAYS)
    }

    /// A worker bundle with exactly the given SANs (plus the name).
    pub fn worker_bundle_for(&self, name: &str, sans: &[&str]) -> Result<Bundle> {
        self.ca.issue(name, sans, LEAF_VALIDITY_DAYS)
    }

    /// A bundle with an RSA-2048 key, as the reference makes them, for `name`
    /// with the given SANs (`IP:…` or `DNS:…` entries), signed by this CA.
    /// ring cannot generate RSA keys: this runs the `openssl` command.
    pub fn rsa_bundle(&self, name: &str, sans: &[&str]) -> Result<Bundle> {
        let dir = tempfile::tempdir().map_err(|e| crate::Error::io(std::env::temp_dir(), e))?;
        let path = |file: &str| dir.path().join(file);
        let ext = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=critical,serverAuth,clientAuth\nsubjectAltName={}\n",
            sans.join(",")
        );
        std::fs::write(path("ext.cnf"), ext).map_err(|e| crate::Error::io(path("ext.cnf"), e))?;
        let openssl = |args: &[&std::ffi::OsStr]| -> Result<()> {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .map_err(|e| crate::Error::io("openssl", e))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(crate::Error::internal(format!(
                    "openssl failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )))
            }
        };
        let (key, csr, cert) = (path("key.pem"), path("csr.pem"), path("cert.pem"));
        let subject = format!("/CN={name}/O=DECNET/OU=swarm-worker");
        let os = |s: &str| std::ffi::OsString::from(s);
        openssl(&[
            &os("genpkey"),
            &os("-algorithm"),
            &os("RSA"),
            &os("-pkeyopt"),
            &os("rsa_keygen_bits:2048"),
            &os("-out"),
            key.as_os_str(),
        ])?;
        openssl(&[
            &os("req"),
            &os("-new"),
            &os("-key"),
            key.as_os_str(),
            &os("-subj"),
            &os(&subject),
            &os("-out"),
            csr.as_os_str(),
        ])?;
        openssl(&[
            &os("x509"),
            &os("-req"),
            &os("-in"),
            csr.as_os_str(),
            &os("-CA"),
            self.dir().join("ca.crt").as_os_str(),
            &os("-CAkey"),
            self.dir().join("ca.key").as_os_str(),
            &os("-set_serial"),
            &os(&format!("0x{:x}", serial_from_clock())),
            &os("-days"),
            &os("30"),
            &os("-sha256"),
            &os("-extfile"),
            path("ext.cnf").as_os_str(),
            &os("-out"),
            cert.as_os_str(),
        ])?;
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| crate::Error::io(p, e));
        let cert_pem = read(&cert)?;
        Ok(Bundle {
            ca_cert_pem: self.ca.cert_pem().to_string(),
            fingerprint: crate::pki::fingerprint(cert_pem.as_bytes())?,
            cert_pem,
            key_pem: read(&key)?,
        })
    }

    /// A worker bundle that expired yesterday.
    pub fn expired_worker_bundle(&self, name: &str) -> Result<Bundle> {
        let now = OffsetDateTime::now_utc();
        self.ca.issue_valid_between(
            name,
            &["127.0.0.1", "::1", "localhost"],
            now - Duration::days(30),
            now - Duration::days(1),
        )
    }
}

/// A certificate serial unlikely to repeat: the clock in nanoseconds.
fn serial_from_clock() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos())
}
