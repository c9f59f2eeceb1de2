//! The README's main job: a self-contained demo on loopback.

fn main() {
    let stdout = std::io::stdout();
    if let Err(e) = decnet_agent_client::testkit::run_demo(&mut stdout.lock()) {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}
