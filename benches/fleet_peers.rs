//! Our fleet beside its peers, in one run over one swarm of stand-in
//! workers (default 1,000; `FLEET_PEERS_SIZE`) served by another process
//! (this binary re-run with `--serve-swarm`): a health sweep of every host
//! by
//!
//! 1. our `Fleet` at concurrency 64: a fresh fleet built from the host
//!    list, its first sweep (a handshake each), then its second (kept
//!    alive);
//! 2. the reference master's host check, asyncio + httpx as it is written
//!    there (`benches/python_check_hosts.py`): an unbounded gather, a fresh
//!    client and a pin-probe handshake per host; its warm sweep keeps one
//!    client per host, which the reference does not;
//! 3. `curl --parallel --parallel-max 64`, one process over every host
//!    (a `-K` config of `next` groups), each transfer with the master's
//!    client certificate and key, the CA and `--pinnedpubkey` of that
//!    worker's public key; no warm sweep (curl keeps nothing across
//!    processes).
//!
//! Rounds alternate (three, each starting with the next peer). Reports per
//! peer and sweep the median round's wall and client CPU time, the fewest
//! hosts answered and the ratios to ours. Our CPU is this process's
//! (getrusage RUSAGE_SELF); a peer's is its own process's, read from the
//! rusage `wait4` returns for that child's pid (RUSAGE_CHILDREN sums every
//! child this process has reaped, so it singles out none), and for Python
//! also from inside, per sweep, without the interpreter's start. Asserts only
//! that every host answered every peer; nothing about time. Long: run by
//! hand.
//!
//! `FLEET_PEERS_PYTHON=/path/to/python cargo bench --features testkit --bench fleet_peers`
//! (a Python with httpx; default `python3`, skipped with a message when it
//! lacks httpx). `FLEET_PEERS_CURL` picks curl (default `curl`; skipped if
//! older than 7.66, which brought `--parallel`).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use decnet_agent_client::fleet::{Call, Flow, SweepOptions};
use decnet_agent_client::testkit::{raise_fd_limit, serve_swarm, Behaviour};
use decnet_agent_client::{Fleet, HostnameVerification, Identity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use sha2::{Digest, Sha256};

const SERVE_FLAG: &str = "--serve-swarm";
const ROUNDS: usize = 3;
const CONCURRENCY: usize = 64;
/// Lets one peer's closed connections wind down in the swarm before the
/// next peer starts.
const SETTLE: Duration = Duration::from_millis(500);
/// Proxy settings a child must not inherit: every byte stays on loopback.
const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == SERVE_FLAG) {
        let dir = PathBuf::from(&args[at + 1]);
        let count: usize = args[at + 2].parse().expect("count");
        match serve_swarm(&dir, &vec![Behaviour::Healthy; count]) {
            Ok(never) => match never {},
            Err(e) => {
                eprintln!("swarm server: {e}");
                std::process::exit(1);
            }
        }
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // The children (the swarm, Python, curl) inherit the raised limit.
    raise_fd_limit(16_384).expect("raise the fd limit");
    let n: usize = std::env::var("FLEET_PEERS_SIZE")
        .map_or(1000, |s| s.trim().parse().expect("FLEET_PEERS_SIZE"));

    let server = Server::start(n);
    let python = Python::find();
    let curl = Curl::find(&server);
    println!(
        "{n} stand-ins in another process; client: {} cores; load average before: {}",
        thread::available_parallelism().map_or(1, |c| c.get()),
        load_average()
    );
    match &python {
        Ok(p) => println!("python: {}", p.version),
        Err(why) => println!("python asyncio+httpx: skipped ({why})"),
    }
    match &curl {
        Ok(c) => println!("curl: {}", c.version),
        Err(why) => println!("curl --parallel: skipped ({why})"),
    }

    let mut ours = Runs::default();
    let mut py = Runs::default();
    let mut py_process = Vec::new();
    let mut cu = Runs::default();
    for round in 0..ROUNDS {
        for peer in (0..3).map(|i| (i + round) % 3) {
            match peer {
                0 => {
                    let (cold, warm) = our_fleet(&server);
                    ours.push(cold, Some(warm));
                }
                1 => {
                    if let Ok(p) = &python {
                        let (cold, warm, process) = p.run(&server);
                        py.push(cold, Some(warm));
                        py_process.push(process);
                    }
                }
                _ => {
                    if let Ok(c) = &curl {
                        cu.push(c.run(n), None);
                    }
                }
            }
            thread::sleep(SETTLE);
        }
    }
    println!("load average after: {}", load_average());

    println!();
    println!("median of {ROUNDS} rounds (by wall time); ok = fewest hosts answered in a round");
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>10} {:>8} {:>8}   wall ms, each round",
        "peer", "sweep", "wall ms", "cpu ms", "ok", "wall/us", "cpu/us"
    );
    let our_cold = median(&ours.cold);
    let our_warm = median(ours.warm.as_slice());
    let rows: [(&str, &str, &Runs); 3] = [
        ("our Fleet, 64 threads", "our Fleet, 64 threads", &ours),
        (
            "python asyncio+httpx, reference check",
            "python httpx, a kept client per host (*)",
            &py,
        ),
        (
            "curl --parallel --parallel-max 64",
            "curl --parallel --parallel-max 64",
            &cu,
        ),
    ];
    for (cold_label, warm_label, runs) in rows {
        if runs.cold.is_empty() {
            println!("{cold_label:<44} skipped");
            continue;
        }
        print_row(cold_label, "cold", &runs.cold, our_cold, n);
        if runs.warm.is_empty() {
            println!("{warm_label:<44} {:>5} {:>10}", "warm", "N/A");
        } else {
            print_row(warm_label, "warm", &runs.warm, our_warm, n);
        }
    }
    if !py.cold.is_empty() {
        let p = median(&py_process);
        println!(
            "(*) not the reference's pattern: it builds a client per check. Python's figures \
             are per sweep, from inside; its whole process (interpreter start, imports, both \
             sweeps and the unmeasured one between): {:.1} ms wall, {:.1} ms CPU",
            p.wall_ms, p.cpu_ms
        );
    }
    if !cu.cold.is_empty() {
        println!("curl's figures are its whole process, start to exit");
    }

    for (label, _, runs) in rows {
        for s in runs.cold.iter().chain(&runs.warm) {
            assert_eq!(s.ok, n, "{label}: {} of {n} hosts answered", s.ok);
        }
    }
}

