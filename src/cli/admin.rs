//! `lakeshare admin ...`: a small client of the admin API, signing each request with SigV4
//! and the root credentials from the environment.
//!
//! Invariant: exit status 0 on success, 1 when the call failed (server error, unreachable
//! node), 2 on a usage error (bad endpoint or argument).

use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand};

use crate::cli::client::{AdminClient, Endpoint};
use crate::config::root_credentials;

/// Default endpoint of the node to administer.
pub const ENDPOINT_DEFAULT: &str = "http://127.0.0.1:9000";

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Heal every object (or those under BUCKET[/PREFIX]): rebuild missing or corrupt shards.
    Heal(HealArgs),
}

#[derive(Debug, Args)]
pub struct HealArgs {
    /// What to heal: nothing for everything, `BUCKET`, or `BUCKET/PREFIX`.
    #[arg(value_name = "BUCKET[/PREFIX]")]
    pub target: Option<String>,
    /// The node's URL.
    #[arg(long, env = "LAKESHARE_ENDPOINT", default_value = ENDPOINT_DEFAULT)]
    pub endpoint: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs an admin command and returns the process exit status.
pub fn run(command: AdminCommand) -> ExitCode {
    match command {
        AdminCommand::Heal(args) => heal(args),
    }
}

fn heal(args: HealArgs) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let credentials = match root_credentials(&env) {
        Ok((credentials, _)) => credentials,
        Err(errors) => return usage_error(&errors.join("; ")),
    };
    let (bucket, prefix) = match args.target.as_deref().map(str::trim) {
        None | Some("") => (String::new(), String::new()),
        Some(target) => match target.split_once('/') {
            Some((bucket, prefix)) => (bucket.to_owned(), prefix.to_owned()),
            None => (target.to_owned(), String::new()),
        },
    };
    let endpoint = match Endpoint::parse(&args.endpoint) {
        Ok(endpoint) => endpoint,
        Err(message) => return usage_error(&message),
    };
    let query = vec![("bucket".to_owned(), bucket), ("prefix".to_owned(), prefix)];
    let client = AdminClient {
        endpoint,
        access_key: credentials.access_key,
        secret_key: credentials.secret_key,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return failure(&format!("starting a runtime: {error}")),
    };
    let answer =
        runtime.block_on(client.request("POST", "/minio/admin/v4/heal", &query, Bytes::new()));
    match answer {
        Err(message) => failure(&message),
        Ok((status, body)) if status.is_success() => print_heal_report(&body, args.json),
        Ok((status, body)) => failure(&format!("the node answered {status}: {}", describe(&body))),
    }
}

fn print_heal_report(body: &[u8], json: bool) -> ExitCode {
    let report: serde_json::Value = match serde_json::from_slice(body) {
        Ok(report) => report,
        Err(error) => return failure(&format!("the node's report is not JSON: {error}")),
    };
    if json {
        println!("{report}");
        return ExitCode::SUCCESS;
    }
    let number = |name: &str| {
        report
            .get(name)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    println!("objects scanned: {}", number("objectsScanned"));
    println!("objects healed:  {}", number("objectsHealed"));
    println!("shards rebuilt:  {}", number("shardsRebuilt"));
    println!("objects failed:  {}", number("objectsFailed"));
    println!("buckets healed:  {}", number("bucketsHealed"));
    println!("buckets failed:  {}", number("bucketsFailed"));
    println!("drives adopted:  {}", number("drivesAdopted"));
    if number("objectsFailed") > 0 || number("bucketsFailed") > 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// The `Code: Message` of an S3 XML error, or the body as text.
fn describe(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find("</")? + start;
        Some(text[start..end].to_owned())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => text.trim().to_owned(),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("lakeshare admin: {message}");
    ExitCode::from(2)
}

fn failure(message: &str) -> ExitCode {
    eprintln!("lakeshare admin: {message}");
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_s3_errors() {
        let body =
            b"<Error><Code>AccessDenied</Code><Message>Signature is required</Message></Error>";
        assert_eq!(describe(body), "AccessDenied: Signature is required");
        assert_eq!(describe(b"plain"), "plain");
    }
}
