//! The master's identity: its client certificate, private key and the CA it
//! trusts, loaded and ready for TLS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};

use crate::error::{Error, Result};
use crate::pki::{self, Bundle, CertificateAuthority, BUNDLE_CERT_FILE, BUNDLE_KEY_FILE};
use crate::secure_fs::{self, DirLock, Secrecy};

/// The master's leaf name.
pub const MASTER_NAME: &str = "decnet-master";
/// Subject alternative names of the master certificate.
pub const MASTER_SANS: [&str; 2] = ["127.0.0.1", MASTER_NAME];
/// The master bundle's directory inside the CA directory.
pub const MASTER_DIR: &str = "master";

/// The default CA directory, `$HOME/.decnet/ca`.
pub fn default_ca_dir() -> Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".decnet").join("ca")),
        _ => Err(Error::invalid(
            "ca_dir",
            "no directory given and HOME is not set",
        )),
    }
}

/// Makes sure `<ca_dir>/master/` holds the master bundle, creating the CA
/// (see [`CertificateAuthority::ensure`]) and the bundle as needed, and
/// returns the bundle.
///
/// As in the reference, the bundle is (re)issued when any of its three files
/// is missing. A complete bundle that is unreadable, whose key does not match
/// its certificate, or whose `ca.crt` is not the CA's is an error, never
/// silently replaced. Safe against concurrent callers and crashes: the key
/// is removed first and written last, so an interrupted issue leaves a
/// bundle that the next call re-issues.
pub fn ensure_master_bundle(ca_dir: &Path) -> Result<Bundle> {
    secure_fs::create_private_dir(ca_dir)?;
    let lock = DirLock::acquire(ca_dir)?;
    let ca = CertificateAuthority::ensure_locked(ca_dir, &lock)?;
    let dir = ca_dir.join(MASTER_DIR);
    secure_fs::remove_leftover_temporaries(&dir, &lock)?;
    let bundle = match Bundle::load(&dir) {
        Ok(bundle) => bundle,
        Err(Error::NotEnrolled { .. }) => {
            let key_path = dir.join(BUNDLE_KEY_FILE);
            if let Err(e) = std::fs::remove_file(&key_path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(Error::io(key_path, e));
                }
            }
            let bundle = ca.issue(MASTER_NAME, &MASTER_SANS, pki::LEAF_VALIDITY_DAYS)?;
            bundle.write(&dir)?;
            bundle
        }
        Err(other) => return Err(other),
    };
    let bundle_ca = pki::parse_cert_pem(bundle.ca_cert_pem.as_bytes(), &dir.join("ca.crt"))?;
    if bundle_ca != *ca.cert_der() {
        return Err(Error::pki(
            dir.join("ca.crt"),
            "is not the certificate of the CA in the CA directory",
        ));
    }
    Ok(bundle)
}

struct Material {
    ca_cert: CertificateDer<'static>,
    ca_cert_path: PathBuf,
    /// The CA as the trust anchor, parsed once for every host's verifier.
    trust_anchors: Arc<[TrustAnchor<'static>]>,
    /// The certificate and its signing key, shared by every host's TLS
    /// configuration.
    client_cert: Arc<SingleCertAndKey>,
    cert: CertificateDer<'static>,
    fingerprint: String,
}

/// The master's TLS identity: client certificate, private key and the CA
/// certificate that is the only trust anchor.
///
/// Cheap to clone (reference-counted) and safe to share between threads.
#[derive(Clone)]
pub struct Identity {
    material: Arc<Material>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.material.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Ensures the CA and the master bundle under `ca_dir` (default
    /// `$HOME/.decnet/ca`, see [`ensure_master_bundle`]) and loads the
    /// master identity.
    pub fn ensure(ca_dir: Option<&Path>) -> Result<Self> {
        let dir = match ca_dir {
            Some(dir) => dir.to_path_buf(),
            None => default_ca_dir()?,
        };
        let bundle = ensure_master_bundle(&dir)?;
        Self::from_pem_parts(
            bundle.ca_cert_pem.as_bytes(),
            bundle.cert_pem.as_bytes(),
            bundle.key_pem.as_bytes(),
            &dir.join(MASTER_DIR),
        )
    }

    /// Loads an identity from three PEM files: the CA certificate, the
    /// client certificate and its private key. A key that group or others
    /// may read, a certificate they may change, or a file owned by neither
    /// the calling user nor root is refused ([`Error::Pki`] naming the file,
    /// its mode and the fix).
    pub fn load(ca_cert: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let ca_pem = secure_fs::read_checked(ca_cert, Secrecy::Certificate)?;
        let cert_pem = secure_fs::read_checked(cert, Secrecy::Certificate)?;
        let key_pem = secure_fs::read_checked(key, Secrecy::PrivateKey)?;
        let ca_der = pki::parse_cert_pem(&ca_pem, ca_cert)?;
        let cert_der = pki::parse_cert_pem(&cert_pem, cert)?;
        let key_der = parse_private_key(&key_pem, key)?;
        Self::from_der(ca_der, ca_cert, cert_der, key_der, key)
    }

    /// Loads the identity of a bundle directory (`ca.crt`, `worker.crt`,
    /// `worker.key`); [`Error::NotEnrolled`] when a file is missing.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let bundle = Bundle::load(dir)?;
        Self::from_bundle(&bundle, dir)
    }

