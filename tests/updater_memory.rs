//! A 64 MiB tarball sent from a file streams from disk: the process's
//! resident memory grows by far less than the tarball while it is hashed
//! and uploaded. Alone in its own test binary, so no other test's memory
//! is counted.

mod common;

use common::memory::{write_noise_file, PeakRss};
use decnet_agent_client::testkit::{StandInUpdater, TestPki};
use decnet_agent_client::{HostnameVerification, Tarball, UpdaterClient};

const SIZE: usize = 64 * 1024 * 1024;

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
    write_noise_file(&path, SIZE);
    let expected = Tarball::File(&path).sha256().unwrap();

    let rss = PeakRss::start();
    let body = client.update(Tarball::File(&path), "big1").unwrap();
    let (baseline, growth) = rss.growth();
    assert_eq!(body["release"]["sha"], "big1");

    let upload = updater.uploads().pop().unwrap();
    assert_eq!(upload.tarball_len, SIZE as u64);
    assert_eq!(upload.tarball_sha256, expected);
    assert_eq!(upload.fields["sha256"], expected);

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
