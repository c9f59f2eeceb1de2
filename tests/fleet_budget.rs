//! A fleet's connection budget: a fleet larger than the descriptor limit
//! works, because the least recently used idle hosts' connections are
//! closed before a call would go over, and reconnects resume their TLS
//! session.
//!
//! The tests run one at a time: they sample this process's descriptors,
//! and one lowers its soft limit.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use decnet_agent_client::fleet::{Call, Flow, SweepOptions};
use decnet_agent_client::testkit::{
    raise_fd_limit, serve_evented_swarm, Behaviour, Swarm, TestPki,
};
use decnet_agent_client::{Fleet, HostnameVerification, Identity, Outcome};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Samples this process's open descriptors and the fleet's open
/// connections every 2 ms until dropped; `peaks()` gives the highest seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    fds: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(fleet: &Arc<Fleet>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let fds = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, fds, connections, fleet) = (
                stop.clone(),
                fds.clone(),
                connections.clone(),
                fleet.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    fds.fetch_max(open_descriptors(), Ordering::Relaxed);
                    connections.fetch_max(fleet.open_connections(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Sampler {
            stop,
            fds,
            connections,
            thread: Some(thread),
        }
    }

    /// (most descriptors, most fleet connections) seen so far.
    fn peaks(&self) -> (usize, usize) {
        (
            self.fds.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn health_sweep(fleet: &Fleet, concurrency: usize) -> Vec<String> {
    let results = fleet
        .sweep_all(
            &Call::Health,
            SweepOptions {
                concurrency: Some(concurrency),
                deadline: None,
            },
            |_| Flow::Continue,
        )
        .unwrap();
    results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Ok(_) => None,
            Outcome::Err(e) => Some(format!("{}: {e}", r.host.address)),
            Outcome::NotAttempted => Some(format!("{}: not attempted", r.host.address)),
        })
        .collect()
}

#[test]
fn a_budget_of_five_holds_over_twenty_hosts_and_reconnects_resume() {
    let _serial = serial();
    let pki = TestPki::new().unwrap();
    let swarm = Swarm::start(&pki.ca, &[Behaviour::Healthy; 20]).unwrap();
    let fleet = Arc::new(
        Fleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On).unwrap(),
    );
    assert!(fleet.set_max_open_connections(0).is_err());
    fleet.set_max_open_connections(5).unwrap();
    let sampler = Sampler::start(&fleet);
    for round in 0..3 {
        // More threads asked for than the budget allows: the sweep runs
        // at most five hosts at once.
        let failures = health_sweep(&fleet, 16);
        assert!(failures.is_empty(), "round {round}: {failures:?}");
        assert!(
            fleet.open_connections() <= 5,
            "{}",
            fleet.open_connections()
        );
    }
    let (_, most) = sampler.peaks();
    drop(sampler);
    assert!(most <= 5, "{most} connections were open at once");
    // 60 calls over 20 hosts with 5 connections: hosts were closed and
    // reconnected, and the reconnects resumed their sessions.
    assert!(
        fleet.connection_evictions() >= 40,
        "{}",
        fleet.connection_evictions()
    );
    let counts = fleet.handshake_counts();
    assert!(counts.resumed >= 30, "{counts:?}");
    assert!(counts.full <= 25, "{counts:?}");
    // The budget cut only idle connections: every call was answered once.
    for member in swarm.members() {
        let requests = member.worker.as_ref().unwrap().ledger().len();
        assert_eq!(requests, 3, "{}", member.record["name"]);
    }
}

const CHILD_DIR: &str = "DECNET_BUDGET_SWARM_DIR";
const HOSTS: usize = 3000;

/// Not a test: the stand-ins of the test below, served from a process of
/// their own (which raises its own descriptor limit) so that the fleet's
/// process can run under a soft limit of 1,024.
#[test]
#[ignore = "run by a_fleet_of_3000_hosts_works_under_a_soft_limit_of_1024_descriptors"]
fn serve_stand_ins_for_the_descriptor_test() {
    let dir = std::env::var(CHILD_DIR).expect("run by the descriptor test");
    let dir = Path::new(&dir);
    let Err(error) = serve_evented_swarm(dir, &dir.join("ca"), Ipv4Addr::LOCALHOST, 0, HOSTS, None);
    panic!("swarm: {error}");
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_stand_ins(dir: &Path) -> KillOnDrop {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "serve_stand_ins_for_the_descriptor_test",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir)
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let ready = Instant::now() + Duration::from_secs(300);
    while !dir.join("ready").exists() {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("the stand-ins' process ended: {status}");
        }
        assert!(
            Instant::now() < ready,
            "the stand-ins were not ready in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn a_fleet_of_3000_hosts_works_under_a_soft_limit_of_1024_descriptors() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let _stand_ins = start_stand_ins(dir.path());
    println!("{HOSTS} stand-ins ready in {:?}", began.elapsed());
    let hosts: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("hosts.json")).unwrap()).unwrap();
    let master: PathBuf = dir.path().join("ca").join("master");
    let identity = Identity::load_dir(&master).unwrap();

    // This process from now on: a common default soft limit.
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    rlimit::Resource::NOFILE.set(1024, hard).unwrap();
    let restore = scopeguard(move || {
        let _ = raise_fd_limit(soft);
    });

    let fleet = Arc::new(Fleet::from_json(&identity, &hosts, HostnameVerification::On).unwrap());
    let budget = fleet.max_open_connections();
    assert_eq!(budget, 768, "the default keeps a quarter of 1,024 free");
    let baseline = open_descriptors();
    let sampler = Sampler::start(&fleet);
    for round in 0..2 {
        let began = Instant::now();
        let failures = health_sweep(&fleet, 64);
        println!(
            "round {round}: {HOSTS} hosts in {:?}, {} evictions, {:?}",
            began.elapsed(),
            fleet.connection_evictions(),
            fleet.handshake_counts()
        );
        assert!(
            failures.is_empty(),
            "round {round}: {} failures, first {:?}",
            failures.len(),
            failures.first()
        );
    }
    let (fds, connections) = sampler.peaks();
    drop(sampler);
    println!("peaks: {fds} descriptors ({baseline} before the sweeps), {connections} connections");
    assert!(
        connections <= budget,
        "{connections} connections open at once"
    );
    assert!(
        fds <= baseline + budget + 16,
        "{fds} descriptors open at once ({baseline} before the sweeps, budget {budget})"
    );
    let counts = fleet.handshake_counts();
    assert!(
        counts.resumed as usize >= HOSTS - budget - 64,
        "the second sweep resumes what the budget closed: {counts:?}"
    );
    drop(fleet);
    drop(restore);
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
