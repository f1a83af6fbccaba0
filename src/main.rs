//! The `lakeshare` binary: parses the command line, validates the configuration, and wires
//! the engine, the storage node and the protocol routes together. It holds no logic a
//! layer should own.

mod admin_route;
mod cli;
mod config;
mod front;
mod remote_objects;
mod remote_store;
mod sharing_store;
mod sigv4;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::config::Config;

/// glibc's allocator spent a fifth of the node's time at 10,000 connections (tuning.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Log filter when `RUST_LOG` is not set.
const LOG_FILTER_DEFAULT: &str = "info,s3s=off,delta_kernel=warn";

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Server(raw) => {
            let env = |name: &str| std::env::var(name).ok();
            let config = match Config::from_raw(raw, &env) {
                Ok(config) => config,
                Err(errors) => {
                    for error in errors {
                        eprintln!("lakeshare: {error}");
                    }
                    return ExitCode::from(2);
                }
            };
            match cli::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("lakeshare: {error:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Admin { command } => cli::admin::run(command),
        Command::Alias { command, json } => {
            cli::run_client(async move { cli::alias::run(command, json) }, json)
        }
        Command::Table {
            command: cli::TableCommand::Share(command),
            json,
        } => cli::run_client(cli::share::run(command, json), json),
    }
}

fn init_logging() {
    // s3s logs every client error (404, 412, ...) at ERROR; ours are logged where they
    // matter (internal errors in `s3::error`), so s3s stays quiet unless RUST_LOG asks.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(LOG_FILTER_DEFAULT));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
