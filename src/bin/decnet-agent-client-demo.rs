//! `decnet-agent-client-demo`: the README's main job, a self-contained demo
//! on loopback (temporary CA, a stand-in worker, every RPC with the pin on,
//! then a wrong pin refused). Built only with the `testkit` feature, so the
//! command-line tool users install carries no stand-in worker.

fn main() {
    let stdout = std::io::stdout();
    if let Err(e) = decnet_agent_client::testkit::run_demo(&mut stdout.lock()) {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}