/// One sweep's figures.
#[derive(Clone, Copy, Default)]
struct Sample {
    wall_ms: f64,
    cpu_ms: f64,
    ok: usize,
}

#[derive(Default)]
struct Runs {
    cold: Vec<Sample>,
    warm: Vec<Sample>,
}

impl Runs {
    fn push(&mut self, cold: Sample, warm: Option<Sample>) {
        self.cold.push(cold);
        self.warm.extend(warm);
    }
}

/// The median round by wall time (a default sample for none).
fn median(samples: &[Sample]) -> Sample {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.wall_ms.total_cmp(&b.wall_ms));
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn print_row(label: &str, sweep: &str, samples: &[Sample], ours: Sample, n: usize) {
    let m = median(samples);
    let fewest = samples.iter().map(|s| s.ok).min().unwrap_or(0);
    println!(
        "{label:<44} {sweep:>5} {:>10.1} {:>10.1} {:>10} {:>7.2}x {:>7.2}x   {}",
        m.wall_ms,
        m.cpu_ms,
        format!("{fewest}/{n}"),
        m.wall_ms / ours.wall_ms,
        m.cpu_ms / ours.cpu_ms,
        samples
            .iter()
            .map(|s| format!("{:.0}", s.wall_ms))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Our fleet: built from the host list and swept (the cold sweep, a
/// handshake each), then swept again over the kept-alive connections.
fn our_fleet(server: &Server) -> (Sample, Sample) {
    let options = SweepOptions {
        concurrency: Some(CONCURRENCY),
        deadline: None,
    };
    let sweep = |fleet: &Fleet| {
        fleet
            .sweep_all(&Call::Health, options, |_| Flow::Continue)
            .unwrap()
            .iter()
            .filter(|r| r.is_ok())
            .count()
    };
    let mut fleet = None;
    let cold = timed_self(|| {
        let built =
            Fleet::from_json(&server.identity, &server.hosts, HostnameVerification::On).unwrap();
        let ok = sweep(&built);
        fleet = Some(built);
        ok
    });
    let fleet = fleet.unwrap();
    let warm = timed_self(|| sweep(&fleet));
    (cold, warm)
}

/// Wall time and this process's CPU time around `body`, which returns the
/// number of hosts that answered.
fn timed_self(body: impl FnOnce() -> usize) -> Sample {
    let cpu = self_cpu_ms();
    let began = Instant::now();
    let ok = body();
    Sample {
        wall_ms: began.elapsed().as_secs_f64() * 1e3,
        cpu_ms: self_cpu_ms() - cpu,
        ok,
    }
}

/// This process's user + system CPU time, ms.
fn self_cpu_ms() -> f64 {
    // SAFETY: getrusage writes one `rusage` into memory we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    rusage_ms(&usage)
}

fn rusage_ms(usage: &libc::rusage) -> f64 {
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// Runs `command` to its end with stdout and stderr in `out` and `err`,
/// and returns its exit status and that process's own wall and CPU time
/// (the rusage wait4 returns for its pid, which counts its threads and
/// any children it waited for).
fn run_child(mut command: Command, out: &Path, err: &Path) -> (ExitStatus, Sample) {
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    command
        .stdin(Stdio::null())
        .stdout(File::create(out).unwrap())
        .stderr(File::create(err).unwrap());
    let began = Instant::now();
    let child = command.spawn().expect("spawn a peer");
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: wait4 writes one status and one `rusage` into memory we own;
    // it reaps only `pid`, a child `std` will not wait for again (`Child`
    // is dropped without a wait, which does nothing to the process).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let reaped = loop {
            let r = libc::wait4(pid, &mut status, 0, &mut usage);
            if r != -1 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                break r;
            }
        };
        assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
        usage
    };
    let wall_ms = began.elapsed().as_secs_f64() * 1e3;
    drop(child);
    let sample = Sample {
        wall_ms,
        cpu_ms: rusage_ms(&usage),
        ok: 0,
    };
    (ExitStatus::from_raw(status), sample)
}

/// A Python with httpx, running `benches/python_check_hosts.py`.
struct Python {
    interpreter: String,
    version: String,
}

impl Python {
    fn find() -> Result<Python, String> {
        let interpreter = std::env::var("FLEET_PEERS_PYTHON").unwrap_or_else(|_| "python3".into());
        let probe = Command::new(&interpreter)
            .args([
                "-c",
                "import sys, httpx; print(sys.version.split()[0], 'httpx', httpx.__version__)",
            ])
            .output();
        match probe {
            Ok(o) if o.status.success() => Ok(Python {
                version: format!(
                    "{} ({interpreter})",
                    String::from_utf8_lossy(&o.stdout).trim()
                ),
                interpreter,
            }),
            Ok(_) => Err(format!(
                "{interpreter} has no httpx; set FLEET_PEERS_PYTHON to a Python that has it"
            )),
            Err(e) => Err(format!(
                "cannot run {interpreter}: {e}; set FLEET_PEERS_PYTHON"
            )),
        }
    }

    /// One process: the cold check, then the warm sweep over kept clients;
    /// the figures of each sweep from inside, and of the whole process.
    fn run(&self, server: &Server) -> (Sample, Sample, Sample) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_check_hosts.py");
        let dir = server.dir.path();
        let mut command = Command::new(&self.interpreter);
        command.args([
            script,
            dir.join("ca").to_str().unwrap(),
            dir.join("hosts.json").to_str().unwrap(),
        ]);
        let (out, err) = (dir.join("python.out"), dir.join("python.err"));
        let (status, process) = run_child(command, &out, &err);
        let stdout = std::fs::read_to_string(&out).unwrap();
        assert!(
            status.success(),
            "python failed ({status}): {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        let figures: Value = serde_json::from_str(&stdout).expect("python's JSON");
        let sample = |sweep: &str| Sample {
            wall_ms: figures[sweep]["wall_ms"].as_f64().unwrap(),
            cpu_ms: figures[sweep]["cpu_ms"].as_f64().unwrap(),
            ok: figures[sweep]["ok"].as_u64().unwrap() as usize,
        };
        (sample("cold"), sample("warm"), process)
    }
}

/// curl with `--parallel`, and the `-K` config sweeping every host.
struct Curl {
    program: String,
    version: String,
    config: PathBuf,
    urls: HashSet<String>,
    dir: PathBuf,
}

impl Curl {
    fn find(server: &Server) -> Result<Curl, String> {
        let program = std::env::var("FLEET_PEERS_CURL").unwrap_or_else(|_| "curl".into());
        let output = Command::new(&program)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let version = String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let numbers: Vec<u32> = version
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .split('.')
            .map_while(|p| p.parse().ok())
            .collect();
        if numbers.len() < 2 || (numbers[0], numbers[1]) < (7, 66) {
            return Err(format!(
                "{program} is `{version}`; --parallel needs 7.66 or later"
            ));
        }
        let (config, urls) = curl_config(server);
        Ok(Curl {
            program,
            version,
            config,
            urls,
            dir: server.dir.path().to_path_buf(),
        })
    }

    /// One curl process over every host. A host answered when its transfer
    /// reported 200; each URL is counted once.
    fn run(&self, n: usize) -> Sample {
        let mut command = Command::new(&self.program);
        // -q first: no ~/.curlrc.
        command.arg("-q").arg("-K").arg(&self.config);
        let (out, err) = (self.dir.join("curl.out"), self.dir.join("curl.err"));
        let (status, mut sample) = run_child(command, &out, &err);
        let stdout = std::fs::read_to_string(&out).unwrap();
        let answered: HashSet<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("200 "))
            .filter(|url| self.urls.contains(*url))
            .collect();
        sample.ok = answered.len();
        if sample.ok != n || !status.success() {
            let stderr = std::fs::read_to_string(&err).unwrap_or_default();
            let first: Vec<&str> = stderr.lines().take(5).collect();
            println!("curl: {status}, {} of {n} answered; {first:?}", sample.ok);
        }
        sample
    }
}

