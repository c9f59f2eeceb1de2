//! The updater fleet: one [`UpdaterClient`] per host record, driven as
//! one over the agent fleet's sweep engine, for plain sweeps (health,
//! releases, update, update-self, rollback) and for rollouts (push and
//! rollback) whose waves the [`Planner`] decides.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::events::{self, Event, Level};
use crate::fleet::engine::{self, Job, Limits, Next, Schedule, Unfinished};
use crate::fleet::{
    check_concurrency, check_deadline, in_host, swept_outcome, unfinished_result, Flow, HostInfo,
    HostNames, HostResult, SweepOptions, DEFAULT_CONCURRENCY,
};
use crate::identity::Identity;
use crate::rollout::outcome::{HostReport, HostStatus, Operation, Summary};
use crate::rollout::planner::{Planner, Step, StopReason, Wave};
use crate::rollout::policy::RolloutPolicy;
use crate::rpc::{self, HostnameVerification, Timeouts};
use crate::updater::{SelfUpdate, Tarball, UpdaterClient, UpdaterProfile, DEFAULT_UPDATER_PORT};
use crate::{client::HostRecord, json};

/// How often `verify` polls an updater's health for the new release.
pub const VERIFY_INTERVAL: Duration = Duration::from_millis(250);

/// One updater RPC with its arguments, as sent to every host of a plain
/// sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdaterCall {
    /// `GET /health`.
    Health,
    /// `GET /releases`.
    Releases,
    /// `POST /update` of the tarball file at `tarball`.
    Update {
        /// The tarball, streamed from disk to each host.
        tarball: PathBuf,
        /// The git SHA, for provenance (may be empty).
        sha: String,
    },
    /// `POST /update-self` of the tarball file at `tarball`.
    UpdateSelf {
        /// The tarball, streamed from disk to each host.
        tarball: PathBuf,
        /// The git SHA, for provenance (may be empty).
        sha: String,
    },
    /// `POST /rollback`.
    Rollback,
}

impl UpdaterCall {
    /// `health`, `releases`, `update`, `update-self` or `rollback`.
    pub fn rpc_name(&self) -> &'static str {
        match self {
            UpdaterCall::Health => "health",
            UpdaterCall::Releases => "releases",
            UpdaterCall::Update { .. } => "update",
            UpdaterCall::UpdateSelf { .. } => "update-self",
            UpdaterCall::Rollback => "rollback",
        }
    }

    fn tarball(&self) -> Option<&Path> {
        match self {
            UpdaterCall::Update { tarball, .. } | UpdaterCall::UpdateSelf { tarball, .. } => {
                Some(tarball)
            }
            _ => None,
        }
    }
}

/// One host's outcome in a push or rollback.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutHostResult {
    /// The host.
    pub host: HostInfo,
    /// Its wave (`None` for a host without an updater pin, which is never
    /// part of the plan).
    pub wave: Option<Wave>,
    /// Its class and what the updater said.
    pub report: HostReport,
}

impl RolloutHostResult {
    /// `{"index", "uuid", "name", "address", "wave"` (`"canary"`, a batch
    /// number from 1, or null)`, "status", …}`: the host and its
    /// [`HostReport::to_json`] members.
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("index".into(), self.host.index.into());
        object.insert("uuid".into(), self.host.uuid.clone().into());
        object.insert("name".into(), self.host.name.clone().into());
        object.insert("address".into(), self.host.address.clone().into());
        let wave = match self.wave {
            Some(Wave::Canary) => Value::from("canary"),
            Some(Wave::Batch(n)) => Value::from(n),
            None => Value::Null,
        };
        object.insert("wave".into(), wave);
        if let Value::Object(report) = self.report.to_json() {
            object.extend(report);
        }
        Value::Object(object)
    }
}

/// What a push or rollback did: each host's outcome in input order, and
/// the summary with why it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// One result per host, in fleet order.
    pub hosts: Vec<RolloutHostResult>,
    /// How many of each class, and why the rollout ended.
    pub summary: Summary,
}

impl Rollout {
    /// `{"hosts": [...], "summary": {...}}`.
    pub fn to_json(&self) -> Value {
        json!({
            "hosts": self.hosts.iter().map(RolloutHostResult::to_json).collect::<Vec<_>>(),
            "summary": self.summary.to_json(),
        })
    }
}

