//! `decnet-agent-client fleet <rpc> --hosts FILE|DIR|-`: one RPC over many
//! workers, a release pushed to (or rolled back on) their updaters under a
//! rollout policy (`fleet push`, `fleet rollback`), or one deployment
//! sharded over them (`fleet deploy --sharded`). NDJSON on stdout, one line
//! per host as it completes; a progress bar on stderr when stderr is a
//! terminal; a one-line summary on stderr; an exit status that says how the
//! fleet fared (see [`EXIT_STATUSES`], printed by `fleet --help` and copied
//! in the README).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use decnet_agent_client::client::{HostnameVerification, Profile};
use decnet_agent_client::fleet::{Flow, SweepOptions, RPC_NAMES};
use decnet_agent_client::identity::MASTER_DIR;
use decnet_agent_client::rollout::{
    Amount, HostStatus, Operation, Rollout, RolloutHostResult, RolloutPolicy, StopReason,
    UpdaterFleet, Wave,
};
use decnet_agent_client::{
    Error, ErrorKind, Fleet, HostResult, Identity, Outcome, Result, UpdaterProfile,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::{ca_dir, exit_code, read_input, read_json, seconds, with_timeout_options, Cli};

/// The exit statuses of `fleet` once every host has been tried, most
/// severe first: the first row that applies is the status.
pub const EXIT_STATUSES: [(u8, &str); 5] = [
    (
        5,
        "some host presented the wrong certificate (pin_mismatch): a security event, it takes precedence",
    ),
    (
        6,
        "push or rollback halted: the canary failed or failures reached --max-failures; no new host started",
    ),
    (
        4,
        "some hosts could not be reached or timed out (connect, tls, timeout, connection_lost)",
    ),
    (
        3,
        "some hosts failed: the worker refused the call or answered badly (http_status, protocol, invalid_argument, internal)",
    ),
    (0, "every host succeeded"),
];

/// The `fleet` subcommand's help epilogue: its exit statuses.
pub fn exit_help() -> String {
    let mut text = String::from("Exit status (fleet):\n");
    for (code, meaning) in EXIT_STATUSES.iter().rev() {
        text.push_str(&format!("  {code:<3} {meaning}\n"));
    }
    text.push_str(
        "  2   usage error (bad or missing arguments)\n  \
         11-22  the fleet could not start: 10 + the error kind's code, as for one worker\n         \
         (unreadable hosts file, bad host record, missing identity, bad arguments)\n\n\
         Hosts: a JSON array of host records, NDJSON (one record a line), or a folder\n\
         whose *.json files each hold one record (in file-name order). A record's\n\
         `args` member gives that host its own arguments; --args gives the rest theirs.\n\
         Each stdout line is one host's result: index, uuid, name, address, elapsed_ms,\n\
         outcome (ok | error | not_attempted) and result or error.\n\n\
         push and rollback drive the hosts' updaters (each record's updater_port and\n\
         updater_cert_fingerprint) under a rollout policy: --canary hosts first, then\n\
         batches of --batch, no new host once failures reach --max-failures. A line\n\
         per host: index, uuid, name, address, wave, status (updated | rolled-back |\n\
         failed | self-updated | self-failed | queued | not-attempted | no-updater-pin |\n\
         pin-mismatch), http_status, error, stderr, rolled_back, update_ms,\n\
         self_update_ms, verify_ms. deploy --sharded FILE sends each host the deckies\n\
         whose host_uuid is its uuid; a failed host's line says which are up (probe).",
    );
    text
}

/// Arguments of `fleet`.
#[derive(Args)]
pub struct FleetArgs {
    /// The RPC: health, status, topology-state, self-destruct, deploy,
    /// mutate, teardown, apply-topology, teardown-topology
    rpc: String,
    /// Host records: a JSON array or NDJSON file, a folder of *.json
    /// records, or `-` for standard input
    #[arg(long, value_name = "FILE|DIR|-")]
    hosts: String,
    /// Arguments (a JSON object: config, dry_run, no_cache, decky_id,
    /// services, hydrated, version_hash, topology_id) for every host whose
    /// record has no `args` member: a file, or `-` for standard input
    #[arg(long, value_name = "FILE")]
    args: Option<String>,
    /// Hosts in flight at once [default: 64]
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Seconds after which unfinished hosts report a timeout
    #[arg(long, value_name = "SECS")]
    deadline: Option<f64>,
    /// Confirm self-destruct
    #[arg(long)]
    yes: bool,
    /// push: the release tarball, streamed from disk to each updater
    #[arg(long, value_name = "FILE")]
    tarball: Option<PathBuf>,
    /// push: the release's git SHA (what --verify waits for)
    #[arg(long, value_name = "SHA")]
    sha: Option<String>,
    /// push: the tarball's SHA-256, checked once before any traffic
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// push, rollback: hosts that go first; any failure among them stops
    /// the rollout [default: 1]
    #[arg(long, value_name = "N")]
    canary: Option<usize>,
    /// push, rollback: later batches of N hosts or P% of the rest
    /// [default: 100%]
    #[arg(long, value_name = "N|P%")]
    batch: Option<String>,
    /// push, rollback: no new host starts once this many (or this % of all
    /// hosts) failed
    #[arg(long, value_name = "N|P%")]
    max_failures: Option<String>,
    /// push, rollback: seconds between batches
    #[arg(long, value_name = "SECS")]
    pause: Option<f64>,
    /// push: after a host's agent update succeeds, update its updater too
    #[arg(long)]
    self_update: bool,
    /// push: after update-self, wait up to SECS for the new release
    #[arg(long, value_name = "SECS", requires = "self_update")]
    verify: Option<f64>,
    /// deploy: one configuration (a file, or `-`) split by each decky's
    /// host_uuid
    #[arg(long, value_name = "FILE")]
    sharded: Option<String>,
    /// deploy --sharded: do not ask a failed host which deckies are up
    #[arg(long, requires = "sharded")]
    no_probe: bool,
}

impl FleetArgs {
    /// The rollout the arguments ask for, if the RPC is push or rollback.
    fn operation(&self) -> Option<Operation> {
        match self.rpc.as_str() {
            "push" => Some(Operation::Push),
            "rollback" => Some(Operation::Rollback),
            _ => None,
        }
    }

    /// The rollout policy of the arguments, checked.
    fn policy(&self) -> Result<RolloutPolicy> {
        let defaults = RolloutPolicy::default();
        let policy = RolloutPolicy {
            canary: self.canary.unwrap_or(defaults.canary),
            batch: match &self.batch {
                Some(text) => Amount::parse(text, "batch")?,
                None => defaults.batch,
            },
            max_failures: self
                .max_failures
                .as_deref()
                .map(|text| Amount::parse(text, "max_failures"))
                .transpose()?,
            pause_between: match self.pause {
                Some(0.0) | None => Duration::ZERO,
                Some(s) => seconds(s, "pause")?,
            },
            self_update: self.self_update,
            verify: self.verify.map(|s| seconds(s, "verify")).transpose()?,
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Refuses the arguments that do not belong to this RPC.
    fn check_belonging(&self) -> Result<()> {
        let rollout = [
            ("canary", self.canary.is_some()),
            ("batch", self.batch.is_some()),
            ("max_failures", self.max_failures.is_some()),
            ("pause", self.pause.is_some()),
        ];
        let push = [
            ("tarball", self.tarball.is_some()),
            ("sha", self.sha.is_some()),
            ("sha256", self.sha256.is_some()),
            ("self_update", self.self_update),
        ];
        let refuse = |name: &str, only: &str| {
            Err(Error::invalid(
                name,
                format!("is only for {only}, not {}", self.rpc),
            ))
        };
        if self.operation().is_none() {
            if let Some((name, _)) = rollout.iter().chain(&push).find(|(_, given)| *given) {
                return refuse(name, "push and rollback");
            }
        }
        if self.operation() == Some(Operation::Rollback) {
            if let Some((name, _)) = push.iter().find(|(_, given)| *given) {
                return refuse(name, "push");
            }
        }
        if self.sharded.is_some() && self.rpc != "deploy" {
            return refuse("sharded", "deploy");
        }
        if self.sharded.is_some() && self.args.is_some() {
            return Err(Error::invalid(
                "args",
                "--sharded gives each host its part of one configuration",
            ));
        }
        Ok(())
    }
}

/// Runs `fleet`, printing results and the summary; returns the exit status.
pub fn main(cli: &Cli, args: &FleetArgs) -> ExitCode {
    match run(cli, args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let message = e.to_string().replace('\n', " ");
            eprintln!("decnet-agent-client: {}: {message}", e.kind().name());
            ExitCode::from(exit_code(e.kind()))
        }
    }
}

fn run(cli: &Cli, args: &FleetArgs) -> Result<u8> {
    if !RPC_NAMES.contains(&args.rpc.as_str()) && args.operation().is_none() {
        return Err(Error::invalid(
            "rpc",
            format!(
                "unknown RPC {:?}; expected one of {}, push, rollback",
                args.rpc,
                RPC_NAMES.join(", ")
            ),
        ));
    }
    args.check_belonging()?;
    if let Some(operation) = args.operation() {
        return run_rollout(cli, args, operation);
    }
    if let Some(config) = &args.sharded {
        return run_sharded(cli, args, config);
    }
    if args.rpc == "self-destruct" && !args.yes {
        return Err(Error::invalid(
            "yes",
            "self-destruct is irreversible: add --yes to confirm",
        ));
    }
    if args.hosts == "-" && args.args.as_deref() == Some("-") {
        return Err(Error::invalid(
            "args",
            "standard input is already taken by --hosts",
        ));
    }
    let records = read_hosts(&args.hosts)?;
    let shared = match &args.args {
        Some(source) => read_json(source, "args")?,
        None => Value::Null,
    };
    let plan: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let own = record.get("args").cloned().unwrap_or(Value::Null);
            let host_args = if own.is_null() { shared.clone() } else { own };
            serde_json::json!({"host": i, "args": host_args})
        })
        .collect();
    // `args` is this command's per-host member, not a host-record field.
    let fleet = agent_fleet(cli, without_args(records))?;
    let options = sweep_options(args)?;
    let plan = fleet.plan_from_json(&args.rpc, Some(&Value::Array(plan)))?;

    let mut stream = ResultStream::new(plan.len());
    let results = fleet.sweep(plan, options, |result| stream.host(&result.to_json(), None))?;
    stream.finish()?;
    eprintln!("{}", summary(&args.rpc, &results));
    Ok(status_of(results.iter()))
}

