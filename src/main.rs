//! Entry point: parse the command line, set up logging, run, and turn an
//! error into a one-line reason and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use creditgate::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::usage_error(e),
    };
    // The daemon logs its life; a CLI command says only what went wrong.
    let default_level = match cli.command {
        None | Some(Command::Serve) => "info",
        Some(_) => "warn",
    };
    creditgate::ops::logging::init(default_level);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("creditgate: {e}");
            ExitCode::FAILURE
        }
    }
}
