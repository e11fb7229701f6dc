//! A `reflow-bridge` of your own: the whole CLI, with a component of yours (`double`)
//! next to the built-in ones for `run --config` to name.
//!
//!     cargo run --example own_components -- run --config my-network.toml
//!
//! With no arguments it lists the components it offers and exits.

use std::process::ExitCode;

use reflow_network::Message;
use reflow_network::actor::FnActor;
use reflow_network::components::Components;

fn main() -> ExitCode {
    let components = Components::builtin().with("double", || {
        FnActor::new(["in"], ["out"], |_port, msg| {
            let doubled = msg.as_integer().unwrap_or(0) * 2;
            Ok(vec![("out".to_string(), Message::Integer(doubled))])
        })
    });
    if std::env::args_os().len() <= 1 {
        let names: Vec<&str> = components.names().collect();
        println!("components for `run --config`: {}", names.join(", "));
        println!("try: cargo run --example own_components -- --help");
        return ExitCode::SUCCESS;
    }
    reflow_network::cli::main_with(components)
}
