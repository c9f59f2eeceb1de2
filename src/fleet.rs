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

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{
    AgentClient, HandshakeCounts, HostRecord, HostnameVerification, Profile, Timeouts,
};
use crate::error::{Error, ErrorKind, Result, TimeoutPhase};
use crate::events::{self, Event, Level};
use crate::identity::Identity;

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

/// Stack size of a sweep's worker threads: a TLS handshake and an HTTP
/// exchange need far less than the platform's default.
const WORKER_STACK_BYTES: usize = 256 * 1024;

/// The RPC names [`Call::from_json`] reads, as the command line spells them.
pub const RPC_NAMES: [&str; 9] = [
    "health",
    "status",
    "topology-state",
    "self-destruct",
    "deploy",
    "mutate",
    "teardown",
    "apply-topology",
    "teardown-topology",
];

/// How a host is named in a plan: its position in the fleet, its uuid or
/// its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostId {
    /// Position in the list the fleet was made from.
    Index(usize),
    /// The host record's `uuid`.
    Uuid(String),
    /// The host record's `name`.
    Name(String),
}

impl HostId {
    /// Reads a host reference from JSON: a non-negative integer is an
    /// index; a string is a uuid or a name (resolved by [`Fleet::resolve`]
    /// as [`HostId::Uuid`] first, then as a name).
    pub fn from_json(value: &Value) -> Result<HostId> {
        match value {
            Value::Number(n) => n
                .as_u64()
                .map(|i| HostId::Index(i as usize))
                .ok_or_else(|| Error::invalid("host", "an index must be a non-negative integer")),
            Value::String(s) => Ok(HostId::Uuid(s.clone())),
            _ => Err(Error::invalid(
                "host",
                "must be an index (integer) or a uuid or name (string)",
            )),
        }
    }
}

/// One RPC with its arguments, as sent to one host.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `GET /health`.
    Health,
    /// `GET /status`.
    Status,
    /// `GET /topology/state`.
    TopologyState,
    /// `POST /self-destruct`.
    SelfDestruct,
    /// `POST /deploy` of this host's config.
    Deploy {
        /// The deployment config (checked as [`AgentClient::deploy`] does).
        config: Value,
        /// Validate only.
        dry_run: bool,
        /// Rebuild images without the cache.
        no_cache: bool,
    },
    /// `POST /mutate`.
    Mutate {
        /// The decky to change.
        decky_id: String,
        /// Its new services.
        services: Vec<String>,
        /// Validate only.
        dry_run: bool,
    },
    /// `POST /teardown` of one decky, or all when `None`.
    Teardown {
        /// The decky, or `None` for everything.
        decky_id: Option<String>,
    },
    /// `POST /topology/apply` of a hydrated topology as JSON text, sent
    /// verbatim (see [`AgentClient::apply_topology_json`]).
    ApplyTopology {
        /// The hydrated topology, JSON text.
        hydrated: String,
        /// The version hash; computed from the text when `None`.
        version_hash: Option<String>,
    },
    /// `POST /topology/teardown`.
    TeardownTopology {
        /// The topology to tear down.
        topology_id: String,
    },
}

