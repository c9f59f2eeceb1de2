//! Shell completions and the man page, generated from the clap definition
//! of the command line (`completions SHELL`, `manpage`), so they always
//! match it. `make install` writes them where shells and man look.

use std::io::Write;

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
    clap_complete::generate(generator, &mut command, NAME, out);
    out.flush().map_err(|e| Error::io("<stdout>", e))
}

/// Writes the man page (section 1, roff) to `out`.
pub fn manpage(out: &mut dyn Write) -> Result<()> {
    let command = Cli::command();
    clap_mangen::Man::new(command)
        .render(out)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("<stdout>", e))
}
