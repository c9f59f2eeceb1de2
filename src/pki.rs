//! The master's PKI: the certificate authority, leaf certificates, bundle
//! directories and fingerprints, in the reference on-disk layout.
//!
//! Material this library creates uses ECDSA P-256 keys (a key is made in
//! well under a millisecond; RSA-4096 takes about a second). Material made by
//! the reference (RSA-4096 CA, RSA-2048 leaves, PKCS#8 PEM) loads and signs
//! just the same.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::hex::lower_hex;
use crate::secure_fs::{self, DirLock, Secrecy, CERT_MODE, KEY_MODE};

/// The largest key or certificate file this module reads; a larger one is
/// a `pki` error naming it.
pub const MAX_FILE_BYTES: u64 = secure_fs::MAX_PKI_FILE_BYTES;

/// File name of the CA private key inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the CA certificate (in the CA directory and in every bundle).
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of a bundle's certificate.
pub const BUNDLE_CERT_FILE: &str = "worker.crt";
/// File name of a bundle's private key.
pub const BUNDLE_KEY_FILE: &str = "worker.key";
/// Days a new CA certificate is valid.
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// Days a new leaf certificate is valid unless the caller says otherwise.
pub const LEAF_VALIDITY_DAYS: u32 = 825;
/// Longest validity accepted for a leaf, in days (100 years).
pub const MAX_VALIDITY_DAYS: u32 = 36_500;

const CA_COMMON_NAME: &str = "DECNET SWARM Root CA";
const ORGANIZATION: &str = "DECNET";
const LEAF_UNIT: &str = "swarm-worker";
/// How far in the past a new certificate's validity starts (clock skew).
const BACKDATE: Duration = Duration::minutes(5);

/// OID 2.5.29.19, BasicConstraints.
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
/// OID 2.5.29.37, ExtendedKeyUsage.
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
/// DER of BasicConstraints { cA TRUE, pathLenConstraint 0 }.
const BC_CA_PATHLEN_0: &[u8] = &[0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00];
/// DER of BasicConstraints { cA FALSE } (the default, so an empty sequence).
const BC_NOT_CA: &[u8] = &[0x30, 0x00];
/// DER of ExtKeyUsageSyntax { serverAuth, clientAuth }.
const EKU_SERVER_CLIENT: &[u8] = &[
    0x30, 0x14, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01, 0x06, 0x08, 0x2b, 0x06,
    0x01, 0x05, 0x05, 0x07, 0x03, 0x02,
];

/// The lowercase hex SHA-256 of a certificate's DER encoding.
///
/// `cert` may be PEM (the first `CERTIFICATE` block is used) or DER.
pub fn fingerprint(cert: &[u8]) -> Result<String> {
    let der = if looks_like_pem(cert) {
        let der = CertificateDer::from_pem_slice(cert)
            .map_err(|e| Error::invalid("certificate", format!("unreadable PEM: {e}")))?;
        check_certificate_der(&der).map_err(|reason| Error::invalid("certificate", reason))?;
        der
    } else {
        check_certificate_der(cert).map_err(|reason| Error::invalid("certificate", reason))?;
        CertificateDer::from(cert.to_vec())
    };
    Ok(fingerprint_der(&der))
}

/// The fingerprint of the certificate in the file at `path` (PEM or DER).
pub fn fingerprint_file(path: &Path) -> Result<String> {
    let bytes = secure_fs::read(path)?;
    fingerprint(&bytes).map_err(|e| match e {
        Error::InvalidArgument { reason, .. } => Error::pki(path, reason),
        other => other,
    })
}

/// The fingerprint of DER bytes: lowercase hex SHA-256, 64 characters.
pub fn fingerprint_der(der: &[u8]) -> String {
    lower_hex(&Sha256::digest(der))
}

/// Normalises a fingerprint given in any case, with or without `:`
/// separators, to 64 lowercase hex characters.
pub fn normalize_fingerprint(text: &str) -> Result<String> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(
            "fingerprint",
            "expected 64 hex characters (a SHA-256), optionally separated by ':'",
        ));
    }
    Ok(hex)
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(b"-----BEGIN")
}

/// Parses one PEM certificate from `pem`, naming `path` on failure.
pub(crate) fn parse_cert_pem(pem: &[u8], path: &Path) -> Result<CertificateDer<'static>> {
    let der = CertificateDer::from_pem_slice(pem)
        .map_err(|e| Error::pki(path, format!("no readable PEM certificate: {e}")))?;
    check_certificate_der(&der).map_err(|reason| Error::pki(path, reason))?;
    Ok(der)
}

