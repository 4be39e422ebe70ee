//! The `pilotfish` binary: parse the command line and dispatch to a subcommand.

#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
