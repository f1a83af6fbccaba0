//! `lakeshare table share ...`: an admin client of the node's delta-sharing admin API, with
//! the same commands and arguments as AIStor's `mc table share ...`.
//!
//! Every command prints a human line or, with `--json`, one JSON object; exit status 0 on
//! success, 1 when the node refuses or cannot be reached, 2 on a usage error.

use bytes::Bytes;
use clap::Subcommand;
use lakeshare_protocol::catalog::{parse_table_spec, Share, Table};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::alias::{split_alias_target, AliasConfig};
use crate::cli::client::AdminClient;
use crate::cli::CliError;

/// Where the delta-sharing admin API lives.
const ADMIN_PATH: &str = "/minio/admin/v4/delta-sharing/";

#[derive(Debug, Subcommand)]
pub enum ShareCommand {
    /// Create a share with one schema and its tables.
    ///
    /// Example: lakeshare table share create local/analytics-share HR
    ///   "employees:delta:analytics:employees/" --description "HR tables"
    Create {
        /// ALIAS/SHARE
        target: String,
        /// Schema that holds the tables.
        schema: String,
        /// Table specs: NAME:delta:BUCKET:PATH/, NAME:iceberg:BUCKET:PATH/ or
        /// NAME:uniform:WAREHOUSE:NAMESPACE:TABLE.
        #[arg(required = true)]
        tables: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Add or remove tables, or change the description.
    ///
    /// Example: lakeshare table share update local/analytics-share
    ///   --add "HR:sales:delta:analytics:sales/" --remove HR/employees
    Update {
        /// ALIAS/SHARE
        target: String,
        /// SCHEMA:NAME:delta:BUCKET:PATH/ (a new schema is created on the fly).
        #[arg(long)]
        add: Vec<String>,
        /// SCHEMA/TABLE[,SCHEMA/TABLE...]
        #[arg(long)]
        remove: Vec<String>,
        /// New description ("" clears it).
        #[arg(long)]
        description: Option<String>,
    },
    /// List the shares of a node.
    ///
    /// Example: lakeshare table share list local --json
    List {
        /// ALIAS
        alias: String,
    },
    /// Show one share with its schemas and tables.
    ///
    /// Example: lakeshare table share info local/analytics-share
    Info {
        /// ALIAS/SHARE
        target: String,
    },
    /// Remove a share; its tokens stop working at once.
    ///
    /// Example: lakeshare table share remove local/analytics-share
    Remove {
        /// ALIAS/SHARE
        target: String,
    },
    /// Create, list and remove bearer tokens of a share.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret and profile are shown only now.
    ///
    /// Example: lakeshare table share token create local/analytics-share --expires 90d
    ///   --json | jq -r '.profile' > profile.share
    Create {
        /// ALIAS/SHARE
        target: String,
        /// Lifetime: Nd, Nh or Nm (no flag: never expires).
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the tokens of a share (ids, not secrets).
    ///
    /// Example: lakeshare table share token list local/analytics-share
    List {
        /// ALIAS/SHARE
        target: String,
    },
    /// Revoke a token, effective immediately.
    ///
    /// Example: lakeshare table share token remove local 3f2a...
    Remove {
        /// ALIAS
        alias: String,
        token_id: String,
    },
}

pub async fn run(command: ShareCommand, json_output: bool) -> Result<(), CliError> {
    let config = AliasConfig::load()?;
    match command {
        ShareCommand::Create {
            target,
            schema,
            tables,
            description,
        } => {
            let (alias, share) = split_alias_target(&target)?;
            let client = config.client(alias)?;
            let tables = tables
                .iter()
                .map(|spec| parse_table_spec(spec).map_err(|e| CliError::usage(e.message)))
                .collect::<Result<Vec<Table>, CliError>>()?;
            let body = json!({
                "name": share,
                "description": description,
                "schemas": [{"name": schema, "tables": tables}],
            });
            let response = call(&client, "POST", "shares", Some(body)).await?;
            let share: Share = share_from(&response)?;
            print_share(&share, json_output, "Created");
        }
        ShareCommand::Update {
            target,
            add,
            remove,
            description,
        } => {
            let (alias, name) = split_alias_target(&target)?;
            if add.is_empty() && remove.is_empty() && description.is_none() {
                return Err(CliError::usage(
                    "nothing to update: give --add, --remove or --description",
                ));
            }
            let client = config.client(alias)?;
            // Adds and removes are applied by the node to the share as stored, so changes
            // made at once (on this node or another) are all kept.
            let mut added = Vec::new();
            for spec in &add {
                let (schema, table_spec) = spec.split_once(':').ok_or_else(|| {
                    CliError::usage(format!(
                        "bad --add {spec:?}: expected SCHEMA:NAME:delta:BUCKET:PATH/"
                    ))
                })?;
                let table = parse_table_spec(table_spec).map_err(|e| CliError::usage(e.message))?;
                added.push(json!({"schema": schema, "table": table}));
            }
            let mut removed = Vec::new();
            for item in remove.iter().flat_map(|list| list.split(',')) {
                let (schema, table) = item.split_once('/').ok_or_else(|| {
                    CliError::usage(format!("bad --remove {item:?}: expected SCHEMA/TABLE"))
                })?;
                removed.push(json!({"schema": schema, "table": table}));
            }
            let mut body = json!({});
            if !added.is_empty() {
                body["addTables"] = Value::Array(added);
            }
            if !removed.is_empty() {
                body["removeTables"] = Value::Array(removed);
            }
            if let Some(description) = description {
                body["description"] = Value::String(description);
            }
            let response = call(
                &client,
                "PUT",
                &format!("shares/{}", escape(name)),
                Some(body),
            )
            .await?;
            print_share(&share_from(&response)?, json_output, "Updated");
        }
        ShareCommand::List { alias } => {
            let client = config.client(&alias)?;
            let response = call(&client, "GET", "shares", None).await?;
            let shares: Vec<Share> =
                serde_json::from_value(response["shares"].clone()).map_err(internal)?;
            if json_output {
                println!("{}", json!({"status": "success", "shares": shares}));
            } else if shares.is_empty() {
                println!("No shares.");
            } else {
                for share in &shares {
                    let tables: usize = share.schemas.iter().map(|s| s.tables.len()).sum();
                    println!(
                        "{}  {} schema(s), {} table(s)  {}",
                        share.name,
                        share.schemas.len(),
                        tables,
                        share.description.as_deref().unwrap_or("")
                    );
                }
            }
        }
        ShareCommand::Info { target } => {
            let (alias, name) = split_alias_target(&target)?;
            let client = config.client(alias)?;
            let response = call(&client, "GET", &format!("shares/{}", escape(name)), None).await?;
            print_share(&share_from(&response)?, json_output, "Share");
        }
        ShareCommand::Remove { target } => {
            let (alias, name) = split_alias_target(&target)?;
            let client = config.client(alias)?;
            call(&client, "DELETE", &format!("shares/{}", escape(name)), None).await?;
            if json_output {
                println!("{}", json!({"status": "success", "share": name}));
            } else {
                println!("Removed share `{name}` and its tokens.");
            }
        }
        ShareCommand::Token(command) => run_token(command, &config, json_output).await?,
    }
    Ok(())
}

async fn run_token(
    command: TokenCommand,
    config: &AliasConfig,
    json_output: bool,
) -> Result<(), CliError> {
    match command {
        TokenCommand::Create {
            target,
            expires,
            description,
        } => {
            let (alias, name) = split_alias_target(&target)?;
            let expires_at = match expires {
                Some(text) => {
                    let lifetime = parse_lifetime(&text)?;
                    let at = OffsetDateTime::now_utc() + lifetime;
                    Some(at.format(&Rfc3339).map_err(internal)?)
                }
                None => None,
            };
            let client = config.client(alias)?;
            let body = json!({"description": description, "expiresAt": expires_at});
            let mut response = call(
                &client,
                "POST",
                &format!("shares/{}/tokens", escape(name)),
                Some(body),
            )
            .await?;
            if json_output {
                response["status"] = Value::String("success".into());
                println!("{response}");
            } else {
                println!("Token ID:   {}", response["tokenId"].as_str().unwrap_or(""));
                println!("Token:      {}", response["token"].as_str().unwrap_or(""));
                println!(
                    "Expires:    {}",
                    response["expiresAt"].as_str().unwrap_or("never")
                );
                println!("Profile:    {}", response["profile"]);
                println!("The token is shown only once: keep the profile safe.");
            }
        }
        TokenCommand::List { target } => {
            let (alias, name) = split_alias_target(&target)?;
            let client = config.client(alias)?;
            let response = call(
                &client,
                "GET",
                &format!("shares/{}/tokens", escape(name)),
                None,
            )
            .await?;
            if json_output {
                println!(
                    "{}",
                    json!({"status": "success", "tokens": response["tokens"]})
                );
            } else {
                let tokens = response["tokens"].as_array().cloned().unwrap_or_default();
                if tokens.is_empty() {
                    println!("No tokens.");
                }
                for token in tokens {
                    println!(
                        "{}  expires {}  {}",
                        token["tokenId"].as_str().unwrap_or(""),
                        token["expiresAt"].as_str().unwrap_or("never"),
                        token["description"].as_str().unwrap_or("")
                    );
                }
            }
        }
        TokenCommand::Remove { alias, token_id } => {
            let client = config.client(&alias)?;
            call(
                &client,
                "DELETE",
                &format!("tokens/{}", escape(&token_id)),
                None,
            )
            .await?;
            if json_output {
                println!("{}", json!({"status": "success", "tokenId": token_id}));
            } else {
                println!("Removed token {token_id}.");
            }
        }
    }
    Ok(())
}

/// `90d`, `24h`, `30m` → a duration.
pub fn parse_lifetime(text: &str) -> Result<time::Duration, CliError> {
    let bad = || {
        CliError::usage(format!(
            "bad --expires {text:?}: expected a number followed by d, h or m, e.g. 90d, 24h, 30m"
        ))
    };
    let text = text.trim();
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let count: i64 = number.parse().map_err(|_| bad())?;
    if count <= 0 {
        return Err(bad());
    }
    match unit {
        "d" => Ok(time::Duration::days(count)),
        "h" => Ok(time::Duration::hours(count)),
        "m" => Ok(time::Duration::minutes(count)),
        _ => Err(bad()),
    }
}

fn share_from(response: &Value) -> Result<Share, CliError> {
    serde_json::from_value(response["share"].clone()).map_err(internal)
}

fn print_share(share: &Share, json_output: bool, verb: &str) {
    if json_output {
        println!("{}", json!({"status": "success", "share": share}));
        return;
    }
    println!("{verb} share `{}` ({})", share.name, share.id);
    if let Some(description) = &share.description {
        println!("  description: {description}");
    }
    for schema in &share.schemas {
        println!("  schema {}", schema.name);
        for table in &schema.tables {
            let source = match (&table.bucket, &table.location) {
                (Some(bucket), Some(location)) => format!("{bucket}/{location}"),
                _ => format!(
                    "{}:{}:{}",
                    table.warehouse.as_deref().unwrap_or(""),
                    table.namespace.as_deref().unwrap_or(""),
                    table.table.as_deref().unwrap_or("")
                ),
            };
            println!("    {}  {:?}  {source}", table.name, table.source_type);
        }
    }
}

/// A path segment encoded as SigV4 canonicalises it.
fn escape(segment: &str) -> String {
    crate::sigv4::uri_encode(segment)
}

fn internal(error: impl std::fmt::Display) -> CliError {
    CliError::operational(format!("unexpected answer from the node: {error}"))
}

/// One admin call; a refusal becomes an error carrying the node's message.
async fn call(
    client: &AdminClient,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CliError> {
    let body = body.map_or_else(Bytes::new, |value| Bytes::from(value.to_string()));
    let (status, answer) = client
        .request(method, &format!("{ADMIN_PATH}{path}"), &[], body)
        .await
        .map_err(CliError::operational)?;
    let value: Value = if answer.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&answer)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer).into_owned()))
    };
    if status.is_success() {
        return Ok(value);
    }
    let message = value["message"]
        .as_str()
        .or_else(|| value.as_str())
        .unwrap_or("")
        .to_owned();
    let code = value["errorCode"].as_str().unwrap_or("");
    Err(CliError::operational(format!(
        "the node refused ({status}{}): {message}",
        if code.is_empty() {
            String::new()
        } else {
            format!(" {code}")
        }
    )))
}