/// Fails unless `der` is exactly one X.509 certificate: trailing bytes
/// would change the fingerprint to one no peer ever presents.
fn check_certificate_der(der: &[u8]) -> std::result::Result<(), String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], _)) => Ok(()),
        Ok((rest, _)) => Err(format!("{} bytes follow the certificate", rest.len())),
        Err(e) => Err(format!("not an X.509 certificate: {e}")),
    }
}

/// Reads a file as UTF-8 text, naming the file on failure.
/// Reads a PEM file after the checks of [`secure_fs::read_checked`].
fn read_text(path: &Path, secrecy: Secrecy) -> Result<String> {
    String::from_utf8(secure_fs::read_checked(path, secrecy)?)
        .map_err(|_| Error::pki(path, "not UTF-8 PEM text"))
}

/// Parses a PKCS#8 PEM private key, naming `path` on failure.
fn parse_key_pem(pem: &str, path: &Path) -> Result<KeyPair> {
    KeyPair::from_pem(pem).map_err(|e| {
        Error::pki(
            path,
            format!("no readable PKCS#8 private key (RSA, ECDSA or Ed25519): {e}"),
        )
    })
}

/// Fails unless `key` is the private half of the certificate `cert_der`.
fn check_key_matches(key: &KeyPair, cert_der: &[u8], key_path: &Path) -> Result<()> {
    use rcgen::PublicKeyData;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Error::pki(key_path, format!("certificate unreadable: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(Error::pki(
            key_path,
            "private key does not belong to the certificate",
        ));
    }
    Ok(())
}

fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::internal("the system random source failed"))?;
    // Positive and never zero, as RFC 5280 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn critical_extension(oid: &[u64], der: &[u8]) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(oid, der.to_vec());
    ext.set_criticality(true);
    ext
}

fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::internal(format!("key generation failed: {e}")))
}

/// A certificate authority loaded from (or created in) a CA directory.
pub struct CertificateAuthority {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("dir", &self.dir)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA in `dir`, or creates it there when neither `ca.key` nor
    /// `ca.crt` exists.
    ///
    /// When exactly one of the two exists the call fails with a PKI error and
    /// touches nothing: a regenerated CA would silently orphan every worker
    /// it enrolled. Concurrent callers (threads or processes) are serialised
    /// by a lock file in `dir` and all end up with the same CA. A creation
    /// interrupted by a crash is completed or discarded by the next call,
    /// never replaced by a second CA.
    pub fn ensure(dir: &Path) -> Result<Self> {
        secure_fs::create_private_dir(dir)?;
        let lock = DirLock::acquire(dir)?;
        Self::ensure_locked(dir, &lock)
    }

    /// [`CertificateAuthority::ensure`] for a caller that holds the
    /// directory lock. Temporary files a killed writer left behind are
    /// removed first.
    pub(crate) fn ensure_locked(dir: &Path, lock: &DirLock) -> Result<Self> {
        secure_fs::remove_leftover_temporaries(dir, lock)?;
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        let staged_key = staged(&key_path);
        let staged_cert = staged(&cert_path);
        finish_interrupted_creation(&key_path, &cert_path, &staged_cert)?;
        match (exists(&key_path)?, exists(&cert_path)?) {
            (true, true) => Self::load(dir),
            (false, false) => {
                remove_if_exists(&staged_key)?;
                remove_if_exists(&staged_cert)?;
                let (key_pem, cert_pem) = new_ca_material()?;
                secure_fs::write_new_file(&staged_key, key_pem.as_bytes(), KEY_MODE)?;
                secure_fs::write_new_file(&staged_cert, cert_pem.as_bytes(), CERT_MODE)?;
                secure_fs::rename_durable(&staged_key, &key_path)?;
                secure_fs::rename_durable(&staged_cert, &cert_path)?;
                Self::load(dir)
            }
            (true, false) => Err(Error::pki(
                cert_path,
                "missing while ca.key exists; refusing to create a new CA, which would orphan every enrolled worker",
            )),
            (false, true) => Err(Error::pki(
                key_path,
                "missing while ca.crt exists; refusing to create a new CA, which would orphan every enrolled worker",
            )),
        }
    }

