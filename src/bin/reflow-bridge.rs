//! `reflow-bridge`: run, inspect and poke reflow networks from the shell. Everything it
//! does lives in [`reflow_network::cli`]; a binary of your own that adds its own
//! components calls [`reflow_network::cli::main_with`] instead.

use std::process::ExitCode;

/// Counts the heap while `bench` measures memory; otherwise the system allocator, at the
/// cost of one relaxed load per allocation.
#[global_allocator]
static HEAP: reflow_network::bench::CountingAllocator = reflow_network::bench::CountingAllocator;

fn main() -> ExitCode {
    reflow_network::cli::main()
}