/// One host of the fleet: who it is, and its client unless its record has
/// no updater pin.
struct Member {
    info: HostInfo,
    client: Option<Arc<UpdaterClient>>,
}

/// Settings that apply to every sweep unless a call overrides them.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    concurrency: usize,
    deadline: Option<Duration>,
}

/// Many workers' updaters driven as one. `Send + Sync`. A host record
/// without `updater_cert_fingerprint` is kept (it is reported) but never
/// contacted.
pub struct UpdaterFleet {
    members: Vec<Member>,
    defaults: Mutex<Defaults>,
}

impl std::fmt::Debug for UpdaterFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpdaterFleet({} hosts)", self.members.len())
    }
}

impl UpdaterFleet {
    /// A fleet from a JSON array of host records: each host's updater is at
    /// its `address` and `updater_port` (absent: 8766), pinned to its
    /// `updater_cert_fingerprint`. A bad record, or a uuid or name used
    /// twice, is an invalid-argument error naming its index. No traffic.
    pub fn from_json(
        identity: &Identity,
        hosts_json: &Value,
        hostname: HostnameVerification,
    ) -> Result<UpdaterFleet> {
        let items = hosts_json
            .as_array()
            .ok_or_else(|| Error::invalid("hosts", "must be a JSON array of host records"))?;
        let mut names = HostNames::default();
        let mut members = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let at = |e: Error| in_host(index, e);
            let record = HostRecord::from_value_unpinned(item).map_err(at)?;
            names.add(index, &record)?;
            let port = match item.get("updater_port") {
                None | Some(Value::Null) => DEFAULT_UPDATER_PORT,
                Some(v) => v
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| at(Error::invalid("updater_port", "must be 1 to 65535")))?,
            };
            let client = match item.get("updater_cert_fingerprint") {
                None | Some(Value::Null) => None,
                Some(_) => {
                    let client = UpdaterClient::from_host_value(identity, item, port, hostname)
                        .map_err(at)?;
                    client.release_buffers_when_idle();
                    Some(Arc::new(client))
                }
            };
            members.push(Member {
                info: HostInfo {
                    index,
                    uuid: record.uuid,
                    name: record.name,
                    address: rpc::authority(&record.address, port),
                },
                client,
            });
        }
        Ok(UpdaterFleet {
            members,
            defaults: Mutex::new(Defaults {
                concurrency: DEFAULT_CONCURRENCY,
                deadline: None,
            }),
        })
    }

    /// [`UpdaterFleet::from_json`] from JSON text.
    pub fn from_json_text(
        identity: &Identity,
        hosts_json: &str,
        hostname: HostnameVerification,
    ) -> Result<UpdaterFleet> {
        let value: Value = json::from_str(hosts_json)
            .map_err(|e| Error::invalid("hosts", format!("not JSON: {e}")))?;
        UpdaterFleet::from_json(identity, &value, hostname)
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True for an empty fleet.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The client of host `index`; `None` when out of range or when its
    /// record has no updater pin.
    pub fn client(&self, index: usize) -> Option<&UpdaterClient> {
        self.members.get(index)?.client.as_deref()
    }

    /// Sets the timeouts of `profile` on every host's client (see
    /// [`UpdaterClient::set_timeouts`]).
    pub fn set_timeouts(&self, profile: UpdaterProfile, timeouts: Timeouts) -> Result<()> {
        for client in self.members.iter().filter_map(|m| m.client.as_ref()) {
            client.set_timeouts(profile, timeouts)?;
        }
        Ok(())
    }

    /// Sets the fleet's default concurrency (1 to
    /// [`crate::fleet::MAX_CONCURRENCY`]).
    pub fn set_concurrency(&self, concurrency: usize) -> Result<()> {
        check_concurrency(concurrency)?;
        self.lock_defaults().concurrency = concurrency;
        Ok(())
    }

    /// Sets or clears the fleet's default deadline (non-zero), for sweeps
    /// and rollouts alike.
    pub fn set_deadline(&self, deadline: Option<Duration>) -> Result<()> {
        check_deadline(deadline)?;
        self.lock_defaults().deadline = deadline;
        Ok(())
    }

    fn lock_defaults(&self) -> std::sync::MutexGuard<'_, Defaults> {
        self.defaults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limits(&self, options: SweepOptions) -> Result<(Limits, Option<Duration>)> {
        let defaults = *self.lock_defaults();
        let concurrency = options.concurrency.unwrap_or(defaults.concurrency);
        check_concurrency(concurrency)?;
        let deadline = options.deadline.or(defaults.deadline);
        check_deadline(deadline)?;
        let limits = Limits {
            concurrency,
            cutoff: deadline.map(|d| Instant::now() + d),
            thread_name: "decnet-updater",
            niceness: 0,
        };
        Ok((limits, deadline))
    }

    /// Sends `call` to every host, with the guarantees of
    /// [`crate::Fleet::sweep`] (bounded pool, deadline, stop, callback on
    /// this thread, results in fleet order). A tarball is hashed once
    /// before any traffic and streamed from disk to each host. A host
    /// without an updater pin is never contacted: its result is
    /// [`Error::PinMismatch`] with an empty `expected`.
    pub fn sweep(
        &self,
        call: &UpdaterCall,
        options: SweepOptions,
        on_result: impl FnMut(&HostResult) -> Flow,
    ) -> Result<Vec<HostResult>> {
        let (limits, deadline) = self.limits(options)?;
        let sha256 = call
            .tarball()
            .map(|p| Tarball::File(p).sha256())
            .transpose()?;
        let call = Arc::new((call.clone(), sha256));
        let jobs: Vec<SweepJob> = self
            .members
            .iter()
            .map(|m| SweepJob {
                host: m.info.clone(),
                client: m.client.clone(),
                call: call.clone(),
                cutoff: limits.cutoff,
            })
            .collect();
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        events::emit(Level::Info, || {
            Event::new(Level::Info, "fleet.sweep.started")
                .with("hosts", jobs.len())
                .with("concurrency", limits.concurrency.min(jobs.len()))
                .with("deadline_ms", deadline.map(|d| d.as_millis() as u64))
        });
        let started = Instant::now();
        let ended = engine::run(jobs, limits, on_result)?;
        events::emit(Level::Info, || {
            crate::fleet::sweep_ended(&ended.results, started.elapsed(), ended.stopped)
        });
        Ok(ended.results)
    }

    /// Pushes the release tarball at `tarball` (git SHA `sha`) to every
    /// host under `policy`: the canary first, then batches, each host's
    /// agent update first and, with `self_update`, its updater's only after
    /// that succeeded, then the optional `verify`. `sha256`, when given, must
    /// be the file's digest: the file is hashed once, before any traffic,
    /// and a mismatch is an invalid-argument error then. The file is
    /// streamed from disk to each host, never held in memory.
    ///
    /// `on_result` sees each host as it ends (hosts without an updater pin
    /// first, before any traffic); [`Flow::Stop`] starts no new host. The
    /// deadline (from `options` or the fleet) bounds the whole rollout.
    /// Errors (before any traffic): a bad policy, concurrency or deadline,
    /// an unreadable tarball, a digest mismatch, an empty `sha` with
    /// `verify`.
    pub fn push(
        &self,
        tarball: &Path,
        sha: &str,
        sha256: Option<&str>,
        policy: &RolloutPolicy,
        options: SweepOptions,
        on_result: impl FnMut(&RolloutHostResult) -> Flow,
    ) -> Result<Rollout> {
        policy.validate()?;
        if policy.verify.is_some() && sha.is_empty() {
            return Err(Error::invalid(
                "sha",
                "verify waits for this release's git SHA, so it must not be empty",
            ));
        }
        let digest = Tarball::File(tarball).sha256()?;
        if let Some(expected) = sha256 {
            if !expected.eq_ignore_ascii_case(&digest) {
                return Err(Error::invalid(
                    "sha256",
                    format!(
                        "the tarball {} has SHA-256 {digest}, not {expected}",
                        tarball.display()
                    ),
                ));
            }
        }
        let work = Work {
            operation: Operation::Push,
            payload: Some(Payload {
                path: tarball.to_path_buf(),
                sha: sha.to_string(),
                sha256: digest,
            }),
            self_update: policy.self_update,
            verify: policy.verify,
        };
        self.roll_out(work, policy, options, on_result)
    }

    /// Rolls every host back to its previous release under `policy` (its
    /// canary, batches and failure budget; `self_update` and `verify` do
    /// not apply and are refused), as [`UpdaterFleet::push`] does.
    pub fn rollback(
        &self,
        policy: &RolloutPolicy,
        options: SweepOptions,
        on_result: impl FnMut(&RolloutHostResult) -> Flow,
    ) -> Result<Rollout> {
        policy.validate()?;
        if policy.self_update {
            return Err(Error::invalid(
                "self_update",
                "a rollback does not update the updater",
            ));
        }
        let work = Work {
            operation: Operation::Rollback,
            payload: None,
            self_update: false,
            verify: None,
        };
        self.roll_out(work, policy, options, on_result)
    }

    fn roll_out(
        &self,
        work: Work,
        policy: &RolloutPolicy,
        options: SweepOptions,
        mut on_result: impl FnMut(&RolloutHostResult) -> Flow,
    ) -> Result<Rollout> {
        let (limits, _) = self.limits(options)?;
        let operation = work.operation;
        let mut hosts: Vec<Option<RolloutHostResult>> = vec![None; self.members.len()];
        let mut stopped = false;
        for member in self.members.iter().filter(|m| m.client.is_none()) {
            let result = RolloutHostResult {
                host: member.info.clone(),
                wave: None,
                report: HostReport::bare(HostStatus::NoUpdaterPin),
            };
            // After a stop, no callback follows.
            stopped = stopped || on_result(&result) == Flow::Stop;
            hosts[member.info.index] = Some(result);
        }
        let pinned: Vec<&Member> = self.members.iter().filter(|m| m.client.is_some()).collect();
        let mut planner = Planner::new(policy, pinned.len());
        let work = Arc::new(work);
        let jobs: Vec<RolloutJob> = pinned
            .iter()
            .enumerate()
            .filter_map(|(position, m)| {
                Some(RolloutJob {
                    host: m.info.clone(),
                    client: m.client.clone()?,
                    wave: planner.wave_of(position),
                    work: work.clone(),
                    cutoff: limits.cutoff,
                })
            })
            .collect();
        let ended = match stopped {
            true => {
                planner.stop();
                jobs.iter()
                    .map(|j| j.unfinished(Unfinished::NotAttempted))
                    .collect()
            }
            false => {
                let mut waves = Waves {
                    planner: &mut planner,
                    operation,
                };
                let ended = engine::run_scheduled(jobs, limits, &mut waves, on_result)?;
                if ended.stopped || ended.cut {
                    planner.stop();
                }
                ended.results
            }
        };
        for result in ended {
            let index = result.host.index;
            hosts[index] = Some(result);
        }
        let hosts: Vec<RolloutHostResult> = hosts.into_iter().flatten().collect();
        let stop = planner.halted().unwrap_or(StopReason::Completed);
        let summary = Summary::new(hosts.iter().map(|h| &h.report), stop);
        Ok(Rollout { hosts, summary })
    }
}

