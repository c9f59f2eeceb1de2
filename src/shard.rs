//! A sharded deploy: one deployment configuration whose deckies each name
//! their worker by `host_uuid`, split into each worker's own configuration
//! (its deckies only), checked whole before any traffic. Pure.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One worker's part of a sharded deploy.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    /// Position of the worker in the host records given.
    pub host: usize,
    /// The worker's uuid.
    pub host_uuid: String,
    /// The configuration to send it: the base with only its deckies, and
    /// `ipvlan` on when its record says `use_ipvlan`.
    pub config: Value,
    /// The names of its deckies, in configuration order.
    pub deckies: Vec<String>,
}

/// Splits `config` over `hosts` (host record objects with `uuid` and an
/// optional boolean `use_ipvlan`). Returns one shard per host that has
/// deckies, in host order. Refuses, with nothing sent: a config that is not
/// an object with a non-empty `deckies` array of objects with a string
/// `name`; a decky without a string `host_uuid`; a `host_uuid` no record
/// has; two records with one uuid; a non-boolean `use_ipvlan`.
///
/// A record's `use_ipvlan: true` turns `ipvlan` on for its shard; it never
/// turns off an `ipvlan` the configuration already asks for.
pub fn split_deploy(config: &Value, hosts: &[Value]) -> Result<Vec<Shard>> {
    let base = config
        .as_object()
        .ok_or_else(|| Error::invalid("config", "must be a JSON object"))?;
    let deckies = base
        .get("deckies")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Error::invalid("config", "needs a non-empty \"deckies\" array"))?;
    let records = host_records(hosts)?;
    let mut buckets: Vec<Vec<&Value>> = vec![Vec::new(); records.len()];
    for (i, decky) in deckies.iter().enumerate() {
        let name = decky
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid("config", format!("decky {i} has no string \"name\"")))?;
        let uuid = decky
            .get("host_uuid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Error::invalid("config", format!("decky {name:?} has no host_uuid")))?;
        let host = records
            .iter()
            .position(|(u, _)| *u == uuid)
            .ok_or_else(|| {
                Error::invalid(
                    "config",
                    format!("decky {name:?} names unknown host {uuid:?}"),
                )
            })?;
        buckets[host].push(decky);
    }
    let shards = buckets
        .into_iter()
        .enumerate()
        .filter(|(_, shard)| !shard.is_empty())
        .map(|(host, shard)| {
            let (uuid, use_ipvlan) = records[host];
            let mut own: Map<String, Value> = base.clone();
            let names = shard
                .iter()
                .filter_map(|d| d.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            own.insert(
                "deckies".into(),
                Value::Array(shard.into_iter().cloned().collect()),
            );
            if use_ipvlan {
                own.insert("ipvlan".into(), Value::Bool(true));
            }
            Shard {
                host,
                host_uuid: uuid.to_string(),
                config: Value::Object(own),
                deckies: names,
            }
        })
        .collect();
    Ok(shards)
}

/// Each record's uuid and `use_ipvlan`, checked.
fn host_records(hosts: &[Value]) -> Result<Vec<(&str, bool)>> {
    let mut records: Vec<(&str, bool)> = Vec::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        let uuid = host
            .get("uuid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Error::invalid("hosts", format!("host record {i} has no uuid")))?;
        if records.iter().any(|(u, _)| *u == uuid) {
            return Err(Error::invalid(
                "hosts",
                format!("uuid {uuid:?} appears twice"),
            ));
        }
        let use_ipvlan = match host.get("use_ipvlan") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Error::invalid(
                    "hosts",
                    format!("host {uuid:?}: use_ipvlan must be true or false"),
                ))
            }
        };
        records.push((uuid, use_ipvlan));
    }
    Ok(records)
}

