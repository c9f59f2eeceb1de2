//! The per-client TLS 1.3 ticket store.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

/// TLS 1.3 tickets one client keeps (as rustls' own store keeps per
/// server name; a client talks to one worker).
const TICKETS_KEPT: usize = 8;

/// A client's ticket store that keeps TLS 1.3 tickets only. rustls'
/// `Tls12Resumption::Disabled` stops TLS 1.2 tickets but still saves and
/// offers TLS 1.2 session ids; a TLS 1.2 resumption reuses the old master
/// secret with no fresh key exchange, so no TLS 1.2 session is ever kept.
///
/// Sized for one worker: rustls' memory cache reserves room for several
/// servers up front, which a fleet would pay per host; this one allocates
/// nothing until the first ticket arrives.
#[derive(Default)]
pub(super) struct Tls13OnlyStore {
    state: Mutex<Tickets>,
}

#[derive(Default)]
struct Tickets {
    kx_hint: Option<(ServerName<'static>, NamedGroup)>,
    /// Oldest first; the newest is offered first.
    tls13: VecDeque<(ServerName<'static>, Tls13ClientSessionValue)>,
}

impl Tls13OnlyStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tickets> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for Tls13OnlyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls13OnlyStore")
            .field("tickets", &self.lock().tls13.len())
            .finish()
    }
}

impl ClientSessionStore for Tls13OnlyStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.lock().kx_hint = Some((server_name, group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        match &self.lock().kx_hint {
            Some((name, group)) if name == server_name => Some(*group),
            _ => None,
        }
    }

    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        let mut tickets = self.lock();
        if tickets.tls13.len() == TICKETS_KEPT {
            tickets.tls13.pop_front();
        }
        tickets.tls13.push_back((server_name, value));
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        let mut tickets = self.lock();
        let newest = tickets
            .tls13
            .iter()
            .rposition(|(name, _)| name == server_name)?;
        tickets.tls13.remove(newest).map(|(_, value)| value)
    }
}