/// Writes the `-K` config: global options, then per host a group (ended
/// by `next`) with its URL, the master's certificate and key, the CA, the
/// worker's public-key pin, the body thrown away and the status written.
fn curl_config(server: &Server) -> (PathBuf, HashSet<String>) {
    let dir = server.dir.path();
    let master = dir.join("ca").join("master");
    let quoted = |p: PathBuf| {
        let s = p.to_str().unwrap().to_string();
        assert!(
            !s.contains(['"', '\\']),
            "a path curl's config would need escaped: {s}"
        );
        s
    };
    let cert = quoted(master.join("worker.crt"));
    let key = quoted(master.join("worker.key"));
    let ca = quoted(dir.join("ca").join("ca.crt"));
    let pins = spki_pins(server);
    let mut text = format!("parallel\nparallel-max = {CONCURRENCY}\n");
    let mut urls = HashSet::new();
    for (i, (record, pin)) in server.records().zip(&pins).enumerate() {
        if i > 0 {
            text.push_str("next\n");
        }
        let url = format!(
            "https://{}:{}/health",
            record["address"].as_str().unwrap(),
            record["agent_port"]
        );
        writeln!(
            text,
            "url = \"{url}\"\nsilent\nshow-error\nmax-time = 30\ncert = \"{cert}\"\n\
             key = \"{key}\"\ncacert = \"{ca}\"\npinnedpubkey = \"sha256//{pin}\"\n\
             output = \"/dev/null\"\nwrite-out = \"%{{http_code}} %{{url_effective}}\\n\""
        )
        .unwrap();
        urls.insert(url);
    }
    let path = dir.join("curl.config");
    File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    (path, urls)
}

