//! Connecting to a worker: name resolution, TCP connect and the TLS
//! handshake, every step bounded by one deadline.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::ClientConnection;

use super::classify::classify_tls_error;
use super::session::TlsSession;
use crate::error::{Error, Result, TimeoutPhase};

impl TlsSession {
    /// Runs the TLS handshake to its end, every socket call bounded by
    /// `deadline`, so a worker that trickles its handshake cannot stretch
    /// it. Returns the timeout the socket is left with.
    ///
    /// (rustls' `complete_io` reads repeatedly inside one call, so a socket
    /// timeout around it would bound each read, not the handshake.)
    pub(super) fn handshake(
        &self,
        conn: &mut ClientConnection,
        sock: &mut TcpStream,
        deadline: Instant,
    ) -> Result<Option<Duration>> {
        let mut socket_timeout = None;
        while conn.is_handshaking() || conn.wants_write() {
            match arm(sock, &mut socket_timeout, Some(deadline)) {
                Ok(true) => {}
                Ok(false) => return Err(self.timeout(TimeoutPhase::Handshake)),
                Err(e) => return Err(self.connect_error(&e)),
            }
            let io = if conn.wants_write() {
                conn.write_tls(sock).map(|_| ())
            } else {
                match conn.read_tls(sock) {
                    Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {
                        if let Err(e) = conn.process_new_packets() {
                            // Tell the worker why we stop (best effort).
                            let _ = conn.write_tls(sock);
                            return Err(self.tls_error(&e));
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            };
            match io {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
                Err(e) => {
                    // An alert that came before the close explains it.
                    if let Some(tls) = pending_tls_error(conn, sock) {
                        return Err(self.tls_error(&tls));
                    }
                    return Err(Error::Connect {
                        address: self.policy.address.clone(),
                        reason: match e.kind() {
                            io::ErrorKind::UnexpectedEof => {
                                "the worker closed the connection during the TLS handshake".into()
                            }
                            _ => format!("connection failed during the TLS handshake: {e}"),
                        },
                    });
                }
            }
        }
        Ok(socket_timeout)
    }

    /// The worker's addresses: an IP literal as is, a DNS name looked up on
    /// a helper thread so the deadline holds even when the resolver hangs.
    pub(super) fn resolve(&self, deadline: Instant) -> Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.policy.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.policy.port)]);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let target = (self.policy.host.clone(), self.policy.port);
        thread::Builder::new()
            .name("decnet-resolve".into())
            .spawn(move || {
                let _ = tx.send(target.to_socket_addrs().map(Vec::from_iter));
            })
            .map_err(|e| Error::Connect {
                address: self.policy.address.clone(),
                reason: format!("cannot start a thread to resolve the name: {e}"),
            })?;
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(addrs)) => Ok(addrs),
            Ok(Err(e)) => Err(Error::Connect {
                address: self.policy.address.clone(),
                reason: format!("cannot resolve: {e}"),
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(self.timeout(TimeoutPhase::Connect)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::internal(
                "the resolver thread ended without an answer",
            )),
        }
    }

    pub(super) fn connect_tcp(&self, addrs: &[SocketAddr], deadline: Instant) -> Result<TcpStream> {
        let mut last = None;
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout(TimeoutPhase::Connect));
            }
            match TcpStream::connect_timeout(addr, left) {
                Ok(sock) => {
                    sock.set_nodelay(true).map_err(|e| self.connect_error(&e))?;
                    return Ok(sock);
                }
                Err(e) if is_timeout(&e) => return Err(self.timeout(TimeoutPhase::Connect)),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => self.connect_error(&e),
            None => Error::Connect {
                address: self.policy.address.clone(),
                reason: "the name resolved to no address".into(),
            },
        })
    }

    pub(super) fn connect_error(&self, e: &io::Error) -> Error {
        Error::Connect {
            address: self.policy.address.clone(),
            reason: e.to_string(),
        }
    }

    pub(super) fn timeout(&self, phase: TimeoutPhase) -> Error {
        Error::Timeout {
            address: self.policy.address.clone(),
            phase,
            may_have_reached_worker: false,
        }
    }

    pub(super) fn tls_error(&self, e: &rustls::Error) -> Error {
        classify_tls_error(&self.policy.address, e)
    }
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Makes sure the socket's next blocking call returns by `deadline`: its
/// read and write timeouts (`current` remembers them) are shortened when
/// they exceed the time left, and lengthened only when far shorter, so a
/// steady connection rarely pays a system call for it. A call that times
/// out early is simply retried by the caller's loop. `Ok(false)` means the
/// deadline has passed.
pub(super) fn arm(
    sock: &TcpStream,
    current: &mut Option<Duration>,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let wanted = match deadline {
        None => None,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            Some(left)
        }
    };
    let stale = match (*current, wanted) {
        (current, None) => current.is_some(),
        (None, Some(_)) => true,
        (Some(current), Some(left)) => current > left || current < left / 4,
    };
    if stale {
        sock.set_read_timeout(wanted)?;
        sock.set_write_timeout(wanted)?;
        *current = wanted;
    }
    Ok(true)
}

/// Reads, without blocking, whatever the worker sent before a failed socket
/// call, and returns the TLS error it carries (typically the alert that
/// explains why the worker closed the connection).
pub(super) fn pending_tls_error(
    conn: &mut ClientConnection,
    sock: &mut TcpStream,
) -> Option<rustls::Error> {
    if sock.set_nonblocking(true).is_err() {
        return None;
    }
    let mut found = None;
    while let Ok(n) = conn.read_tls(sock) {
        if n == 0 {
            break;
        }
        if let Err(tls) = conn.process_new_packets() {
            found = Some(tls);
            break;
        }
    }
    let _ = sock.set_nonblocking(false);
    found
}
