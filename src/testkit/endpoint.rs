//! Where a stand-in listens, and the master's host record that names it.

use std::net::{SocketAddr, TcpListener};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// A listener on `bind` (port 0 takes a free one) and the address it got.
pub(super) fn listen(bind: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(bind).map_err(|e| Error::Connect {
        address: bind.to_string(),
        reason: format!("cannot listen: {e}"),
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(e.to_string()))?;
    Ok((listener, addr))
}

/// The host record of worker `name` at `addr`, its agent pinned to `pin`
/// (a fingerprint string, or `null` for an unpinned record).
pub(super) fn agent_record(name: &str, addr: SocketAddr, pin: Value) -> Value {
    json!({
        "uuid": format!("uuid-{name}"),
        "name": name,
        "address": addr.ip().to_string(),
        "agent_port": addr.port(),
        "client_cert_fingerprint": pin,
    })
}
