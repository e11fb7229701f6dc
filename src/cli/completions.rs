//! `reflow-bridge completions SHELL` and `reflow-bridge man`: the command line described
//! for the shell and for `man`, generated from the same clap definition that parses it,
//! so they never fall behind a flag.
//!
//! ```sh
//! reflow-bridge completions bash > ~/.local/share/bash-completion/completions/reflow-bridge
//! reflow-bridge man > ~/.local/share/man/man1/reflow-bridge.1
//! ```

use clap::CommandFactory;

use crate::cli::output::{CliError, CliResult, Exit};

#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to write completions for
    shell: clap_complete::Shell,
}

/// Writes the completion script for the shell asked for on stdout.
pub(crate) fn completions(args: CompletionsArgs) -> CliResult {
    let mut command = crate::cli::Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "reflow-bridge",
        &mut std::io::stdout(),
    );
    Ok(())
}

/// Writes the man page (roff, section 1) on stdout.
pub(crate) fn man() -> CliResult {
    clap_mangen::Man::new(crate::cli::Cli::command())
        .render(&mut std::io::stdout())
        .map_err(|e| CliError::new(Exit::Runtime, format!("cannot write the man page: {e}")))
}
