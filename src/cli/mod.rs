//! The command line: `lakeshare server ...` runs a node, `lakeshare admin ...` talks to one.
//!
//! Invariant: usage errors exit with status 2 (clap's convention), runtime failures with 1.

pub mod admin;
pub mod server;

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
}