/// The planner as the engine's schedule.
struct Waves<'a> {
    planner: &'a mut Planner,
    operation: Operation,
}

impl Schedule<RolloutHostResult> for Waves<'_> {
    fn next(&mut self, now: Instant) -> Next {
        match self.planner.next(now) {
            Step::Start(position, _) => Next::Start(position),
            Step::Wait(until) => Next::Wait(until),
            Step::Done(_) => Next::Done,
        }
    }

    fn finished(&mut self, position: usize, output: &RolloutHostResult) {
        let failed = output.report.status.is_failure(self.operation);
        self.planner.finish(position, failed);
    }
}

/// The release a push sends, hashed once.
#[derive(Debug)]
struct Payload {
    path: PathBuf,
    sha: String,
    sha256: String,
}

/// What a rollout does to each host.
#[derive(Debug)]
struct Work {
    operation: Operation,
    payload: Option<Payload>,
    self_update: bool,
    verify: Option<Duration>,
}

impl Work {
    /// One host's push or rollback, its calls bounded by `cutoff`.
    fn run_on(&self, client: &UpdaterClient, cutoff: Option<Instant>) -> HostReport {
        let Some(payload) = &self.payload else {
            let began = Instant::now();
            let answer = client.rollback();
            return HostReport::of_call(Operation::Rollback, &answer, began.elapsed());
        };
        let tarball = Tarball::File(&payload.path);
        let began = Instant::now();
        let update = client.update_hashed(tarball, &payload.sha, Some(&payload.sha256));
        let report = HostReport::of_call(Operation::Push, &update, began.elapsed());
        // A failed agent update never touches the updater.
        if report.status != HostStatus::Updated || !self.self_update {
            return report;
        }
        let began = Instant::now();
        let self_update = client.update_self_hashed(tarball, &payload.sha, Some(&payload.sha256));
        let self_time = began.elapsed();
        let verified = match (&self_update, self.verify) {
            (Ok(_), Some(wait)) => {
                let wait = match cutoff {
                    Some(c) => wait.min(c.saturating_duration_since(Instant::now())),
                    None => wait,
                };
                let began = Instant::now();
                let seen = !wait.is_zero()
                    && client
                        .wait_for_release(&payload.sha, wait, VERIFY_INTERVAL)
                        .is_ok();
                Some((seen, began.elapsed()))
            }
            _ => None,
        };
        report.with_self_update(&self_update, self_time, verified)
    }
}

