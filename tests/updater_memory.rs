//! A 64 MiB tarball sent from a file streams from disk: the process's
//! resident memory grows by far less than the tarball while it is hashed
//! and uploaded. Alone in its own test binary, so no other test's memory
//! is counted.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use decnet_agent_client::testkit::{StandInUpdater, TestPki};
use decnet_agent_client::{HostnameVerification, Tarball, UpdaterClient};

const SIZE: usize = 64 * 1024 * 1024;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_64_mib_tarball_from_a_file_is_sent_without_holding_it_in_memory() {
    let pki = TestPki::new().unwrap();
    let bundle = pki
        .worker_bundle_for("updater@worker-1", &["127.0.0.1"])
        .unwrap();
    let updater = StandInUpdater::start(&bundle).unwrap();
    let client = UpdaterClient::new(
        &pki.master,
        "127.0.0.1",
        updater.port(),
        &updater.fingerprint(),
        HostnameVerification::On,
    )
    .unwrap();
    // Warm up: the first exchange allocates the TLS and HTTP buffers.
    client.update(Tarball::Bytes(b"warm-up"), "warm").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tgz");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut chunk = vec![0u8; 1024 * 1024];
        for _ in 0..SIZE / chunk.len() {
            for b in chunk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            file.write_all(&chunk).unwrap();
        }
        file.flush().unwrap();
    }
    let expected = Tarball::File(&path).sha256().unwrap();

    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let body = client.update(Tarball::File(&path), "big1").unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
    assert_eq!(body["release"]["sha"], "big1");

    let upload = updater.uploads().pop().unwrap();
    assert_eq!(upload.tarball_len, SIZE as u64);
    assert_eq!(upload.tarball_sha256, expected);
    assert_eq!(upload.fields["sha256"], expected);

    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    println!(
        "RSS baseline {} MiB, peak growth {:.1} MiB while sending {} MiB",
        baseline >> 20,
        growth as f64 / (1024.0 * 1024.0),
        SIZE >> 20
    );
    assert!(
        growth < (SIZE / 8) as u64,
        "RSS grew by {growth} bytes sending a {SIZE}-byte tarball"
    );
}