impl Call {
    /// The RPC's name as the command line spells it (`health`,
    /// `apply-topology`, …).
    pub fn rpc_name(&self) -> &'static str {
        match self {
            Call::Health => "health",
            Call::Status => "status",
            Call::TopologyState => "topology-state",
            Call::SelfDestruct => "self-destruct",
            Call::Deploy { .. } => "deploy",
            Call::Mutate { .. } => "mutate",
            Call::Teardown { .. } => "teardown",
            Call::ApplyTopology { .. } => "apply-topology",
            Call::TeardownTopology { .. } => "teardown-topology",
        }
    }

    /// Reads the arguments of `rpc` from a JSON object (`null` for an RPC
    /// without arguments). Field names follow the single-host calls:
    /// `config`, `dry_run`, `no_cache`, `decky_id`, `services`,
    /// `hydrated` (an object, or a string holding its JSON text),
    /// `version_hash`, `topology_id`.
    pub fn from_json(rpc: &str, args: &Value) -> Result<Call> {
        let empty = serde_json::Map::new();
        let object = match args {
            Value::Null => &empty,
            Value::Object(o) => o,
            _ => return Err(Error::invalid("args", "must be a JSON object or null")),
        };
        let flag = |name: &str| -> Result<bool> {
            match object.get(name) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(Error::invalid(name, "must be a boolean")),
            }
        };
        let text = |name: &str| -> Result<Option<String>> {
            match object.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Error::invalid(name, "must be a string")),
            }
        };
        let required = |name: &str| -> Result<String> {
            text(name)?.ok_or_else(|| Error::invalid(name, "is required"))
        };
        Ok(match rpc {
            "health" => Call::Health,
            "status" => Call::Status,
            "topology-state" | "topology_state" => Call::TopologyState,
            "self-destruct" | "self_destruct" => Call::SelfDestruct,
            "deploy" => Call::Deploy {
                config: object
                    .get("config")
                    .cloned()
                    .ok_or_else(|| Error::invalid("config", "is required"))?,
                dry_run: flag("dry_run")?,
                no_cache: flag("no_cache")?,
            },
            "mutate" => Call::Mutate {
                decky_id: required("decky_id")?,
                services: match object.get("services") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|s| {
                            s.as_str()
                                .map(str::to_string)
                                .ok_or_else(|| Error::invalid("services", "must be strings"))
                        })
                        .collect::<Result<_>>()?,
                    _ => return Err(Error::invalid("services", "must be an array of strings")),
                },
                dry_run: flag("dry_run")?,
            },
            "teardown" => Call::Teardown {
                decky_id: text("decky_id")?,
            },
            "apply-topology" | "apply_topology" => Call::ApplyTopology {
                hydrated: match object.get("hydrated") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    _ => {
                        return Err(Error::invalid(
                            "hydrated",
                            "must be a JSON object or a string holding one",
                        ))
                    }
                },
                version_hash: text("version_hash")?,
            },
            "teardown-topology" | "teardown_topology" => Call::TeardownTopology {
                topology_id: required("topology_id")?,
            },
            other => return Err(Error::invalid("rpc", format!("unknown RPC {other:?}"))),
        })
    }

    fn run(&self, client: &AgentClient) -> Result<Value> {
        match self {
            Call::Health => client.health(),
            Call::Status => client.status(),
            Call::TopologyState => client.topology_state(),
            Call::SelfDestruct => client.self_destruct(),
            Call::Deploy {
                config,
                dry_run,
                no_cache,
            } => client.deploy(config, *dry_run, *no_cache),
            Call::Mutate {
                decky_id,
                services,
                dry_run,
            } => client.mutate(decky_id, services, *dry_run),
            Call::Teardown { decky_id } => client.teardown(decky_id.as_deref()),
            Call::ApplyTopology {
                hydrated,
                version_hash,
            } => client.apply_topology_json(hydrated, version_hash.as_deref()),
            Call::TeardownTopology { topology_id } => client.teardown_topology(topology_id),
        }
    }
}

/// Tunes one sweep. `None` fields fall back to the fleet's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepOptions {
    /// Worker threads (hosts in flight at once), 1 to [`MAX_CONCURRENCY`].
    pub concurrency: Option<usize>,
    /// Time after which every unfinished host reports a timeout and the
    /// sweep returns.
    pub deadline: Option<Duration>,
}

/// What the callback tells the sweep after each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Start no more hosts. Hosts already in flight finish (within their
    /// timeouts and the sweep deadline) and are reported in the results,
    /// without further callbacks; the rest are [`Outcome::NotAttempted`].
    Stop,
}

/// Who a result is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Position in the fleet.
    pub index: usize,
    /// The record's uuid.
    pub uuid: Option<String>,
    /// The record's name.
    pub name: Option<String>,
    /// `host:port` dialled.
    pub address: String,
}

/// How one host's call ended.
#[derive(Debug)]
pub enum Outcome {
    /// The worker's parsed answer.
    Ok(Value),
    /// The call failed, with all its detail; a sweep deadline that cut the
    /// host short is [`Error::Timeout`].
    Err(Error),
    /// The sweep was stopped before this host was started.
    NotAttempted,
}

