//! One verified TLS connection carrying HTTP/1.1 bytes for ureq, each
//! exchange's send and receive bounded by a deadline of its own.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConnection;
use socket2::SockRef;
use ureq::unversioned::transport::{Buffers, LazyBuffers, NextTimeout, Transport};

use super::classify::{
    classify_tls_error, is_client_cert_alert, rustls_error_of, timeout_phase, StaleConnection,
};
use super::handshake::{arm, is_timeout, pending_tls_error};
use crate::error::Error;
use crate::events::{self, Event, Level};

/// Size of each connection's input and output buffers. It bounds the
/// response head (a worker's is well under 1 KiB); bodies stream through.
/// 16 KiB each way holds one full TLS record's plaintext. They are
/// allocated by a connection's first exchange. A fleet's connections free
/// them whenever they go idle (see `is_open`), so its thousands of
/// kept-alive hosts do not hold them. A lone client's connection keeps
/// them: allocating and zeroing 32 KiB again would be a large part of each
/// warm call.
const BUFFER_SIZE: usize = 16 * 1024;
/// Sealed request bytes held back before they are sent anyway.
const FLUSH_THRESHOLD: usize = 16 * 1024;

/// When one phase of an exchange (sending the request, or receiving the
/// response) must end, and the ureq reason to report when it does. The
/// deadline is taken when the phase starts and never moves, so the phase's
/// timeout bounds it whole however the worker paces its bytes.
#[derive(Debug, Clone, Copy)]
struct PhaseDeadline {
    at: Option<Instant>,
    reason: ureq::Timeout,
}

impl PhaseDeadline {
    const NONE: PhaseDeadline = PhaseDeadline {
        at: None,
        reason: ureq::Timeout::Global,
    };

    fn starting_now(timeout: &NextTimeout) -> Self {
        PhaseDeadline {
            at: deadline_of(timeout),
            reason: timeout.reason,
        }
    }
}

/// The instant a ureq timeout expires, or `None` when it never does.
pub(super) fn deadline_of(timeout: &NextTimeout) -> Option<Instant> {
    if timeout.after.is_not_happening() {
        None
    } else {
        Some(Instant::now() + *timeout.after)
    }
}

/// One open connection, counted in a shared total (a fleet's connection
/// budget) for as long as it lives.
pub(crate) struct Counted(Arc<AtomicUsize>);

