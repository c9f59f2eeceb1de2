//! Reconnects after the worker's idle close: full handshakes against
//! resumed TLS 1.3 ones, with ECDSA P-256 material (what this library
//! issues) and RSA-2048 material (what the reference issues) on both the
//! worker and the master side. Prints figures; asserts nothing about time.
//!
//! Run with `cargo bench --bench resumption --features testkit` (needs the
//! `openssl` command for the RSA keys).
//!
//! Each call waits until the worker has closed the idle connection, so
//! every call opens a new connection: the figures are one reconnect plus
//! one `GET /health`. "client CPU" is the calling thread's CPU time
//! (the stand-in worker runs on other threads).

use std::path::Path;
use std::time::{Duration, Instant};

use decnet_agent_client::testkit::{Fault, StandInWorker, TestPki};
use decnet_agent_client::{AgentClient, HostRecord, HostnameVerification, Identity};
use rustix::time::{clock_gettime, ClockId};

const CALLS: usize = 400;
const IDLE_CLOSE: Duration = Duration::from_millis(1);

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn median_us(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

struct Measured {
    wall_us: f64,
    cpu_us: f64,
    full: u64,
    resumed: u64,
}

/// `CALLS` reconnects, alternating the two clients call by call so that
/// drift on a shared machine affects both alike.
fn measure(clients: [&AgentClient; 2]) -> [Measured; 2] {
    let mut wall = [Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new()];
    for _ in 0..CALLS {
        for (i, client) in clients.iter().enumerate() {
            std::thread::sleep(IDLE_CLOSE * 5);
            let (started, cpu_started) = (Instant::now(), thread_cpu());
            client.health().unwrap();
            cpu[i].push(thread_cpu() - cpu_started);
            wall[i].push(started.elapsed());
        }
    }
    let [wall_full, wall_resumed] = wall;
    let [cpu_full, cpu_resumed] = cpu;
    let counts = |c: &AgentClient| c.handshake_counts();
    [
        Measured {
            wall_us: median_us(wall_full),
            cpu_us: median_us(cpu_full),
            full: counts(clients[0]).full,
            resumed: counts(clients[0]).resumed,
        },
        Measured {
            wall_us: median_us(wall_resumed),
            cpu_us: median_us(cpu_resumed),
            full: counts(clients[1]).full,
            resumed: counts(clients[1]).resumed,
        },
    ]
}

fn main() {
    let pki = TestPki::new().unwrap();
    let rsa_master = pki
        .rsa_bundle("decnet-master", &["IP:127.0.0.1", "DNS:decnet-master"])
        .unwrap();
    let rsa_identity = Identity::from_bundle(&rsa_master, Path::new("<rsa master>")).unwrap();
    let materials = [
        (
            "ECDSA P-256",
            &pki.master,
            pki.worker_bundle("bench").unwrap(),
        ),
        (
            "RSA-2048",
            &rsa_identity,
            pki.rsa_bundle("bench", &["IP:127.0.0.1", "DNS:bench"])
                .unwrap(),
        ),
    ];
    println!(
        "{:<14} {:<8} {:>10} {:>14} {:>20}",
        "material", "reconnect", "wall µs", "client CPU µs", "handshakes full/res."
    );
    for (name, master, bundle) in materials {
        let worker = StandInWorker::start(&bundle).unwrap();
        worker.set_fault(Fault::CloseIdleAfter(IDLE_CLOSE));
        let record = HostRecord::from_value(&worker.host_record("bench", true)).unwrap();
        let full = AgentClient::new(master, record.clone(), HostnameVerification::On).unwrap();
        full.set_session_resumption(false);
        let resumed = AgentClient::new(master, record, HostnameVerification::On).unwrap();
        let [f, r] = measure([&full, &resumed]);
        for (kind, m) in [("full", &f), ("resumed", &r)] {
            println!(
                "{name:<14} {kind:<8} {:>10.0} {:>14.0} {:>14}/{}",
                m.wall_us, m.cpu_us, m.full, m.resumed
            );
        }
        println!(
            "{name:<14} resumed/full: wall {:.2}x, client CPU {:.2}x",
            r.wall_us / f.wall_us,
            r.cpu_us / f.cpu_us
        );
    }
}