/// One host's part of a rollout.
struct RolloutJob {
    host: HostInfo,
    client: Arc<UpdaterClient>,
    wave: Wave,
    work: Arc<Work>,
    cutoff: Option<Instant>,
}

impl Job for RolloutJob {
    type Output = RolloutHostResult;

    fn run(&self) -> RolloutHostResult {
        let report =
            rpc::within_deadline(self.cutoff, || self.work.run_on(&self.client, self.cutoff));
        RolloutHostResult {
            host: self.host.clone(),
            wave: Some(self.wave),
            report,
        }
    }

    fn unfinished(&self, why: Unfinished) -> RolloutHostResult {
        let report = match why {
            Unfinished::NotAttempted => HostReport::bare(HostStatus::NotAttempted),
            Unfinished::NeverStarted => HostReport {
                error: Some("the deadline passed before this host started".into()),
                ..HostReport::bare(HostStatus::NotAttempted)
            },
            Unfinished::Panicked { elapsed } => HostReport {
                error: Some("the call panicked".into()),
                update_time: Some(elapsed),
                ..HostReport::bare(HostStatus::Failed)
            },
            Unfinished::Vanished => HostReport {
                error: Some("the worker thread ended without a result".into()),
                ..HostReport::bare(HostStatus::Failed)
            },
        };
        RolloutHostResult {
            host: self.host.clone(),
            wave: Some(self.wave),
            report,
        }
    }
}

