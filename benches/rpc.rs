//! RPC benchmarks against the stand-in worker on loopback, each reported as
//! a ratio to "the floor": the same request over bare rustls with no client
//! library, measured in the same run. Prints figures; asserts nothing about
//! time.
//!
//! The warm cases also run with a log callback installed (a Rust hook, and
//! C callbacks at info, debug and trace), reported as a ratio to the same
//! call with none; every other case runs with no callback.
//!
//! Run with `cargo bench --bench rpc --features testkit`; prefix
//! `taskset -c 0` to keep client and worker on one core, as the performance
//! anchors do for their "same core" column.
//!
//! `--profile CASE CALLS` (CASE `floor`, `rust` or `c`) makes no report:
//! it sets up one warm connection, then makes CALLS warm `GET /health`
//! calls inside `rpc::profiled`, for a profiler to look at (callgrind's
//! `--toggle-collect=rpc::profiled`, or perf); docs/warm-call-profile.md
//! has the commands.

use std::ffi::{c_char, c_void, CStr};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use decnet_agent_client::events::{self, Level};
use decnet_agent_client::ffi;
use decnet_agent_client::pki::Bundle;
use decnet_agent_client::testkit::{StandInWorker, TestPki};
use decnet_agent_client::{AgentClient, HostRecord, HostnameVerification, Identity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const WARM_CALLS: usize = 5_000;
const COLD_CALLS: usize = 300;
const FAN_OUT: usize = 32;

/// Median and 90th percentile of a set of durations, in microseconds.
struct Figures {
    median_us: f64,
    p90_us: f64,
}

fn figures(mut samples: Vec<Duration>) -> Figures {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    Figures {
        median_us: at(0.5),
        p90_us: at(0.9),
    }
}

fn report(name: &str, f: &Figures, floor: Option<&Figures>) {
    let ratio = floor.map_or(String::new(), |fl| {
        format!("{:>7.2}x", f.median_us / fl.median_us)
    });
    println!(
        "{name:<52} {:>10.1} {:>10.1} {ratio}",
        f.median_us, f.p90_us
    );
}

/// The floor's client: rustls and a hand-written HTTP/1.1 exchange.
struct BareClient {
    config: Arc<ClientConfig>,
    addr: std::net::SocketAddr,
}

impl BareClient {
    fn new(identity: &Bundle, addr: std::net::SocketAddr) -> Self {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(identity.ca_cert_pem.as_bytes()).unwrap())
            .unwrap();
        let cert = CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![cert], key)
                .unwrap();
        config.resumption = rustls::client::Resumption::disabled();
        BareClient {
            config: Arc::new(config),
            addr,
        }
    }

    fn connect(&self) -> StreamOwned<ClientConnection, TcpStream> {
        let sock = TcpStream::connect(self.addr).unwrap();
        sock.set_nodelay(true).unwrap();
        let name = ServerName::IpAddress(self.addr.ip().into());
        let conn = ClientConnection::new(self.config.clone(), name).unwrap();
        StreamOwned::new(conn, sock)
    }

    /// One `GET /health` on `stream`, reading the whole response.
    fn exchange(stream: &mut StreamOwned<ClientConnection, TcpStream>, buf: &mut Vec<u8>) {
        Self::get(stream, buf, "/health")
    }

    /// One `GET path` on `stream`, reading the whole response.
    fn get(stream: &mut StreamOwned<ClientConnection, TcpStream>, buf: &mut Vec<u8>, path: &str) {
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: worker\r\naccept: application/json\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "worker closed");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = std::str::from_utf8(&buf[..head])
                    .unwrap()
                    .to_ascii_lowercase();
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap();
                if buf.len() >= head + 4 + length {
                    return;
                }
            }
        }
    }
}

fn pinned_record(worker: &StandInWorker) -> HostRecord {
    HostRecord::from_value(&worker.host_record("bench", true)).unwrap()
}

fn new_client(master: &Identity, worker: &StandInWorker) -> AgentClient {
    AgentClient::new(master, pinned_record(worker), HostnameVerification::On).unwrap()
}

