//! What ureq calls: the connector that hands out verified connections and
//! the resolver that defers name lookup to them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{ConnectionDetails, Connector, NextTimeout};

use super::session::TlsSession;
use super::transport::{deadline_of, TlsTransport};
use crate::error::Error;
use crate::events;

/// The ureq connector: hands out the warm connection when there is one,
/// otherwise opens and verifies a new one. Refuses plain HTTP.
#[derive(Debug)]
pub(crate) struct PinnedConnector {
    pub session: Arc<TlsSession>,
}

impl Connector<()> for PinnedConnector {
    type Out = TlsTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> std::result::Result<Option<Self::Out>, ureq::Error> {
        if !details.needs_tls() {
            return Err(ureq::Error::Other(Box::new(Error::invalid(
                "url",
                "plain HTTP is refused",
            ))));
        }
        // ureq connects outside its pool's lock: a connection it retired
        // while checking the pool is reported before the new one opens.
        events::raise_deferred();
        if let Some(transport) = self.session.take_warm() {
            return Ok(Some(transport));
        }
        let deadline = deadline_of(&details.timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        self.session
            .open(deadline)
            .map(Some)
            .map_err(|e| ureq::Error::Other(Box::new(e)))
    }
}

/// The ureq resolver: resolves nothing. ureq resolves before it looks in
/// the pool, and its resolver starts a thread per call when a timeout is
/// set; deferring the lookup to [`TlsSession::open`] means calls on pooled
/// connections do no lookup at all.
#[derive(Debug)]
pub(crate) struct DeferredResolver;

impl Resolver for DeferredResolver {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        Ok(self.empty())
    }
}
