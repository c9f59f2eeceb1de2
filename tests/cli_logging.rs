//! `-v` and `-vv`: the library's events on stderr, one JSON line each,
//! while stdout keeps the one-line JSON result.

use std::process::{Command, Output};

use decnet_agent_client::testkit::{Fault, StandInWorker, TestPki};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_decnet-agent-client");

struct World {
    pki: TestPki,
    worker: StandInWorker,
    host: tempfile::NamedTempFile,
}

impl World {
    fn new() -> Self {
        let pki = TestPki::new().unwrap();
        let worker = StandInWorker::start(&pki.worker_bundle("cli-worker").unwrap()).unwrap();
        let host = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            host.path(),
            worker.host_record("cli-worker", true).to_string(),
        )
        .unwrap();
        World { pki, worker, host }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--ca-dir")
            .arg(self.pki.dir())
            .arg("--host-json")
            .arg(self.host.path())
            .args(args)
            .env_remove("DECNET_VERIFY_HOSTNAME")
            .output()
            .unwrap()
    }
}

/// stdout's one JSON line, and stderr's lines.
fn split(output: &Output) -> (Option<Value>, Vec<String>) {
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(stdout.lines().count() <= 1, "one line of JSON: {stdout}");
    let result = stdout
        .lines()
        .next()
        .map(|l| serde_json::from_str(l).unwrap());
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    (result, stderr.lines().map(str::to_string).collect())
}

/// The events among stderr's lines (each a JSON object), by name.
fn events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

#[test]
fn without_v_stderr_stays_empty() {
    let w = World::new();
    let output = w.run(&["health"]);
    assert_eq!(output.status.code(), Some(0));
    let (result, lines) = split(&output);
    assert_eq!(result, Some(json!({"status": "ok"})));
    assert!(lines.is_empty(), "{lines:?}");
}

#[test]
fn v_prints_the_calls_events_on_stderr_and_the_result_on_stdout() {
    let w = World::new();
    for flag in ["-v", "--verbose"] {
        let output = w.run(&[flag, "health"]);
        assert_eq!(output.status.code(), Some(0));
        let (result, lines) = split(&output);
        assert_eq!(result, Some(json!({"status": "ok"})));
        let events = events(&lines);
        assert_eq!(events.len(), lines.len(), "only events: {lines:?}");
        assert_eq!(
            names(&events),
            ["request.sent", "connection.opened", "request.answered"]
        );
        assert_eq!(events[1]["peer_fingerprint"], json!(w.worker.fingerprint()));
        assert_eq!(events[2]["status"], 200);
        assert_eq!(events[2]["level"], "info");
    }
}

#[test]
fn vv_adds_the_bodies() {
    let w = World::new();
    // The flag is global: after the subcommand too.
    let output = w.run(&["mutate", "d1", "ssh", "-vv"]);
    assert_eq!(output.status.code(), Some(0));
    let (result, lines) = split(&output);
    assert_eq!(result.unwrap()["status"], "accepted");
    let events = events(&lines);
    assert_eq!(
        names(&events),
        [
            "request.sent",
            "request.body",
            "connection.opened",
            "request.answered",
            "response.body"
        ]
    );
    assert_eq!(events[1]["level"], "trace");
    assert!(events[1]["body"].as_str().unwrap().contains("\"ssh\""));
}

#[test]
fn a_failure_is_an_event_then_the_error_line() {
    let w = World::new();
    w.worker.set_fault(Fault::ServerError);
    let output = w.run(&["-v", "status"]);
    assert_eq!(output.status.code(), Some(19));
    let (result, lines) = split(&output);
    assert_eq!(result, None, "nothing on stdout");
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("decnet-agent-client: http_status: "),
        "{last}"
    );
    let events = events(&lines[..lines.len() - 1]);
    assert_eq!(
        names(&events),
        [
            "request.sent",
            "connection.opened",
            "request.answered",
            "request.failed"
        ]
    );
    assert_eq!(events[3]["kind"], "http_status");
    assert_eq!(events[3]["level"], "error");
}