/// One measured case: its name, the call, how many calls a round, the
/// case it is reported as a ratio to, and the log callback it installs
/// before each round (none when `None`).
struct Case<'a> {
    name: &'static str,
    call: Box<dyn FnMut() + 'a>,
    per_round: usize,
    baseline: Option<&'static str>,
    samples: Vec<Duration>,
    hook: Option<fn()>,
}

fn case<'a>(
    name: &'static str,
    per_round: usize,
    baseline: Option<&'static str>,
    call: impl FnMut() + 'a,
) -> Case<'a> {
    Case {
        name,
        call: Box::new(call),
        per_round,
        baseline,
        samples: Vec::new(),
        hook: None,
    }
}

/// A case that runs with `hook` installed.
fn hooked<'a>(
    name: &'static str,
    per_round: usize,
    baseline: &'static str,
    hook: fn(),
    call: impl FnMut() + 'a,
) -> Case<'a> {
    Case {
        hook: Some(hook),
        ..case(name, per_round, Some(baseline), call)
    }
}

/// Installs `c`'s log callback, or none.
fn enter(c: &Case<'_>) {
    events::clear_hook();
    if let Some(install) = c.hook {
        install();
    }
}

/// A Rust hook that formats each event, as a logger would.
fn rust_hook_info() {
    events::set_hook(Level::Info, |event| {
        black_box(event.to_json());
    });
}

/// A C callback that reads each event's text.
extern "C" fn c_sink(level: u32, event_json: *const c_char, _user_data: *mut c_void) {
    // SAFETY: the library passes a NUL-terminated string valid for the call.
    black_box((
        level,
        unsafe { CStr::from_ptr(event_json) }.to_bytes().len(),
    ));
}

fn c_callback(level: Level) {
    // SAFETY: a valid callback; it ignores user_data.
    let rc =
        unsafe { ffi::decnet_set_log_callback(level.code(), Some(c_sink), std::ptr::null_mut()) };
    assert_eq!(rc, ffi::decnet_result::DECNET_OK);
}

fn c_callback_info() {
    c_callback(Level::Info);
}

fn c_callback_debug() {
    c_callback(Level::Debug);
}

fn c_callback_trace() {
    c_callback(Level::Trace);
}

/// Runs the cases round-robin, so drift on a shared machine affects each
/// case alike, then reports medians and ratios.
fn run(mut cases: Vec<Case<'_>>, rounds: usize) {
    for c in &mut cases {
        enter(c);
        for _ in 0..c.per_round.min(20) {
            (c.call)();
        }
    }
    for _ in 0..rounds {
        for c in &mut cases {
            enter(c);
            for _ in 0..c.per_round {
                let started = Instant::now();
                (c.call)();
                c.samples.push(started.elapsed());
            }
        }
    }
    events::clear_hook();
    let results: Vec<(&str, Option<&str>, Figures)> = cases
        .into_iter()
        .map(|c| (c.name, c.baseline, figures(c.samples)))
        .collect();
    for (name, baseline, f) in &results {
        let base = baseline
            .and_then(|b| results.iter().find(|r| r.0 == b))
            .map(|r| &r.2);
        report(name, f, base);
    }
}

const FLOOR_WARM: &str = "floor warm: bare rustls, kept-alive GET /health";
const FLOOR_STATUS: &str = "floor warm: bare rustls, kept-alive GET /status";
const FLOOR_COLD: &str = "floor cold: connect + mTLS (ECDSA) + GET /health";
const FLOOR_COLD_RSA: &str = "floor cold: connect + mTLS (RSA-2048 worker) + GET";
const COLD: &str = "cold: new client + health (ECDSA worker)";
const WARM_RUST: &str = "warm health, Rust API, pinned";
const WARM_C: &str = "warm health, C ABI, pinned";

/// Makes `calls` calls of `call`: the one function a profiler collects in.
#[inline(never)]
fn profiled(calls: usize, call: &mut dyn FnMut()) {
    for _ in 0..calls {
        call();
    }
}

