//! `decnet-agent-client fleet <rpc> --hosts FILE|DIR|-`: one RPC over many
//! workers. NDJSON on stdout, one line per host as it completes; a
//! progress bar on stderr when stderr is a terminal; a one-line summary on
//! stderr; an exit status that says how the fleet fared (see
//! [`EXIT_STATUSES`], printed by `fleet --help` and copied in the README).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use decnet_agent_client::client::{HostnameVerification, Profile};
use decnet_agent_client::fleet::{Flow, SweepOptions, RPC_NAMES};
use decnet_agent_client::identity::MASTER_DIR;
use decnet_agent_client::{Error, ErrorKind, Fleet, HostResult, Identity, Outcome, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::{ca_dir, exit_code, read_input, read_json, seconds, with_timeout_options, Cli};

/// The exit statuses of `fleet` once every host has been tried, most
/// severe first: the first row that applies is the status.
pub const EXIT_STATUSES: [(u8, &str); 4] = [
    (
        5,
        "some host presented the wrong certificate (pin_mismatch): a security event, it takes precedence",
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
         outcome (ok | error | not_attempted) and result or error.",
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
    if !RPC_NAMES.contains(&args.rpc.as_str()) {
        return Err(Error::invalid(
            "rpc",
            format!(
                "unknown RPC {:?}; expected one of {}",
                args.rpc,
                RPC_NAMES.join(", ")
            ),
        ));
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
    let records: Vec<Value> = records
        .into_iter()
        .map(|mut record| {
            if let Some(object) = record.as_object_mut() {
                object.remove("args");
            }
            record
        })
        .collect();
    let hostname = match cli.verify_hostname {
        Some(true) => HostnameVerification::On,
        Some(false) => HostnameVerification::Off,
        None => HostnameVerification::FromEnvironment,
    };
    let identity = Identity::load_dir(&ca_dir(cli)?.join(MASTER_DIR))?;
    let fleet = Fleet::from_json(&identity, &Value::Array(records), hostname)?;
    fleet.set_session_resumption(!cli.no_resumption);
    for profile in Profile::ALL {
        fleet.set_timeouts(
            profile,
            with_timeout_options(cli, profile.default_timeouts())?,
        )?;
    }
    let options = SweepOptions {
        concurrency: args.concurrency,
        deadline: args.deadline.map(|s| seconds(s, "deadline")).transpose()?,
    };
    let plan = fleet.plan_from_json(&args.rpc, Some(&Value::Array(plan)))?;

    let progress = progress_bar(plan.len());
    let mut stdout = std::io::stdout().lock();
    let mut write_failed = None;
    let results = fleet.sweep(plan, options, |result| {
        if let Err(e) = writeln!(stdout, "{}", result.to_json()).and_then(|()| stdout.flush()) {
            write_failed = Some(e);
            return Flow::Stop;
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
        Flow::Continue
    })?;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    if let Some(e) = write_failed {
        return Err(Error::io("<stdout>", e));
    }
    eprintln!("{}", summary(&args.rpc, &results));
    Ok(status_of(&results))
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
fn status_of(results: &[HostResult]) -> u8 {
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
