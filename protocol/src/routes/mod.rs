//! The Delta Sharing routes under `/_delta-sharing/v1` (the profile's endpoint): bearer
//! authentication, then discovery (shares, schemas, tables) with pagination.
//!
//! A token sees only its own share: any other share, schema or table answers 404
//! `RESOURCE_DOES_NOT_EXIST`, exactly as if it did not exist. JSON bodies are one line.

pub mod async_queries;
pub mod changes;
pub mod query;
pub mod request;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::body::{full_body, ResponseBody};
use crate::catalog::{find_schema, find_table, share_not_found, Catalog, Schema, Share, Table};
use crate::error::{ErrorKind, Result, SharingError};
use crate::names::name_key;
use crate::page_token::{decode_page_token, encode_page_token, PagePosition};
use query::{TableRequest, TableRoutes};

/// Path prefixes the sharing API answers on; profiles name the first.
pub const SHARING_PREFIX: &str = "/_delta-sharing/v1";
const SHARING_ROOT: &str = "/_delta-sharing";
pub const MAX_RESULTS_DEFAULT: usize = 500;
pub const MAX_RESULTS_MAX: usize = 500;

/// Settings of the sharing API.
#[derive(Clone, Debug)]
pub struct SharingConfig {
    /// Base URL recipients reach the node at, e.g. `https://lake.example.com:9000`.
    pub public_endpoint: String,
}

impl SharingConfig {
    /// The `endpoint` written into profiles.
    pub fn profile_endpoint(&self) -> String {
        let base = self.public_endpoint.trim_end_matches('/');
        if base.ends_with(SHARING_ROOT) || base.ends_with(SHARING_PREFIX) {
            base.to_string()
        } else {
            format!("{base}{SHARING_PREFIX}")
        }
    }
}

pub struct SharingService {
    catalog: Arc<Catalog>,
    delta: TableRoutes,
}

/// Largest request body of a sharing route (a query with its predicate hints).
pub const REQUEST_BODY_BYTES_MAX: usize = 2 << 20;

/// Whether a request path belongs to the sharing API.
pub fn is_sharing_path(path: &str) -> bool {
    path == SHARING_ROOT || path.starts_with("/_delta-sharing/")
}

/// A request after authentication: the token's share and the decoded path segments.
struct Authorized {
    token_id: String,
    share: Share,
    segments: Vec<String>,
    query: Vec<(String, String)>,
}