/// `--profile CASE CALLS`: warm health calls of one kind and nothing else,
/// after 100 unprofiled ones (the connection made and every lazy
/// allocation done).
fn profile(case: &str, calls: usize) {
    let pki = TestPki::new().unwrap();
    let worker = StandInWorker::start(&pki.worker_bundle("bench").unwrap()).unwrap();
    let mut call: Box<dyn FnMut()> = match case {
        "floor" => {
            let bare = BareClient::new(
                &Bundle::load(&pki.dir().join("master")).unwrap(),
                worker.addr(),
            );
            let mut stream = bare.connect();
            let mut buf = Vec::with_capacity(4096);
            Box::new(move || BareClient::exchange(&mut stream, &mut buf))
        }
        "rust" => {
            let client = new_client(&pki.master, &worker);
            Box::new(move || {
                black_box(client.health().unwrap());
            })
        }
        "c" => {
            let handle = c_client(&pki, &worker);
            Box::new(move || c_call(handle, ffi::decnet_client_health))
        }
        other => panic!("--profile takes floor, rust or c, not {other:?}"),
    };
    profiled(100, &mut call);
    profiled(calls, &mut call);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let [flag, case, calls] = &args[..] {
        if flag == "--profile" {
            return profile(case, calls.parse().expect("CALLS is a number"));
        }
    }
    let pki = TestPki::new().unwrap();
    let master_bundle = Bundle::load(&pki.dir().join("master")).unwrap();
    let ecdsa = StandInWorker::start(&pki.worker_bundle("bench").unwrap()).unwrap();
    let rsa_bundle = pki
        .rsa_bundle("rsa-worker", &["IP:127.0.0.1", "DNS:rsa-worker"])
        .unwrap();
    let rsa = StandInWorker::start(&rsa_bundle).unwrap();
    println!(
        "{:<52} {:>10} {:>10} {:>8}",
        "case", "median µs", "p90 µs", "ratio"
    );
    println!("{}", "-".repeat(84));

    let bare = BareClient::new(&master_bundle, ecdsa.addr());
    let bare_rsa = BareClient::new(&master_bundle, rsa.addr());
    let mut warm_stream = bare.connect();
    let mut status_stream = bare.connect();
    let mut buf_status = Vec::with_capacity(4096);
    let mut buf = Vec::with_capacity(4096);
    let mut buf_cold = Vec::with_capacity(4096);
    let mut buf_rsa = Vec::with_capacity(4096);
    let client = new_client(&pki.master, &ecdsa);
    let handle = c_client(&pki, &ecdsa);
    let per_round = WARM_CALLS / 10;
    let cold_round = COLD_CALLS / 10;
    run(
        vec![
            case(FLOOR_WARM, per_round, None, || {
                BareClient::exchange(&mut warm_stream, &mut buf)
            }),
            case(FLOOR_STATUS, per_round, None, || {
                BareClient::get(&mut status_stream, &mut buf_status, "/status")
            }),
            case(WARM_RUST, per_round, Some(FLOOR_WARM), || {
                black_box(client.health().unwrap());
            }),
            case(
                "warm status, Rust API, pinned",
                per_round,
                Some(FLOOR_STATUS),
                || {
                    black_box(client.status().unwrap());
                },
            ),
            case(WARM_C, per_round, Some(FLOOR_WARM), || {
                c_call(handle, ffi::decnet_client_health)
            }),
            case(
                "warm status, C ABI, pinned",
                per_round,
                Some(FLOOR_STATUS),
                || c_call(handle, ffi::decnet_client_status),
            ),
            hooked(
                "warm health, Rust API, hook at info (formats)",
                per_round,
                WARM_RUST,
                rust_hook_info,
                || {
                    black_box(client.health().unwrap());
                },
            ),
            hooked(
                "warm health, C ABI, callback at info",
                per_round,
                WARM_C,
                c_callback_info,
                || c_call(handle, ffi::decnet_client_health),
            ),
            hooked(
                "warm health, C ABI, callback at debug",
                per_round,
                WARM_C,
                c_callback_debug,
                || c_call(handle, ffi::decnet_client_health),
            ),
            hooked(
                "warm health, C ABI, callback at trace",
                per_round,
                WARM_C,
                c_callback_trace,
                || c_call(handle, ffi::decnet_client_health),
            ),
            case(FLOOR_COLD, cold_round, None, || {
                BareClient::exchange(&mut bare.connect(), &mut buf_cold)
            }),
            case(COLD, cold_round, Some(FLOOR_COLD), || {
                black_box(new_client(&pki.master, &ecdsa).health().unwrap());
            }),
            case(FLOOR_COLD_RSA, cold_round, None, || {
                BareClient::exchange(&mut bare_rsa.connect(), &mut buf_rsa)
            }),
            case(
                "cold: new client + health (RSA-2048 worker)",
                cold_round,
                Some(FLOOR_COLD_RSA),
                || {
                    black_box(new_client(&pki.master, &rsa).health().unwrap());
                },
            ),
        ],
        10,
    );
    // SAFETY: a handle made by c_client, freed once.
    unsafe { ffi::decnet_client_free(handle) };

    let fresh = tempfile::tempdir().unwrap();
    let mut n = 0;
    run(
        vec![
            case(
                "identity: create CA + master (ECDSA P-256)",
                5,
                None,
                || {
                    n += 1;
                    black_box(Identity::ensure(Some(&fresh.path().join(n.to_string()))).unwrap());
                },
            ),
            case("identity: load the master bundle", 200, None, || {
                black_box(Identity::load_dir(&pki.dir().join("master")).unwrap());
            }),
            case(
                "identity: ensure an existing CA + master",
                200,
                None,
                || {
                    black_box(Identity::ensure(Some(pki.dir())).unwrap());
                },
            ),
        ],
        10,
    );

    // Fan-out: one status call to each of 32 workers from 32 threads, each
    // with a new client (so 32 handshakes), against one cold RPC.
    let workers: Vec<StandInWorker> = (0..FAN_OUT)
        .map(|i| StandInWorker::start(&pki.worker_bundle(&format!("fan-{i}")).unwrap()).unwrap())
        .collect();
    let master = pki.master.clone();
    run(
        vec![
            case(COLD, 2, None, || {
                black_box(new_client(&pki.master, &ecdsa).health().unwrap());
            }),
            case(
                "fan-out: status from 32 workers, 32 threads (wall)",
                2,
                Some(COLD),
                || fan_out(&master, &workers),
            ),
        ],
        10,
    );
}

