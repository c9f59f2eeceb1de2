//! A sharded deploy over stand-in workers, real mutual TLS on loopback:
//! each worker gets its own deckies only (seen in its own ledger), a
//! record's `use_ipvlan` turns `ipvlan` on and never off, a bad decky is
//! refused before any traffic, and after a failed deploy the status probe
//! says which deckies are up.

use decnet_agent_client::fleet::{Flow, Outcome, SweepOptions};
use decnet_agent_client::testkit::{Behaviour, Swarm, TestPki};
use decnet_agent_client::{ErrorKind, Fleet, HostnameVerification};
use serde_json::{json, Value};

fn decky(name: &str, host: usize) -> Value {
    json!({"name": name, "services": ["ssh"], "host_uuid": format!("uuid-w{host}")})
}

fn config(deckies: Vec<Value>, ipvlan: bool) -> Value {
    json!({"mode": "swarm", "interface": "eth0", "subnet": "192.0.2.0/24",
        "gateway": "192.0.2.1", "ipvlan": ipvlan, "deckies": deckies})
}

fn fleet(pki: &TestPki, swarm: &Swarm, ipvlan_hosts: &[usize]) -> Fleet {
    let mut records = swarm.host_records();
    for &i in ipvlan_hosts {
        records[i]["use_ipvlan"] = json!(true);
    }
    Fleet::from_json(&pki.master, &records, HostnameVerification::On).unwrap()
}

/// The deploy bodies each member received, in member order.
fn deploys(swarm: &Swarm) -> Vec<Vec<Value>> {
    swarm
        .members()
        .iter()
        .map(|m| {
            let worker = m.worker.as_ref().unwrap();
            worker
                .ledger()
                .into_iter()
                .filter(|e| e.path == "/deploy")
                .map(|e| e.body)
                .collect()
        })
        .collect()
}

#[test]
fn each_worker_gets_its_own_deckies_and_use_ipvlan_turns_ipvlan_on() {
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::Healthy; 4]).unwrap();
    let fleet = fleet(&pki, &swarm, &[1]);
    let cfg = config(
        vec![
            decky("d1", 3),
            decky("d2", 1),
            decky("d3", 0),
            decky("d4", 3),
        ],
        false,
    );
    let mut seen = Vec::new();
    let results = fleet
        .deploy_sharded(&cfg, true, SweepOptions::default(), |r| {
            seen.push(r.deploy.host.index);
            Flow::Continue
        })
        .unwrap();
    let indices: Vec<usize> = results.iter().map(|r| r.deploy.host.index).collect();
    assert_eq!(indices, [0, 1, 3], "fleet order, host 2 has no decky");
    seen.sort();
    assert_eq!(seen, indices);
    assert!(results.iter().all(|r| r.is_ok() && r.probe.is_none()));
    assert_eq!(results[2].deckies, ["d1", "d4"]);
    let sent = deploys(&swarm);
    assert!(sent[2].is_empty(), "host 2 got nothing");
    let names = |body: &Value| -> Vec<String> {
        body["config"]["deckies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&sent[0][0]), ["d3"]);
    assert_eq!(names(&sent[1][0]), ["d2"]);
    assert_eq!(names(&sent[3][0]), ["d1", "d4"]);
    let ipvlan: Vec<&Value> = [0, 1, 3]
        .iter()
        .map(|&i| &sent[i][0]["config"]["ipvlan"])
        .collect();
    assert_eq!(ipvlan, [&json!(false), &json!(true), &json!(false)]);
    for i in [0, 1, 3] {
        assert_eq!(sent[i].len(), 1);
        assert_eq!(sent[i][0]["config"]["subnet"], "192.0.2.0/24");
        assert_eq!(sent[i][0]["dry_run"], false);
    }

    // ipvlan asked for by the configuration stays on everywhere.
    fleet
        .deploy_sharded(
            &config(vec![decky("d5", 0)], true),
            false,
            SweepOptions::default(),
            |_| Flow::Continue,
        )
        .unwrap();
    assert_eq!(deploys(&swarm)[0][1]["config"]["ipvlan"], true);
}

#[test]
fn a_decky_without_a_known_host_is_refused_before_any_traffic() {
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::Healthy; 3]).unwrap();
    let fleet = fleet(&pki, &swarm, &[]);
    let no_uuid = json!({"name": "d2", "services": ["ssh"]});
    for cfg in [
        config(vec![decky("d1", 0), no_uuid], false),
        config(vec![decky("d1", 0), decky("d2", 7)], false),
    ] {
        let error = fleet
            .deploy_sharded(&cfg, true, SweepOptions::default(), |_| Flow::Continue)
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{cfg}");
    }
    for member in swarm.members() {
        assert_eq!(member.worker.as_ref().unwrap().connections(), 0);
    }
}

#[test]
fn after_a_failed_deploy_the_probe_says_which_deckies_are_up() {
    let pki = TestPki::new().unwrap();
    let behaviours = [
        Behaviour::Healthy,
        Behaviour::DeployFailsAfter(1),
        Behaviour::DeployFailsAfter(2),
    ];
    let swarm = Swarm::start(&pki.ca, &behaviours).unwrap();
    let fleet = fleet(&pki, &swarm, &[]);
    let cfg = config(
        vec![
            decky("a1", 0),
            decky("b1", 1),
            decky("b2", 1),
            decky("b3", 1),
            decky("c1", 2),
            decky("c2", 2),
        ],
        false,
    );
    let results = fleet
        .deploy_sharded(&cfg, true, SweepOptions::default(), |_| Flow::Continue)
        .unwrap();
    assert!(results[0].is_ok() && results[0].probe.is_none());
    match &results[1].deploy.outcome {
        Outcome::Err(e) => assert_eq!(e.kind(), ErrorKind::HttpStatus),
        other => panic!("{other:?}"),
    }
    let probe = results[1].probe.as_ref().unwrap().as_ref().unwrap();
    assert_eq!(
        probe,
        &[
            ("b1".into(), true),
            ("b2".into(), false),
            ("b3".into(), false)
        ]
    );
    let json = results[2].to_json();
    assert_eq!(json["probe"], json!({"running": ["c1", "c2"], "down": []}));
    assert_eq!(json["outcome"], "error");
    let paths = |i: usize| -> Vec<String> {
        let worker = swarm.members()[i].worker.as_ref().unwrap();
        worker.ledger().into_iter().map(|e| e.path).collect()
    };
    assert_eq!(paths(0), ["/deploy"], "no probe after a success");
    assert_eq!(paths(1), ["/deploy", "/status"]);

    // Without the probe, a failure is only reported.
    let results = fleet
        .deploy_sharded(&cfg, false, SweepOptions::default(), |_| Flow::Continue)
        .unwrap();
    assert!(results[1].probe.is_none() && !results[1].is_ok());
    assert_eq!(paths(1), ["/deploy", "/status", "/deploy"]);
}
