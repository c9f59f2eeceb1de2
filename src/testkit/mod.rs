//! Test kit: a loopback stand-in worker agent and throw-away PKI, for the
//! tests, the demo and the command-line tool. Built only with the `testkit`
//! feature; never part of the C library.

mod demo;
mod http;
mod swarm;
mod worker;

pub use demo::run_demo;
pub use swarm::{raise_fd_limit, serve_swarm, Behaviour, Member, Swarm};
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
