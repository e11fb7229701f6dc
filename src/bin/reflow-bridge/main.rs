//! `reflow-bridge`: the command-line tool. Its subcommands arrive with the CLI.

fn main() {}
