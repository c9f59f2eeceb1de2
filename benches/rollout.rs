//! Rollout benchmark: a push of one 16 MiB tarball file to 256 stand-in
//! updaters (served by another process, this binary re-run as a server;
//! real mutual TLS on loopback), at several concurrencies, against what
//! loopback can carry: the sum of the uploads' bytes over the throughput
//! of one upload measured alone (the serial bound) and over raw TCP
//! loopback throughput; then, when `python3 -c 'import httpx'` works, the
//! reference master's way (`benches/rollout_httpx.py`: `asyncio.gather`
//! of httpx uploads, the tarball in memory) over the same stand-ins.
//! Prints figures; asserts nothing about time. Run by hand:
//!
//! `cargo bench --features testkit --bench rollout`
//! (`ROLLOUT_BENCH_HOSTS`, `ROLLOUT_BENCH_MIB`, `ROLLOUT_BENCH_CONCURRENCY`
//! pick other sizes; defaults 256, 16, "16,64").

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use decnet_agent_client::fleet::{Flow, SweepOptions};
use decnet_agent_client::identity::MASTER_DIR;
use decnet_agent_client::pki::CertificateAuthority;
use decnet_agent_client::rollout::{HostStatus, RolloutPolicy, UpdaterFleet};
use decnet_agent_client::testkit::{raise_fd_limit, UpdaterBehaviour, UpdaterSwarm};
use decnet_agent_client::{HostnameVerification, Identity, Tarball, UpdaterClient};

const SERVE_FLAG: &str = "--serve-updaters";

/// The server process: a CA and master identity in `dir/ca`, `count`
/// stand-in updaters, their records in `dir/hosts.json`, then `dir/ready`.
fn serve(dir: &Path, count: usize) -> ! {
    raise_fd_limit(16_384).unwrap();
    let ca_dir = dir.join("ca");
    Identity::ensure(Some(&ca_dir)).unwrap();
    let ca = CertificateAuthority::load(&ca_dir).unwrap();
    let swarm = UpdaterSwarm::start(&ca, &vec![UpdaterBehaviour::Accept; count]).unwrap();
    std::fs::write(dir.join("hosts.json"), swarm.host_records().to_string()).unwrap();
    std::fs::write(dir.join("ready"), b"").unwrap();
    loop {
        std::thread::park();
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Bytes per second through one loopback TCP connection, no TLS.
fn raw_loopback_throughput(bytes: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut buffer = vec![0u8; 256 * 1024];
        let mut total = 0;
        while total < bytes {
            match socket.read(&mut buffer).unwrap() {
                0 => break,
                n => total += n,
            }
        }
    });
    let mut socket = TcpStream::connect(addr).unwrap();
    let chunk = vec![0x5au8; 256 * 1024];
    let began = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        socket.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    drop(socket);
    reader.join().unwrap();
    bytes as f64 / began.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == SERVE_FLAG) {
        serve(Path::new(&args[at + 1]), args[at + 2].parse().unwrap());
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let hosts: usize = env_or("ROLLOUT_BENCH_HOSTS", "256").parse().unwrap();
    let mib: usize = env_or("ROLLOUT_BENCH_MIB", "16").parse().unwrap();
    let concurrencies: Vec<usize> = env_or("ROLLOUT_BENCH_CONCURRENCY", "16,64")
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    raise_fd_limit(16_384).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut server = Command::new(std::env::current_exe().unwrap())
        .args([
            SERVE_FLAG,
            work.path().to_str().unwrap(),
            &hosts.to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    while !work.path().join("ready").exists() {
        assert!(Instant::now() < until, "the stand-in server is not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ca_dir = work.path().join("ca");
    let master = Identity::load_dir(&ca_dir.join(MASTER_DIR)).unwrap();
    let hosts_path: PathBuf = work.path().join("hosts.json");
    let records: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&hosts_path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("release.tgz");
    let size = mib * 1024 * 1024;
    {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut data = vec![0u8; size];
        for b in data.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        std::fs::write(&path, &data).unwrap();
    }
    let sha256 = Tarball::File(&path).sha256().unwrap();
    let total = (size * hosts) as f64;
    println!(
        "rollout bench: {mib} MiB tarball to {hosts} stand-in updaters ({:.1} GiB uploaded), {} cores",
        total / f64::from(1 << 30),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let raw = raw_loopback_throughput(1 << 30);
    // One upload alone (warm connection): the per-stream cost of TLS,
    // multipart and the stand-in's SHA-256 on this machine.
    let record = &records[0];
    let client = UpdaterClient::from_host_value(
        &master,
        record,
        record["updater_port"].as_u64().unwrap() as u16,
        HostnameVerification::On,
    )
    .unwrap();
    client.update(Tarball::Bytes(b"warm"), "warm").unwrap();
    let began = Instant::now();
    client.update(Tarball::File(&path), "single").unwrap();
    let single = size as f64 / began.elapsed().as_secs_f64();
    let mibs = |bps: f64| bps / f64::from(1 << 20);
    println!(
        "raw TCP loopback {:.0} MiB/s -> bound {:.1} s; one TLS upload alone {:.0} MiB/s -> serial bound {:.1} s",
        mibs(raw),
        total / raw,
        mibs(single),
        total / single
    );

    let fleet = UpdaterFleet::from_json(&master, &records, HostnameVerification::On).unwrap();
    let policy = RolloutPolicy {
        canary: 1,
        ..RolloutPolicy::default()
    };
    for concurrency in concurrencies {
        let options = SweepOptions {
            concurrency: Some(concurrency),
            deadline: Some(Duration::from_secs(3600)),
        };
        let began = Instant::now();
        let rollout = fleet
            .push(
                &path,
                &format!("bench-{concurrency}"),
                Some(&sha256),
                &policy,
                options,
                |_| Flow::Continue,
            )
            .unwrap();
        let wall = began.elapsed().as_secs_f64();
        assert_eq!(rollout.summary.count(HostStatus::Updated), hosts);
        println!(
            "push, canary 1 then one batch, concurrency {concurrency:>3}: {wall:.1} s wall, \
             {:.0} MiB/s aggregate ({:.2}x the serial bound, {:.2}x the raw TCP bound)",
            mibs(total / wall),
            (total / single) / wall,
            (total / raw) / wall
        );
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/rollout_httpx.py");
    let python = Command::new("python3")
        .args([
            script,
            ca_dir.to_str().unwrap(),
            hosts_path.to_str().unwrap(),
            path.to_str().unwrap(),
            "bench-httpx",
        ])
        .output();
    match python {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let mut fields = text.split_whitespace();
            let wall: f64 = fields.next().unwrap().parse().unwrap();
            let updated = fields.next().unwrap_or("?");
            println!(
                "asyncio.gather + httpx (the reference's push, all at once, in memory): \
                 {wall:.1} s wall, {:.0} MiB/s aggregate, {updated}/{hosts} updated",
                mibs(total / wall)
            );
        }
        Ok(out) => println!(
            "asyncio + httpx comparison skipped: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        ),
        Err(e) => println!("asyncio + httpx comparison skipped: {e}"),
    }
    let _ = server.kill();
    let _ = server.wait();
}
