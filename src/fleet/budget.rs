//! A fleet's connection budget: at most `limit` connections open at once
//! across all its hosts, so a fleet larger than the process's descriptor
//! limit still works. Before a host's call starts, the least recently used
//! idle hosts' kept-alive connections are closed until the call fits; the
//! next call to such a host connects again, resuming its TLS session.
//!
//! The count is exact (every connection a fleet's client opens is counted
//! while it lives) and a call in flight is counted before it connects, so
//! the sweeps of one fleet never hold more than `limit` connections.
//! Connections opened by calling a host's client outside a sweep are
//! counted but not held back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::client::AgentClient;
use crate::error::{Error, Result};

/// Descriptors left to the rest of the process by the default budget:
/// a quarter of the soft limit, at least this many.
const MIN_HEADROOM: u64 = 64;

/// The default budget: the soft limit on open files less a quarter of it
/// (at least [`MIN_HEADROOM`]), never below 1.
pub fn default_max_open_connections() -> usize {
    let soft = rlimit::Resource::NOFILE
        .get()
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let headroom = (soft / 4).max(MIN_HEADROOM);
    let budget = soft.saturating_sub(headroom).max(1);
    usize::try_from(budget).unwrap_or(usize::MAX)
}

/// The budget of one fleet, shared by its sweeps.
pub(crate) struct ConnectionBudget {
    clients: Arc<[Arc<AgentClient>]>,
    /// Connections of the fleet's clients open now.
    open: Arc<AtomicUsize>,
    limit: AtomicUsize,
    evictions: AtomicU64,
    state: Mutex<Ledger>,
}

/// Who is busy and who was used least recently.
struct Ledger {
    /// Calls started and not yet ended (counted before they connect).
    in_flight: usize,
    /// Calls in flight per host.
    busy: Vec<u32>,
    /// Per host, the stamp of its latest entry in `idle`.
    stamp: Vec<u32>,
    /// Hosts whose call ended, oldest first, with the stamp they had then;
    /// an entry whose stamp is no longer the host's is stale.
    idle: VecDeque<(u32, u32)>,
}

impl ConnectionBudget {
    /// A budget of `limit` over `clients`, counting their connections.
    pub(crate) fn new(clients: Arc<[Arc<AgentClient>]>, limit: usize) -> Self {
        let open = Arc::new(AtomicUsize::new(0));
        for client in clients.iter() {
            client.count_connections_in(open.clone());
            client.release_buffers_when_idle();
        }
        let hosts = clients.len();
        ConnectionBudget {
            clients,
            open,
            limit: AtomicUsize::new(limit.max(1)),
            evictions: AtomicU64::new(0),
            state: Mutex::new(Ledger {
                in_flight: 0,
                busy: vec![0; hosts],
                stamp: vec![0; hosts],
                idle: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most connections the fleet's sweeps hold at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Sets the limit (at least 1) for calls started from now.
    pub(crate) fn set_limit(&self, limit: usize) -> Result<()> {
        if limit == 0 {
            return Err(Error::invalid("max_open_connections", "must be at least 1"));
        }
        self.limit.store(limit, Ordering::Relaxed);
        Ok(())
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Hosts whose idle connections were closed to stay within the budget.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Makes room for one call to host `index` (closing the least recently
    /// used idle hosts' connections) and counts it in flight until the
    /// returned slot drops.
    pub(crate) fn reserve(&self, index: usize) -> Slot<'_> {
        let limit = self.limit();
        let mut ledger = self.lock();
        while self.open() + ledger.in_flight >= limit {
            let Some((host, stamp)) = ledger.idle.pop_front() else {
                break;
            };
            let host = host as usize;
            if ledger.stamp[host] == stamp && ledger.busy[host] == 0 {
                self.clients[host].close_idle_connections();
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        ledger.in_flight += 1;
        ledger.busy[index] += 1;
        Slot {
            budget: self,
            index,
        }
    }

    fn release(&self, index: usize) {
        let mut ledger = self.lock();
        ledger.in_flight -= 1;
        ledger.busy[index] -= 1;
        ledger.stamp[index] = ledger.stamp[index].wrapping_add(1);
        let entry = (index as u32, ledger.stamp[index]);
        ledger.idle.push_back(entry);
        // Stale entries are dropped once they outnumber the hosts.
        if ledger.idle.len() > 2 * ledger.stamp.len() + 64 {
            let Ledger { idle, stamp, .. } = &mut *ledger;
            idle.retain(|&(host, s)| stamp[host as usize] == s);
        }
    }
}

/// One call's place in the budget, given back when it drops (also when
/// the call panics).
pub(crate) struct Slot<'a> {
    budget: &'a ConnectionBudget,
    index: usize,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.budget.release(self.index);
    }
}
