//! The event-driven stand-in swarm: thousands of stand-ins, each with its
//! own certificate and pin, served by one event loop per core; real mutual
//! TLS with a fleet on the other side. The tests run one at a time: they
//! count this process's threads and descriptors.

use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use decnet_agent_client::fleet::{Call, Flow, SweepOptions};
use decnet_agent_client::testkit::{raise_fd_limit, EventedSwarm, TestPki};
use decnet_agent_client::{Error, ErrorKind, Fleet, HostnameVerification, Outcome};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Every host's failure after a health sweep, as text.
fn failures(fleet: &Fleet) -> Vec<String> {
    let options = SweepOptions {
        concurrency: Some(32),
        deadline: None,
    };
    let results = fleet
        .sweep_all(&Call::Health, options, |_| Flow::Continue)
        .unwrap();
    results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Ok(answer) if answer["status"] == "ok" => None,
            Outcome::Ok(answer) => Some(format!("{}: {answer}", r.host.address)),
            Outcome::Err(e) => Some(format!("{}: {e}", r.host.address)),
            Outcome::NotAttempted => Some(format!("{}: not attempted", r.host.address)),
        })
        .collect()
}

#[test]
fn two_thousand_stand_ins_on_one_loop_per_core_answer_a_fleet() {
    let _serial = serial();
    const MEMBERS: usize = 2000;
    raise_fd_limit(4 * MEMBERS as u64 + 256).unwrap();
    let pki = TestPki::new().unwrap();
    let threads_before = threads();
    let fds_before = open_descriptors();
    let swarm = EventedSwarm::start(&pki.ca, Ipv4Addr::LOCALHOST, 0, MEMBERS, None).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(swarm.len(), MEMBERS);
    assert!(swarm.loop_threads() <= cores);
    // No thread per member: only the loops were added.
    assert_eq!(threads() - threads_before, swarm.loop_threads());
    // A listening socket per member, and one epoll (plus its waker) per loop.
    let listening = open_descriptors() - fds_before;
    assert!(
        (MEMBERS..=MEMBERS + 4 * cores).contains(&listening),
        "{listening}"
    );
    // Every member has its own certificate: its pin and port are its own.
    let records = swarm.host_records();
    let pins: std::collections::HashSet<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["client_cert_fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(pins.len(), MEMBERS);

    let fleet = Fleet::from_json(&pki.master, &records, HostnameVerification::On).unwrap();
    let started = Instant::now();
    let failed = failures(&fleet);
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..5.min(failed.len())]
    );
    let handshakes = swarm.handshakes();
    assert_eq!(handshakes.full, MEMBERS as u64, "{handshakes:?}");
    assert_eq!(swarm.open_connections(), MEMBERS as u64);
    // The second sweep rides the kept-alive connections: no new handshake.
    let failed = failures(&fleet);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(swarm.handshakes(), handshakes);
    assert_eq!(swarm.connections(), MEMBERS as u64);
    println!(
        "{MEMBERS} stand-ins, {} loops: two sweeps in {:?}",
        swarm.loop_threads(),
        started.elapsed()
    );
    drop(fleet);
    drop(swarm);
    // Dropping the swarm ends its loops and closes its sockets.
    assert_eq!(threads(), threads_before);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_descriptors() > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(open_descriptors(), fds_before);
}

#[test]
fn members_close_idle_connections_and_the_next_sweep_resumes() {
    let _serial = serial();
    const MEMBERS: usize = 100;
    raise_fd_limit(4 * MEMBERS as u64 + 256).unwrap();
    let pki = TestPki::new().unwrap();
    let idle = Duration::from_millis(200);
    let swarm =
        EventedSwarm::start(&pki.ca, Ipv4Addr::new(127, 0, 3, 1), 0, MEMBERS, Some(idle)).unwrap();
    let fleet =
        Fleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On).unwrap();
    assert!(failures(&fleet).is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while swarm.open_connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        swarm.open_connections(),
        0,
        "idle connections were not closed"
    );
    let failed = failures(&fleet);
    assert!(failed.is_empty(), "{failed:?}");
    let handshakes = swarm.handshakes();
    assert_eq!(handshakes.full, MEMBERS as u64, "{handshakes:?}");
    assert_eq!(handshakes.resumed, MEMBERS as u64, "{handshakes:?}");
}

#[test]
fn members_show_their_own_certificates_and_serve_only_reads() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let swarm = EventedSwarm::start(&pki.ca, Ipv4Addr::LOCALHOST, 7, 3, None).unwrap();
    let mut records = swarm.host_records();
    assert_eq!(records[0]["name"], "w7");
    // Member w8 is pinned to w9's certificate: only that host fails, with
    // a pin mismatch.
    records[1]["client_cert_fingerprint"] = records[2]["client_cert_fingerprint"].clone();
    let fleet = Fleet::from_json(&pki.master, &records, HostnameVerification::On).unwrap();
    let results = fleet
        .sweep_all(&Call::Health, SweepOptions::default(), |_| Flow::Continue)
        .unwrap();
    let kinds: Vec<Option<ErrorKind>> = results
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Err(e) => Some(e.kind()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, [None, Some(ErrorKind::PinMismatch), None]);
    // Only the read-only endpoints are served; anything else is a 404.
    let fleet =
        Fleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On).unwrap();
    let status = fleet
        .sweep_all(&Call::Status, SweepOptions::default(), |_| Flow::Continue)
        .unwrap();
    for r in &status {
        match &r.outcome {
            Outcome::Ok(answer) => assert_eq!(answer["deployed"], false),
            other => panic!("{other:?}"),
        }
    }
    let destroyed = fleet
        .sweep_all(&Call::SelfDestruct, SweepOptions::default(), |_| {
            Flow::Continue
        })
        .unwrap();
    for r in &destroyed {
        match &r.outcome {
            Outcome::Err(Error::HttpStatus { status, .. }) => assert_eq!(*status, 404),
            other => panic!("{other:?}"),
        }
    }
}