fn hostname(cli: &Cli) -> HostnameVerification {
    match cli.verify_hostname {
        Some(true) => HostnameVerification::On,
        Some(false) => HostnameVerification::Off,
        None => HostnameVerification::FromEnvironment,
    }
}

fn master(cli: &Cli) -> Result<Identity> {
    Identity::load_dir(&ca_dir(cli)?.join(MASTER_DIR))
}

/// The agent fleet of `records`, with the command line's settings.
fn agent_fleet(cli: &Cli, records: Vec<Value>) -> Result<Fleet> {
    let fleet = Fleet::from_json(&master(cli)?, &Value::Array(records), hostname(cli))?;
    fleet.set_session_resumption(!cli.no_resumption);
    for profile in Profile::ALL {
        fleet.set_timeouts(
            profile,
            with_timeout_options(cli, profile.default_timeouts())?,
        )?;
    }
    Ok(fleet)
}

fn sweep_options(args: &FleetArgs) -> Result<SweepOptions> {
    Ok(SweepOptions {
        concurrency: args.concurrency,
        deadline: args.deadline.map(|s| seconds(s, "deadline")).transpose()?,
    })
}

/// A command's results as they come: one NDJSON line per host on stdout,
/// flushed at once, and a progress bar on stderr when it is a terminal.
/// The first failed write is kept, and every later line is skipped.
struct ResultStream {
    stdout: std::io::StdoutLock<'static>,
    progress: Option<ProgressBar>,
    write_failed: Option<std::io::Error>,
}

