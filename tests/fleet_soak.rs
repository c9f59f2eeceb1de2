//! Fleet soak: 200 stand-ins of mixed faults (some fixed, some changed at
//! random between sweeps), 500 sweeps of random plans with random RPCs,
//! concurrency, deadlines and stops.
//!
//! Checked: after every sweep no sweep thread is left; afterwards, with
//! the fleet dropped, the process has exactly the threads and descriptors
//! it had before the fleet; and every POST appears in the stand-ins'
//! ledgers at most once, exactly once where the result says the worker
//! answered, and never where it says the request was not sent.
//!
//! `DECNET_FLEET_SOAK_SWEEPS` sets the count (default 500) and
//! `DECNET_FLEET_SOAK_SEED` replays a run (the seed is printed).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{sweep_threads, Lcg};
use decnet_agent_client::fleet::{Call, Flow, HostId, SweepOptions};
use decnet_agent_client::testkit::{raise_fd_limit, Behaviour, Fault, Swarm, TestPki};
use decnet_agent_client::{ErrorKind, Fleet, HostnameVerification, Outcome};
use serde_json::{json, Value};

const HOSTS: usize = 200;
const MAX_PLAN: u64 = 40;

/// Faults a healthy member may be given before a sweep (`None` heals it).
const SWITCHED_FAULTS: [Fault; 9] = [
    Fault::None,
    Fault::None,
    Fault::Stall(Duration::from_millis(250)),
    Fault::StallAfterHeaders(Duration::from_millis(250)),
    Fault::CloseAfterRequest,
    Fault::ResetMidBody,
    Fault::ServerError,
    Fault::CloseIdleAfter(Duration::from_millis(5)),
    Fault::TruncatedRecord,
];

fn behaviour(i: usize) -> Behaviour {
    match i % 20 {
        13 => Behaviour::Stall(Duration::from_millis(250)),
        14 => Behaviour::ServerError,
        15 => Behaviour::ClosesIdle(Duration::from_millis(20)),
        16 => Behaviour::SlowHandshake(Duration::from_millis(150)),
        17 => Behaviour::WrongCertificate,
        18 => Behaviour::Refuse,
        _ => Behaviour::Healthy,
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}")))
        .unwrap_or(default)
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).unwrap().count()
}

/// A random call for one host; POSTs carry `token` so the ledgers can say
/// which sweep sent them.
fn random_call(rng: &mut Lcg, token: &str) -> Call {
    match rng.below(7) {
        0 => Call::Health,
        1 => Call::Status,
        2 => Call::TopologyState,
        3 => Call::Deploy {
            config: json!({"deckies": [{"name": token, "services": ["ssh"]}]}),
            dry_run: false,
            no_cache: false,
        },
        4 => Call::Mutate {
            decky_id: token.to_owned(),
            services: vec!["http".to_owned()],
            dry_run: false,
        },
        5 => Call::Teardown {
            decky_id: Some(token.to_owned()),
        },
        _ => Call::TeardownTopology {
            topology_id: token.to_owned(),
        },
    }
}

/// The token a POST body carries (see [`random_call`]).
fn token_of(path: &str, body: &Value) -> Option<String> {
    let token = match path {
        "/deploy" => body.pointer("/config/deckies/0/name"),
        "/mutate" | "/teardown" => body.get("decky_id"),
        "/topology/teardown" => body.get("topology_id"),
        _ => None,
    };
    token.and_then(Value::as_str).map(str::to_owned)
}

/// What a result says about its POST.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Said {
    /// The worker answered (success or an HTTP error).
    Answered,
    /// No byte of the request left (never started, or failed before).
    NotSent,
    /// It may or may not have arrived.
    Maybe,
}

fn said(outcome: &Outcome) -> Said {
    match outcome {
        Outcome::Ok(_) => Said::Answered,
        Outcome::NotAttempted => Said::NotSent,
        Outcome::Err(e) if e.kind() == ErrorKind::HttpStatus => Said::Answered,
        Outcome::Err(e) if !e.may_have_reached_worker() => Said::NotSent,
        Outcome::Err(_) => Said::Maybe,
    }
}

