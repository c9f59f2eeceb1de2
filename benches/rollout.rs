//! Rollout benchmark: a push of one 16 MiB tarball file to 256 stand-in
//! updaters (in this process, real mutual TLS on loopback), at several
//! concurrencies, against what loopback can carry: the sum of the uploads'
//! bytes over the throughput of one upload measured alone (the serial
//! bound) and over raw TCP loopback throughput. Prints figures; asserts
//! nothing about time. Run by hand:
//!
//! `cargo bench --features testkit --bench rollout`
//! (`ROLLOUT_BENCH_HOSTS`, `ROLLOUT_BENCH_MIB`, `ROLLOUT_BENCH_CONCURRENCY`
//! pick other sizes; defaults 256, 16, "16,64").

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use decnet_agent_client::fleet::{Flow, SweepOptions};
use decnet_agent_client::rollout::{HostStatus, RolloutPolicy, UpdaterFleet};
use decnet_agent_client::testkit::{raise_fd_limit, TestPki, UpdaterBehaviour, UpdaterSwarm};
use decnet_agent_client::{HostnameVerification, Tarball, UpdaterClient};

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
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let hosts: usize = env_or("ROLLOUT_BENCH_HOSTS", "256").parse().unwrap();
    let mib: usize = env_or("ROLLOUT_BENCH_MIB", "16").parse().unwrap();
    let concurrencies: Vec<usize> = env_or("ROLLOUT_BENCH_CONCURRENCY", "16,64")
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    raise_fd_limit(16_384).unwrap();
    let pki = TestPki::new().unwrap();
    let swarm = UpdaterSwarm::start(&pki.ca, &vec![UpdaterBehaviour::Accept; hosts]).unwrap();
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
    let member = &swarm.members()[0];
    let client = UpdaterClient::from_host_value(
        &pki.master,
        &member.record,
        member.record["updater_port"].as_u64().unwrap() as u16,
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

    let fleet =
        UpdaterFleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On)
            .unwrap();
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
}
