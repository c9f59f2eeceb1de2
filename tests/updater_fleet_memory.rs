//! A push of a 64 MiB tarball file to many stand-in updaters at once
//! streams it from disk to each: the process's resident memory grows by
//! less than the tarball, where holding it once per host in flight would
//! grow by a multiple of it. Alone in its own test binary, so no other
//! test's memory is counted (the stand-ins, which hash what they receive
//! without keeping it, run in this process too).
//!
//! CI runs 4 hosts at concurrency 4 (a debug build moves about 15 MiB/s
//! through TLS, multipart and SHA-256 on both ends). The figure,
//! 100 hosts at concurrency 16, is the ignored test, run by hand:
//! `cargo test --release --all-features --test updater_fleet_memory --
//! --ignored --nocapture` (about 30 s).

mod common;

use std::time::{Duration, Instant};

use common::memory::{write_noise_file, PeakRss};
use decnet_agent_client::fleet::{Flow, SweepOptions};
use decnet_agent_client::rollout::{HostStatus, RolloutPolicy, StopReason, UpdaterFleet};
use decnet_agent_client::testkit::{raise_fd_limit, TestPki, UpdaterBehaviour, UpdaterSwarm};
use decnet_agent_client::{HostnameVerification, Tarball};

const SIZE: usize = 64 * 1024 * 1024;

#[test]
fn pushing_64_mib_to_4_updaters_at_once_streams_from_disk() {
    push_and_measure(4, 4);
}

#[test]
#[ignore = "minutes in a debug build; run by hand with --release"]
fn pushing_64_mib_to_100_updaters_at_concurrency_16_streams_from_disk() {
    push_and_measure(100, 16);
}

fn push_and_measure(hosts: usize, concurrency: usize) {
    raise_fd_limit(1024).unwrap();
    let pki = TestPki::new().unwrap();
    let swarm = UpdaterSwarm::start(&pki.ca, &vec![UpdaterBehaviour::Accept; hosts]).unwrap();
    let fleet =
        UpdaterFleet::from_json(&pki.master, &swarm.host_records(), HostnameVerification::On)
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("warm.tgz");
    std::fs::write(&small, b"warm-up").unwrap();
    let options = SweepOptions {
        concurrency: Some(concurrency),
        deadline: Some(Duration::from_secs(600)),
    };
    let policy = RolloutPolicy {
        canary: 0,
        ..RolloutPolicy::default()
    };
    // Warm up: every connection's TLS and HTTP buffers, every thread.
    let warm = fleet
        .push(&small, "warm", None, &policy, options, |_| Flow::Continue)
        .unwrap();
    assert_eq!(warm.summary.count(HostStatus::Updated), hosts);

    let path = dir.path().join("big.tgz");
    write_noise_file(&path, SIZE);
    let expected = Tarball::File(&path).sha256().unwrap();

    let rss = PeakRss::start();
    let began = Instant::now();
    let rollout = fleet
        .push(&path, "big1", Some(&expected), &policy, options, |_| {
            Flow::Continue
        })
        .unwrap();
    let took = began.elapsed();
    let (baseline, growth) = rss.growth();
    assert_eq!(rollout.summary.stop, StopReason::Completed);
    assert_eq!(rollout.summary.count(HostStatus::Updated), hosts);
    for member in swarm.members() {
        let upload = member.updater.uploads().pop().unwrap();
        assert_eq!(upload.tarball_len, SIZE as u64);
        assert_eq!(upload.tarball_sha256, expected);
    }

    println!(
        "RSS baseline {} MiB, peak growth {:.1} MiB pushing {} MiB to {hosts} updaters \
         at concurrency {concurrency} in {:.1} s",
        baseline >> 20,
        growth as f64 / (1024.0 * 1024.0),
        SIZE >> 20,
        took.as_secs_f64()
    );
    assert!(
        growth < SIZE as u64,
        "RSS grew by {growth} bytes pushing a {SIZE}-byte tarball"
    );
}
