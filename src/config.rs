//! Server configuration in two stages: `RawConfig` mirrors the command line and the
//! environment (clap defines each key once: flag, env alias, default, doc text);
//! `Config::from_raw` validates and derives, and `Config` is the only form past `main`.
//!
//! Invariant: validation reports every bad value at once, never just the first.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Args;
use lakeshare_engine::io::IoChoice;
use lakeshare_storage::s3::RootCredentials;

/// Default listening address.
pub const ADDRESS_DEFAULT: &str = "0.0.0.0:9000";
/// Drive used when none is given.
pub const DRIVE_DEFAULT: &str = "./data";
/// Credentials used when none are configured (MinIO's).
pub const ROOT_USER_DEFAULT: &str = "minioadmin";
pub const ROOT_PASSWORD_DEFAULT: &str = "minioadmin";
/// Shortest access key and secret key accepted (MinIO's limits).
pub const ROOT_USER_CHARS_MIN: usize = 3;
pub const ROOT_PASSWORD_CHARS_MIN: usize = 8;

/// `lakeshare server` as typed.
#[derive(Args, Clone, Debug, Default)]
pub struct RawConfig {
    /// Drive folders; MinIO's ellipsis syntax expands ranges, e.g. `/mnt/disk{1...8}`.
    /// Without any, one drive `./data`.
    #[arg(value_name = "DRIVE")]
    pub drives: Vec<String>,
    /// Address to listen on, `HOST:PORT` or `:PORT`.
    #[arg(long, env = "LAKESHARE_ADDRESS", default_value = ADDRESS_DEFAULT)]
    pub address: String,
    /// Worker threads, each with its own runtime and listener [default: available cores].
    #[arg(long, env = "LAKESHARE_THREADS")]
    pub threads: Option<usize>,
    /// Drive I/O back-end: `auto` (io_uring, else a thread pool), `uring` or `threads`.
    #[arg(long, env = "LAKESHARE_IO", default_value = "auto")]
    pub io: String,
    /// Folder with `public.crt` and `private.key`: serve HTTPS when both exist.
    #[arg(long, env = "LAKESHARE_CERTS_DIR", value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Parity shards per erasure set [default: MinIO's for the set size].
    #[arg(long, env = "LAKESHARE_PARITY")]
    pub parity: Option<usize>,
    /// Lifetime of presigned file URLs in Delta Sharing answers: `Ns`, `Nm`, `Nh` or `Nd`.
    #[arg(long, env = "LAKESHARE_PRESIGN_EXPIRY", default_value = PRESIGN_EXPIRY_DEFAULT)]
    pub presign_expiry: String,
    /// Memory for cached active-file lists of shared tables, e.g. `512MiB`, `2GiB`.
    #[arg(long, env = "LAKESHARE_CACHE_SIZE", default_value = CACHE_SIZE_DEFAULT)]
    pub cache_size: String,
    /// Domains of virtual-host-style requests, comma-separated (`Host: BUCKET.DOMAIN` names
    /// bucket BUCKET; `MINIO_DOMAIN` also works) [default: path-style only].
    #[arg(long, env = "LAKESHARE_DOMAIN", value_name = "DOMAIN[,DOMAIN]")]
    pub domain: Option<String>,
    /// A remote S3 store (`http(s)://HOST:PORT`) that holds the tables and the catalog: the
    /// node is a stateless sharing node and takes no drives. Credentials:
    /// LAKESHARE_BACKEND_ACCESS_KEY, LAKESHARE_BACKEND_SECRET_KEY, LAKESHARE_BACKEND_REGION.
    #[arg(long, env = "LAKESHARE_BACKEND", value_name = "URL")]
    pub backend: Option<String>,
    /// The remote store's bucket that holds the catalog [default: lakeshare].
    #[arg(long, env = "LAKESHARE_BACKEND_BUCKET", default_value = "lakeshare")]
    pub backend_bucket: String,
    /// With `--backend`: file URLs in answers are presigned for the store at this endpoint
    /// (what recipients reach it at), so they read from it directly [default: URLs name this
    /// node, which checks them and streams each file from the store].
    #[arg(long, env = "LAKESHARE_PRESIGN_DIRECT", value_name = "URL")]
    pub presign_direct: Option<String>,
}

