//! The error taxonomy shared by every layer of the library.
//!
//! Callers tell failures apart by [`ErrorKind`], never by parsing messages.
//! Each kind has a stable numeric code ([`ErrorKind::code`]) that the C result
//! enum, the Python exceptions and the command-line exit codes all reuse.

use std::fmt;
use std::path::PathBuf;

/// The result type of every fallible function in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which step of an exchange a timeout interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutPhase {
    /// Resolving the name and opening the TCP connection.
    Connect,
    /// The TLS handshake.
    Handshake,
    /// Sending the request.
    Write,
    /// Waiting for and reading the response.
    Read,
    /// Waiting for a connection from the pool.
    Pool,
    /// An overall deadline the caller set over many calls (a fleet sweep's,
    /// or the wait for a release) passed before this call finished.
    Deadline,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::Handshake => "handshake",
            TimeoutPhase::Write => "write",
            TimeoutPhase::Read => "read",
            TimeoutPhase::Pool => "pool",
            TimeoutPhase::Deadline => "deadline",
        })
    }
}

/// The fix a [`Error::NotEnrolled`] message names: the CA and the master's
/// bundle are made by identity-ensure; a worker's bundle by enrolling it.
fn not_enrolled_hint(dir: &std::path::Path, missing: &str) -> String {
    if missing == "ca.key" {
        return format!(" (no CA at {}: run identity-ensure)", dir.display());
    }
    match (dir.file_name(), dir.parent()) {
        (Some(name), Some(ca_dir)) if name == "master" => format!(
            " (no master identity: run identity-ensure --ca-dir {})",
            ca_dir.display()
        ),
        _ => String::new(),
    }
}

/// Every failure the library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller-supplied argument was rejected before any I/O.
    #[error("invalid argument `{argument}`: {reason}")]
    InvalidArgument {
        /// The argument (or host-record field) at fault.
        argument: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A file-system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Certificate or key material is unreadable, corrupt or inconsistent.
    #[error("PKI material {}: {reason}", path.display())]
    Pki {
        /// The file (or directory) holding the material.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A bundle directory does not hold all three enrollment files, or a CA
    /// directory has no CA (`missing` is then `ca.key` or `ca.crt`). For a
    /// CA directory or the master's bundle (`<ca-dir>/master`) the message
    /// says to run identity-ensure.
    #[error("not enrolled: {} lacks {missing}{}", dir.display(), not_enrolled_hint(dir, missing))]
    NotEnrolled {
        /// The bundle directory.
        dir: PathBuf,
        /// The first missing file name.
        missing: String,
    },

    /// The TCP connection could not be opened (refused, unreachable, DNS).
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// `host:port` that was dialled.
        address: String,
        /// What the resolver or the socket said.
        reason: String,
    },

    /// The TLS handshake or record layer failed (untrusted certificate,
    /// hostname mismatch, client certificate rejected, protocol alert).
    #[error("TLS failure with {address}: {reason}")]
    Tls {
        /// `host:port` of the worker.
        address: String,
        /// What failed.
        reason: String,
    },

    /// The worker's certificate does not match the pinned fingerprint, or
    /// (empty `expected`) a channel that requires a pin has none recorded.
    /// A security event: never retry it as transient.
    #[error("{}", if expected.is_empty() {
        format!("no updater pin is recorded for {address} (updater_cert_fingerprint is null): refusing to connect")
    } else {
        format!("certificate pin mismatch for {address}: expected {}… (from {pin_origin}), got {}…: \
                 the worker's certificate changed or this is not that worker; \
                 re-enroll it or correct the pin",
            &expected[..expected.len().min(16)], &actual[..actual.len().min(16)])
    })]
    PinMismatch {
        /// `host:port` of the worker.
        address: String,
        /// The pinned fingerprint (64 lowercase hex characters); empty when
        /// no pin is recorded.
        expected: String,
        /// The fingerprint the worker presented.
        actual: String,
        /// Where the expected pin came from (a host record's field, `--pin`,
        /// "the pin given for this client").
        pin_origin: String,
    },

    /// A timeout of the call's profile expired.
    #[error("timed out ({phase}) with {address}")]
    Timeout {
        /// `host:port` of the worker.
        address: String,
        /// Which step ran out of time.
        phase: TimeoutPhase,
        /// True once any byte of the request had left (the worker may have
        /// acted on it); false when none did.
        may_have_reached_worker: bool,
    },

    /// The worker answered with a non-2xx status.
    #[error("HTTP {status} from worker{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The raw response body (UTF-8, lossily decoded).
        body: String,
        /// The `detail` member of a JSON error body, rendered as text.
        detail: Option<String>,
    },

    /// The worker's answer broke the protocol: malformed HTTP, a body that is
    /// not a JSON object, or a body over the size cap.
    #[error("protocol error: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },

    /// An established connection died before the response was complete.
    #[error("connection to {address} lost: {reason}{}", if *may_have_reached_worker { " (the request may have reached the worker)" } else { "" })]
    ConnectionLost {
        /// `host:port` of the worker.
        address: String,
        /// What happened.
        reason: String,
        /// True when the request had been sent, so the worker may have acted on it.
        may_have_reached_worker: bool,
    },

    /// A bug or an unexpected state inside the library.
    #[error("internal error: {reason}")]
    Internal {
        /// What went wrong.
        reason: String,
    },
}

