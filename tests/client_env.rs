//! Behaviour that depends on environment variables, in its own process so
//! no other test sees them change.

mod common;

use common::expect_kind;
use decnet_agent_client::testkit::{StandInWorker, TestPki};
use decnet_agent_client::{AgentClient, ErrorKind, HostRecord, HostnameVerification};

#[test]
fn environment_decides_hostname_checks_and_proxies_are_ignored() {
    let pki = TestPki::new().unwrap();
    let bundle = pki.worker_bundle_for("elsewhere", &["10.9.8.7"]).unwrap();
    let worker = StandInWorker::start(&bundle).unwrap();
    let record = HostRecord::from_value(&worker.host_record("w", true)).unwrap();
    let make = || {
        AgentClient::new(
            &pki.master,
            record.clone(),
            HostnameVerification::FromEnvironment,
        )
    };

    std::env::remove_var("DECNET_VERIFY_HOSTNAME");
    expect_kind(make().unwrap().health(), ErrorKind::Tls);
    std::env::set_var("DECNET_VERIFY_HOSTNAME", "false");
    make().unwrap().health().unwrap();
    std::env::set_var("DECNET_VERIFY_HOSTNAME", "TRUE");
    expect_kind(make().unwrap().health(), ErrorKind::Tls);
    std::env::set_var("DECNET_VERIFY_HOSTNAME", "maybe");
    expect_kind(make(), ErrorKind::InvalidArgument);

    // A proxy that would swallow every request: nothing listens there.
    std::env::set_var("DECNET_VERIFY_HOSTNAME", "false");
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "HTTP_PROXY",
    ] {
        std::env::set_var(var, "http://127.0.0.1:9");
    }
    let client = make().unwrap();
    client.health().unwrap();
    assert_eq!(worker.ledger().len(), 2);
}