#[test]
fn two_hundred_faulty_workers_and_five_hundred_cut_sweeps_lose_and_repeat_nothing() {
    raise_fd_limit(4096).expect("raise the soft fd limit");
    let sweeps = env_or("DECNET_FLEET_SOAK_SWEEPS", 500);
    let seed = env_or(
        "DECNET_FLEET_SOAK_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    println!("fleet soak: {sweeps} sweeps, DECNET_FLEET_SOAK_SEED={seed}");
    let mut rng = Lcg(seed);

    let pki = TestPki::new().unwrap();
    let behaviours: Vec<Behaviour> = (0..HOSTS).map(behaviour).collect();
    let swarm = Swarm::start(&pki.ca, &behaviours).unwrap();
    let switchable: Vec<usize> = (0..HOSTS)
        .filter(|&i| behaviours[i] == Behaviour::Healthy)
        .collect();
    let threads_before = count_dir("/proc/self/task");
    let fds_before = count_dir("/proc/self/fd");

    let fleet =
        Fleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On).unwrap();
    // (host, token) of every POST planned, with what its result said.
    let mut posts: HashMap<(usize, String), Said> = HashMap::new();
    let mut tally: HashMap<&'static str, usize> = HashMap::new();
    let began = Instant::now();
    for sweep in 0..sweeps {
        for _ in 0..4 {
            let member = switchable[rng.below(switchable.len() as u64) as usize];
            let fault = SWITCHED_FAULTS[rng.below(SWITCHED_FAULTS.len() as u64) as usize];
            swarm.members()[member]
                .worker
                .as_ref()
                .unwrap()
                .set_fault(fault);
        }
        let size = 1 + rng.below(MAX_PLAN) as usize;
        let mut hosts: Vec<usize> = Vec::with_capacity(size);
        while hosts.len() < size {
            let host = rng.below(HOSTS as u64) as usize;
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        let plan: Vec<(HostId, Call)> = hosts
            .iter()
            .map(|&h| {
                (
                    HostId::Index(h),
                    random_call(&mut rng, &format!("s{sweep}h{h}")),
                )
            })
            .collect();
        let calls: Vec<Call> = plan.iter().map(|(_, c)| c.clone()).collect();
        let options = SweepOptions {
            concurrency: Some(1 + rng.below(16) as usize),
            deadline: match rng.below(3) {
                0 => None,
                _ => Some(Duration::from_millis(20 + rng.below(500))),
            },
        };
        let stop_after = match rng.below(3) {
            0 => Some(rng.below(size as u64) as usize),
            _ => None,
        };
        let mut seen = 0;
        let results = fleet
            .sweep(plan, options, |_| {
                seen += 1;
                match stop_after {
                    Some(k) if seen > k => Flow::Stop,
                    _ => Flow::Continue,
                }
            })
            .unwrap();
        assert_eq!(sweep_threads(), 0, "sweep {sweep}: threads outlived it");
        assert_eq!(results.len(), size);
        for ((result, call), &host) in results.iter().zip(&calls).zip(&hosts) {
            assert_eq!(
                result.host.index, host,
                "sweep {sweep}: results out of order"
            );
            let label = match &result.outcome {
                Outcome::Ok(_) => "ok",
                Outcome::NotAttempted => "not attempted",
                Outcome::Err(e) => e.kind().name(),
            };
            *tally.entry(label).or_default() += 1;
            if matches!(call, Call::Health | Call::Status | Call::TopologyState) {
                continue;
            }
            let token = format!("s{sweep}h{host}");
            posts.insert((host, token), said(&result.outcome));
        }
    }
    let wall = began.elapsed();
    println!(
        "fleet soak: {} POSTs in {wall:?}; outcomes {tally:?}",
        posts.len()
    );

    // Every POST the ledgers hold was planned, and is there at most once.
    let mut received: HashMap<(usize, String), usize> = HashMap::new();
    for (host, member) in swarm.members().iter().enumerate() {
        let Some(worker) = &member.worker else {
            continue;
        };
        for entry in worker.take_ledger() {
            if entry.method != "POST" {
                continue;
            }
            let token = token_of(&entry.path, &entry.body)
                .unwrap_or_else(|| panic!("host {host}: unplanned POST {entry:?}"));
            *received.entry((host, token)).or_default() += 1;
        }
    }
    for (key, count) in &received {
        let said = posts
            .get(key)
            .unwrap_or_else(|| panic!("{key:?} reached a worker but was never planned"));
        assert_eq!(*count, 1, "{key:?} reached its worker {count} times");
        assert_ne!(
            *said,
            Said::NotSent,
            "{key:?} arrived but was reported not sent"
        );
    }
    for (key, said) in &posts {
        if *said == Said::Answered {
            assert!(
                received.contains_key(key),
                "{key:?} was answered but its worker never received it"
            );
        }
    }

    // With the fleet gone, its connections close and the stand-ins' threads
    // for them end: the process is back to what it was before the fleet.
    drop(fleet);
    let settle = Instant::now() + Duration::from_secs(20);
    let (mut threads, mut fds) = (0, 0);
    while Instant::now() < settle {
        threads = count_dir("/proc/self/task");
        fds = count_dir("/proc/self/fd");
        if threads == threads_before && fds == fds_before {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(threads, threads_before, "threads left after the soak");
    assert_eq!(fds, fds_before, "descriptors left after the soak");
}