/// The kind of an [`Error`], with a stable numeric code.
///
/// Codes are part of the ABI: they never change meaning. `0` means success
/// and is not a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorKind {
    /// 1: a caller-supplied argument was rejected.
    InvalidArgument = 1,
    /// 2: a file-system operation failed.
    Io = 2,
    /// 3: certificate or key material is unreadable, corrupt or inconsistent.
    Pki = 3,
    /// 4: a bundle directory is incomplete.
    NotEnrolled = 4,
    /// 5: the TCP connection could not be opened.
    Connect = 5,
    /// 6: the TLS handshake or record layer failed.
    Tls = 6,
    /// 7: the worker's certificate does not match the pin.
    PinMismatch = 7,
    /// 8: a timeout expired.
    Timeout = 8,
    /// 9: the worker answered with a non-2xx status.
    HttpStatus = 9,
    /// 10: the worker's answer broke the protocol.
    Protocol = 10,
    /// 11: the connection died mid-exchange.
    ConnectionLost = 11,
    /// 12: a bug inside the library.
    Internal = 12,
}

impl ErrorKind {
    /// The stable numeric code of this kind.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The kind with numeric code `code`, if any.
    pub fn from_code(code: u32) -> Option<ErrorKind> {
        use ErrorKind::*;
        [
            InvalidArgument,
            Io,
            Pki,
            NotEnrolled,
            Connect,
            Tls,
            PinMismatch,
            Timeout,
            HttpStatus,
            Protocol,
            ConnectionLost,
            Internal,
        ]
        .into_iter()
        .find(|kind| kind.code() == code)
    }

    /// A short, stable, lowercase name (`pin_mismatch`, `http_status`, …).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Io => "io",
            ErrorKind::Pki => "pki",
            ErrorKind::NotEnrolled => "not_enrolled",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::PinMismatch => "pin_mismatch",
            ErrorKind::Timeout => "timeout",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Protocol => "protocol",
            ErrorKind::ConnectionLost => "connection_lost",
            ErrorKind::Internal => "internal",
        }
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::Io { .. } => ErrorKind::Io,
            Error::Pki { .. } => ErrorKind::Pki,
            Error::NotEnrolled { .. } => ErrorKind::NotEnrolled,
            Error::Connect { .. } => ErrorKind::Connect,
            Error::Tls { .. } => ErrorKind::Tls,
            Error::PinMismatch { .. } => ErrorKind::PinMismatch,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::HttpStatus { .. } => ErrorKind::HttpStatus,
            Error::Protocol { .. } => ErrorKind::Protocol,
            Error::ConnectionLost { .. } => ErrorKind::ConnectionLost,
            Error::Internal { .. } => ErrorKind::Internal,
        }
    }

    /// Whether the worker may have received the request: true for a
    /// timeout or a lost connection after some request byte left; false
    /// for every other error.
    pub fn may_have_reached_worker(&self) -> bool {
        match self {
            Error::Timeout {
                may_have_reached_worker,
                ..
            }
            | Error::ConnectionLost {
                may_have_reached_worker,
                ..
            } => *may_have_reached_worker,
            _ => false,
        }
    }

    /// The phase of a timeout, `None` for every other error.
    pub fn timeout_phase(&self) -> Option<TimeoutPhase> {
        match self {
            Error::Timeout { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(argument: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            argument: argument.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Pki`].
    pub fn pki(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Pki {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Protocol`].
    pub fn protocol(reason: impl Into<String>) -> Self {
        Error::Protocol {
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Internal`].
    pub fn internal(reason: impl Into<String>) -> Self {
        Error::Internal {
            reason: reason.into(),
        }
    }
}