    /// Loads an existing CA (`ca.key`, `ca.crt`) from `dir` without creating
    /// anything. The key may be RSA, ECDSA or Ed25519, PKCS#8 PEM. A
    /// missing folder or file is [`Error::NotEnrolled`], whose message says
    /// to run identity-ensure.
    ///
    /// The directory, `ca.crt` and `ca.key` must pass the permission checks
    /// of [`Bundle::load`].
    pub fn load(dir: &Path) -> Result<Self> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        for file in [CA_KEY_FILE, CA_CERT_FILE] {
            if !exists(&dir.join(file))? {
                return Err(Error::NotEnrolled {
                    dir: dir.to_path_buf(),
                    missing: file.to_string(),
                });
            }
        }
        secure_fs::check_dir(dir)?;
        let cert_pem = read_text(&cert_path, Secrecy::Certificate)?;
        let cert_der = parse_cert_pem(cert_pem.as_bytes(), &cert_path)?;
        let key = parse_key_pem(&read_text(&key_path, Secrecy::PrivateKey)?, &key_path)?;
        check_key_matches(&key, &cert_der, &key_path)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| Error::pki(&cert_path, format!("unusable as a CA: {e}")))?;
        Ok(CertificateAuthority {
            dir: dir.to_path_buf(),
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate's fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint_der(&self.cert_der)
    }

    /// Issues a leaf certificate (worker or master) signed by this CA.
    ///
    /// Subject `CN=<name>, O=DECNET, OU=swarm-worker`; each entry of `sans`
    /// becomes an IP address SAN when it parses as one, else a DNS SAN, and
    /// `name` is added as a DNS SAN when not listed. Key usages
    /// digitalSignature + keyEncipherment, extended key usages serverAuth +
    /// clientAuth, CA:FALSE (all critical), a random serial, valid from five
    /// minutes ago for `validity_days`. The new key is ECDSA P-256.
    pub fn issue<S: AsRef<str>>(
        &self,
        name: &str,
        sans: &[S],
        validity_days: u32,
    ) -> Result<Bundle> {
        if validity_days == 0 || validity_days > MAX_VALIDITY_DAYS {
            return Err(Error::invalid(
                "validity_days",
                format!("must be between 1 and {MAX_VALIDITY_DAYS}"),
            ));
        }
        let now = OffsetDateTime::now_utc();
        self.issue_valid_between(
            name,
            sans,
            now - BACKDATE,
            now + Duration::days(i64::from(validity_days)),
        )
    }

    /// [`CertificateAuthority::issue`] with an explicit validity window
    /// (tests use it to make expired certificates).
    pub(crate) fn issue_valid_between<S: AsRef<str>>(
        &self,
        name: &str,
        sans: &[S],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Bundle> {
        check_name(name)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&[
            (DnType::CommonName, name),
            (DnType::OrganizationName, ORGANIZATION),
            (DnType::OrganizationalUnitName, LEAF_UNIT),
        ]);
        params.subject_alt_names = subject_alt_names(name, sans)?;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.custom_extensions = vec![
            critical_extension(OID_BASIC_CONSTRAINTS, BC_NOT_CA),
            critical_extension(OID_EXT_KEY_USAGE, EKU_SERVER_CLIENT),
        ];
        params.serial_number = Some(random_serial()?);
        params.not_before = not_before;
        params.not_after = not_after;
        let key = new_key()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| Error::internal(format!("signing the certificate failed: {e}")))?;
        Ok(Bundle {
            ca_cert_pem: self.cert_pem.clone(),
            fingerprint: fingerprint_der(cert.der()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 {
        return Err(Error::invalid("name", "must be 1 to 64 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(Error::invalid("name", "must be printable ASCII"));
    }
    Ok(())
}

fn distinguished_name(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (kind, value) in parts {
        dn.push(kind.clone(), *value);
    }
    dn
}

fn subject_alt_names<S: AsRef<str>>(name: &str, sans: &[S]) -> Result<Vec<SanType>> {
    let mut out = Vec::with_capacity(sans.len() + 1);
    for entry in sans.iter().map(AsRef::as_ref) {
        out.push(san_entry(entry)?);
    }
    if !sans.iter().any(|s| s.as_ref() == name) {
        out.push(san_entry_dns(name)?);
    }
    Ok(out)
}

fn san_entry(entry: &str) -> Result<SanType> {
    match entry.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => san_entry_dns(entry),
    }
}

fn san_entry_dns(entry: &str) -> Result<SanType> {
    if entry.is_empty() {
        return Err(Error::invalid("sans", "empty subject alternative name"));
    }
    entry
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| Error::invalid("sans", format!("{entry:?} is not an IA5 (ASCII) name")))
}

fn new_ca_material() -> Result<(String, String)> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&[
        (DnType::CommonName, CA_COMMON_NAME),
        (DnType::OrganizationName, ORGANIZATION),
    ]);
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.custom_extensions = vec![critical_extension(OID_BASIC_CONSTRAINTS, BC_CA_PATHLEN_0)];
    params.serial_number = Some(random_serial()?);
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(CA_VALIDITY_DAYS));
    let key = new_key()?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::internal(format!("self-signing the CA failed: {e}")))?;
    Ok((key.serialize_pem(), cert.pem()))
}

