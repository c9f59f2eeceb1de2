//! Fleets: one object that drives many workers, with bounded concurrency,
//! an optional sweep deadline and one result per host, streamed to a
//! callback on the calling thread as hosts complete.
//!
//! A [`Fleet`] keeps one [`AgentClient`] per host for its whole lifetime,
//! so a second sweep within the workers' keep-alive window reuses the
//! connections the first one opened. A sweep runs on a fixed pool of
//! worker threads started for that sweep (never a thread per host); the
//! calling thread hands out no work itself, it only collects results and
//! calls the callback, one call at a time, in completion order.
//!
//! Files: `plan` (what each host gets), `engine` (the sweep engine any
//! fleet shares), `result` (per-host results and their JSON), `budget`
//! (the cap on open connections), and the [`Fleet`] here.

mod budget;
pub(crate) mod engine;
mod plan;
mod result;
mod sharded;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use budget::default_max_open_connections;
pub use engine::Flow;
pub(crate) use plan::{in_host, HostNames};
pub use plan::{Call, HostId, RPC_NAMES};
pub(crate) use result::sweep_ended;
pub use result::{error_to_json, HostInfo, HostResult, Outcome};
pub use sharded::ShardResult;

use crate::client::{
    AgentClient, HandshakeCounts, HostRecord, HostnameVerification, Profile, Timeouts,
};
use crate::error::{Error, Result, TimeoutPhase};
use crate::events::{self, Event, Level};
use crate::identity::Identity;
use crate::rpc;
use budget::ConnectionBudget;
use engine::{Job, Limits, Unfinished};

/// Worker threads per sweep when neither the call nor the fleet says
/// otherwise. Measured with `benches/fleet.rs` (see the README): on the
/// loopback bench a health sweep is CPU-bound by handshakes and gains
/// nothing past a few threads per core, while a real network adds a
/// round-trip per exchange that only more requests in flight can hide;
/// 64 threads keep a 1,000-host sweep busy at tens of milliseconds of
/// latency for about 64 small thread stacks.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Largest concurrency a sweep accepts.
pub const MAX_CONCURRENCY: usize = 4096;

/// Tunes one sweep. `None` fields fall back to the fleet's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepOptions {
    /// Worker threads (hosts in flight at once), 1 to [`MAX_CONCURRENCY`].
    pub concurrency: Option<usize>,
    /// Time after which every unfinished host reports a timeout and the
    /// sweep returns.
    pub deadline: Option<Duration>,
}

/// Largest niceness [`Fleet::set_sweep_niceness`] accepts.
pub const MAX_SWEEP_NICENESS: u32 = 19;

/// `increment` as a niceness (0 to [`MAX_SWEEP_NICENESS`]), or an
/// invalid-argument error naming `niceness`.
pub(crate) fn checked_niceness(increment: u32) -> Result<u8> {
    u8::try_from(increment)
        .ok()
        .filter(|&n| u32::from(n) <= MAX_SWEEP_NICENESS)
        .ok_or_else(|| {
            Error::invalid(
                "niceness",
                format!("must be from 0 to {MAX_SWEEP_NICENESS}, not {increment}"),
            )
        })
}

/// Settings that apply to every sweep unless a call overrides them; also
/// one sweep's settings once resolved ([`Fleet::settings`]).
#[derive(Debug, Clone, Copy)]
struct Settings {
    concurrency: usize,
    deadline: Option<Duration>,
    niceness: u8,
}

/// Many workers driven as one. `Send + Sync`; sweeps may run from several
/// threads at once (each has its own worker threads; they share the
/// per-host connection pools).
pub struct Fleet {
    clients: Arc<[Arc<AgentClient>]>,
    budget: Arc<ConnectionBudget>,
    by_uuid: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    /// Each host record's `use_ipvlan` (false when the record has none).
    use_ipvlan: Vec<bool>,
    defaults: Mutex<Settings>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fleet({} hosts)", self.clients.len())
    }
}

