//! Fleet benchmark: a health sweep over 16, 256 and 1,000 stand-in workers
//! (or 10,000: event-driven stand-ins, served by other processes, this
//! binary re-run as swarm servers of 5,000 members at most), first
//! sweep (a handshake each) and second sweep (kept alive), against a
//! thread per host around the single-host API; then the sweep's
//! concurrency at 256 workers. Reports wall time, client CPU time, peak
//! threads, peak file descriptors and client RSS per kept-alive host.
//! Prints figures; asserts nothing about time. Long: run by hand. RSS is
//! measured in a fresh process per size, so no memory an earlier case
//! freed hides the growth.
//!
//! `cargo bench --features testkit --bench fleet` (the README's figures).
//! `FLEET_BENCH_SIZES=16,256` picks other sizes (the thread-per-host
//! comparison runs up to 1,000 hosts). `FLEET_BENCH_BUDGET=1000` adds, at
//! every size above it, two sweeps of a fleet capped at that many open
//! connections: wall and CPU time, peak descriptors against the budget,
//! evictions and resumed handshakes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use decnet_agent_client::fleet::{Call, Flow, SweepOptions};
use decnet_agent_client::testkit::{raise_fd_limit, serve_evented_swarm};
use decnet_agent_client::{AgentClient, Fleet, HostRecord, HostnameVerification, Identity};
use serde_json::Value;

