//! `lakeshare alias ...`: named nodes with their credentials, kept in
//! `~/.lakeshare/config.json` (or `$LAKESHARE_CONFIG_DIR/config.json`), readable only by
//! the user (mode 0600), like `mc alias`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::client::{AdminClient, Endpoint};
use crate::cli::CliError;

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Remember a node: `lakeshare alias set local http://127.0.0.1:9000 ACCESS SECRET`.
    Set {
        name: String,
        url: String,
        access_key: String,
        secret_key: String,
    },
    /// List the remembered nodes (secrets are not shown).
    List,
    /// Forget a node: `lakeshare alias remove local`.
    Remove { name: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alias {
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AliasConfig {
    #[serde(default = "config_version")]
    pub version: String,
    #[serde(default)]
    pub aliases: BTreeMap<String, Alias>,
}

fn config_version() -> String {
    "1".to_owned()
}

impl AliasConfig {
    pub fn path() -> Result<PathBuf, CliError> {
        if let Some(dir) = std::env::var_os("LAKESHARE_CONFIG_DIR") {
            return Ok(PathBuf::from(dir).join("config.json"));
        }
        let home = std::env::var_os("HOME")
            .ok_or_else(|| CliError::operational("HOME is not set; set LAKESHARE_CONFIG_DIR"))?;
        Ok(PathBuf::from(home).join(".lakeshare").join("config.json"))
    }

    pub fn load() -> Result<AliasConfig, CliError> {
        let path = Self::path()?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                CliError::operational(format!("{} is not valid: {error}", path.display()))
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(AliasConfig {
                version: config_version(),
                aliases: BTreeMap::new(),
            }),
            Err(error) => Err(CliError::operational(format!(
                "reading {}: {error}",
                path.display()
            ))),
        }
    }

    /// Writes the file through a temporary one (mode 0600) and a rename.
    pub fn save(&self) -> Result<(), CliError> {
        let path = Self::path()?;
        let fail = |what: &str, error: std::io::Error| {
            CliError::operational(format!("{what} {}: {error}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail("creating the folder of", e))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let temporary = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| fail("writing", e))?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| fail("encoding", e.into()))?;
        file.write_all(&text).map_err(|e| fail("writing", e))?;
        file.sync_all().map_err(|e| fail("writing", e))?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail("protecting", e))?;
        std::fs::rename(&temporary, &path).map_err(|e| fail("replacing", e))
    }

    /// The admin client of an alias, or an error naming the known aliases.
    pub fn client(&self, name: &str) -> Result<AdminClient, CliError> {
        let alias =
            self.aliases.get(name).ok_or_else(|| {
                let known: Vec<&str> = self.aliases.keys().map(String::as_str).collect();
                CliError::operational(format!(
                "unknown alias '{name}' (known: {}); add it with `lakeshare alias set {name} URL \
                 ACCESS_KEY SECRET_KEY`",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ))
            })?;
        Ok(AdminClient {
            endpoint: Endpoint::parse(&alias.url).map_err(CliError::operational)?,
            access_key: alias.access_key.clone(),
            secret_key: alias.secret_key.clone(),
        })
    }
}

/// `ALIAS/SHARE` → (alias, share).
pub fn split_alias_target(target: &str) -> Result<(&str, &str), CliError> {
    match target.split_once('/') {
        Some((alias, share)) if !alias.is_empty() && !share.is_empty() && !share.contains('/') => {
            Ok((alias, share))
        }
        _ => Err(CliError::usage(format!(
            "expected ALIAS/SHARE, e.g. local/analytics-share, got {target:?}"
        ))),
    }
}

pub fn run(command: AliasCommand, json_output: bool) -> Result<(), CliError> {
    let mut config = AliasConfig::load()?;
    match command {
        AliasCommand::Set {
            name,
            url,
            access_key,
            secret_key,
        } => {
            if name.is_empty() || name.contains('/') {
                return Err(CliError::usage(format!(
                    "alias name {name:?} must be non-empty and contain no '/'"
                )));
            }
            Endpoint::parse(&url).map_err(CliError::usage)?;
            config.aliases.insert(
                name.clone(),
                Alias {
                    url: url.trim_end_matches('/').to_owned(),
                    access_key,
                    secret_key,
                },
            );
            config.save()?;
            if json_output {
                println!(
                    "{}",
                    json!({"status": "success", "alias": name, "url": url})
                );
            } else {
                println!("Added `{name}` successfully.");
            }
        }
        AliasCommand::List => {
            if json_output {
                let aliases: Vec<_> = config
                    .aliases
                    .iter()
                    .map(|(name, alias)| {
                        json!({"name": name, "url": alias.url, "accessKey": alias.access_key})
                    })
                    .collect();
                println!("{}", json!({"status": "success", "aliases": aliases}));
            } else if config.aliases.is_empty() {
                println!("No aliases.");
            } else {
                for (name, alias) in &config.aliases {
                    println!("{name}  {}  {}", alias.url, alias.access_key);
                }
            }
        }
        AliasCommand::Remove { name } => {
            if config.aliases.remove(&name).is_none() {
                return Err(CliError::operational(format!("unknown alias '{name}'")));
            }
            config.save()?;
            if json_output {
                println!("{}", json!({"status": "success", "alias": name}));
            } else {
                println!("Removed `{name}` successfully.");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_alias_and_share() {
        assert_eq!(
            split_alias_target("local/a-share").unwrap(),
            ("local", "a-share")
        );
        for bad in ["local", "/share", "local/", "a/b/c"] {
            assert_eq!(split_alias_target(bad).unwrap_err().status, 2, "{bad}");
        }
    }
}