/// A remote store the node shares from (`--backend`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// `--presign-direct`: file URLs are signed for the store at this endpoint.
    pub presign_direct: Option<String>,
}

/// Default budget of the table caches.
pub const CACHE_SIZE_DEFAULT: &str = "1GiB";

/// Default lifetime of presigned URLs (clients refresh 15 minutes before expiry).
pub const PRESIGN_EXPIRY_DEFAULT: &str = "1h";
/// Environment variables naming the URL recipients reach the node at, in order of precedence.
pub const SHARING_ENDPOINT_ENV: [&str; 2] =
    ["LAKESHARE_SHARING_ENDPOINT", "MINIO_DELTA_SHARING_ENDPOINT"];

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub drives: Vec<PathBuf>,
    pub address: SocketAddr,
    pub threads: usize,
    pub io: IoChoice,
    pub certs_dir: Option<PathBuf>,
    pub parity: Option<usize>,
    pub credentials: RootCredentials,
    /// The credentials are the built-in defaults (warn loudly).
    pub credentials_defaulted: bool,
    pub presign_expiry_seconds: u64,
    pub cache_bytes: u64,
    /// Base URL written into profiles and presigned URLs; `None`: the listening address.
    pub sharing_endpoint: Option<String>,
    /// Base domains of virtual-host-style requests; empty: path-style only.
    pub domains: Vec<String>,
    /// `--backend`: share from a remote store instead of drives.
    pub backend: Option<BackendConfig>,
}

impl Config {
    /// Validates `raw`; `env` reads environment variables (injected for tests).
    pub fn from_raw(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let backend = backend_config(&raw, env)
            .map_err(|e| errors.extend(e))
            .ok()
            .flatten();
        if backend.is_some() && !raw.drives.is_empty() {
            errors.push("--backend: a sharing node over a remote store takes no drives".to_owned());
        }
        let drive_args = if raw.drives.is_empty() {
            vec![DRIVE_DEFAULT.to_owned()]
        } else {
            raw.drives
        };
        let drives = if backend.is_some() {
            Vec::new()
        } else {
            lakeshare_storage::drives::expand_drive_args(&drive_args)
                .map_err(|e| errors.push(format!("drives: {e}")))
                .unwrap_or_default()
        };
        let address = parse_address(&raw.address)
            .map_err(|e| errors.push(format!("--address {:?}: {e}", raw.address)))
            .ok();
        let threads = match raw.threads {
            Some(0) => {
                errors.push("--threads must be at least 1".to_owned());
                1
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let io = parse_io(&raw.io)
            .map_err(|e| errors.push(e))
            .unwrap_or(IoChoice::Auto);
        if let Some(folder) = &raw.certs_dir {
            if !folder.is_dir() {
                errors.push(format!("--certs-dir {}: not a folder", folder.display()));
            }
        }
        if let Some(parity) = raw.parity {
            let drive_count = drives.len();
            if drive_count > 0 && parity > drive_count / 2 {
                errors.push(format!(
                    "--parity {parity}: at most half the drives of a set ({drive_count} given)"
                ));
            }
        }
        let presign_expiry_seconds = parse_duration_seconds(&raw.presign_expiry)
            .filter(|seconds| (1..=7 * 24 * 3600).contains(seconds))
            .unwrap_or_else(|| {
                errors.push(format!(
                    "--presign-expiry {:?}: expected a duration between 1s and 7d, e.g. 1h",
                    raw.presign_expiry
                ));
                0
            });
        let cache_bytes = parse_bytes(&raw.cache_size).unwrap_or_else(|| {
            errors.push(format!(
                "--cache-size {:?}: expected a size such as 512MiB or 2GiB",
                raw.cache_size
            ));
            0
        });
        let sharing_endpoint = SHARING_ENDPOINT_ENV
            .iter()
            .find_map(|name| env(name).filter(|value| !value.trim().is_empty()));
        if let Some(endpoint) = &sharing_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                errors.push(format!(
                    "sharing endpoint {endpoint:?}: expected an http:// or https:// URL"
                ));
            }
        }
        let domains = parse_domains(raw.domain.or_else(|| env("MINIO_DOMAIN")))
            .map_err(|e| errors.extend(e))
            .unwrap_or_default();
        let (credentials, credentials_defaulted) = root_credentials(env)
            .map_err(|e| errors.extend(e))
            .unwrap_or_else(|()| (default_credentials(), true));
        match (address, errors.is_empty()) {
            (Some(address), true) => Ok(Config {
                drives,
                address,
                threads,
                io,
                certs_dir: raw.certs_dir,
                parity: raw.parity,
                credentials,
                credentials_defaulted,
                presign_expiry_seconds,
                cache_bytes,
                sharing_endpoint,
                domains,
                backend,
            }),
            _ => Err(errors),
        }
    }
}