/// One host's call in a plain updater sweep.
struct SweepJob {
    host: HostInfo,
    client: Option<Arc<UpdaterClient>>,
    /// The call and, for an upload, the tarball's SHA-256.
    call: Arc<(UpdaterCall, Option<String>)>,
    cutoff: Option<Instant>,
}

impl SweepJob {
    fn call(&self, client: &UpdaterClient) -> Result<Value> {
        let (call, sha256) = &*self.call;
        match call {
            UpdaterCall::Health => client.health(),
            UpdaterCall::Releases => client.releases(),
            UpdaterCall::Rollback => client.rollback(),
            UpdaterCall::Update { tarball, sha } => {
                client.update_hashed(Tarball::File(tarball), sha, sha256.as_deref())
            }
            UpdaterCall::UpdateSelf { tarball, sha } => {
                match client.update_self_hashed(Tarball::File(tarball), sha, sha256.as_deref())? {
                    SelfUpdate::Answered(body) => Ok(body),
                    SelfUpdate::QueuedConnectionClosed => Ok(json!({
                        "status": "self_update_queued",
                        "connection_closed": true,
                    })),
                }
            }
        }
    }
}

impl Job for SweepJob {
    type Output = HostResult;

    fn run(&self) -> HostResult {
        let began = Instant::now();
        let result = match &self.client {
            Some(client) => rpc::within_deadline(self.cutoff, || self.call(client)),
            None => Err(Error::PinMismatch {
                address: self.host.address.clone(),
                expected: String::new(),
                actual: String::new(),
                pin_origin: String::new(),
            }),
        };
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