impl ResultStream {
    /// A stream for `total` hosts.
    fn new(total: usize) -> Self {
        ResultStream {
            stdout: std::io::stdout().lock(),
            progress: progress_bar(total),
            write_failed: None,
        }
    }

    /// Writes a finished host's line and moves the bar on (showing
    /// `message` beside it, when given); `Flow::Stop` once stdout fails.
    fn host(&mut self, line: &Value, message: Option<String>) -> Flow {
        if !self.line(line) {
            return Flow::Stop;
        }
        if let Some(bar) = &self.progress {
            if let Some(message) = message {
                bar.set_message(message);
            }
            bar.inc(1);
        }
        Flow::Continue
    }

    /// Writes one line unless an earlier write failed; false when none
    /// can be written.
    fn line(&mut self, line: &Value) -> bool {
        if self.write_failed.is_some() {
            return false;
        }
        let written = writeln!(self.stdout, "{line}").and_then(|()| self.stdout.flush());
        match written {
            Ok(()) => true,
            Err(e) => {
                self.write_failed = Some(e);
                false
            }
        }
    }

    /// Clears the progress bar.
    fn clear_progress(&mut self) {
        if let Some(bar) = self.progress.take() {
            bar.finish_and_clear();
        }
    }

    /// Clears the progress bar; the first failed write, if any.
    fn finish(mut self) -> Result<()> {
        self.clear_progress();
        match self.write_failed.take() {
            Some(e) => Err(Error::io("<stdout>", e)),
            None => Ok(()),
        }
    }
}

