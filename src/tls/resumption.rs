//! The per-client TLS 1.3 ticket store.

use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

/// TLS 1.3 tickets one client keeps (rustls holds them per server name,
/// eight to a name; a client talks to one worker).
pub(super) const TICKETS_KEPT: usize = 8;

/// A client's ticket store that keeps TLS 1.3 tickets only. rustls'
/// `Tls12Resumption::Disabled` stops TLS 1.2 tickets but still saves and
/// offers TLS 1.2 session ids; a TLS 1.2 resumption reuses the old master
/// secret with no fresh key exchange, so no TLS 1.2 session is ever kept.
#[derive(Debug)]
pub(super) struct Tls13OnlyStore(pub ClientSessionMemoryCache);

impl ClientSessionStore for Tls13OnlyStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.0.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.kx_hint(server_name)
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
        self.0.insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.0.take_tls13_ticket(server_name)
    }
}