/// Which of `deckies` the worker's status snapshot reports running (its
/// `runtime.<name>.running`), for the probe after a failed deploy: a
/// partial deploy leaves some deckies up. A decky absent from the snapshot
/// is not running.
pub fn deckies_running(status: &Value, deckies: &[String]) -> Vec<(String, bool)> {
    let runtime = status.get("runtime");
    deckies
        .iter()
        .map(|name| {
            let running = runtime
                .and_then(|r| r.get(name))
                .and_then(|d| d.get("running"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            (name.clone(), running)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decky(name: &str, host: &str) -> Value {
        json!({"name": name, "ip": "192.0.2.10", "services": ["ssh"], "host_uuid": host})
    }

    fn config(deckies: Vec<Value>, ipvlan: bool) -> Value {
        json!({"mode": "swarm", "interface": "eth0", "subnet": "192.0.2.0/24",
            "gateway": "192.0.2.1", "log_file": null, "ipvlan": ipvlan,
            "mutate_interval": null, "deckies": deckies})
    }

    fn hosts() -> Vec<Value> {
        vec![
            json!({"uuid": "h-a", "name": "a"}),
            json!({"uuid": "h-b", "name": "b", "use_ipvlan": true}),
            json!({"uuid": "h-c", "name": "c", "use_ipvlan": false}),
        ]
    }

    #[test]
    fn each_host_gets_its_own_deckies_and_the_base() {
        let cfg = config(
            vec![decky("d1", "h-b"), decky("d2", "h-a"), decky("d3", "h-b")],
            false,
        );
        let shards = split_deploy(&cfg, &hosts()).unwrap();
        assert_eq!(shards.len(), 2, "host c has no decky, so no shard");
        assert_eq!((shards[0].host, shards[0].host_uuid.as_str()), (0, "h-a"));
        assert_eq!(shards[0].deckies, ["d2"]);
        assert_eq!(shards[1].deckies, ["d1", "d3"]);
        assert_eq!(
            shards[1].config["deckies"],
            json!([decky("d1", "h-b"), decky("d3", "h-b")])
        );
        for key in [
            "mode",
            "interface",
            "subnet",
            "gateway",
            "log_file",
            "mutate_interval",
        ] {
            assert_eq!(shards[0].config[key], cfg[key], "{key}");
        }
    }

    #[test]
    fn use_ipvlan_turns_ipvlan_on_never_off() {
        let deckies = vec![decky("d1", "h-a"), decky("d2", "h-b"), decky("d3", "h-c")];
        let off = split_deploy(&config(deckies.clone(), false), &hosts()).unwrap();
        let ipvlan: Vec<_> = off.iter().map(|s| s.config["ipvlan"].clone()).collect();
        assert_eq!(ipvlan, [json!(false), json!(true), json!(false)]);
        let on = split_deploy(&config(deckies, true), &hosts()).unwrap();
        assert!(on.iter().all(|s| s.config["ipvlan"] == json!(true)));
    }

    #[test]
    fn bad_input_is_refused_whole() {
        let cases = [
            config(vec![decky("d1", "h-a"), json!({"name": "d2"})], false),
            config(vec![decky("d1", "h-a"), decky("d2", "")], false),
            config(vec![decky("d1", "h-a"), decky("d2", "h-zz")], false),
            config(vec![json!({"host_uuid": "h-a"})], false),
            config(vec![], false),
            json!({"deckies": "d1"}),
            json!([decky("d1", "h-a")]),
        ];
        for cfg in cases {
            let error = split_deploy(&cfg, &hosts()).unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::InvalidArgument, "{cfg}");
        }
        let cfg = config(vec![decky("d1", "h-a")], false);
        let twice = [json!({"uuid": "h-a"}), json!({"uuid": "h-a"})];
        assert!(split_deploy(&cfg, &twice).is_err());
        assert!(split_deploy(&cfg, &[json!({"uuid": "h-a", "use_ipvlan": "yes"})]).is_err());
        assert!(split_deploy(&cfg, &[json!({"name": "a"})]).is_err());
    }

    #[test]
    fn the_status_probe_says_which_deckies_are_up() {
        let status = json!({"deployed": true, "runtime": {
            "d1": {"running": true}, "d2": {"running": false}}});
        let names = ["d1", "d2", "d3"].map(String::from);
        assert_eq!(
            deckies_running(&status, &names),
            [
                ("d1".into(), true),
                ("d2".into(), false),
                ("d3".into(), false)
            ]
        );
        assert!(deckies_running(&json!({}), &names)
            .iter()
            .all(|(_, up)| !up));
    }
}