/// `fleet push` and `fleet rollback`: the hosts' updaters under the policy.
fn run_rollout(cli: &Cli, args: &FleetArgs, operation: Operation) -> Result<u8> {
    let policy = args.policy()?;
    let release = match operation {
        Operation::Push => Some((
            args.tarball
                .as_deref()
                .ok_or_else(|| Error::invalid("tarball", "push needs --tarball FILE"))?,
            args.sha
                .as_deref()
                .ok_or_else(|| Error::invalid("sha", "push needs --sha SHA"))?,
        )),
        Operation::Rollback => None,
    };
    let records = without_args(read_hosts(&args.hosts)?);
    let fleet = UpdaterFleet::from_json(&master(cli)?, &Value::Array(records), hostname(cli))?;
    for profile in UpdaterProfile::ALL {
        fleet.set_timeouts(
            profile,
            with_timeout_options(cli, profile.default_timeouts())?,
        )?;
    }
    let options = sweep_options(args)?;
    let mut stream = ResultStream::new(fleet.len());
    let mut printed = vec![false; fleet.len()];
    let on_result = |result: &RolloutHostResult| {
        printed[result.host.index] = true;
        let wave = match result.wave {
            Some(Wave::Canary) => "canary".to_string(),
            Some(Wave::Batch(n)) => format!("batch {n}"),
            None => String::new(),
        };
        stream.host(&result.to_json(), Some(wave))
    };
    let rollout = match release {
        Some((tarball, sha)) => fleet.push(
            tarball,
            sha,
            args.sha256.as_deref(),
            &policy,
            options,
            on_result,
        )?,
        None => fleet.rollback(&policy, options, on_result)?,
    };
    stream.clear_progress();
    // The hosts the rollout never started get their line too, in order.
    for host in rollout.hosts.iter().filter(|h| !printed[h.host.index]) {
        if !stream.line(&host.to_json()) {
            break;
        }
    }
    stream.finish()?;
    eprintln!("{}", rollout_summary(&args.rpc, &rollout));
    Ok(rollout_status(&rollout, operation))
}

/// `fleet deploy --sharded FILE`: each host its own deckies.
fn run_sharded(cli: &Cli, args: &FleetArgs, config: &str) -> Result<u8> {
    if args.hosts == "-" && config == "-" {
        return Err(Error::invalid(
            "sharded",
            "standard input is already taken by --hosts",
        ));
    }
    let config = read_json(config, "sharded")?;
    let fleet = agent_fleet(cli, without_args(read_hosts(&args.hosts)?))?;
    let options = sweep_options(args)?;
    let mut stream = ResultStream::new(fleet.len());
    let results = fleet.deploy_sharded(&config, !args.no_probe, options, |result| {
        stream.host(&result.to_json(), None)
    })?;
    stream.finish()?;
    let deploys: Vec<&HostResult> = results.iter().map(|r| &r.deploy).collect();
    let total = deploys.len();
    let ok = deploys.iter().filter(|r| r.is_ok()).count();
    eprintln!(
        "fleet deploy --sharded: {total} hosts with deckies, {ok} accepted, {} failed",
        total - ok
    );
    Ok(status_of(deploys.into_iter()))
}

/// The records without this command's per-host `args` member.
fn without_args(records: Vec<Value>) -> Vec<Value> {
    records
        .into_iter()
        .map(|mut record| {
            if let Some(object) = record.as_object_mut() {
                object.remove("args");
            }
            record
        })
        .collect()
}