/// `--backend URL` with its credentials from the environment.
fn backend_config(
    raw: &RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<BackendConfig>, Vec<String>> {
    let Some(endpoint) = raw.backend.as_deref().map(str::trim) else {
        return match &raw.presign_direct {
            Some(_) => Err(vec![
                "--presign-direct: only a sharing node over a remote store (--backend) \
                 signs URLs for another endpoint"
                    .to_owned(),
            ]),
            None => Ok(None),
        };
    };
    let mut errors = Vec::new();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        errors.push(format!(
            "--backend {endpoint:?}: expected an http:// or https:// URL"
        ));
    }
    if !(3..=63).contains(&raw.backend_bucket.len()) || raw.backend_bucket.contains('/') {
        errors.push(format!(
            "--backend-bucket {:?}: expected a bucket name",
            raw.backend_bucket
        ));
    }
    let required = |name: &str, errors: &mut Vec<String>| {
        env(name)
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| {
                errors.push(format!("--backend needs {name} in the environment"));
                String::new()
            })
    };
    let access_key = required("LAKESHARE_BACKEND_ACCESS_KEY", &mut errors);
    let secret_key = required("LAKESHARE_BACKEND_SECRET_KEY", &mut errors);
    let region = env("LAKESHARE_BACKEND_REGION").unwrap_or_else(|| "us-east-1".to_owned());
    let presign_direct = raw.presign_direct.as_deref().map(str::trim);
    if let Some(direct) = presign_direct {
        if !(direct.starts_with("http://") || direct.starts_with("https://")) {
            errors.push(format!(
                "--presign-direct {direct:?}: expected the store's http:// or https:// URL"
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some(BackendConfig {
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        bucket: raw.backend_bucket.clone(),
        access_key,
        secret_key,
        region,
        presign_direct: presign_direct.map(|url| url.trim_end_matches('/').to_owned()),
    }))
}

/// `--domain a.example.com,b.example.com`: each a host name; none may end another (a bucket
/// host would be ambiguous).
fn parse_domains(text: Option<String>) -> Result<Vec<String>, Vec<String>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let domains: Vec<String> = text
        .split(',')
        .map(|domain| domain.trim().to_ascii_lowercase())
        .filter(|domain| !domain.is_empty())
        .collect();
    let mut errors: Vec<String> = domains
        .iter()
        .filter_map(|domain| lakeshare_storage::s3::host::validate_domain(domain).err())
        .map(|e| format!("--domain {e}"))
        .collect();
    for (index, domain) in domains.iter().enumerate() {
        for other in &domains[index + 1..] {
            if domain.ends_with(&format!(".{other}"))
                || other.ends_with(&format!(".{domain}"))
                || domain == other
            {
                errors.push(format!("--domain: {domain:?} and {other:?} overlap"));
            }
        }
    }
    if errors.is_empty() {
        Ok(domains)
    } else {
        Err(errors)
    }
}

/// `1048576`, `64KiB`, `512MiB`, `2GiB`, `1TiB` (also `KB`/`MB`/`GB` as powers of 1000) →
/// bytes.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits_end].parse().ok()?;
    let multiplier: u64 = match text[digits_end..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// `90s`, `30m`, `1h`, `7d` (or plain seconds) → seconds.
pub fn parse_duration_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let count: u64 = number.parse().ok()?;
    let unit_seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    count.checked_mul(unit_seconds)
}

/// `HOST:PORT`, `:PORT` (all interfaces) or a resolvable `NAME:PORT`.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    if let Ok(address) = full.parse::<SocketAddr>() {
        return Ok(address);
    }
    let mut resolved = full.to_socket_addrs().map_err(|e| e.to_string())?;
    resolved
        .next()
        .ok_or_else(|| "resolves to no address".to_owned())
}

