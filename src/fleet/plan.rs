//! Plans: which host gets which call ([`HostId`], [`Call`]), from Rust
//! values or JSON.

use std::collections::HashMap;

use serde_json::Value;

use super::Fleet;
use crate::client::{AgentClient, HostRecord};
use crate::error::{Error, Result};

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

    /// Runs the call on `client`.
    pub fn run(&self, client: &AgentClient) -> Result<Value> {
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

impl Fleet {
    /// A plan sending `call` to every host, in fleet order.
    pub fn plan_all(&self, call: &Call) -> Vec<(HostId, Call)> {
        (0..self.clients.len())
            .map(|i| (HostId::Index(i), call.clone()))
            .collect()
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
}

/// Names an invalid argument of host `index` of a host list as
/// `hosts[index].argument`; other errors pass unchanged.
pub(crate) fn in_host(index: usize, error: Error) -> Error {
    match error {
        Error::InvalidArgument { argument, reason } => Error::InvalidArgument {
            argument: format!("hosts[{index}].{argument}"),
            reason,
        },
        other => other,
    }
}

/// The uuids and names of a fleet's hosts, each naming one host.
#[derive(Debug, Default)]
pub(crate) struct HostNames {
    /// Host index by uuid.
    pub by_uuid: HashMap<String, usize>,
    /// Host index by name.
    pub by_name: HashMap<String, usize>,
}

impl HostNames {
    /// Adds host `index`; a uuid or name an earlier host has is an
    /// invalid-argument error naming both indices.
    pub(crate) fn add(&mut self, index: usize, record: &HostRecord) -> Result<()> {
        for (map, key, what) in [
            (&mut self.by_uuid, &record.uuid, "uuid"),
            (&mut self.by_name, &record.name, "name"),
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
        Ok(())
    }
}
