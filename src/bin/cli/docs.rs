//! Shell completions and the man page, generated from the clap definition
//! of the command line (`completions SHELL`, `manpage [--dir DIR]`), so they always
//! match it. `make install` writes them where shells and man look.

use std::io::Write;
use std::path::Path;

use clap::{CommandFactory, ValueEnum};
use decnet_agent_client::{Error, Result};

use crate::Cli;

/// The shells completions are generated for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    /// bash (bash-completion)
    Bash,
    /// zsh (a `_decnet-agent-client` function for `fpath`)
    Zsh,
    /// fish
    Fish,
}

/// The program's name, as shells and man know it.
const NAME: &str = "decnet-agent-client";

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> Result<()> {
    let mut command = Cli::command();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut command, NAME, &mut script);
    if let Shell::Bash = shell {
        script = bash_state_labels_fixed(&script);
    }
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("<stdout>", e))
}

/// clap_complete's bash script walks the words into a state named
/// `decnet__agent__client__subcmd__fleet` (the program's `-` written `__`),
/// but labels the state's `case` arm `decnet__subcmd__agent__subcmd__client__subcmd__fleet`
/// (every `-` of the whole path written `__subcmd__`), so no subcommand's
/// options ever complete (clap-rs/clap#6421). Spells the labels the way
/// the walk does; a script without the mismatch passes unchanged.
fn bash_state_labels_fixed(script: &[u8]) -> Vec<u8> {
    const SEP: &str = "__subcmd__";
    let text = String::from_utf8_lossy(script);
    let wrong = format!("{}{SEP}", NAME.replace('-', SEP));
    let right = format!("{}{SEP}", NAME.replace('-', "__"));
    text.replace(&wrong, &right).into_bytes()
}

/// Writes the man page (section 1, roff) to `out`.
pub fn manpage(out: &mut dyn Write) -> Result<()> {
    clap_mangen::Man::new(documented_command())
        .render(out)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("<stdout>", e))
}

/// Writes the man page and one page per subcommand, at every depth
/// (`decnet-agent-client-fleet.1`, `decnet-agent-client-updater-health.1`,
/// ...), into the existing folder `dir`: every page a page names under
/// SUBCOMMANDS.
pub fn manpages(dir: &Path) -> Result<()> {
    clap_mangen::generate_to(documented_command(), dir).map_err(|e| Error::io(dir, e))
}

/// The command line as the pages describe it: without clap's `help`
/// subcommands, which have no page of their own (`--help` is documented
/// on every page).
fn documented_command() -> clap::Command {
    Cli::command().disable_help_subcommand(true)
}