/// The exit status of a rollout: 5 when a host's pin did not match, 6
/// when the canary or the failure budget halted it, else the worst host
/// as in [`status_of`].
fn rollout_status(rollout: &Rollout, operation: Operation) -> u8 {
    if rollout.summary.count(HostStatus::PinMismatch) > 0 {
        return 5;
    }
    if matches!(
        rollout.summary.stop,
        StopReason::CanaryFailed | StopReason::FailureBudget
    ) {
        return 6;
    }
    let host_code = |r: &RolloutHostResult| match r.report.status {
        HostStatus::Updated | HostStatus::SelfUpdated => 0,
        HostStatus::RolledBack if operation == Operation::Rollback => 0,
        HostStatus::RolledBack | HostStatus::NoUpdaterPin => 3,
        HostStatus::Failed | HostStatus::SelfFailed => match r.report.http_status {
            Some(_) => 3,
            None => 4,
        },
        HostStatus::Queued | HostStatus::NotAttempted => 4,
        HostStatus::PinMismatch => 5,
    };
    rollout.hosts.iter().map(host_code).max().unwrap_or(0)
}

/// `fleet push: 120 hosts, stopped: failure-budget (updated 22, failed 5,
/// not-attempted 93)`.
fn rollout_summary(rpc: &str, rollout: &Rollout) -> String {
    let counts: Vec<String> = HostStatus::all()
        .into_iter()
        .filter(|s| rollout.summary.count(*s) > 0)
        .map(|s| format!("{} {}", s.name(), rollout.summary.count(s)))
        .collect();
    format!(
        "fleet {rpc}: {} hosts, stopped: {} ({})",
        rollout.hosts.len(),
        rollout.summary.stop.name(),
        counts.join(", ")
    )
}

fn progress_bar(total: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} hosts {elapsed}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// The exit status: the first row of [`EXIT_STATUSES`] that applies.
fn status_of<'a>(results: impl Iterator<Item = &'a HostResult>) -> u8 {
    let mut worst = 0;
    for result in results {
        let code = match &result.outcome {
            Outcome::Ok(_) => 0,
            Outcome::NotAttempted => 4,
            Outcome::Err(e) => match e.kind() {
                ErrorKind::PinMismatch => 5,
                ErrorKind::Connect
                | ErrorKind::Tls
                | ErrorKind::Timeout
                | ErrorKind::ConnectionLost => 4,
                _ => 3,
            },
        };
        worst = worst.max(code);
    }
    worst
}

/// `fleet health: 240 targeted, 160 succeeded, 80 failed (connect 20,
/// http_status 20, pin_mismatch 20, timeout 20), 0 not attempted`.
fn summary(rpc: &str, results: &[HostResult]) -> String {
    let mut by_kind = BTreeMap::new();
    let (mut ok, mut skipped) = (0, 0);
    for result in results {
        match &result.outcome {
            Outcome::Ok(_) => ok += 1,
            Outcome::NotAttempted => skipped += 1,
            Outcome::Err(e) => *by_kind.entry(e.kind().name()).or_insert(0usize) += 1,
        }
    }
    let failed: usize = by_kind.values().sum();
    let kinds = if by_kind.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(" ({})", list.join(", "))
    };
    format!(
        "fleet {rpc}: {} targeted, {ok} succeeded, {failed} failed{kinds}, {skipped} not attempted",
        results.len()
    )
}

/// Host records from a JSON array or NDJSON file, standard input, or a
/// folder of `*.json` files (one record each, in file-name order).
fn read_hosts(source: &str) -> Result<Vec<Value>> {
    let path = Path::new(source);
    if source != "-" && path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect();
        files.sort();
        return files
            .iter()
            .map(|file| {
                let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
                decnet_agent_client::json::from_str(&text).map_err(|e| {
                    Error::invalid("hosts", format!("{}: malformed JSON: {e}", file.display()))
                })
            })
            .collect();
    }
    let text = read_input(source, "hosts")?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return match decnet_agent_client::json::from_str(trimmed) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(_) => Err(Error::invalid("hosts", "must be a JSON array")),
            Err(e) => Err(Error::invalid("hosts", format!("malformed JSON: {e}"))),
        };
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            decnet_agent_client::json::from_str(line).map_err(|e| {
                Error::invalid("hosts", format!("line {}: malformed JSON: {e}", n + 1))
            })
        })
        .collect()
}
