//! `lakeshare admin ...`: a small client of the admin API, signing each request with SigV4
//! and the root credentials from the environment.
//!
//! Invariant: exit status 0 on success, 1 when the call failed (server error, unreachable
//! node), 2 on a usage error (bad endpoint or argument).

use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

use crate::config::root_credentials;
use crate::sigv4::{self, CanonicalParts, SigningKey, EMPTY_PAYLOAD_SHA256};

/// Default endpoint of the node to administer.
pub const ENDPOINT_DEFAULT: &str = "http://127.0.0.1:9000";
/// Region the admin client signs for (the node accepts any).
const SIGNING_REGION: &str = "us-east-1";

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
    let key = SigningKey {
        access_key: &credentials.access_key,
        secret_key: &credentials.secret_key,
        region: SIGNING_REGION,
        service: "s3",
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return failure(&format!("starting a runtime: {error}")),
    };
    let answer = runtime.block_on(signed_post(&endpoint, "/minio/admin/v4/heal", &query, &key));
    match answer {
        Err(message) => failure(&message),
        Ok((status, body)) if status.is_success() => print_heal_report(&body, args.json),
        Ok((status, body)) => failure(&format!("the node answered {status}: {}", describe(&body))),
    }
}

/// `http://host:port` with an optional trailing slash.
struct Endpoint {
    /// `host:port` as sent in `Host`.
    authority: String,
}

impl Endpoint {
    fn parse(text: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("--endpoint {text:?}: not a URL ({e})"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "--endpoint {text:?}: this client speaks plain HTTP only; \
                     use the node's http:// address"
                ))
            }
            _ => return Err(format!("--endpoint {text:?}: expected http://HOST:PORT")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("--endpoint {text:?}: missing host"))?
            .to_string();
        let authority = if authority.contains(':') {
            authority
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint { authority })
    }
}

async fn signed_post(
    endpoint: &Endpoint,
    path: &str,
    query: &[(String, String)],
    key: &SigningKey<'_>,
) -> Result<(http::StatusCode, Bytes), String> {
    let amz_date = sigv4::amz_date(time::OffsetDateTime::now_utc());
    let headers = vec![
        ("host".to_owned(), endpoint.authority.clone()),
        (
            "x-amz-content-sha256".to_owned(),
            EMPTY_PAYLOAD_SHA256.to_owned(),
        ),
        ("x-amz-date".to_owned(), amz_date.clone()),
    ];
    let parts = CanonicalParts {
        method: "POST",
        path,
        query,
        headers: &headers,
        payload_sha256: EMPTY_PAYLOAD_SHA256,
    };
    let authorization = sigv4::authorization(key, &parts, &amz_date);
    let target = format!("{path}?{}", sigv4::canonical_query(query));
    let mut builder = http::Request::builder().method("POST").uri(target);
    for (name, value) in &headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .header("authorization", authorization)
        .header("content-length", "0")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;

    let stream = tokio::net::TcpStream::connect(&endpoint.authority)
        .await
        .map_err(|e| format!("connecting to {}: {e}", endpoint.authority))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", endpoint.authority))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
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
    if number("objectsFailed") > 0 {
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

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:9000/").unwrap().authority,
            "127.0.0.1:9000"
        );
        assert_eq!(Endpoint::parse("http://node").unwrap().authority, "node:80");
        assert!(Endpoint::parse("https://node:9000").is_err());
        assert!(Endpoint::parse("ftp://node").is_err());
    }
}