/// Each host's `--pinnedpubkey` value: the base64 of the SHA-256 of its
/// certificate's SubjectPublicKeyInfo (DER). The certificate is the one
/// the worker presents in a verified mutual-TLS handshake, checked against
/// the host record's pin (the SHA-256 of the whole certificate) first.
fn spki_pins(server: &Server) -> Vec<String> {
    let master = server.dir.path().join("ca").join("master");
    let cert = CertificateDer::from_pem_file(master.join("worker.crt")).unwrap();
    let key = PrivateKeyDer::from_pem_file(master.join("worker.key")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.identity.ca_cert().clone()).unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .unwrap(),
    );
    let records: Vec<&Value> = server.records().collect();
    let per_thread = records.len().div_ceil(8).max(1);
    thread::scope(|s| {
        let handles: Vec<_> = records
            .chunks(per_thread)
            .map(|chunk| {
                let config = config.clone();
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|r| spki_pin(&config, r))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

fn spki_pin(config: &Arc<rustls::ClientConfig>, record: &Value) -> String {
    let address = record["address"].as_str().unwrap();
    let port = record["agent_port"].as_u64().unwrap() as u16;
    let mut tcp = TcpStream::connect((address, port)).unwrap();
    let name = ServerName::try_from(address.to_string()).unwrap();
    let mut tls = rustls::ClientConnection::new(config.clone(), name).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).unwrap();
    }
    let der = tls.peer_certificates().unwrap()[0].clone();
    tls.send_close_notify();
    let _ = tls.complete_io(&mut tcp);
    let fingerprint: String = Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        record["client_cert_fingerprint"].as_str(),
        Some(fingerprint.as_str()),
        "{address}:{port} presented a certificate its record does not pin"
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    base64(&Sha256::digest(parsed.public_key().raw))
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let at = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = at(0) << 16 | at(1) << 8 | at(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(group >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The 1-, 5- and 15-minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A swarm of healthy stand-ins in a child process.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    hosts: Value,
    identity: Identity,
}

impl Server {
    fn start(count: usize) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([SERVE_FLAG, dir.path().to_str().unwrap(), &count.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(300);
        while !dir.path().join("ready").exists() {
            assert!(Instant::now() < until, "swarm not ready");
            thread::sleep(Duration::from_millis(50));
        }
        let hosts: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("hosts.json")).unwrap())
                .unwrap();
        let identity = Identity::load_dir(&dir.path().join("ca").join("master")).unwrap();
        Server {
            child,
            dir,
            hosts,
            identity,
        }
    }

    fn records(&self) -> impl Iterator<Item = &Value> {
        self.hosts.as_array().unwrap().iter()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