const SERVE_FLAG: &str = "--serve-swarm";
const RSS_FLAG: &str = "--measure-rss";
const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == SERVE_FLAG) {
        // SERVE_FLAG CA_DIR PART_DIR IP FIRST COUNT [IDLE_MS]
        let (ca_dir, dir) = (PathBuf::from(&args[at + 1]), PathBuf::from(&args[at + 2]));
        let ip: Ipv4Addr = args[at + 3].parse().expect("ip");
        let first: usize = args[at + 4].parse().expect("first");
        let count: usize = args[at + 5].parse().expect("count");
        let idle = args
            .get(at + 6)
            .map(|ms| Duration::from_millis(ms.parse().expect("idle ms")));
        match serve_evented_swarm(&dir, &ca_dir, ip, first, count, idle) {
            Ok(never) => match never {},
            Err(e) => {
                eprintln!("swarm server: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Some(at) = args.iter().position(|a| a == RSS_FLAG) {
        measure_rss(Path::new(&args[at + 1]));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    raise_fd_limit(16_384).expect("raise the fd limit");
    let sizes: Vec<usize> = std::env::var("FLEET_BENCH_SIZES")
        .unwrap_or_else(|_| "16,256,1000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("FLEET_BENCH_SIZES"))
        .collect();
    println!(
        "client: {} cores; medians of {ROUNDS} rounds; workers in another process",
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<34} {:>9} {:>10} {:>9} {:>8} {:>8}",
        "case", "wall ms", "cpu ms", "cpu/host", "threads", "fds"
    );
    let budget: Option<usize> = std::env::var("FLEET_BENCH_BUDGET")
        .ok()
        .map(|b| b.parse().expect("FLEET_BENCH_BUDGET"));
    for &n in &sizes {
        let server = Server::start(n);
        let modes: &[(&str, Mode)] = if n <= 1000 {
            &[
                ("fleet (64 threads)", Mode::Fleet(64)),
                ("thread per host", Mode::ThreadPerHost),
            ]
        } else {
            &[("fleet (64 threads)", Mode::Fleet(64))]
        };
        for &(label, run) in modes {
            let mut cold = Vec::new();
            let mut warm = Vec::new();
            for _ in 0..ROUNDS {
                let (c, w) = run.measure(&server);
                cold.push(c);
                warm.push(w);
            }
            let (cold, warm) = (median(cold), median(warm));
            cold.print(&format!("{n:>5} {label}, 1st sweep"), n);
            warm.print(&format!("{n:>5} {label}, 2nd sweep"), n);
            println!(
                "{:<34} {:>9.1}x",
                format!("{n:>5} {label}, 1st / 2nd"),
                cold.wall_ms / warm.wall_ms
            );
        }
        if n <= 256 {
            python_reference(&server, n);
        }
        let rss = Command::new(std::env::current_exe().unwrap())
            .args([RSS_FLAG, server.dir.path().to_str().unwrap()])
            .output()
            .unwrap();
        print!("{n:>5} {}", String::from_utf8_lossy(&rss.stdout));
        if n >= 256 {
            resumed_sweeps(n);
        }
        if let Some(budget) = budget.filter(|&b| b < n) {
            budget_sweeps(&server, n, budget);
        }
        if n == 256 {
            for concurrency in [4, 16, 64, 256] {
                let mut cold = Vec::new();
                let mut warm = Vec::new();
                for _ in 0..ROUNDS {
                    let (c, w) = Mode::Fleet(concurrency).measure(&server);
                    cold.push(c);
                    warm.push(w);
                }
                median(cold).print(&format!("  256 concurrency {concurrency}, 1st"), n);
                median(warm).print(&format!("  256 concurrency {concurrency}, 2nd"), n);
            }
        }
    }
}

/// The sweep after every worker closed its idle connections (the
/// reference worker does after ~5 s; these after 200 ms): full handshakes
/// against resumed ones, each fleet's second sweep, rounds alternating.
fn resumed_sweeps(n: usize) {
    const IDLE: Duration = Duration::from_millis(200);
    let server = Server::start_with(n, Some(IDLE));
    let mut samples = [Vec::new(), Vec::new()];
    let mut counts = [(0, 0), (0, 0)];
    for _ in 0..ROUNDS {
        for (i, resume) in [false, true].into_iter().enumerate() {
            let fleet = Fleet::from_json(&server.identity, &server.hosts, HostnameVerification::On)
                .unwrap();
            fleet.set_session_resumption(resume);
            let sweep = || {
                let results = fleet
                    .sweep_all(&Call::Health, SweepOptions::default(), |_| Flow::Continue)
                    .unwrap();
                assert!(results.iter().all(|r| r.is_ok()), "a host failed");
            };
            sweep();
            thread::sleep(IDLE * 3);
            samples[i].push(sampled(sweep));
            let c = fleet.handshake_counts();
            counts[i] = (c.full, c.resumed);
        }
    }
    let [full, resumed] = samples.map(median);
    full.print(&format!("{n:>5} after idle close, full"), n);
    resumed.print(&format!("{n:>5} after idle close, resumed"), n);
    println!(
        "{:<34} {:>9.2}x {:>9.2}x   (handshakes full/resumed: {:?} and {:?})",
        format!("{n:>5} resumed / full (wall, cpu)"),
        resumed.wall_ms / full.wall_ms,
        resumed.cpu_ms / full.cpu_ms,
        counts[0],
        counts[1]
    );
}

/// Two sweeps of a fleet capped at `budget` open connections over `n`
/// hosts: each sweep closes least recently used hosts to make room, and
/// the second one's reconnects resume.
fn budget_sweeps(server: &Server, n: usize, budget: usize) {
    let fleet =
        Fleet::from_json(&server.identity, &server.hosts, HostnameVerification::On).unwrap();
    fleet.set_max_open_connections(budget).unwrap();
    let before = fd_count();
    let sweep = || {
        let results = fleet
            .sweep_all(&Call::Health, SweepOptions::default(), |_| Flow::Continue)
            .unwrap();
        assert!(results.iter().all(|r| r.is_ok()), "a host failed");
    };
    let first = sampled(sweep);
    let second = sampled(sweep);
    first.print(&format!("{n:>5} budget {budget}, 1st sweep"), n);
    second.print(&format!("{n:>5} budget {budget}, 2nd sweep"), n);
    let counts = fleet.handshake_counts();
    println!(
        "{n:>5} budget {budget}: peak descriptors {} over the {before} before ({} over budget), \
         {} evictions, handshakes full {} resumed {}",
        first.fds.max(second.fds),
        first.fds.max(second.fds).saturating_sub(before + budget),
        fleet.connection_evictions(),
        counts.full,
        counts.resumed
    );
}

/// In a fresh process (so no memory an earlier case freed is reused):
/// the client's RSS growth per host once the fleet is made, and after two
/// health sweeps have left a connection kept alive to every host.
fn measure_rss(dir: &Path) {
    raise_fd_limit(16_384).expect("raise the fd limit");
    let hosts: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hosts.json")).unwrap()).unwrap();
    let identity = Identity::load_dir(&dir.join("ca").join("master")).unwrap();
    let before = rss_kib() as f64;
    let fleet = Fleet::from_json(&identity, &hosts, HostnameVerification::On).unwrap();
    let built = rss_kib() as f64;
    for _ in 0..2 {
        let results = fleet
            .sweep_all(&Call::Health, SweepOptions::default(), |_| Flow::Continue)
            .unwrap();
        assert!(results.iter().all(|r| r.is_ok()), "a host failed");
    }
    let kept = rss_kib() as f64;
    let n = fleet.len() as f64;
    println!(
        "client RSS per host (fresh process): {:.1} KiB for the fleet, {:.1} KiB with a connection kept alive",
        (built - before) / n,
        (kept - before) / n
    );
}

/// The reference master's pattern (asyncio.gather, a pin-probe handshake
/// and a fresh httpx client per host) from `benches/python_fleet_peer.py`,
/// when python3 with httpx is at hand.
fn python_reference(server: &Server, n: usize) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_fleet_peer.py");
    let output = Command::new("python3")
        .args([
            script,
            server.dir.path().join("ca").to_str().unwrap(),
            server.dir.path().join("hosts.json").to_str().unwrap(),
            &ROUNDS.to_string(),
        ])
        .output();
    let figures = output
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok());
    match figures {
        Some(f) => {
            let wall = f["wall_ms"].as_f64().unwrap_or(0.0);
            let cpu = f["cpu_ms"].as_f64().unwrap_or(0.0);
            println!(
                "{:<34} {wall:>9.1} {cpu:>10.1} {:>9.3} {:>8} {:>8}   ({} of {n} answered)",
                format!("{n:>5} python asyncio+httpx, 1 sweep"),
                cpu / n as f64,
                "-",
                "-",
                f["ok"]
            );
        }
        None => println!("{n:>5} python asyncio+httpx: skipped (needs python3 with httpx)"),
    }
}

/// Stand-ins served by one process at most: each costs a listening socket
/// and a kept-alive connection there, and the hard descriptor limit of
/// this machine kind is 20,000.
const MEMBERS_PER_SERVER: usize = 5_000;

/// Which loopback address the next swarm server listens on.
static NEXT_ADDRESS: AtomicU8 = AtomicU8::new(0);

/// A swarm of healthy event-driven stand-ins in child processes (one per
/// [`MEMBERS_PER_SERVER`] members), sharing one CA; `dir/hosts.json` holds
/// every member's record.
struct Server {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    hosts: Value,
    identity: Identity,
}

impl Server {
    fn start(count: usize) -> Server {
        Server::start_with(count, None)
    }

    /// Stand-ins that close connections idle for `idle_close`, if given.
    fn start_with(count: usize, idle_close: Option<Duration>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let identity = Identity::ensure(Some(&ca_dir)).unwrap();
        let parts: Vec<(PathBuf, usize, usize)> = (0..count)
            .step_by(MEMBERS_PER_SERVER)
            .enumerate()
            .map(|(k, first)| {
                let part = dir.path().join(format!("part{k}"));
                std::fs::create_dir(&part).unwrap();
                (part, first, MEMBERS_PER_SERVER.min(count - first))
            })
            .collect();
        let children = parts
            .iter()
            .map(|(part, first, members)| {
                // Every part of every swarm on a loopback address of its
                // own, so that no two share a port range.
                let serial = NEXT_ADDRESS.fetch_add(1, Ordering::Relaxed);
                let ip = Ipv4Addr::new(127, 1, serial / 250, 1 + serial % 250);
                let mut args = vec![
                    SERVE_FLAG.to_string(),
                    ca_dir.to_str().unwrap().to_string(),
                    part.to_str().unwrap().to_string(),
                    ip.to_string(),
                    first.to_string(),
                    members.to_string(),
                ];
                args.extend(idle_close.map(|d| d.as_millis().to_string()));
                Command::new(std::env::current_exe().unwrap())
                    .args(args)
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let until = Instant::now() + Duration::from_secs(300);
        let mut hosts = Vec::with_capacity(count);
        for (part, _, _) in &parts {
            while !part.join("ready").exists() {
                assert!(Instant::now() < until, "swarm not ready");
                thread::sleep(Duration::from_millis(50));
            }
            let records: Value =
                serde_json::from_str(&std::fs::read_to_string(part.join("hosts.json")).unwrap())
                    .unwrap();
            hosts.extend(records.as_array().unwrap().iter().cloned());
        }
        let hosts = Value::Array(hosts);
        std::fs::write(dir.path().join("hosts.json"), hosts.to_string()).unwrap();
        Server {
            children,
            dir,
            hosts,
            identity,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Fleet(usize),
    ThreadPerHost,
}

#[derive(Clone, Copy, Default)]
struct Sample {
    wall_ms: f64,
    cpu_ms: f64,
    threads: usize,
    fds: usize,
}

impl Sample {
    fn print(&self, label: &str, n: usize) {
        println!(
            "{label:<34} {:>9.1} {:>10.1} {:>9.3} {:>8} {:>8}",
            self.wall_ms,
            self.cpu_ms,
            self.cpu_ms / n as f64,
            self.threads,
            self.fds,
        );
    }
}

/// The median round by wall time.
fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by(|a, b| a.wall_ms.total_cmp(&b.wall_ms));
    samples[samples.len() / 2]
}

impl Mode {
    /// Two health sweeps (a handshake each, then kept alive) with fresh
    /// clients.
    fn measure(self, server: &Server) -> (Sample, Sample) {
        match self {
            Mode::Fleet(concurrency) => {
                let fleet =
                    Fleet::from_json(&server.identity, &server.hosts, HostnameVerification::On)
                        .unwrap();
                let options = SweepOptions {
                    concurrency: Some(concurrency),
                    deadline: None,
                };
                let sweep = || {
                    let results = fleet
                        .sweep_all(&Call::Health, options, |_| Flow::Continue)
                        .unwrap();
                    assert!(results.iter().all(|r| r.is_ok()), "a host failed");
                };
                (sampled(sweep), sampled(sweep))
            }
            Mode::ThreadPerHost => {
                let records: Vec<HostRecord> = server
                    .hosts
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| HostRecord::from_value(r).unwrap())
                    .collect();
                let clients: Vec<Arc<AgentClient>> = records
                    .into_iter()
                    .map(|r| {
                        Arc::new(
                            AgentClient::new(&server.identity, r, HostnameVerification::On)
                                .unwrap(),
                        )
                    })
                    .collect();
                let sweep = || {
                    let handles: Vec<_> = clients
                        .iter()
                        .map(|c| {
                            let c = c.clone();
                            thread::spawn(move || c.health().is_ok())
                        })
                        .collect();
                    let ok = handles.into_iter().all(|h| h.join().unwrap());
                    assert!(ok, "a host failed");
                };
                (sampled(sweep), sampled(sweep))
            }
        }
    }
}

/// Runs `body` while a sampler thread records peak threads and fds.
fn sampled(body: impl FnOnce()) -> Sample {
    let stop = Arc::new(AtomicBool::new(false));
    let peak_threads = Arc::new(AtomicUsize::new(0));
    let peak_fds = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, threads, fds) = (stop.clone(), peak_threads.clone(), peak_fds.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                threads.fetch_max(thread_count(), Ordering::Relaxed);
                fds.fetch_max(fd_count(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let cpu_before = cpu_ms();
    let began = Instant::now();
    body();
    let wall = began.elapsed();
    let cpu = cpu_ms() - cpu_before;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    Sample {
        wall_ms: wall.as_secs_f64() * 1e3,
        cpu_ms: cpu,
        // Less the sampler itself.
        threads: peak_threads.load(Ordering::Relaxed).saturating_sub(1),
        fds: peak_fds.load(Ordering::Relaxed),
    }
}

fn status_field(name: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn thread_count() -> usize {
    status_field("Threads:")
}

fn rss_kib() -> usize {
    status_field("VmRSS:")
}

fn fd_count() -> usize {
    std::fs::read_dir(Path::new("/proc/self/fd")).map_or(0, |d| d.count())
}

/// This process's user + system CPU time, ms (getrusage: microseconds).
fn cpu_ms() -> f64 {
    // SAFETY: getrusage writes one `rusage` into memory we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}