impl SharingService {
    pub fn new(catalog: Arc<Catalog>, delta: TableRoutes) -> Self {
        SharingService { catalog, delta }
    }

    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let head = request.method() == Method::HEAD;
        match self.route(request).await {
            Ok(response) => response,
            Err(error) => error.into_response(head),
        }
    }

    async fn route<B>(&self, request: Request<B>) -> Result<Response<ResponseBody>>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let authorized = self.authorize(&request)?;
        let (parts, body) = request.into_parts();
        let method = parts.method.clone();
        let segments: Vec<&str> = authorized.segments.iter().map(String::as_str).collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["shares"]) => self.list_shares(&authorized),
            (&Method::GET, ["shares", share]) => {
                let share = granted_share(&authorized, share)?;
                json_response(&json!({"share": share_item(share)}))
            }
            (&Method::GET, ["shares", share, "schemas"]) => {
                let share = granted_share(&authorized, share)?;
                self.list_schemas(&authorized, share)
            }
            (&Method::GET, ["shares", share, "schemas", schema, "tables"]) => {
                let share = granted_share(&authorized, share)?;
                let schema = granted_schema(share, schema)?;
                self.list_tables(&authorized, share, Some(schema))
            }
            (&Method::GET, ["shares", share, "all-tables"]) => {
                let share = granted_share(&authorized, share)?;
                self.list_tables(&authorized, share, None)
            }
            (_, ["shares", share, "schemas", schema, "tables", table, rest @ ..]) => {
                let share = granted_share(&authorized, share)?;
                let schema = granted_schema(share, schema)?;
                let table = granted_table(share, schema, table)?.clone();
                if table.source_type == crate::catalog::SourceType::Uniform {
                    return Err(SharingError::new(
                        ErrorKind::Unsupported,
                        format!(
                            "table '{}' is a UniForm table; this node serves Delta and Iceberg \
                             tables so far",
                            table.name
                        ),
                    ));
                }
                let request_parts = TableRequest {
                    share: &share.name,
                    schema: &schema.name,
                    table: &table,
                    headers: &parts.headers,
                    query: &authorized.query,
                    token_id: &authorized.token_id,
                };
                match (&method, rest) {
                    (&Method::GET, ["version"]) | (&Method::HEAD, []) => {
                        self.delta.version(request_parts).await
                    }
                    (&Method::GET, ["metadata"]) => self.delta.metadata(request_parts).await,
                    (&Method::POST, ["query"]) => {
                        let body = read_body(body).await?;
                        self.delta.query(request_parts, body).await
                    }
                    (&Method::GET, ["changes"]) => self.delta.changes(request_parts).await,
                    (&Method::POST, ["queries", query_id]) => {
                        let body = read_body(body).await?;
                        self.delta.query_status(request_parts, query_id, body).await
                    }
                    _ => Err(SharingError::not_found(format!(
                        "no such route: {method} {}",
                        parts.uri.path()
                    ))),
                }
            }
            _ => Err(SharingError::not_found(format!(
                "no such route: {method} {}",
                parts.uri.path()
            ))),
        }
    }

    fn authorize<B>(&self, request: &Request<B>) -> Result<Authorized> {
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| SharingError::unauthenticated("a bearer token is required"))?;
        let snapshot = self.catalog.snapshot();
        let (token, share) = snapshot.authenticate(bearer, OffsetDateTime::now_utc())?;
        let path = request.uri().path();
        let rest = path
            .strip_prefix(SHARING_PREFIX)
            .or_else(|| path.strip_prefix(SHARING_ROOT))
            .unwrap_or("");
        let segments = rest
            .split('/')
            .filter(|segment| !segment.is_empty())
            .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
            .collect();
        let query = request.uri().query().map(parse_query).unwrap_or_default();
        Ok(Authorized {
            token_id: token.token_id.clone(),
            share: share.clone(),
            segments,
            query,
        })
    }

    fn list_shares(&self, authorized: &Authorized) -> Result<Response<ResponseBody>> {
        let items = [(
            name_key(&authorized.share.name),
            share_item(&authorized.share),
        )];
        let expected = position("shares", "", "");
        self.page(authorized, expected, items.into_iter())
    }

    fn list_schemas(
        &self,
        authorized: &Authorized,
        share: &Share,
    ) -> Result<Response<ResponseBody>> {
        let mut schemas: Vec<&Schema> = share.schemas.iter().collect();
        schemas.sort_by_key(|schema| name_key(&schema.name));
        let items = schemas.into_iter().map(|schema| {
            (
                name_key(&schema.name),
                json!({"name": schema.name, "share": share.name}),
            )
        });
        self.page(authorized, position("schemas", &share.id, ""), items)
    }

    fn list_tables(
        &self,
        authorized: &Authorized,
        share: &Share,
        only: Option<&Schema>,
    ) -> Result<Response<ResponseBody>> {
        let mut rows: Vec<(String, &Schema, &Table)> = share
            .schemas
            .iter()
            .filter(|schema| only.is_none_or(|only| std::ptr::eq(only, *schema)))
            .flat_map(|schema| {
                schema.tables.iter().map(move |table| {
                    let key = format!("{}\u{0}{}", name_key(&schema.name), name_key(&table.name));
                    (key, schema, table)
                })
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let items = rows.into_iter().map(|(key, schema, table)| {
            let item = json!({
                "name": table.name,
                "schema": schema.name,
                "share": share.name,
                "shareId": share.id,
                "id": table.id,
            });
            (key, item)
        });
        let expected = match only {
            Some(schema) => position("tables", &share.id, &name_key(&schema.name)),
            None => position("all-tables", &share.id, ""),
        };
        self.page(authorized, expected, items)
    }

    /// One page of `items` (sorted by key) after the page token's position.
    fn page(
        &self,
        authorized: &Authorized,
        expected: PagePosition,
        items: impl Iterator<Item = (String, Value)>,
    ) -> Result<Response<ResponseBody>> {
        let max_results = max_results(&authorized.query)?;
        let snapshot = self.catalog.snapshot();
        let after = match query_value(&authorized.query, "pageToken").filter(|t| !t.is_empty()) {
            Some(token) => Some(decode_page_token(snapshot.secret(), token, &expected)?),
            None => None,
        };
        let mut page = Vec::new();
        let mut last_key = None;
        let mut more = false;
        for (key, item) in items {
            if after
                .as_ref()
                .is_some_and(|after| key.as_str() <= after.as_str())
            {
                continue;
            }
            if page.len() == max_results {
                more = true;
                break;
            }
            last_key = Some(key);
            page.push(item);
        }
        let mut body = json!({ "items": page });
        if more {
            // An empty page (`maxResults=0`) points where this one started.
            let after = last_key.or(after).unwrap_or_default();
            let next = PagePosition { after, ..expected };
            body["nextPageToken"] = Value::String(encode_page_token(snapshot.secret(), &next));
        }
        json_response(&body)
    }
}

/// Reads a request body up to `REQUEST_BODY_BYTES_MAX`.
async fn read_body<B>(body: B) -> Result<Bytes>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, REQUEST_BODY_BYTES_MAX);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(SharingError::new(
            ErrorKind::TooLarge,
            format!("the request body could not be read (at most {REQUEST_BODY_BYTES_MAX} bytes): {error}"),
        )),
    }
}

