//! Soak: one client, 8 threads, mixed RPCs against the stand-in worker while
//! a ninth thread injects random faults. No panic, resident memory flat
//! after warm-up, every failure of the kind its fault calls for, and no
//! POST received twice.
//!
//! `DECNET_SOAK_SECS` sets the length (default 60 s).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{setup, Lcg};
use decnet_agent_client::testkit::Fault;
use decnet_agent_client::{Error, ErrorKind, Profile, Timeouts};
use serde_json::{json, Value};

const THREADS: u64 = 8;
const STALL: Duration = Duration::from_millis(600);

const FAULTS: [Fault; 12] = [
    Fault::None,
    Fault::None,
    Fault::None,
    Fault::None,
    Fault::Stall(STALL),
    Fault::StallAfterHeaders(STALL),
    Fault::CloseAfterRequest,
    Fault::ResetMidBody,
    Fault::NonJsonBody,
    Fault::ServerError,
    Fault::TruncatedRecord,
    Fault::CloseIdleAfter(Duration::from_millis(5)),
];

/// The error kinds a request answered under `fault` may end in.
fn allowed(fault: Fault) -> &'static [ErrorKind] {
    match fault {
        Fault::None | Fault::CloseIdleAfter(_) => &[],
        Fault::Stall(_) | Fault::StallAfterHeaders(_) => &[ErrorKind::Timeout],
        Fault::CloseAfterRequest | Fault::TruncatedRecord => &[ErrorKind::ConnectionLost],
        Fault::ResetMidBody => &[ErrorKind::ConnectionLost, ErrorKind::Protocol],
        Fault::NonJsonBody => &[ErrorKind::Protocol],
        Fault::ServerError => &[ErrorKind::HttpStatus],
        other => panic!("fault {other:?} is not injected"),
    }
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One call's outcome. Ids are `thread << 32 | n`, unique per call; kept
/// compact so the test's own bookkeeping barely moves resident memory.
#[derive(Clone, Copy)]
struct Outcome {
    id: u64,
    post: bool,
    error: Option<ErrorKind>,
}

fn id_text(id: u64) -> String {
    format!("t{}-{}", id >> 32, id & 0xffff_ffff)
}

fn id_of(text: &str) -> Option<u64> {
    let (t, n) = text.strip_prefix('t')?.split_once('-')?;
    Some(t.parse::<u64>().ok()? << 32 | n.parse::<u64>().ok()?)
}

/// Bytes of bookkeeping per call: one outcome, and one ledger record for a POST.
const BOOKKEEPING_BYTES: usize =
    std::mem::size_of::<Outcome>() + std::mem::size_of::<(u64, Fault)>();

