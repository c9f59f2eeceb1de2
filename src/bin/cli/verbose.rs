//! `-v` and `-vv`: the library's events, one JSON line each, on stderr
//! (stdout keeps only the result).

use std::io::Write;

use decnet_agent_client::events::{self, Level};

/// Prints events on stderr from `-v` (info and debug, with errors and
/// warnings) or `-vv` (trace too: request and response bodies); nothing
/// without the flag.
pub fn install(verbosity: u8) {
    let level = match verbosity {
        0 => return,
        1 => Level::Debug,
        _ => Level::Trace,
    };
    events::set_hook(level, |event| {
        // A closed stderr must not fail the call.
        let _ = writeln!(std::io::stderr().lock(), "{event}");
    });
}
