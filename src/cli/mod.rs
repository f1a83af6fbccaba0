//! The command line: `lakeshare server ...` runs a node; `lakeshare admin ...`,
//! `lakeshare alias ...` and `lakeshare table share ...` talk to one.
//!
//! Invariant: usage errors exit with status 2 (clap's convention), runtime failures with 1.

pub mod admin;
pub mod alias;
pub mod client;
pub mod server;
pub mod share;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::RawConfig;

/// A storage node that keeps tables on its own drives, takes writes through S3, and shares
/// them through the Delta Sharing protocol.
#[derive(Debug, Parser)]
#[command(name = "lakeshare", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a storage node on the given drives.
    Server(RawConfig),
    /// Administer a running node.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Remember nodes and their credentials (`~/.lakeshare/config.json`).
    Alias {
        #[command(subcommand)]
        command: alias::AliasCommand,
        /// Print one JSON object.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Tables of a node: shares and their tokens.
    Table {
        #[command(subcommand)]
        command: TableCommand,
        /// Print one JSON object.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Delta Sharing shares: create, update, list, info, remove, and their tokens.
    #[command(subcommand)]
    Share(share::ShareCommand),
}

/// A failed client command: its message and exit status.
#[derive(Debug)]
pub struct CliError {
    pub status: u8,
    pub message: String,
}

impl CliError {
    /// A mistake in the command line: status 2.
    pub fn usage(message: impl std::fmt::Display) -> CliError {
        CliError {
            status: 2,
            message: message.to_string(),
        }
    }

    /// The node refused, or could not be reached: status 1.
    pub fn operational(message: impl std::fmt::Display) -> CliError {
        CliError {
            status: 1,
            message: message.to_string(),
        }
    }
}

/// Runs a client command on a small runtime and turns its outcome into an exit status.
pub fn run_client(
    work: impl std::future::Future<Output = Result<(), CliError>>,
    json_output: bool,
) -> ExitCode {
    let outcome = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(error) => Err(CliError::operational(format!(
            "starting a runtime: {error}"
        ))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if json_output {
                println!(
                    "{}",
                    serde_json::json!({"status": "error", "error": {"message": error.message}})
                );
            }
            eprintln!("lakeshare: {}", error.message);
            ExitCode::from(error.status)
        }
    }
}
