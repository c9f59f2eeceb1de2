//! Serves a swarm of stand-in workers for the C and Python fleet tests and
//! the fleet benchmark, in a process of its own.
//!
//! `swarm DIR COUNT [--stall N] [--stall-secs S] [--wrong-cert N]
//! [--refuse N] [--server-error N]` ensures a CA and master identity in
//! `DIR/ca`, starts COUNT stand-ins on 127.0.0.1, each with its own
//! certificate and pin, N of each fault kind spread evenly among them
//! (stalls last S seconds, default 30), writes
//! their pinned host records to `DIR/hosts.json` (a JSON array), one file
//! per host to `DIR/hosts/w<i>.json`, and NDJSON to `DIR/hosts.ndjson`;
//! each record carries a `behaviour` member. Then it creates `DIR/ready`
//! and serves until killed.

use std::path::Path;
use std::time::Duration;

use decnet_agent_client::testkit::{serve_swarm, Behaviour};
use decnet_agent_client::{Error, Result};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("swarm: {e}");
        std::process::exit(1);
    }
}

fn usage() -> Error {
    Error::invalid(
        "arguments",
        "usage: swarm DIR COUNT [--stall N] [--stall-secs S] [--wrong-cert N] [--refuse N] [--server-error N]",
    )
}

fn run(args: &[String]) -> Result<()> {
    let (dir, count) = match args {
        [dir, count, ..] => (Path::new(dir), count.parse::<usize>().map_err(|_| usage())?),
        _ => return Err(usage()),
    };
    let mut faults = [0usize; 4];
    let mut stall_secs = 30u64;
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value: u64 = rest.next().and_then(|v| v.parse().ok()).ok_or_else(usage)?;
        match flag.as_str() {
            "--stall" => faults[0] = value as usize,
            "--wrong-cert" => faults[1] = value as usize,
            "--refuse" => faults[2] = value as usize,
            "--server-error" => faults[3] = value as usize,
            "--stall-secs" => stall_secs = value,
            _ => return Err(usage()),
        }
    }
    let kinds = [
        Behaviour::Stall(Duration::from_secs(stall_secs)),
        Behaviour::WrongCertificate,
        Behaviour::Refuse,
        Behaviour::ServerError,
    ];
    let faulty: usize = faults.iter().sum();
    if faulty > count {
        return Err(Error::invalid(
            "COUNT",
            "is smaller than the faults asked for",
        ));
    }
    // Faults spread evenly: member i * count / faulty gets the i-th fault.
    let mut behaviours = vec![Behaviour::Healthy; count];
    let mut order = Vec::new();
    for (kind, &n) in kinds.iter().zip(&faults) {
        order.extend(std::iter::repeat_n(*kind, n));
    }
    for (i, kind) in order.into_iter().enumerate() {
        behaviours[i * count / faulty] = kind;
    }

    match serve_swarm(dir, &behaviours)? {}
}