impl Fleet {
    /// A fleet of `records`, each host's client presenting `identity` (its
    /// parsed material is shared, not copied per host). Duplicate uuids or
    /// names are an invalid-argument error naming both indices; an empty
    /// list is a valid, empty fleet. No traffic happens yet.
    pub fn new(
        identity: &Identity,
        records: Vec<HostRecord>,
        hostname: HostnameVerification,
    ) -> Result<Fleet> {
        let hostname = match hostname.resolve()? {
            true => HostnameVerification::On,
            false => HostnameVerification::Off,
        };
        let mut names = HostNames::default();
        for (index, record) in records.iter().enumerate() {
            names.add(index, record)?;
        }
        let clients = records
            .into_iter()
            .enumerate()
            .map(|(index, record)| {
                AgentClient::new(identity, record, hostname)
                    .map(Arc::new)
                    .map_err(|e| in_host(index, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let clients: Arc<[Arc<AgentClient>]> = clients.into();
        let budget = ConnectionBudget::new(clients.clone(), default_max_open_connections());
        Ok(Fleet {
            use_ipvlan: vec![false; clients.len()],
            budget: Arc::new(budget),
            clients,
            by_uuid: names.by_uuid,
            by_name: names.by_name,
            defaults: Mutex::new(Settings {
                concurrency: DEFAULT_CONCURRENCY,
                deadline: None,
                niceness: 0,
            }),
        })
    }

    /// A fleet from a JSON array of host records (see
    /// [`HostRecord::from_value`]); a bad record is an invalid-argument
    /// error naming its index.
    pub fn from_json(
        identity: &Identity,
        hosts_json: &Value,
        hostname: HostnameVerification,
    ) -> Result<Fleet> {
        let items = hosts_json
            .as_array()
            .ok_or_else(|| Error::invalid("hosts", "must be a JSON array of host records"))?;
        let records = items
            .iter()
            .enumerate()
            .map(|(index, item)| HostRecord::from_value(item).map_err(|e| in_host(index, e)))
            .collect::<Result<Vec<_>>>()?;
        let use_ipvlan = items
            .iter()
            .enumerate()
            .map(|(index, item)| match item.get("use_ipvlan") {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(on)) => Ok(*on),
                Some(_) => Err(Error::invalid(
                    format!("hosts[{index}].use_ipvlan"),
                    "must be true, false or null",
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut fleet = Fleet::new(identity, records, hostname)?;
        fleet.use_ipvlan = use_ipvlan;
        Ok(fleet)
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True for an empty fleet.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client of host `index` (for its counters or a single call).
    pub fn client(&self, index: usize) -> Option<&AgentClient> {
        self.clients.get(index).map(|c| &**c)
    }

    /// The index of `id`. A [`HostId::Uuid`] that names no uuid is looked
    /// up as a name; one string that is the uuid of one host and the name
    /// of another is ambiguous (invalid argument).
    pub fn resolve(&self, id: &HostId) -> Result<usize> {
        match id {
            HostId::Index(i) if *i < self.clients.len() => Ok(*i),
            HostId::Index(i) => Err(Error::invalid(
                "host",
                format!("index {i} is out of range for {} hosts", self.clients.len()),
            )),
            HostId::Uuid(key) => match (self.by_uuid.get(key), self.by_name.get(key)) {
                (Some(a), Some(b)) if a != b => Err(Error::invalid(
                    "host",
                    format!("{key:?} is the uuid of hosts[{a}] and the name of hosts[{b}]"),
                )),
                (Some(i), _) | (None, Some(i)) => Ok(*i),
                (None, None) => Err(Error::invalid(
                    "host",
                    format!("no host has uuid or name {key:?}"),
                )),
            },
            HostId::Name(key) => self
                .by_name
                .get(key)
                .copied()
                .ok_or_else(|| Error::invalid("host", format!("no host is named {key:?}"))),
        }
    }

    /// Sets the timeouts of `profile` on every host.
    pub fn set_timeouts(&self, profile: Profile, timeouts: Timeouts) -> Result<()> {
        for client in self.clients.iter() {
            client.set_timeouts(profile, timeouts)?;
        }
        Ok(())
    }

    /// Sets the response-body cap on every host.
    pub fn set_max_response_bytes(&self, limit: u64) -> Result<()> {
        for client in self.clients.iter() {
            client.set_max_response_bytes(limit)?;
        }
        Ok(())
    }

    /// Turns TLS 1.3 session resumption on (the default) or off for the new
    /// connections of every host (see [`AgentClient::set_session_resumption`]).
    pub fn set_session_resumption(&self, on: bool) {
        for client in self.clients.iter() {
            client.set_session_resumption(on);
        }
    }

    /// Handshakes completed over every host, by kind.
    pub fn handshake_counts(&self) -> HandshakeCounts {
        self.clients.iter().map(|c| c.handshake_counts()).fold(
            HandshakeCounts::default(),
            |sum, c| HandshakeCounts {
                full: sum.full + c.full,
                resumed: sum.resumed + c.resumed,
            },
        )
    }

    /// Sets the fleet's default concurrency (1 to [`MAX_CONCURRENCY`]).
    pub fn set_concurrency(&self, concurrency: usize) -> Result<()> {
        check_concurrency(concurrency)?;
        self.defaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .concurrency = concurrency;
        Ok(())
    }

    /// Sets or clears the fleet's default sweep deadline (non-zero).
    pub fn set_deadline(&self, deadline: Option<Duration>) -> Result<()> {
        check_deadline(deadline)?;
        self.defaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deadline = deadline;
        Ok(())
    }

    /// Makes the worker threads of this fleet's sweeps, from the next one
    /// on, run `increment` nice levels (0 to [`MAX_SWEEP_NICENESS`]; default
    /// 0) below the thread that calls the sweep, so their TLS and JSON work
    /// yields the CPU to the caller's other threads, such as an event loop.
    /// Results and callbacks stay on the calling thread, at its priority.
    /// Linux only (it keeps a nice value per thread); elsewhere it has no
    /// effect. The cost: under other load at normal priority a sweep gets
    /// less CPU and takes longer.
    pub fn set_sweep_niceness(&self, increment: u32) -> Result<()> {
        let niceness = checked_niceness(increment)?;
        self.defaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .niceness = niceness;
        Ok(())
    }

    /// The most connections this fleet's sweeps hold open at once; by
    /// default [`default_max_open_connections`] (three quarters of the soft
    /// limit on open files when the fleet was made).
    pub fn max_open_connections(&self) -> usize {
        self.budget.limit()
    }

    /// Caps the connections this fleet's sweeps hold open at once (at least
    /// 1), for calls started from now. When a call would go over, the
    /// least recently used idle hosts' kept-alive connections are closed
    /// first; calling them again costs a new connection with a resumed TLS
    /// handshake (a full one when resumption is off), about a round trip
    /// and a fraction of a full handshake's CPU. A sweep never runs more
    /// hosts at once than the cap.
    pub fn set_max_open_connections(&self, limit: usize) -> Result<()> {
        self.budget.set_limit(limit)
    }

    /// Connections of this fleet's clients open now.
    pub fn open_connections(&self) -> usize {
        self.budget.open()
    }

    /// How many times a host's idle connections were closed to stay within
    /// [`Fleet::max_open_connections`].
    pub fn connection_evictions(&self) -> u64 {
        self.budget.evictions()
    }

    /// Sends `call` to every host; see [`Fleet::sweep`].
    pub fn sweep_all(
        &self,
        call: &Call,
        options: SweepOptions,
        on_result: impl FnMut(&HostResult) -> Flow,
    ) -> Result<Vec<HostResult>> {
        self.sweep(self.plan_all(call), options, on_result)
    }

    /// Runs `plan` (each entry a host and the call it gets; a host at most
    /// once) on a pool of worker threads and returns one result per entry,
    /// in plan order.
    ///
    /// `on_result` is called on this thread, one call at a time, as each
    /// host completes (completion order). Guarantees:
    ///
    /// - Stop: once `on_result` returns [`Flow::Stop`], no host starts
    ///   (not even the next one at concurrency 1: a thread gets its next
    ///   host only after `on_result` has seen its last result), and no
    ///   callback follows; hosts never started are [`Outcome::NotAttempted`].
    /// - Deadline: it is handed down into every host's call, so connect
    ///   (with the handshake), send and receive each end by it, and no
    ///   request starts after it. Hosts it cut short report
    ///   [`Error::Timeout`] with phase [`TimeoutPhase::Deadline`], passed to
    ///   `on_result` then, in input order; `may_have_reached_worker` is
    ///   false only when no byte of the request left (always for hosts
    ///   never started, `elapsed` zero).
    /// - Return: every sweep thread has ended; no request leaves and no
    ///   event is raised for this sweep afterwards.
    ///
    /// So unless it stops the sweep, `on_result` sees every host once.
    ///
    /// Errors (before any traffic): an unknown or repeated host, or a bad
    /// concurrency or deadline (invalid argument); no worker thread could
    /// be started (internal).
    pub fn sweep(
        &self,
        plan: Vec<(HostId, Call)>,
        options: SweepOptions,
        on_result: impl FnMut(&HostResult) -> Flow,
    ) -> Result<Vec<HostResult>> {
        self.prepare_sweep(plan, options)?.run(on_result)
    }

    /// Checks `plan` and `options` as [`Fleet::sweep`] does, without
    /// traffic, and returns the sweep ready to run, on any thread, with
    /// [`Sweep::run`] (its deadline counts from then). It holds what it
    /// needs of the fleet, which may be dropped meanwhile.
    pub fn prepare_sweep(&self, plan: Vec<(HostId, Call)>, options: SweepOptions) -> Result<Sweep> {
        let settings = self.settings(options)?;
        let mut seen = vec![None; self.clients.len()];
        let mut jobs = Vec::with_capacity(plan.len());
        for (position, (id, call)) in plan.into_iter().enumerate() {
            let index = self.resolve(&id).map_err(|e| match e {
                Error::InvalidArgument { reason, .. } => {
                    Error::invalid(format!("plan[{position}].host"), reason)
                }
                other => other,
            })?;
            if let Some(first) = seen[index].replace(position) {
                return Err(Error::invalid(
                    format!("plan[{position}].host"),
                    format!("hosts[{index}] is already in plan[{first}]"),
                ));
            }
            jobs.push(HostJob {
                host: self.info(index),
                client: self.clients[index].clone(),
                budget: self.budget.clone(),
                call,
                cutoff: None,
            });
        }
        Ok(Sweep {
            jobs,
            settings,
            budget_limit: self.budget.limit(),
        })
    }

    /// The settings of a sweep run with `options`, checked.
    fn settings(&self, options: SweepOptions) -> Result<Settings> {
        let defaults = *self.defaults.lock().unwrap_or_else(|p| p.into_inner());
        let concurrency = options.concurrency.unwrap_or(defaults.concurrency);
        check_concurrency(concurrency)?;
        let deadline = options.deadline.or(defaults.deadline);
        check_deadline(deadline)?;
        Ok(Settings {
            concurrency,
            deadline,
            niceness: defaults.niceness,
        })
    }

    fn info(&self, index: usize) -> HostInfo {
        let record = self.clients[index].host();
        HostInfo {
            index,
            uuid: record.uuid.clone(),
            name: record.name.clone(),
            address: record.authority(),
        }
    }
}

pub(crate) fn check_concurrency(concurrency: usize) -> Result<()> {
    if (1..=MAX_CONCURRENCY).contains(&concurrency) {
        Ok(())
    } else {
        Err(Error::invalid(
            "concurrency",
            format!("must be from 1 to {MAX_CONCURRENCY}"),
        ))
    }
}

pub(crate) fn check_deadline(deadline: Option<Duration>) -> Result<()> {
    match deadline {
        Some(d) if d.is_zero() => Err(Error::invalid("deadline", "must be greater than zero")),
        _ => Ok(()),
    }
}

/// A sweep checked by [`Fleet::prepare_sweep`], ready to run.
pub struct Sweep {
    jobs: Vec<HostJob>,
    settings: Settings,
    budget_limit: usize,
}

impl std::fmt::Debug for Sweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sweep({} hosts)", self.jobs.len())
    }
}

impl Sweep {
    /// Runs the sweep on this thread, with the guarantees of
    /// [`Fleet::sweep`]; the deadline counts from now.
    pub fn run(self, on_result: impl FnMut(&HostResult) -> Flow) -> Result<Vec<HostResult>> {
        let Sweep {
            mut jobs,
            settings:
                Settings {
                    concurrency,
                    deadline,
                    niceness,
                },
            budget_limit,
        } = self;
        let started = Instant::now();
        let cutoff = deadline.map(|d| started + d);
        for job in &mut jobs {
            job.cutoff = cutoff;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        events::emit(Level::Info, || {
            Event::new(Level::Info, "fleet.sweep.started")
                .with("hosts", jobs.len())
                .with("concurrency", concurrency.min(jobs.len()))
                .with("deadline_ms", deadline.map(|d| d.as_millis() as u64))
        });
        let limits = Limits {
            // Never more calls at once than the connection budget.
            concurrency: concurrency.min(budget_limit),
            cutoff,
            thread_name: "decnet-fleet",
            niceness,
        };
        let ended = engine::run(jobs, limits, on_result)?;
        events::emit(Level::Info, || {
            result::sweep_ended(&ended.results, started.elapsed(), ended.stopped)
        });
        Ok(ended.results)
    }
}

/// One host's call in a sweep.
struct HostJob {
    host: HostInfo,
    client: Arc<AgentClient>,
    budget: Arc<ConnectionBudget>,
    call: Call,
    /// The sweep's deadline, handed down into every request of the call.
    cutoff: Option<Instant>,
}

impl Job for HostJob {
    type Output = HostResult;

    fn run(&self) -> HostResult {
        let began = Instant::now();
        let _slot = self.budget.reserve(self.host.index);
        let result = rpc::within_deadline(self.cutoff, || self.call.run(&self.client));
        HostResult {
            host: self.host.clone(),
            elapsed: began.elapsed(),
            outcome: swept_outcome(self.cutoff, result),
        }
    }

    fn unfinished(&self, why: Unfinished) -> HostResult {
        unfinished_result(&self.host, why)
    }
}

/// The outcome of one host's call in a sweep whose deadline is `cutoff`:
/// whatever phase the deadline cut, it is the sweep's deadline that ended
/// the call. Any fleet's sweep reports this way.
pub(crate) fn swept_outcome(cutoff: Option<Instant>, result: Result<Value>) -> Outcome {
    match result {
        Err(Error::Timeout {
            address,
            may_have_reached_worker,
            ..
        }) if cutoff.is_some_and(|c| Instant::now() >= c) => Outcome::Err(Error::Timeout {
            address,
            phase: TimeoutPhase::Deadline,
            may_have_reached_worker,
        }),
        other => result::outcome_of(other),
    }
}

/// The result of `host` when its call did not run to its end.
pub(crate) fn unfinished_result(host: &HostInfo, why: Unfinished) -> HostResult {
    let (elapsed, outcome) = match why {
        Unfinished::NeverStarted => (
            Duration::ZERO,
            Outcome::Err(Error::Timeout {
                address: host.address.clone(),
                phase: TimeoutPhase::Deadline,
                may_have_reached_worker: false,
            }),
        ),
        Unfinished::NotAttempted => (Duration::ZERO, Outcome::NotAttempted),
        Unfinished::Panicked { elapsed } => {
            (elapsed, Outcome::Err(Error::internal("the call panicked")))
        }
        Unfinished::Vanished => (
            Duration::ZERO,
            Outcome::Err(Error::internal("the worker thread ended without a result")),
        ),
    };
    HostResult {
        host: host.clone(),
        elapsed,
        outcome,
    }
}