    /// Builds an identity from an in-memory bundle; `origin` names the
    /// bundle in errors.
    pub fn from_bundle(bundle: &Bundle, origin: &Path) -> Result<Self> {
        Self::from_pem_parts(
            bundle.ca_cert_pem.as_bytes(),
            bundle.cert_pem.as_bytes(),
            bundle.key_pem.as_bytes(),
            origin,
        )
    }

    fn from_pem_parts(ca: &[u8], cert: &[u8], key: &[u8], origin: &Path) -> Result<Self> {
        let ca_path = origin.join(pki::CA_CERT_FILE);
        let ca_der = pki::parse_cert_pem(ca, &ca_path)?;
        let cert_der = pki::parse_cert_pem(cert, &origin.join(BUNDLE_CERT_FILE))?;
        let key_path = origin.join(BUNDLE_KEY_FILE);
        let key_der = parse_private_key(key, &key_path)?;
        Self::from_der(ca_der, &ca_path, cert_der, key_der, &key_path)
    }

    /// Assembles an identity after checking that the key is usable for TLS
    /// and belongs to the certificate (`key_path` names the key in errors).
    fn from_der(
        ca_cert: CertificateDer<'static>,
        ca_cert_path: &Path,
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        key_path: &Path,
    ) -> Result<Self> {
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| Error::pki(key_path, format!("private key unusable for TLS: {e}")))?;
        let certified = CertifiedKey::new(vec![cert.clone()], signer);
        certified
            .keys_match()
            .map_err(|_| Error::pki(key_path, "private key does not belong to the certificate"))?;
        let anchor = webpki::anchor_from_trusted_cert(&ca_cert)
            .map_err(|e| Error::pki(ca_cert_path, format!("unusable as a trust anchor: {e}")))?
            .to_owned();
        let fingerprint = pki::fingerprint_der(&cert);
        Ok(Identity {
            material: Arc::new(Material {
                ca_cert,
                ca_cert_path: ca_cert_path.to_path_buf(),
                trust_anchors: Arc::from([anchor]),
                client_cert: Arc::new(SingleCertAndKey::from(certified)),
                cert,
                fingerprint,
            }),
        })
    }

    /// The fingerprint of this identity's certificate.
    pub fn fingerprint(&self) -> &str {
        &self.material.fingerprint
    }

    /// The CA certificate (the only trust anchor), DER.
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.material.ca_cert
    }

    /// The file the CA certificate was read from; a worker certificate
    /// it did not issue is reported as "not issued by" this path.
    pub fn ca_cert_path(&self) -> &Path {
        &self.material.ca_cert_path
    }

    /// The CA as the only trust anchor of a worker's certificate.
    pub(crate) fn trust_anchors(&self) -> Arc<[TrustAnchor<'static>]> {
        self.material.trust_anchors.clone()
    }

    /// The client certificate and key, as rustls presents them.
    pub(crate) fn client_cert_resolver(&self) -> Arc<dyn ResolvesClientCert> {
        self.material.client_cert.clone()
    }

    /// The client certificate, DER.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.material.cert
    }
}

fn parse_private_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| Error::pki(path, format!("no readable PEM private key: {e}")))
}