/// The name a file is written under before it is renamed into place.
fn staged(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

/// A crash between the two renames of a CA creation leaves `ca.key` and a
/// staged `ca.crt.new`. When the staged certificate belongs to the key,
/// finish the rename; otherwise leave everything for `ensure` to report.
fn finish_interrupted_creation(
    key_path: &Path,
    cert_path: &Path,
    staged_cert: &Path,
) -> Result<()> {
    if !exists(key_path)? || exists(cert_path)? || !exists(staged_cert)? {
        return Ok(());
    }
    let Ok(cert_der) = parse_cert_pem(&secure_fs::read(staged_cert)?, staged_cert) else {
        return Ok(());
    };
    let key = parse_key_pem(&read_text(key_path, Secrecy::PrivateKey)?, key_path)?;
    if check_key_matches(&key, &cert_der, key_path).is_ok() {
        secure_fs::rename_durable(staged_cert, cert_path)?;
    }
    Ok(())
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists().map_err(|e| Error::io(path, e))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// A leaf identity as written to a bundle directory: `ca.crt`,
/// `worker.crt`, `worker.key`.
#[derive(Clone)]
pub struct Bundle {
    /// The CA certificate, PEM.
    pub ca_cert_pem: String,
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM. Secret.
    pub key_pem: String,
    /// The leaf certificate's fingerprint.
    pub fingerprint: String,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// Writes the bundle into `dir` (created 0700): the key 0600, the
    /// certificates 0644, each file atomically. The certificates are written
    /// before the key, so a reader never pairs a new key with an old
    /// certificate without noticing (the pair check fails).
    pub fn write(&self, dir: &Path) -> Result<()> {
        secure_fs::create_private_dir(dir)?;
        secure_fs::write_atomic(
            &dir.join(CA_CERT_FILE),
            self.ca_cert_pem.as_bytes(),
            CERT_MODE,
        )?;
        secure_fs::write_atomic(
            &dir.join(BUNDLE_CERT_FILE),
            self.cert_pem.as_bytes(),
            CERT_MODE,
        )?;
        secure_fs::write_atomic(
            &dir.join(BUNDLE_KEY_FILE),
            self.key_pem.as_bytes(),
            KEY_MODE,
        )
    }

    /// Loads a bundle from `dir`. A missing file is [`Error::NotEnrolled`];
    /// an unreadable one, or a key that does not belong to the certificate,
    /// is [`Error::Pki`] naming the file.
    ///
    /// Material others could read or change is refused as OpenSSH refuses
    /// an unprotected key, with [`Error::Pki`] naming the file, its mode,
    /// its owner and the fix: a key whose mode grants anything to group or
    /// others; a certificate or the directory writable by group or others;
    /// any of them owned by neither the calling user nor root. Symbolic
    /// links are followed; the checks apply to what they lead to.
    pub fn load(dir: &Path) -> Result<Self> {
        for file in [CA_CERT_FILE, BUNDLE_CERT_FILE, BUNDLE_KEY_FILE] {
            if !exists(&dir.join(file))? {
                return Err(Error::NotEnrolled {
                    dir: dir.to_path_buf(),
                    missing: file.to_string(),
                });
            }
        }
        let ca_path = dir.join(CA_CERT_FILE);
        let cert_path = dir.join(BUNDLE_CERT_FILE);
        let key_path = dir.join(BUNDLE_KEY_FILE);
        secure_fs::check_dir(dir)?;
        let ca_cert_pem = read_text(&ca_path, Secrecy::Certificate)?;
        parse_cert_pem(ca_cert_pem.as_bytes(), &ca_path)?;
        let cert_pem = read_text(&cert_path, Secrecy::Certificate)?;
        let cert_der = parse_cert_pem(cert_pem.as_bytes(), &cert_path)?;
        let key_pem = read_text(&key_path, Secrecy::PrivateKey)?;
        let key = parse_key_pem(&key_pem, &key_path)?;
        check_key_matches(&key, &cert_der, &key_path)?;
        Ok(Bundle {
            ca_cert_pem,
            fingerprint: fingerprint_der(&cert_der),
            cert_pem,
            key_pem,
        })
    }
}