impl Counted {
    pub(crate) fn new(total: &Arc<AtomicUsize>) -> Self {
        total.fetch_add(1, Ordering::Relaxed);
        Counted(total.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One verified TLS connection carrying HTTP/1.1 for ureq.
///
/// Each exchange has two phases with a deadline each, fixed when the phase
/// starts: sending the request (the profile's write timeout, head and body
/// together) and receiving the response (the read timeout, head and body
/// together). Every socket call is armed to return by its phase's deadline.
pub(crate) struct TlsTransport {
    conn: ClientConnection,
    sock: TcpStream,
    buffers: LazyBuffers,
    address: String,
    /// Waited in the warm slot before its first request.
    idle: bool,
    /// Requests started on this connection.
    exchanges: u64,
    /// True until the next request's first byte is sent.
    between_exchanges: bool,
    /// Some response byte of the current exchange has arrived.
    received: bool,
    /// Some byte of the current request has left.
    sent: bool,
    /// ureq has not yet asked `is_open` since the current request started.
    unchecked_since_request: bool,
    /// Plaintext bytes sealed into records but not yet sent.
    unsent: usize,
    /// The read and write timeout the socket has now.
    socket_timeout: Option<Duration>,
    /// When sending the current request must end.
    write_phase: PhaseDeadline,
    /// When receiving the current response must end; set by the first wait
    /// for it.
    read_phase: Option<PhaseDeadline>,
    /// Keeps this connection in its fleet's count of open connections.
    _counted: Option<Counted>,
    /// Frees the buffers whenever the connection goes idle.
    releases_idle_buffers: bool,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("address", &self.address)
            .field("exchanges", &self.exchanges)
            .finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// A connection just opened, its socket left with `socket_timeout`;
    /// `releases_idle_buffers` for a fleet's.
    pub(super) fn new(
        conn: ClientConnection,
        sock: TcpStream,
        address: String,
        socket_timeout: Option<Duration>,
        counted: Option<Counted>,
        releases_idle_buffers: bool,
    ) -> Self {
        TlsTransport {
            conn,
            sock,
            buffers: LazyBuffers::new(BUFFER_SIZE, BUFFER_SIZE),
            address,
            idle: false,
            exchanges: 0,
            between_exchanges: true,
            received: false,
            sent: false,
            unchecked_since_request: false,
            unsent: 0,
            socket_timeout,
            write_phase: PhaseDeadline::NONE,
            read_phase: None,
            _counted: counted,
            releases_idle_buffers,
        }
    }

    /// Marks a connection that waits in the warm slot for its first request.
    pub(super) fn mark_warm(&mut self) {
        self.idle = true;
    }

    /// Whether this connection sat idle before the current request, so a
    /// failure before any response byte means the worker closed it.
    fn reused(&self) -> bool {
        self.idle || self.exchanges > 1
    }

    /// The error for a connection that died mid-exchange.
    fn lost(&self, reason: String) -> ureq::Error {
        if self.reused() && !self.received {
            return ureq::Error::Other(Box::new(StaleConnection { reason }));
        }
        ureq::Error::Other(Box::new(Error::ConnectionLost {
            address: self.address.clone(),
            reason,
            may_have_reached_worker: self.exchanges > 0,
        }))
    }

    /// The error for a TLS failure after the handshake. A worker that
    /// rejects our certificate in TLS 1.3 says so with an alert that arrives
    /// when the first response is awaited: the request never ran, and the
    /// failure is `tls`. Any other fatal alert ends an exchange the worker
    /// may already have acted on: the connection is lost.
    fn tls_failure(&self, e: &rustls::Error) -> ureq::Error {
        let rejected_our_certificate = matches!(e, rustls::Error::AlertReceived(alert) if is_client_cert_alert(*alert))
            && self.exchanges <= 1
            && !self.received;
        if rejected_our_certificate || self.exchanges == 0 {
            return ureq::Error::Other(Box::new(classify_tls_error(&self.address, e)));
        }
        ureq::Error::Other(Box::new(Error::ConnectionLost {
            address: self.address.clone(),
            reason: format!("TLS failure: {e}"),
            may_have_reached_worker: true,
        }))
    }

    /// The timeout error for `reason`, saying whether any byte of the
    /// request had left.
    fn timeout(&self, reason: ureq::Timeout) -> ureq::Error {
        ureq::Error::Other(Box::new(Error::Timeout {
            address: self.address.clone(),
            phase: timeout_phase(reason),
            may_have_reached_worker: self.sent || self.received,
        }))
    }

    fn io_error(&self, e: io::Error, reason: ureq::Timeout) -> ureq::Error {
        if is_timeout(&e) {
            return self.timeout(reason);
        }
        match rustls_error_of(&e) {
            Some(tls) => self.tls_failure(tls),
            None => self.lost(e.to_string()),
        }
    }

    /// Arms the socket for `phase`; a passed deadline is that phase's
    /// timeout.
    fn arm(&mut self, phase: PhaseDeadline) -> std::result::Result<(), ureq::Error> {
        match arm(&self.sock, &mut self.socket_timeout, phase.at) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.timeout(phase.reason)),
            Err(e) => Err(self.lost(format!("cannot set the socket timeout: {e}"))),
        }
    }

    /// Whether `e` is the socket's own timeout firing before `deadline`.
    fn early_timeout(e: &io::Error, deadline: Option<Instant>) -> bool {
        is_timeout(e) && deadline.is_some_and(|d| Instant::now() < d)
    }

    /// Peeks at the socket without blocking: `Ok(0)` means closed, `Ok(n)`
    /// bytes are waiting, `WouldBlock` means nothing has arrived.
    fn peek(&self) -> io::Result<usize> {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        SockRef::from(&self.sock).recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(
        &mut self,
        amount: usize,
        timeout: NextTimeout,
    ) -> std::result::Result<(), ureq::Error> {
        if self.between_exchanges {
            self.between_exchanges = false;
            self.exchanges += 1;
            if self.reused() {
                events::emit(Level::Debug, || {
                    Event::new(Level::Debug, "connection.reused")
                        .with("address", self.address.as_str())
                        .with("request", self.exchanges)
                        .with("warm", self.idle && self.exchanges == 1)
                });
            }
            self.received = false;
            self.sent = false;
            self.unchecked_since_request = true;
            self.write_phase = PhaseDeadline::starting_now(&timeout.for_write());
            self.read_phase = None;
        }
        let output = &self.buffers.output()[..amount];
        if let Err(e) = self.conn.writer().write_all(output) {
            return Err(self.io_error(e, self.write_phase.reason));
        }
        // Sealed records wait until the response is awaited (or enough piles
        // up), so a request's head and body leave in one send.
        self.unsent += amount;
        if self.unsent >= FLUSH_THRESHOLD {
            self.flush()?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> std::result::Result<bool, ureq::Error> {
        // The rest of the request is still the write phase's to send.
        self.flush()?;
        let phase = *self
            .read_phase
            .get_or_insert_with(|| PhaseDeadline::starting_now(&timeout.for_read()));
        loop {
            let input = self.buffers.input_append_buf();
            if input.is_empty() {
                // ureq asks for more only while the response head is
                // incomplete: the head does not fit in the buffer.
                return Err(ureq::Error::Other(Box::new(Error::protocol(format!(
                    "the response head exceeds {BUFFER_SIZE} bytes"
                )))));
            }
            match self.conn.reader().read(input) {
                Ok(0) => return self.end_of_stream(),
                Ok(n) => {
                    self.buffers.input_appended(n);
                    self.received = true;
                    self.between_exchanges = true;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return self.end_of_stream(),
                Err(e) => return Err(self.io_error(e, phase.reason)),
            }
            self.arm(phase)?;
            match self.conn.read_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if Self::early_timeout(&e, phase.at) => continue,
                Err(e) => return Err(self.io_error(e, phase.reason)),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the worker why we stop (best effort), then report.
                let _ = self.conn.write_tls(&mut self.sock);
                return Err(self.tls_failure(&e));
            }
        }
    }

    fn is_open(&mut self) -> bool {
        // ureq asks twice between requests: as an exchange ends, to return
        // the connection to its pool, and as the next request takes it out.
        // The first is answered without a system call: bytes that came with
        // the response are in ureq's input buffer, which ureq checks itself,
        // and whatever reaches the socket later (a close, an alert,
        // unrequested data) is seen by the second, which always probes.
        let reason = if std::mem::take(&mut self.unchecked_since_request) {
            None
        } else {
            self.why_closed()
        };
        let Some(reason) = reason else {
            // Every input byte is consumed by now: a fleet's connection
            // frees its buffers until the next exchange needs them.
            if self.releases_idle_buffers && self.buffers.input().is_empty() {
                self.buffers = LazyBuffers::new(BUFFER_SIZE, BUFFER_SIZE);
            }
            return true;
        };
        // ureq asks while holding its pool's lock: the event is raised
        // once the request has returned from ureq.
        events::defer(Level::Debug, || {
            Event::new(Level::Debug, "connection.retired")
                .with("address", self.address.as_str())
                .with("reason", reason)
                .with("requests", self.exchanges)
        });
        false
    }

    fn is_tls(&self) -> bool {
        true
    }
}

impl TlsTransport {
    /// Why an idle connection cannot be reused, or `None` when it can.
    fn why_closed(&mut self) -> Option<&'static str> {
        // The common case, nothing waiting, costs one system call.
        loop {
            match self.peek() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(0) => return Some("closed by the worker"),
                Err(_) => return Some("socket error"),
                Ok(_) => break,
            }
        }
        // Bytes are waiting (session tickets, an alert, a close): let rustls
        // read them without blocking.
        if self.sock.set_nonblocking(true).is_err() {
            return Some("socket error");
        }
        let closed = loop {
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => break Some("closed by the worker"),
                Ok(_) => match self.conn.process_new_packets() {
                    // Session tickets and other handshake messages are fine;
                    // a close or unrequested data is not.
                    Ok(state) if state.peer_has_closed() => break Some("closed by the worker"),
                    Ok(state) if state.plaintext_bytes_to_read() > 0 => {
                        break Some("unrequested data from the worker")
                    }
                    Ok(_) => {}
                    Err(_) => break Some("TLS error while idle"),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Some("socket error"),
            }
        };
        match closed {
            None if self.sock.set_nonblocking(false).is_err() => Some("socket error"),
            other => other,
        }
    }

    /// Sends every sealed record still held back, within the write phase.
    fn flush(&mut self) -> std::result::Result<(), ureq::Error> {
        let phase = self.write_phase;
        while self.conn.wants_write() {
            self.arm(phase)?;
            match self.conn.write_tls(&mut self.sock) {
                Ok(n) => self.sent |= n > 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if Self::early_timeout(&e, phase.at) => {}
                Err(e) => {
                    // In TLS 1.3 a worker that rejects our certificate sends
                    // its alert and closes: report the alert when it is there.
                    return Err(match pending_tls_error(&mut self.conn, &mut self.sock) {
                        Some(tls) => self.tls_failure(&tls),
                        None => self.io_error(e, phase.reason),
                    });
                }
            }
        }
        self.unsent = 0;
        Ok(())
    }

    fn end_of_stream(&mut self) -> std::result::Result<bool, ureq::Error> {
        if self.reused() && !self.received {
            return Err(self.lost("closed by the worker before any response byte".into()));
        }
        Ok(false)
    }
}
