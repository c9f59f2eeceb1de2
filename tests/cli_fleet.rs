//! `decnet-agent-client fleet`, run as a separate process against swarms
//! of stand-in workers: NDJSON lines, the summary, the three host-file
//! forms and the exit statuses, checked against the table that
//! `fleet --help` prints and the README copies.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use decnet_agent_client::testkit::{
    raise_fd_limit, Behaviour, Swarm, TestPki, UpdaterBehaviour, UpdaterSwarm,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_decnet-agent-client");

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("DECNET_VERIFY_HOSTNAME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each stdout line is JSON"))
        .collect()
}

/// The exit-status table of `fleet --help`: code → meaning.
fn help_table() -> BTreeMap<u8, String> {
    let output = run(&["fleet", "--help"], None);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let section = text
        .split("Exit status (fleet):\n")
        .nth(1)
        .expect("fleet --help has an exit status table");
    section
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let (code, meaning) = line.trim().split_once(' ')?;
            Some((code.parse().ok()?, meaning.trim().to_string()))
        })
        .collect()
}

/// The README's fleet exit-status table: code → meaning.
fn readme_table() -> BTreeMap<u8, String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("<!-- fleet exit statuses -->")
        .nth(1)
        .expect("README marks its fleet exit-status table");
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            Some((cells.first()?.parse().ok()?, cells.get(1)?.to_string()))
        })
        .collect()
}

#[test]
fn the_readme_and_help_agree_on_exit_statuses() {
    let help = help_table();
    let readme = readme_table();
    for code in [0, 3, 4, 5, 6] {
        assert!(
            help.contains_key(&code),
            "fleet --help lists {code}: {help:?}"
        );
    }
    // The README states the usage error (2) in the prose under the table.
    let mut help = help;
    help.remove(&2);
    assert_eq!(readme, help, "the README's table is fleet --help's");
}

struct World {
    pki: TestPki,
    swarm: Swarm,
    files: tempfile::TempDir,
}