/// A one-line JSON response with the reference server's content type.
pub fn json_response(value: &Value) -> Result<Response<ResponseBody>> {
    let mut response = Response::new(full_body(Bytes::from(value.to_string())));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Ok(response)
}

pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_decode_str(&text.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(key), decode(value))
        })
        .collect()
}

pub fn query_value<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn max_results(query: &[(String, String)]) -> Result<usize> {
    let Some(text) = query_value(query, "maxResults") else {
        return Ok(MAX_RESULTS_DEFAULT);
    };
    let value: i64 = text.trim().parse().map_err(|_| {
        SharingError::invalid(format!(
            "expected a number for 'maxResults' but got '{text}'"
        ))
    })?;
    if !(0..=MAX_RESULTS_MAX as i64).contains(&value) {
        return Err(SharingError::invalid(format!(
            "Acceptable values of 'maxResults' are 0 to {MAX_RESULTS_MAX}, inclusive. \
             (Default: {MAX_RESULTS_DEFAULT})"
        )));
    }
    Ok(value as usize)
}

fn position(kind: &str, share_id: &str, schema_key: &str) -> PagePosition {
    PagePosition {
        kind: kind.to_string(),
        share_id: share_id.to_string(),
        schema_key: schema_key.to_string(),
        after: String::new(),
    }
}

fn share_item(share: &Share) -> Value {
    json!({"name": share.name, "id": share.id})
}

fn granted_share<'a>(authorized: &'a Authorized, name: &str) -> Result<&'a Share> {
    if name_key(name) == name_key(&authorized.share.name) {
        Ok(&authorized.share)
    } else {
        Err(share_not_found(name))
    }
}

fn granted_schema<'a>(share: &'a Share, name: &str) -> Result<&'a Schema> {
    find_schema(share, name)
        .ok_or_else(|| SharingError::not_found(format!("schema '{name}' not found")))
}

pub fn granted_table<'a>(share: &Share, schema: &'a Schema, name: &str) -> Result<&'a Table> {
    find_table(schema, name).ok_or_else(|| {
        SharingError::not_found(format!(
            "[Table] '{}/{}/{name}' does not exist, please contact your share provider for \
             further information.",
            share.name, schema.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_endpoint_appends_the_prefix_once() {
        let config = SharingConfig {
            public_endpoint: "http://127.0.0.1:9000/".into(),
        };
        assert_eq!(
            config.profile_endpoint(),
            "http://127.0.0.1:9000/_delta-sharing/v1"
        );
        let config = SharingConfig {
            public_endpoint: "https://h/_delta-sharing/v1".into(),
        };
        assert_eq!(config.profile_endpoint(), "https://h/_delta-sharing/v1");
    }

    #[test]
    fn max_results_is_validated() {
        let query = |value: &str| vec![("maxResults".to_string(), value.to_string())];
        assert_eq!(max_results(&[]).unwrap(), 500);
        assert_eq!(max_results(&query("7")).unwrap(), 7);
        assert_eq!(max_results(&query("0")).unwrap(), 0);
        assert!(max_results(&query("501")).is_err());
        assert!(max_results(&query("-1")).is_err());
        assert!(max_results(&query("x3"))
            .unwrap_err()
            .message
            .contains("expected a number"));
    }

    #[test]
    fn query_strings_decode() {
        let query = parse_query("pageToken=a%2Bb&x=1+2&flag");
        assert_eq!(query_value(&query, "pageToken"), Some("a+b"));
        assert_eq!(query_value(&query, "x"), Some("1 2"));
        assert_eq!(query_value(&query, "flag"), Some(""));
    }
}