/// One host's result.
#[derive(Debug)]
pub struct HostResult {
    /// The host.
    pub host: HostInfo,
    /// From the start of this host's call to its end (zero when not
    /// attempted; up to the deadline when the deadline cut it short).
    pub elapsed: Duration,
    /// The answer, the error, or not attempted.
    pub outcome: Outcome,
}

impl HostResult {
    /// True when the worker answered with success.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }
}

/// Settings that apply to every sweep unless a call overrides them.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    concurrency: usize,
    deadline: Option<Duration>,
}

/// Many workers driven as one. `Send + Sync`; sweeps may run from several
/// threads at once (each has its own worker threads; they share the
/// per-host connection pools).
pub struct Fleet {
    clients: Arc<[Arc<AgentClient>]>,
    by_uuid: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    defaults: Mutex<Defaults>,
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
        let mut by_uuid = HashMap::new();
        let mut by_name = HashMap::new();
        for (index, record) in records.iter().enumerate() {
            for (map, key, what) in [
                (&mut by_uuid, &record.uuid, "uuid"),
                (&mut by_name, &record.name, "name"),
            ] {
                if let Some(key) = key {
                    if let Some(first) = map.insert(key.clone(), index) {
                        return Err(Error::invalid(
                            format!("hosts[{index}].{what}"),
                            format!("{what} {key:?} is also the {what} of hosts[{first}]"),
                        ));
                    }
                }
            }
        }
        let clients = records
            .into_iter()
            .enumerate()
            .map(|(index, record)| {
                AgentClient::new(identity, record, hostname)
                    .map(Arc::new)
                    .map_err(|e| match e {
                        Error::InvalidArgument { argument, reason } => Error::InvalidArgument {
                            argument: format!("hosts[{index}].{argument}"),
                            reason,
                        },
                        other => other,
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Fleet {
            clients: clients.into(),
            by_uuid,
            by_name,
            defaults: Mutex::new(Defaults {
                concurrency: DEFAULT_CONCURRENCY,
                deadline: None,
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
            .map(|(index, item)| {
                HostRecord::from_value(item).map_err(|e| match e {
                    Error::InvalidArgument { argument, reason } => Error::InvalidArgument {
                        argument: format!("hosts[{index}].{argument}"),
                        reason,
                    },
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Fleet::new(identity, records, hostname)
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

    /// A plan sending `call` to every host, in fleet order.
    pub fn plan_all(&self, call: &Call) -> Vec<(HostId, Call)> {
        (0..self.clients.len())
            .map(|i| (HostId::Index(i), call.clone()))
            .collect()
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
    /// host completes (completion order); [`Flow::Stop`] starts no more
    /// hosts, and no callback follows. With a deadline, the sweep returns
    /// when it expires and every unfinished host reports
    /// [`Error::Timeout`] with phase [`TimeoutPhase::Deadline`] (in flight
    /// or never started: `elapsed` tells them apart), passed to `on_result` at that
    /// moment in input order; a thread still waiting on a hung worker
    /// finishes on its own, within that host's timeouts, holding nothing
    /// the caller sees. So unless it stops the sweep, `on_result` sees
    /// every host once.
    ///
    /// Errors (before any traffic): an unknown or repeated host, or a bad
    /// concurrency or deadline (invalid argument); no worker thread could
    /// be started (internal).
    pub fn sweep(
        &self,
        plan: Vec<(HostId, Call)>,
        options: SweepOptions,
        mut on_result: impl FnMut(&HostResult) -> Flow,
    ) -> Result<Vec<HostResult>> {
        let defaults = *self.defaults.lock().unwrap_or_else(|p| p.into_inner());
        let concurrency = options.concurrency.unwrap_or(defaults.concurrency);
        check_concurrency(concurrency)?;
        let deadline = options.deadline.or(defaults.deadline);
        check_deadline(deadline)?;
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
            jobs.push(Job { index, call });
        }
        let started = Instant::now();
        let cutoff = deadline.map(|d| started + d);
        let total = jobs.len();
        let mut results: Vec<Option<HostResult>> = (0..total).map(|_| None).collect();
        if total == 0 {
            return Ok(Vec::new());
        }
        events::emit(Level::Info, || {
            Event::new(Level::Info, "fleet.sweep.started")
                .with("hosts", total)
                .with("concurrency", concurrency.min(total))
                .with("deadline_ms", deadline.map(|d| d.as_millis() as u64))
        });
        let shared = Arc::new(Sweep {
            clients: self.clients.clone(),
            jobs,
            dispatch: Mutex::new(Dispatch {
                next: 0,
                stopped: false,
                started: vec![None; total],
            }),
        });
        let (tx, rx) = mpsc::channel::<(usize, Duration, Result<Value>)>();
        let mut spawned = 0;
        let mut spawn_error = None;
        for n in 0..concurrency.min(total) {
            let (shared, tx) = (shared.clone(), tx.clone());
            match thread::Builder::new()
                .name(format!("decnet-fleet-{n}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn(move || shared.work(&tx))
            {
                Ok(_) => spawned += 1,
                Err(e) => {
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        if spawned == 0 {
            return Err(Error::internal(format!(
                "cannot start a fleet worker thread: {}",
                spawn_error.map_or_else(|| "unknown".into(), |e| e.to_string())
            )));
        }
        let mut calling_back = true;
        let mut done = 0;
        while done < total {
            let received = match cutoff {
                Some(cutoff) => {
                    let left = cutoff.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(message) => message,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(message) => message,
                    Err(_) => break,
                },
            };
            let (position, elapsed, result) = received;
            let index = shared.jobs[position].index;
            let host_result = HostResult {
                host: self.info(index),
                elapsed,
                outcome: outcome_of(result),
            };
            done += 1;
            if calling_back && on_result(&host_result) == Flow::Stop {
                calling_back = false;
                shared.stop();
            }
            results[position] = Some(host_result);
        }
        // Whatever is left either never started or was cut by the deadline.
        let started_at = shared.stop();
        let reported: Vec<bool> = results.iter().map(Option::is_some).collect();
        // Results that arrived as the deadline expired still count.
        while let Ok((position, elapsed, result)) = rx.try_recv() {
            let index = shared.jobs[position].index;
            results[position] = Some(HostResult {
                host: self.info(index),
                elapsed,
                outcome: outcome_of(result),
            });
        }
        let now = Instant::now();
        let results: Vec<HostResult> = results
            .into_iter()
            .enumerate()
            .map(|(position, slot)| {
                slot.unwrap_or_else(|| {
                    let index = shared.jobs[position].index;
                    let host = self.info(index);
                    match (started_at[position], cutoff) {
                        (Some(began), Some(_)) => HostResult {
                            elapsed: now.saturating_duration_since(began),
                            outcome: Outcome::Err(Error::Timeout {
                                address: host.address.clone(),
                                phase: TimeoutPhase::Deadline,
                            }),
                            host,
                        },
                        (None, Some(_)) if calling_back => HostResult {
                            elapsed: Duration::ZERO,
                            outcome: Outcome::Err(Error::Timeout {
                                address: host.address.clone(),
                                phase: TimeoutPhase::Deadline,
                            }),
                            host,
                        },
                        (Some(began), None) => HostResult {
                            // A worker thread died without reporting (it
                            // cannot: each call runs under catch_unwind).
                            elapsed: now.saturating_duration_since(began),
                            outcome: Outcome::Err(Error::internal(
                                "the worker thread ended without a result",
                            )),
                            host,
                        },
                        (None, _) => HostResult {
                            elapsed: Duration::ZERO,
                            outcome: Outcome::NotAttempted,
                            host,
                        },
                    }
                })
            })
            .collect();
        // Hosts the deadline cut short complete now: the callback sees
        // them too (in input order), unless it stopped the sweep.
        if calling_back {
            for (position, result) in results.iter().enumerate() {
                if !reported[position] {
                    on_result(result);
                }
            }
        }
        events::emit(Level::Info, || {
            sweep_ended(&results, started.elapsed(), !calling_back)
        });
        Ok(results)
    }

    /// A plan from JSON: `None` sends `rpc` without arguments to every
    /// host; otherwise an array whose items are a host reference (see
    /// [`HostId::from_json`]) or an object `{"host": ref, "args": {...}}`
    /// whose `args` are read by [`Call::from_json`]. An unknown RPC or a
    /// malformed item is an invalid-argument error naming its position.
    pub fn plan_from_json(&self, rpc: &str, plan: Option<&Value>) -> Result<Vec<(HostId, Call)>> {
        if !RPC_NAMES.contains(&rpc) {
            return Err(Error::invalid(
                "rpc",
                format!(
                    "unknown RPC {rpc:?}; expected one of {}",
                    RPC_NAMES.join(", ")
                ),
            ));
        }
        let Some(plan) = plan else {
            let call = Call::from_json(rpc, &Value::Null)?;
            return Ok(self.plan_all(&call));
        };
        let items = plan
            .as_array()
            .ok_or_else(|| Error::invalid("plan", "must be a JSON array"))?;
        items
            .iter()
            .enumerate()
            .map(|(position, item)| {
                let (host, args) = match item {
                    Value::Object(o) => (
                        o.get("host").ok_or_else(|| {
                            Error::invalid(format!("plan[{position}].host"), "is required")
                        })?,
                        o.get("args").unwrap_or(&Value::Null),
                    ),
                    other => (other, &Value::Null),
                };
                let rename = |e: Error, field: &str| match e {
                    Error::InvalidArgument { argument, reason } => Error::InvalidArgument {
                        argument: format!("plan[{position}].{field}{argument}"),
                        reason,
                    },
                    other => other,
                };
                let id = HostId::from_json(host).map_err(|e| match e {
                    Error::InvalidArgument { reason, .. } => {
                        Error::invalid(format!("plan[{position}].host"), reason)
                    }
                    other => other,
                })?;
                let call = Call::from_json(rpc, args).map_err(|e| rename(e, "args."))?;
                Ok((id, call))
            })
            .collect()
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

/// `fleet.sweep.ended`: how many hosts answered, failed (of which timed
/// out) or were never attempted, whether the callback stopped the sweep,
/// and how long it took.
fn sweep_ended(results: &[HostResult], elapsed: Duration, stopped: bool) -> Event {
    let count =
        |wanted: fn(&Outcome) -> bool| results.iter().filter(|r| wanted(&r.outcome)).count();
    Event::new(Level::Info, "fleet.sweep.ended")
        .with("hosts", results.len())
        .with("ok", count(|o| matches!(o, Outcome::Ok(_))))
        .with("failed", count(|o| matches!(o, Outcome::Err(_))))
        .with(
            "timed_out",
            count(|o| matches!(o, Outcome::Err(e) if e.kind() == ErrorKind::Timeout)),
        )
        .with(
            "not_attempted",
            count(|o| matches!(o, Outcome::NotAttempted)),
        )
        .with("stopped", stopped)
        .with_ms("duration_ms", elapsed)
}

fn check_concurrency(concurrency: usize) -> Result<()> {
    if (1..=MAX_CONCURRENCY).contains(&concurrency) {
        Ok(())
    } else {
        Err(Error::invalid(
            "concurrency",
            format!("must be from 1 to {MAX_CONCURRENCY}"),
        ))
    }
}

fn check_deadline(deadline: Option<Duration>) -> Result<()> {
    match deadline {
        Some(d) if d.is_zero() => Err(Error::invalid("deadline", "must be greater than zero")),
        _ => Ok(()),
    }
}

fn outcome_of(result: Result<Value>) -> Outcome {
    match result {
        Ok(value) => Outcome::Ok(value),
        Err(e) => Outcome::Err(explain_fd_exhaustion(e)),
    }
}

/// A connect error caused by this process running out of file descriptors
/// says so, with what to do about it.
fn explain_fd_exhaustion(error: Error) -> Error {
    match error {
        Error::Connect { address, reason }
            if reason.contains(&format!("os error {}", libc::EMFILE))
                || reason.contains(&format!("os error {}", libc::ENFILE)) =>
        {
            Error::Connect {
                address,
                reason: format!(
                    "{reason}: this process ran out of file descriptors; \
                     lower the sweep's concurrency or raise RLIMIT_NOFILE"
                ),
            }
        }
        other => other,
    }
}

struct Job {
    index: usize,
    call: Call,
}

/// Which jobs have been handed out, under one lock so that stopping and
/// starting never race.
struct Dispatch {
    next: usize,
    stopped: bool,
    started: Vec<Option<Instant>>,
}

/// What a sweep's worker threads share.
struct Sweep {
    clients: Arc<[Arc<AgentClient>]>,
    jobs: Vec<Job>,
    dispatch: Mutex<Dispatch>,
}

impl Sweep {
    /// Takes the next job, unless the sweep is stopped or out of jobs.
    fn take(&self) -> Option<(usize, Instant)> {
        let mut d = self.dispatch.lock().unwrap_or_else(|p| p.into_inner());
        if d.stopped || d.next >= self.jobs.len() {
            return None;
        }
        let position = d.next;
        d.next += 1;
        let now = Instant::now();
        d.started[position] = Some(now);
        Some((position, now))
    }

    /// Starts no more jobs; returns when each job started.
    fn stop(&self) -> Vec<Option<Instant>> {
        let mut d = self.dispatch.lock().unwrap_or_else(|p| p.into_inner());
        d.stopped = true;
        d.started.clone()
    }

    /// A worker thread's loop: run jobs until none is left or the sweep
    /// stops; a result nobody waits for any more is dropped.
    fn work(&self, tx: &mpsc::Sender<(usize, Duration, Result<Value>)>) {
        while let Some((position, began)) = self.take() {
            let job = &self.jobs[position];
            let client = &self.clients[job.index];
            let result = catch_unwind(AssertUnwindSafe(|| job.call.run(client)))
                .unwrap_or_else(|_| Err(Error::internal("the call panicked")));
            if tx.send((position, began.elapsed(), result)).is_err() {
                return;
            }
        }
    }
}

impl HostResult {
    /// The result as one JSON object, the form the C ABI, the Python
    /// module and the command line share: `index`, `uuid`, `name`,
    /// `address`, `elapsed_ms`, `outcome` (`ok`, `error` or
    /// `not_attempted`) and `result` (the answer) or `error` (see
    /// [`error_to_json`]).
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("index".into(), self.host.index.into());
        object.insert("uuid".into(), self.host.uuid.clone().into());
        object.insert("name".into(), self.host.name.clone().into());
        object.insert("address".into(), self.host.address.clone().into());
        let ms = (self.elapsed.as_secs_f64() * 1e6).round() / 1e3;
        object.insert("elapsed_ms".into(), Value::from(ms));
        match &self.outcome {
            Outcome::Ok(value) => {
                object.insert("outcome".into(), "ok".into());
                object.insert("result".into(), value.clone());
            }
            Outcome::Err(error) => {
                object.insert("outcome".into(), "error".into());
                object.insert("error".into(), error_to_json(error));
            }
            Outcome::NotAttempted => {
                object.insert("outcome".into(), "not_attempted".into());
            }
        }
        Value::Object(object)
    }
}

/// An error with all its detail as a JSON object: `kind` (its stable
/// name), `code`, `message`, `http_status`, `body`, `detail`,
/// `expected_fingerprint`, `actual_fingerprint` and
/// `may_have_reached_worker` (`null` or `false` where they do not apply).
pub fn error_to_json(error: &Error) -> Value {
    let (mut status, mut body, mut detail) = (Value::Null, Value::Null, Value::Null);
    let (mut expected, mut actual, mut reached) = (Value::Null, Value::Null, false);
    match error {
        Error::HttpStatus {
            status: s,
            body: b,
            detail: d,
        } => {
            status = Value::from(*s);
            body = Value::from(b.clone());
            detail = d.clone().map_or(Value::Null, Value::from);
        }
        Error::PinMismatch {
            expected: e,
            actual: a,
            ..
        } => {
            expected = Value::from(e.clone());
            actual = Value::from(a.clone());
        }
        Error::ConnectionLost {
            may_have_reached_worker,
            ..
        } => reached = *may_have_reached_worker,
        _ => {}
    }
    serde_json::json!({
        "kind": error.kind().name(),
        "code": error.kind().code(),
        "message": error.to_string(),
        "http_status": status,
        "body": body,
        "detail": detail,
        "expected_fingerprint": expected,
        "actual_fingerprint": actual,
        "may_have_reached_worker": reached,
    })
}