/// `--io` / `LAKESHARE_IO`.
pub fn parse_io(text: &str) -> Result<IoChoice, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(IoChoice::Auto),
        "uring" | "io_uring" | "io-uring" => Ok(IoChoice::Uring),
        "threads" | "thread" | "pool" => Ok(IoChoice::Threads),
        other => Err(format!("--io {other:?}: expected auto, uring or threads")),
    }
}

/// Root credentials: `LAKESHARE_ROOT_USER`/`_PASSWORD`, else `MINIO_ROOT_USER`/`_PASSWORD`,
/// else the defaults (second value `true`). Half a pair is an error.
pub fn root_credentials(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(RootCredentials, bool), Vec<String>> {
    for (user_var, password_var) in [
        ("LAKESHARE_ROOT_USER", "LAKESHARE_ROOT_PASSWORD"),
        ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
    ] {
        let user = env(user_var).filter(|v| !v.is_empty());
        let password = env(password_var).filter(|v| !v.is_empty());
        match (user, password) {
            (None, None) => continue,
            (Some(user), Some(password)) => {
                let mut errors = Vec::new();
                if user.chars().count() < ROOT_USER_CHARS_MIN {
                    errors.push(format!(
                        "{user_var} must be at least {ROOT_USER_CHARS_MIN} characters"
                    ));
                }
                if password.chars().count() < ROOT_PASSWORD_CHARS_MIN {
                    errors.push(format!(
                        "{password_var} must be at least {ROOT_PASSWORD_CHARS_MIN} characters"
                    ));
                }
                if !errors.is_empty() {
                    return Err(errors);
                }
                return Ok((
                    RootCredentials {
                        access_key: user,
                        secret_key: password,
                    },
                    false,
                ));
            }
            (Some(_), None) => {
                return Err(vec![format!("{user_var} is set but {password_var} is not")])
            }
            (None, Some(_)) => {
                return Err(vec![format!("{password_var} is set but {user_var} is not")])
            }
        }
    }
    Ok((default_credentials(), true))
}

/// The warning printed when the default credentials are in use.
pub const DEFAULT_CREDENTIALS_WARNING: &str = "\
##########################################################################
#  WARNING: lakeshare is using the DEFAULT root credentials              #
#           (minioadmin / minioadmin). Anyone can read and write.        #
#  Set LAKESHARE_ROOT_USER and LAKESHARE_ROOT_PASSWORD to fix this.      #
##########################################################################";

fn default_credentials() -> RootCredentials {
    RootCredentials {
        access_key: ROOT_USER_DEFAULT.to_owned(),
        secret_key: ROOT_PASSWORD_DEFAULT.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes(" 2 GiB "), Some(2 << 30));
        assert_eq!(parse_bytes("3mb"), Some(3_000_000));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("1.5GiB"), None);
        assert_eq!(parse_bytes("lots"), None);
        let mut bad = raw(&[]);
        bad.cache_size = "-1".into();
        let errors = Config::from_raw(bad, &env_of(&[])).unwrap_err();
        assert!(errors.iter().any(|error| error.contains("--cache-size")));
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn raw(drives: &[&str]) -> RawConfig {
        RawConfig {
            drives: drives.iter().map(|d| d.to_string()).collect(),
            address: ADDRESS_DEFAULT.to_owned(),
            io: "auto".to_owned(),
            presign_expiry: PRESIGN_EXPIRY_DEFAULT.to_owned(),
            cache_size: CACHE_SIZE_DEFAULT.to_owned(),
            backend_bucket: "lakeshare".to_owned(),
            ..RawConfig::default()
        }
    }

    #[test]
    fn r13_a_backend_takes_no_drives_and_needs_credentials() {
        let with_backend = |drives: &[&str], env: &dyn Fn(&str) -> Option<String>| {
            let mut raw = raw(drives);
            raw.backend = Some("http://127.0.0.1:7480/".to_owned());
            Config::from_raw(raw, env)
        };
        let credentials = |name: &str| match name {
            "LAKESHARE_BACKEND_ACCESS_KEY" => Some("ak".to_owned()),
            "LAKESHARE_BACKEND_SECRET_KEY" => Some("sk".to_owned()),
            _ => None,
        };
        let config = with_backend(&[], &credentials).unwrap();
        assert!(config.drives.is_empty());
        let backend = config.backend.unwrap();
        assert_eq!(backend.endpoint, "http://127.0.0.1:7480");
        assert_eq!(backend.bucket, "lakeshare");
        assert_eq!(backend.region, "us-east-1");
        let errors = with_backend(&["/tmp/d1"], &credentials).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("takes no drives")),
            "{errors:?}"
        );
        let errors = with_backend(&[], &|_| None).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("LAKESHARE_BACKEND_ACCESS_KEY")),
            "{errors:?}"
        );
    }

    #[test]
    fn r13_presign_direct_needs_a_backend_and_a_url() {
        let credentials = |name: &str| match name {
            "LAKESHARE_BACKEND_ACCESS_KEY" => Some("ak".to_owned()),
            "LAKESHARE_BACKEND_SECRET_KEY" => Some("sk".to_owned()),
            _ => None,
        };
        let mut direct = raw(&[]);
        direct.backend = Some("http://127.0.0.1:7480".to_owned());
        direct.presign_direct = Some("https://s3.example.com/".to_owned());
        let backend = Config::from_raw(direct.clone(), &credentials)
            .unwrap()
            .backend
            .unwrap();
        assert_eq!(
            backend.presign_direct.as_deref(),
            Some("https://s3.example.com")
        );
        direct.presign_direct = Some("s3.example.com".to_owned());
        let errors = Config::from_raw(direct, &credentials).unwrap_err();
        assert!(errors[0].contains("--presign-direct"), "{errors:?}");
        let mut on_drives = raw(&["/tmp/d1"]);
        on_drives.presign_direct = Some("https://s3.example.com".to_owned());
        let errors = Config::from_raw(on_drives, &credentials).unwrap_err();
        assert!(errors[0].contains("only a sharing node"), "{errors:?}");
    }

    #[test]
    fn defaults() {
        let config = Config::from_raw(raw(&[]), &env_of(&[])).unwrap();
        assert_eq!(config.drives, vec![PathBuf::from(DRIVE_DEFAULT)]);
        assert_eq!(config.cache_bytes, 1 << 30);
        assert_eq!(config.address, "0.0.0.0:9000".parse().unwrap());
        assert!(config.threads >= 1);
        assert_eq!(config.io, IoChoice::Auto);
        assert!(config.credentials_defaulted);
        assert_eq!(config.credentials.access_key, "minioadmin");
        assert_eq!(config.presign_expiry_seconds, 3600);
        assert_eq!(config.sharing_endpoint, None);
        assert!(config.domains.is_empty());
    }

    #[test]
    fn domains_are_a_checked_comma_list() {
        let mut with_domain = raw(&[]);
        with_domain.domain = Some("S3.example.com, lake.local".into());
        let config = Config::from_raw(with_domain, &env_of(&[])).unwrap();
        assert_eq!(config.domains, vec!["s3.example.com", "lake.local"]);
        let env = env_of(&[("MINIO_DOMAIN", "minio.example.com")]);
        let config = Config::from_raw(raw(&[]), &env).unwrap();
        assert_eq!(config.domains, vec!["minio.example.com"]);
        for bad in ["a..b", "example.com,s3.example.com", "x.io:9000"] {
            let mut with_bad = raw(&[]);
            with_bad.domain = Some(bad.into());
            let errors = Config::from_raw(with_bad, &env_of(&[])).unwrap_err();
            assert!(
                errors.iter().any(|e| e.contains("--domain")),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn sharing_settings() {
        let env = env_of(&[("MINIO_DELTA_SHARING_ENDPOINT", "https://lake.example.com")]);
        let config = Config::from_raw(raw(&[]), &env).unwrap();
        assert_eq!(
            config.sharing_endpoint.as_deref(),
            Some("https://lake.example.com")
        );
        let env = env_of(&[
            ("LAKESHARE_SHARING_ENDPOINT", "http://a:1"),
            ("MINIO_DELTA_SHARING_ENDPOINT", "http://b:2"),
        ]);
        let config = Config::from_raw(raw(&[]), &env).unwrap();
        assert_eq!(config.sharing_endpoint.as_deref(), Some("http://a:1"));
        let mut bad = raw(&[]);
        bad.presign_expiry = "8d".into();
        let env = env_of(&[("LAKESHARE_SHARING_ENDPOINT", "lake:9000")]);
        let errors = Config::from_raw(bad, &env).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(parse_duration_seconds("90m"), Some(5400));
        assert_eq!(parse_duration_seconds("1x"), None);
    }

    #[test]
    fn drives_are_brace_expanded() {
        let config = Config::from_raw(raw(&["/tmp/x/d{1...4}"]), &env_of(&[])).unwrap();
        assert_eq!(config.drives.len(), 4);
        assert_eq!(config.drives[3], PathBuf::from("/tmp/x/d4"));
    }

    #[test]
    fn address_forms() {
        assert_eq!(
            parse_address(":9000").unwrap(),
            "0.0.0.0:9000".parse().unwrap()
        );
        assert_eq!(
            parse_address("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert!(parse_address("nonsense").is_err());
    }

    #[test]
    fn io_choices() {
        assert_eq!(parse_io("AUTO").unwrap(), IoChoice::Auto);
        assert_eq!(parse_io("uring").unwrap(), IoChoice::Uring);
        assert_eq!(parse_io("threads").unwrap(), IoChoice::Threads);
        assert!(parse_io("fast").is_err());
    }

    #[test]
    fn credentials_precedence() {
        let env = env_of(&[
            ("LAKESHARE_ROOT_USER", "lakeuser"),
            ("LAKESHARE_ROOT_PASSWORD", "lakepassword"),
            ("MINIO_ROOT_USER", "miniouser"),
            ("MINIO_ROOT_PASSWORD", "miniopassword"),
        ]);
        let (credentials, defaulted) = root_credentials(&env).unwrap();
        assert_eq!(credentials.access_key, "lakeuser");
        assert!(!defaulted);
        let env = env_of(&[
            ("MINIO_ROOT_USER", "miniouser"),
            ("MINIO_ROOT_PASSWORD", "miniopass"),
        ]);
        assert_eq!(root_credentials(&env).unwrap().0.secret_key, "miniopass");
        let env = env_of(&[("LAKESHARE_ROOT_USER", "lakeuser")]);
        assert!(root_credentials(&env).is_err());
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let mut bad = raw(&["/tmp/d{1...2"]);
        bad.address = "nonsense".to_owned();
        bad.io = "fast".to_owned();
        bad.threads = Some(0);
        let env = env_of(&[
            ("LAKESHARE_ROOT_USER", "u"),
            ("LAKESHARE_ROOT_PASSWORD", "short"),
        ]);
        let errors = Config::from_raw(bad, &env).unwrap_err();
        assert_eq!(errors.len(), 6, "{errors:#?}");
    }

    #[test]
    fn parity_above_half_is_refused() {
        let mut config = raw(&["/tmp/p/d{1...4}"]);
        config.parity = Some(3);
        assert!(Config::from_raw(config, &env_of(&[])).is_err());
    }
}