#[test]
fn soak_with_random_faults() {
    let seconds: u64 = std::env::var("DECNET_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let s = setup();
    for profile in Profile::ALL {
        s.client
            .set_timeouts(
                profile,
                Timeouts {
                    connect: Duration::from_secs(2),
                    read: Duration::from_millis(300),
                    write: Duration::from_secs(2),
                    pool: Duration::from_secs(1),
                },
            )
            .unwrap();
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("soak: {seconds} s, seed {seed}");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let warm_up = Instant::now() + Duration::from_secs(seconds / 6);
    let stop = Arc::new(AtomicBool::new(false));
    let (client, worker) = (&s.client, &s.worker);

    // What the worker received: (id, fault), drained from its ledger as we go.
    let (outcomes, received, rss) = std::thread::scope(|scope| {
        let injector = scope.spawn(|| {
            let mut rng = Lcg(seed);
            let mut rss = Vec::new();
            let mut received: Vec<(u64, Fault)> = Vec::with_capacity(1 << 20);
            let drain = |received: &mut Vec<(u64, Fault)>| {
                for entry in worker.take_ledger() {
                    let id = entry
                        .body
                        .pointer("/decky_id")
                        .or_else(|| entry.body.pointer("/config/deckies/0/name"));
                    if let Some(id) = id.and_then(Value::as_str).and_then(id_of) {
                        received.push((id, entry.fault));
                    }
                }
            };
            while Instant::now() < deadline {
                worker.set_fault(FAULTS[rng.below(FAULTS.len() as u64) as usize]);
                std::thread::sleep(Duration::from_millis(100));
                drain(&mut received);
                if Instant::now() > warm_up {
                    rss.push((Instant::now(), resident_kib()));
                }
            }
            worker.set_fault(Fault::None);
            stop.store(true, Ordering::SeqCst);
            (received, rss, drain)
        });
        let callers: Vec<_> = (0..THREADS)
            .map(|t| {
                let stop = stop.clone();
                scope.spawn(move || {
                    let mut rng = Lcg(seed ^ (t + 1));
                    let mut outcomes = Vec::with_capacity(1 << 18);
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let id = t << 32 | n;
                        let name = id_text(id);
                        let op = rng.below(6);
                        let result = match op {
                            0 => client.health(),
                            1 => client.status(),
                            2 => client.deploy(
                                &json!({"deckies": [{"name": name, "services": ["ssh"]}]}),
                                false,
                                false,
                            ),
                            3 => client.mutate(&name, &["ssh"], false),
                            4 => client.teardown(Some(&name)),
                            _ => client.topology_state(),
                        };
                        let error = result.as_ref().err().map(Error::kind);
                        if let Some(kind) = error {
                            assert!(
                                matches!(
                                    kind,
                                    ErrorKind::Timeout
                                        | ErrorKind::ConnectionLost
                                        | ErrorKind::Protocol
                                        | ErrorKind::HttpStatus
                                ),
                                "unexpected kind: {result:?}"
                            );
                        }
                        outcomes.push(Outcome {
                            id,
                            post: (2..=4).contains(&op),
                            error,
                        });
                    }
                    outcomes
                })
            })
            .collect();
        let outcomes: Vec<Outcome> = callers
            .into_iter()
            .flat_map(|c| c.join().expect("no caller panicked"))
            .collect();
        let (mut received, rss, drain) = injector.join().expect("the injector did not panic");
        drain(&mut received);
        (outcomes, received, rss)
    });

    let mut by_id: HashMap<u64, Vec<Fault>> = HashMap::new();
    for (id, fault) in &received {
        by_id.entry(*id).or_default().push(*fault);
    }
    let mut failures: HashMap<&str, usize> = HashMap::new();
    for outcome in outcomes.iter().filter(|o| o.post) {
        if let Some(kind) = outcome.error {
            *failures.entry(kind.name()).or_default() += 1;
        }
        let name = id_text(outcome.id);
        match by_id.get(&outcome.id).map(Vec::as_slice) {
            // Never reached the worker: only a connection that died (an idle
            // close) or a timeout can explain that.
            None => assert!(
                matches!(
                    outcome.error,
                    Some(ErrorKind::ConnectionLost) | Some(ErrorKind::Timeout)
                ),
                "{name} never reached the worker but ended {:?}",
                outcome.error
            ),
            Some([fault]) => match outcome.error {
                None => assert!(
                    allowed(*fault).is_empty(),
                    "{name} succeeded under {fault:?}"
                ),
                Some(kind) => assert!(
                    allowed(*fault).contains(&kind),
                    "{name} ended {kind:?} under {fault:?}"
                ),
            },
            Some(many) => panic!("{name} was received {} times", many.len()),
        }
    }

    // Resident memory: average of the first and last ten samples after
    // warm-up, less what the test itself stored in between.
    let avg = |xs: &[(Instant, u64)]| xs.iter().map(|x| x.1).sum::<u64>() / xs.len().max(1) as u64;
    let (first, last) = (
        avg(&rss[..10.min(rss.len())]),
        avg(&rss[rss.len().saturating_sub(10)..]),
    );
    let calls_after_warm_up = outcomes.len() as u64 * (seconds - seconds / 6) / seconds.max(1);
    let bookkeeping_kib = calls_after_warm_up * BOOKKEEPING_BYTES as u64 / 1024;
    let growth = last.saturating_sub(first).saturating_sub(bookkeeping_kib);
    println!(
        "soak: {} calls, {} POSTs received once each, failures of POSTs by kind {failures:?}",
        outcomes.len(),
        by_id.len()
    );
    println!(
        "soak: resident memory after warm-up {first} KiB -> {last} KiB; the test's own records ~{bookkeeping_kib} KiB; growth otherwise {growth} KiB"
    );
    assert!(outcomes.len() > 1000, "too few calls: {}", outcomes.len());
    assert!(growth < 2 * 1024, "resident memory grew by {growth} KiB");
}
