//! Virtual-host-style addressing (`--domain`, as MinIO's `MINIO_DOMAIN`): a request whose
//! `Host` is `BUCKET.DOMAIN[:PORT]` names bucket `BUCKET`. Every other host (the bare domain,
//! an IP address, any other name) is path-style, so a node given a domain still answers
//! path-style clients; without a domain the hook is not installed at all.

use s3s::host::{S3Host, VirtualHost};
use s3s::S3Result;

/// The base domains of virtual-host-style requests.
#[derive(Debug, Clone)]
pub struct DomainHost {
    domains: Vec<String>,
}

impl DomainHost {
    /// `domains` are host names without port, each checked by `validate_domain`.
    pub fn new(domains: Vec<String>) -> DomainHost {
        DomainHost {
            domains: domains
                .into_iter()
                .map(|domain| domain.to_ascii_lowercase())
                .collect(),
        }
    }

    /// The bucket `host` names, if it is `BUCKET.DOMAIN` (port ignored) for one of the domains.
    pub fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = strip_port(host);
        self.domains.iter().find_map(|domain| {
            let cut = name.len().checked_sub(domain.len() + 1)?;
            let (bucket, rest) = name.split_at(cut);
            let suffix = rest.strip_prefix('.')?;
            (suffix.eq_ignore_ascii_case(domain) && !bucket.is_empty()).then_some(bucket)
        })
    }
}

impl S3Host for DomainHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some(bucket) => VirtualHost::new(host).with_bucket(bucket),
            None => VirtualHost::new(host),
        })
    }
}

/// A base domain: dot-separated labels of ASCII letters, digits and `-`, no port.
pub fn validate_domain(domain: &str) -> Result<(), String> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(valid_label) {
        return Err(format!(
            "{domain:?}: expected a host name such as s3.example.com"
        ));
    }
    Ok(())
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_come_from_subdomains_of_the_domains_only() {
        let host = DomainHost::new(vec!["s3.example.com".into(), "LOCALHOST".into()]);
        assert_eq!(host.bucket_of("lake.s3.example.com"), Some("lake"));
        assert_eq!(host.bucket_of("lake.s3.example.com:9000"), Some("lake"));
        assert_eq!(host.bucket_of("a.b.s3.example.com"), Some("a.b"));
        assert_eq!(host.bucket_of("lake.localhost:9000"), Some("lake"));
        for path_style in [
            "s3.example.com",
            "s3.example.com:9000",
            ".s3.example.com",
            "lakes3.example.com",
            "127.0.0.1:9000",
            "other.org",
            "localhost",
        ] {
            assert_eq!(host.bucket_of(path_style), None, "{path_style}");
        }
    }

    #[test]
    fn domains_are_host_names() {
        assert!(validate_domain("s3.example.com").is_ok());
        for bad in ["", "a..b", "a.b:9000", "http://a", "a/b"] {
            assert!(validate_domain(bad).is_err(), "{bad}");
        }
    }
}