fn fan_out(master: &Identity, workers: &[StandInWorker]) {
    let barrier = Barrier::new(workers.len() + 1);
    std::thread::scope(|scope| {
        for worker in workers {
            let barrier = &barrier;
            scope.spawn(move || {
                let client = new_client(master, worker);
                barrier.wait();
                black_box(client.status().unwrap());
            });
        }
        barrier.wait();
    });
}

fn c_client(pki: &TestPki, worker: &StandInWorker) -> *mut ffi::decnet_client {
    let dir = std::ffi::CString::new(pki.dir().to_str().unwrap()).unwrap();
    let host = std::ffi::CString::new(worker.host_record("bench", true).to_string()).unwrap();
    let mut identity = std::ptr::null_mut();
    let mut client = std::ptr::null_mut();
    // SAFETY: valid C strings and out-pointers; the identity is freed once.
    unsafe {
        assert_eq!(
            ffi::decnet_identity_ensure(dir.as_ptr(), &mut identity),
            ffi::decnet_result::DECNET_OK
        );
        assert_eq!(
            ffi::decnet_client_new_from_host_json(identity, host.as_ptr(), 1, &mut client),
            ffi::decnet_result::DECNET_OK
        );
        ffi::decnet_identity_free(identity);
    }
    client
}

type Rpc = unsafe extern "C" fn(*const ffi::decnet_client, *mut *mut c_char) -> ffi::decnet_result;

fn c_call(client: *mut ffi::decnet_client, rpc: Rpc) {
    let mut out = std::ptr::null_mut();
    // SAFETY: a live handle and a valid out-pointer; the string is freed once.
    unsafe {
        assert_eq!(rpc(client, &mut out), ffi::decnet_result::DECNET_OK);
        black_box(&*out);
        ffi::decnet_string_free(out);
    }
}
