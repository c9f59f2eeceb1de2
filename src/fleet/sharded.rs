//! A sharded deploy over the fleet: one configuration split by each
//! decky's `host_uuid` ([`shard::split_deploy`]), each host's part sent
//! through the sweep engine, and, after a host's deploy fails, an optional
//! status probe of that host saying which of its deckies are up.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::budget::ConnectionBudget;
use super::engine::{self, Job, Limits, Unfinished};
use super::{
    swept_outcome, unfinished_result, Fleet, HostInfo, HostResult, Settings, SweepOptions,
};
use crate::client::{check_deploy_config, AgentClient};
use crate::error::{Error, Result};
use crate::fleet::{error_to_json, Flow, Outcome};
use crate::rpc;
use crate::shard::{self, deckies_running};

/// One host's part of a sharded deploy.
#[derive(Debug)]
pub struct ShardResult {
    /// The deploy of this host's configuration.
    pub deploy: HostResult,
    /// The deckies this host was sent, in configuration order.
    pub deckies: Vec<String>,
    /// After a failed deploy, with the probe asked for: the status probe's
    /// answer, each decky and whether it is running; `None` otherwise.
    pub probe: Option<Result<Vec<(String, bool)>>>,
}

impl ShardResult {
    /// True when the deploy was accepted.
    pub fn is_ok(&self) -> bool {
        matches!(self.deploy.outcome, Outcome::Ok(_))
    }

    /// The deploy's [`HostResult::to_json`] plus `deckies` (names) and
    /// `probe`: null, `{"running": [names], "down": [names]}`, or
    /// `{"error": {...}}` (see [`error_to_json`]).
    pub fn to_json(&self) -> Value {
        let mut object = self.deploy.to_json();
        object["deckies"] = json!(self.deckies);
        object["probe"] = match &self.probe {
            None => Value::Null,
            Some(Ok(states)) => {
                let names = |up: bool| -> Vec<&str> {
                    states
                        .iter()
                        .filter(|(_, running)| *running == up)
                        .map(|(name, _)| name.as_str())
                        .collect()
                };
                json!({"running": names(true), "down": names(false)})
            }
            Some(Err(error)) => json!({"error": error_to_json(error)}),
        };
        object
    }
}

impl Fleet {
    /// Deploys `config` sharded by its deckies' `host_uuid`: each host
    /// whose uuid some decky names gets the configuration with its deckies
    /// only (and `ipvlan` on when its record says `use_ipvlan`; never
    /// turned off), through the sweep engine with the guarantees of
    /// [`Fleet::sweep`]; hosts no decky names get nothing. With `probe`,
    /// a host whose deploy failed is then asked its status (within the
    /// same deadline), so the caller learns which of its deckies are up.
    /// Results are in fleet order, one per host that got a shard.
    ///
    /// Errors, before any traffic: a decky without `host_uuid` or naming a
    /// uuid no host of this fleet has, a shard the deploy would refuse, a
    /// bad concurrency or deadline (invalid argument).
    pub fn deploy_sharded(
        &self,
        config: &Value,
        probe: bool,
        options: SweepOptions,
        on_result: impl FnMut(&ShardResult) -> Flow,
    ) -> Result<Vec<ShardResult>> {
        let Settings {
            concurrency,
            deadline,
            niceness,
        } = self.settings(options)?;
        // Only hosts with a uuid can be named; keep their fleet indices.
        let named: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].host().uuid.is_some())
            .collect();
        let records: Vec<Value> = named
            .iter()
            .map(
                |&i| json!({"uuid": self.clients[i].host().uuid, "use_ipvlan": self.use_ipvlan[i]}),
            )
            .collect();
        let shards = shard::split_deploy(config, &records)?;
        for shard in &shards {
            check_deploy_config(&shard.config).map_err(|e| match e {
                Error::InvalidArgument { argument, reason } => Error::invalid(
                    format!("shard of host {}.{argument}", shard.host_uuid),
                    reason,
                ),
                other => other,
            })?;
        }
        let cutoff = deadline.map(|d| Instant::now() + d);
        let jobs: Vec<ShardJob> = shards
            .into_iter()
            .map(|shard| {
                let index = named[shard.host];
                ShardJob {
                    host: self.info(index),
                    client: self.clients[index].clone(),
                    budget: self.budget.clone(),
                    config: shard.config,
                    deckies: shard.deckies,
                    probe,
                    cutoff,
                }
            })
            .collect();
        let limits = Limits {
            // Never more calls at once than the connection budget.
            concurrency: concurrency.min(self.budget.limit()),
            cutoff,
            thread_name: "decnet-fleet",
            niceness,
        };
        Ok(engine::run(jobs, limits, on_result)?.results)
    }
}

/// One host's shard: its deploy, then the probe.
struct ShardJob {
    host: HostInfo,
    client: Arc<AgentClient>,
    budget: Arc<ConnectionBudget>,
    config: Value,
    deckies: Vec<String>,
    probe: bool,
    cutoff: Option<Instant>,
}

impl Job for ShardJob {
    type Output = ShardResult;

    fn run(&self) -> ShardResult {
        let began = Instant::now();
        let _slot = self.budget.reserve(self.host.index);
        let (deployed, elapsed, probe) = rpc::within_deadline(self.cutoff, || {
            let deployed = self.client.deploy(&self.config, false, false);
            let elapsed = began.elapsed();
            let probe = match (&deployed, self.probe) {
                (Err(_), true) => Some(
                    self.client
                        .status()
                        .map(|status| deckies_running(&status, &self.deckies)),
                ),
                _ => None,
            };
            (deployed, elapsed, probe)
        });
        ShardResult {
            deploy: HostResult {
                host: self.host.clone(),
                elapsed,
                outcome: swept_outcome(self.cutoff, deployed),
            },
            deckies: self.deckies.clone(),
            probe,
        }
    }

    fn unfinished(&self, why: Unfinished) -> ShardResult {
        ShardResult {
            deploy: unfinished_result(&self.host, why),
            deckies: self.deckies.clone(),
            probe: None,
        }
    }
}