impl World {
    fn new(behaviours: &[Behaviour]) -> World {
        raise_fd_limit(4096).unwrap();
        let pki = TestPki::new().unwrap();
        let swarm = Swarm::start(&pki.ca, behaviours).unwrap();
        World {
            pki,
            swarm,
            files: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn fleet(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut full = vec![
            "--ca-dir",
            self.pki.dir().to_str().unwrap(),
            "--read-timeout",
            "1",
            "fleet",
        ];
        full.extend(args);
        run(&full, stdin)
    }
}

fn code_meaning(output: &Output) -> String {
    let code = output.status.code().expect("exit status") as u8;
    help_table()
        .get(&code)
        .cloned()
        .unwrap_or_else(|| panic!("exit status {code} is not in the table"))
}

#[test]
fn ndjson_lines_summary_and_exit_statuses() {
    use Behaviour::*;
    let world = World::new(&[
        Healthy,
        ServerError,
        Healthy,
        Refuse,
        Stall(Duration::from_secs(5)),
        WrongCertificate,
        Healthy,
    ]);
    let records = world.swarm.host_records();
    let all = world.write("all.json", &records.to_string());

    // Everything at once: the pin mismatch decides the status.
    let output = world.fleet(&["health", "--hosts", &all], None);
    assert!(
        code_meaning(&output).contains("wrong certificate"),
        "{output:?}"
    );
    let results = lines(&output);
    assert_eq!(results.len(), 7);
    let mut indices: Vec<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    // Lines come as hosts complete: the stalled host is last.
    assert_eq!(indices.last(), Some(&4));
    indices.sort();
    assert_eq!(indices, (0..7).collect::<Vec<_>>());
    let kind = |i: u64| {
        results
            .iter()
            .find(|r| r["index"] == json!(i))
            .map(|r| r["error"]["kind"].clone())
            .unwrap()
    };
    assert_eq!(kind(1), json!("http_status"));
    assert_eq!(kind(3), json!("connect"));
    assert_eq!(kind(4), json!("timeout"));
    assert_eq!(kind(5), json!("pin_mismatch"));
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(
        stderr.trim(),
        "fleet health: 7 targeted, 3 succeeded, 4 failed (connect 1, http_status 1, \
         pin_mismatch 1, timeout 1), 0 not attempted"
    );

    let subset = |indices: &[usize]| -> String {
        indices
            .iter()
            .map(|&i| records[i].to_string() + "\n")
            .collect()
    };
    // Unreachable beats failed; failed alone; all good. NDJSON on stdin.
    let output = world.fleet(&["health", "--hosts", "-"], Some(&subset(&[0, 1, 3])));
    assert!(code_meaning(&output).contains("could not be reached"));
    let output = world.fleet(&["health", "--hosts", "-"], Some(&subset(&[0, 1])));
    assert!(code_meaning(&output).contains("some hosts failed"));
    let output = world.fleet(&["health", "--hosts", "-"], Some(&subset(&[0, 2, 6])));
    assert_eq!(output.status.code(), Some(0));
    assert!(code_meaning(&output).contains("every host succeeded"));
    assert_eq!(lines(&output).len(), 3);
}

#[test]
fn per_host_arguments_from_records_and_folders() {
    let world = World::new(&[Behaviour::Healthy; 3]);
    let folder = world.files.path().join("hosts");
    std::fs::create_dir(&folder).unwrap();
    for (i, member) in world.swarm.members().iter().enumerate() {
        let mut record = member.record.clone();
        if i != 1 {
            record["args"] = json!({"decky_id": format!("decky-{i}"), "services": ["ssh"]});
        }
        std::fs::write(folder.join(format!("{i:02}.json")), record.to_string()).unwrap();
    }
    std::fs::write(folder.join("notes.txt"), "not a record").unwrap();
    let shared = world.write(
        "args.json",
        &json!({"decky_id": "shared", "services": ["http"], "dry_run": false}).to_string(),
    );
    let output = world.fleet(
        &[
            "mutate",
            "--hosts",
            folder.to_str().unwrap(),
            "--args",
            &shared,
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(lines(&output).len(), 3);
    for (i, member) in world.swarm.members().iter().enumerate() {
        let ledger = member.worker.as_ref().unwrap().ledger();
        assert_eq!(ledger.len(), 1);
        let want = if i == 1 {
            json!("shared")
        } else {
            json!(format!("decky-{i}"))
        };
        assert_eq!(ledger[0].body["decky_id"], want, "host {i}");
    }
}

#[test]
fn a_fleet_that_cannot_start_exits_with_the_kind() {
    let world = World::new(&[Behaviour::Healthy]);
    let bad = world.write("bad.json", "[{\"address\": 7}]");
    let output = world.fleet(&["health", "--hosts", &bad], None);
    assert_eq!(output.status.code(), Some(11), "invalid_argument");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("hosts[0].address"), "{stderr}");

    let output = world.fleet(&["health", "--hosts", "/nonexistent/hosts.json"], None);
    assert_eq!(output.status.code(), Some(12), "io");

    let records = world.swarm.host_records().to_string();
    let hosts = world.write("hosts.json", &records);
    let output = world.fleet(&["deploy", "--hosts", &hosts], None);
    assert_eq!(output.status.code(), Some(11), "deploy needs a config");
    let output = world.fleet(&["self-destruct", "--hosts", &hosts], None);
    assert_eq!(output.status.code(), Some(11), "self-destruct needs --yes");
    let output = world.fleet(&["reboot", "--hosts", &hosts], None);
    assert_eq!(output.status.code(), Some(11));
    assert!(world.swarm.members()[0]
        .worker
        .as_ref()
        .unwrap()
        .ledger()
        .is_empty());
}

/// Stand-in updaters, their records in a file, a tarball, and the CLI.
struct Updaters {
    pki: TestPki,
    swarm: UpdaterSwarm,
    files: tempfile::TempDir,
}

impl Updaters {
    fn new(behaviours: &[UpdaterBehaviour]) -> Updaters {
        raise_fd_limit(4096).unwrap();
        let pki = TestPki::new().unwrap();
        let swarm = UpdaterSwarm::start(&pki.ca, behaviours).unwrap();
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("tree.tgz"), b"a release").unwrap();
        let hosts = swarm.host_records().to_string();
        std::fs::write(files.path().join("hosts.json"), hosts).unwrap();
        Updaters { pki, swarm, files }
    }

    fn path(&self, name: &str) -> String {
        self.files.path().join(name).to_str().unwrap().to_string()
    }

    fn fleet(&self, args: &[&str]) -> Output {
        let (ca, hosts) = (self.pki.dir().to_str().unwrap(), self.path("hosts.json"));
        let mut full = vec!["--ca-dir", ca, "fleet"];
        full.extend(args);
        full.extend(["--hosts", &hosts]);
        run(&full, None)
    }

    fn push(&self, policy: &[&str]) -> Output {
        let tarball = self.path("tree.tgz");
        let mut args = vec!["push", "--tarball", &tarball, "--sha", "cli1"];
        args.extend(policy);
        self.fleet(&args)
    }

    fn uploads(&self, i: usize) -> usize {
        self.swarm.members()[i].updater.uploads().len()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn push_halted_by_the_failure_budget_has_its_own_exit_status() {
    // Every third host from 10 on fails: the 5th failure is host 22.
    let behaviours: Vec<_> = (0..40)
        .map(|i| match i >= 10 && i % 3 == 1 {
            true => UpdaterBehaviour::Fails,
            false => UpdaterBehaviour::Accept,
        })
        .collect();
    let world = Updaters::new(&behaviours);
    let output = world.push(&[
        "--canary",
        "1",
        "--batch",
        "10%",
        "--max-failures",
        "5",
        "--concurrency",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert!(code_meaning(&output).contains("halted"));
    let results = lines(&output);
    assert_eq!(results.len(), 40, "a line per host, not-attempted ones too");
    for (i, line) in results.iter().enumerate() {
        assert_eq!(line["index"], json!(i), "in order at concurrency 1");
        let attempted = line["status"] != "not-attempted";
        assert_eq!(attempted, i <= 22, "host {i}: {line}");
        assert_eq!(
            world.uploads(i),
            usize::from(attempted),
            "host {i}'s ledger"
        );
    }
    assert_eq!(results[0]["wave"], "canary");
    assert_eq!(results[1]["wave"], 1);
    assert_eq!(results[10]["status"], "failed");
    assert_eq!(results[10]["http_status"], 500);
    assert!(
        stderr(&output).contains("fleet push: 40 hosts, stopped: failure-budget (updated 18, failed 5, not-attempted 17)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn push_with_self_update_succeeds_and_a_pin_mismatch_takes_precedence() {
    use UpdaterBehaviour::*;
    let world = Updaters::new(&[Accept, DropsSelfUpdate(Duration::from_millis(50)), Accept]);
    let output = world.push(&["--self-update", "--verify", "10", "--batch", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let results = lines(&output);
    assert!(results.iter().all(|r| r["status"] == "self-updated"));
    assert_eq!(
        results[1]["http_status"],
        Value::Null,
        "the dropped update-self"
    );

    let wrong = Updaters::new(&[WrongPin, Accept]);
    let output = wrong.push(&[]);
    assert_eq!(
        output.status.code(),
        Some(5),
        "the canary's pin mismatch halts, and 5 takes precedence over 6"
    );
    assert_eq!(lines(&output)[0]["status"], "pin-mismatch");
    assert_eq!(wrong.uploads(1), 0);

    let output = wrong.fleet(&["rollback", "--canary", "0"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let output = world.fleet(&["rollback", "--tarball", "x"]);
    assert_eq!(
        output.status.code(),
        Some(11),
        "push's arguments are refused"
    );
    let output = world.fleet(&["health", "--canary", "1"]);
    assert_eq!(
        output.status.code(),
        Some(11),
        "rollout arguments are refused"
    );
    let output = world.fleet(&["push", "--sha", "x"]);
    assert_eq!(output.status.code(), Some(11), "push needs --tarball");
    assert!(stderr(&output).contains("--tarball"));
}

#[test]
fn a_sharded_deploy_from_the_command_line() {
    let world = World::new(&[Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy]);
    let hosts = world.write("hosts.json", &world.swarm.host_records().to_string());
    let decky = |name: &str, host: usize| json!({"name": name, "services": ["ssh"], "host_uuid": format!("uuid-w{host}")});
    let config =
        json!({"mode": "swarm", "deckies": [decky("d1", 2), decky("d2", 0), decky("d3", 2)]});
    let file = world.write("config.json", &config.to_string());
    let output = world.fleet(&["deploy", "--hosts", &hosts, "--sharded", &file], None);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let mut results = lines(&output);
    results.sort_by_key(|r| r["index"].as_u64());
    assert_eq!(results.len(), 2, "host 1 has no decky");
    assert_eq!(results[0]["deckies"], json!(["d2"]));
    assert_eq!(results[1]["deckies"], json!(["d1", "d3"]));
    assert_eq!(results[1]["result"]["deckies"], json!(["d1", "d3"]));
    let worker = |i: usize| world.swarm.members()[i].worker.as_ref().unwrap();
    assert!(worker(1).ledger().is_empty());

    let unknown = json!({"deckies": [decky("d1", 0), decky("d9", 9)]});
    let file = world.write("unknown.json", &unknown.to_string());
    let output = world.fleet(&["deploy", "--hosts", &hosts, "--sharded", &file], None);
    assert_eq!(output.status.code(), Some(11), "{output:?}");
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("uuid-w9"));
    assert_eq!(
        worker(0).ledger().len(),
        1,
        "nothing sent for the refused config"
    );
}
