//! The sharing catalog: shares, their schemas and tables, and the tokens that read them.
//!
//! The whole catalog is one JSON document in the node's system area (maximum parity), so
//! every change — a share with its tokens removed, a schema list replaced — is one atomic
//! write: a change is either stored whole or not at all. Readers take an immutable snapshot
//! (`Arc<CatalogSnapshot>`) without waiting; writers are serialised and swap in a new
//! snapshot only after the write succeeded.
//!
//! Token secrets are never stored: only their SHA-256 digests.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use bytes::Bytes;
use object_store::ObjectStore;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Deserializer, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::error::{ErrorKind, Result, SharingError};
use crate::names::{name_key, validate_name, NameKind};
use crate::store::{Expected, SharingStore, Written};

/// System-area key of the catalog document.
pub const CATALOG_KEY: &str = "delta-sharing/catalog.json";
/// Bytes of randomness in a token secret.
pub const TOKEN_SECRET_BYTES: usize = 32;
pub const TOKEN_PREFIX: &str = "dstkn_";
pub const SHARES_MAX: usize = 10_000;
pub const TABLES_PER_SHARE_MAX: usize = 100_000;
pub const DESCRIPTION_CHARS_MAX: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    Delta,
    Iceberg,
    Uniform,
}

/// A shared table, in the admin API's wire shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    pub name: String,
    pub source_type: SourceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Table root inside the bucket, normalised to end with `/` and not start with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_parts"
    )]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default)]
    pub id: String,
    #[serde(default = "default_true")]
    pub history_shared: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schema {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub tables: Vec<Table>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Share {
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub schemas: Vec<Schema>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

/// A token as stored: the secret's digest, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub token_id: String,
    pub share_id: String,
    /// Hex SHA-256 of the whole bearer token.
    pub token_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// The persisted document.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogDocument {
    /// Bumped on every change.
    pub revision: u64,
    /// Base64 of the node secret that keys page tokens.
    pub secret: String,
    pub shares: Vec<Share>,
    pub tokens: Vec<TokenRecord>,
}

/// An immutable view of the catalog with lookup indexes.
pub struct CatalogSnapshot {
    pub document: CatalogDocument,
    secret: Vec<u8>,
    share_by_key: HashMap<String, usize>,
    share_by_id: HashMap<String, usize>,
    token_by_digest: HashMap<[u8; 32], usize>,
    /// bucket → table roots shared from it.
    roots_by_bucket: HashMap<String, Vec<String>>,
}

impl CatalogSnapshot {
    fn new(document: CatalogDocument) -> Result<Self> {
        let secret = base64::engine::general_purpose::STANDARD
            .decode(&document.secret)
            .map_err(|error| SharingError::internal(format!("catalog secret: {error}")))?;
        let mut share_by_key = HashMap::new();
        let mut share_by_id = HashMap::new();
        for (index, share) in document.shares.iter().enumerate() {
            share_by_key.insert(name_key(&share.name), index);
            share_by_id.insert(share.id.clone(), index);
        }
        let mut token_by_digest = HashMap::new();
        for (index, token) in document.tokens.iter().enumerate() {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&token.token_sha256, &mut digest)
                .map_err(|error| SharingError::internal(format!("token digest: {error}")))?;
            token_by_digest.insert(digest, index);
        }
        let mut roots_by_bucket: HashMap<String, Vec<String>> = HashMap::new();
        for table in document
            .shares
            .iter()
            .flat_map(|share| share.schemas.iter())
            .flat_map(|schema| schema.tables.iter())
        {
            if let (Some(bucket), Some(location)) = (&table.bucket, &table.location) {
                roots_by_bucket
                    .entry(bucket.clone())
                    .or_default()
                    .push(location.clone());
            }
        }
        Ok(CatalogSnapshot {
            document,
            secret,
            share_by_key,
            share_by_id,
            token_by_digest,
            roots_by_bucket,
        })
    }

    /// Whether `bucket/key` lies under the root of a table some share holds.
    pub fn is_shared_object(&self, bucket: &str, key: &str) -> bool {
        self.roots_by_bucket
            .get(bucket)
            .is_some_and(|roots| roots.iter().any(|root| key.starts_with(root.as_str())))
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    pub fn share(&self, name: &str) -> Option<&Share> {
        self.share_by_key
            .get(&name_key(name))
            .map(|index| &self.document.shares[*index])
    }

    pub fn share_by_id(&self, id: &str) -> Option<&Share> {
        self.share_by_id
            .get(id)
            .map(|index| &self.document.shares[*index])
    }

    pub fn shares(&self) -> &[Share] {
        &self.document.shares
    }

    pub fn tokens_of<'a>(
        &'a self,
        share_id: &'a str,
    ) -> impl Iterator<Item = &'a TokenRecord> + 'a {
        self.document
            .tokens
            .iter()
            .filter(move |token| token.share_id == share_id)
    }

    /// The token and its share for a bearer secret, if the token is known and not expired.
    pub fn authenticate(
        &self,
        bearer: &str,
        now: OffsetDateTime,
    ) -> Result<(&TokenRecord, &Share)> {
        let digest = token_digest(bearer);
        let unknown = || SharingError::unauthenticated("the bearer token is not valid");
        let index = *self.token_by_digest.get(&digest).ok_or_else(unknown)?;
        let token = &self.document.tokens[index];
        let mut stored = [0u8; 32];
        hex::decode_to_slice(&token.token_sha256, &mut stored).map_err(|_| unknown())?;
        if !bool::from(stored.ct_eq(&digest)) {
            return Err(unknown());
        }
        if token.expires_at.is_some_and(|expires| now >= expires) {
            return Err(SharingError::unauthenticated(
                "the bearer token has expired",
            ));
        }
        let share = self.share_by_id(&token.share_id).ok_or_else(unknown)?;
        Ok((token, share))
    }
}

/// Finds a schema of a share by name, case-insensitively.
fn add_table(share: &mut Share, schema_name: &str, table: Table) -> Result<()> {
    let index = match share
        .schemas
        .iter()
        .position(|schema| name_key(&schema.name) == name_key(schema_name))
    {
        Some(index) => index,
        None => {
            share.schemas.push(Schema {
                name: schema_name.to_owned(),
                description: None,
                tables: Vec::new(),
            });
            share.schemas.len() - 1
        }
    };
    let schema = &mut share.schemas[index];
    if find_table(schema, &table.name).is_some() {
        return Err(SharingError::new(
            ErrorKind::AlreadyExists,
            format!(
                "table '{}.{}' is already in the share '{}'; remove it first",
                schema.name, table.name, share.name
            ),
        ));
    }
    schema.tables.push(table);
    Ok(())
}

fn remove_table(share: &mut Share, removed: &TableName) -> Result<()> {
    let missing = || {
        SharingError::not_found(format!(
            "table '{}.{}' is not in the share '{}'",
            removed.schema, removed.table, share.name
        ))
    };
    let index = share
        .schemas
        .iter()
        .position(|schema| name_key(&schema.name) == name_key(&removed.schema))
        .ok_or_else(missing)?;
    let tables = &mut share.schemas[index].tables;
    let before = tables.len();
    tables.retain(|table| name_key(&table.name) != name_key(&removed.table));
    if tables.len() == before {
        return Err(missing());
    }
    if tables.is_empty() {
        share.schemas.remove(index);
    }
    Ok(())
}

pub fn find_schema<'a>(share: &'a Share, name: &str) -> Option<&'a Schema> {
    let key = name_key(name);
    share
        .schemas
        .iter()
        .find(|schema| name_key(&schema.name) == key)
}

/// Finds a table of a schema by name, case-insensitively.
pub fn find_table<'a>(schema: &'a Schema, name: &str) -> Option<&'a Table> {
    let key = name_key(name);
    schema
        .tables
        .iter()
        .find(|table| name_key(&table.name) == key)
}

/// The catalog shared by every core (`SharedCatalog`).
/// The share-time check that a table's path holds a table of its format (the formats live
/// above the catalog, so the catalog is handed the check).
#[async_trait::async_trait]
pub trait TableRootCheck: Send + Sync {
    async fn check(
        &self,
        store: &dyn ObjectStore,
        source_type: SourceType,
        location: &str,
    ) -> Result<()>;
}

pub struct Catalog {
    store: Arc<dyn SharingStore>,
    root_check: Arc<dyn TableRootCheck>,
    current: RwLock<Published>,
    writer: Mutex<()>,
}

/// The catalog as last read or written, and the stored version it came from.
#[derive(Clone)]
struct Published {
    snapshot: Arc<CatalogSnapshot>,
    version: String,
}

/// Tries of one change against writers elsewhere before it gives up (each retry re-reads).
const CHANGE_ATTEMPTS_MAX: usize = 32;

/// What the admin asks for when creating or replacing a share.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub schemas: Option<Vec<Schema>>,
    /// Tables to add to the share as stored when the change is applied (not as the caller
    /// last saw it), so adds and removes made at once on several nodes are all kept.
    #[serde(default)]
    pub add_tables: Vec<SchemaTable>,
    /// Tables to remove, likewise; a schema left empty goes too.
    #[serde(default)]
    pub remove_tables: Vec<TableName>,
}

/// A table of a schema to add (`{"schema": "s", "table": {...}}`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SchemaTable {
    pub schema: String,
    pub table: Table,
}

/// A table of a schema by name (`{"schema": "s", "table": "t"}`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

/// A token just created: the only time its secret exists outside the recipient's hands.
pub struct NewToken {
    pub record: TokenRecord,
    pub secret: String,
}

impl Catalog {
    /// Loads the catalog from the system area, creating an empty one on a new store (if
    /// another node creates it at the same moment, that one is loaded).
    pub async fn open(
        store: Arc<dyn SharingStore>,
        root_check: Arc<dyn TableRootCheck>,
    ) -> Result<Arc<Catalog>> {
        let published = loop {
            if let Some(published) = read_published(store.as_ref()).await? {
                break published;
            }
            let mut secret = [0u8; 32];
            fill_random(&mut secret)?;
            let document = CatalogDocument {
                revision: 0,
                secret: base64::engine::general_purpose::STANDARD.encode(secret),
                shares: Vec::new(),
                tokens: Vec::new(),
            };
            if let Written::Stored(version) =
                write_document(store.as_ref(), &document, Expected::Absent).await?
            {
                break Published {
                    snapshot: Arc::new(CatalogSnapshot::new(document)?),
                    version,
                };
            }
        };
        Ok(Arc::new(Catalog {
            store,
            root_check,
            current: RwLock::new(published),
            writer: Mutex::new(()),
        }))
    }

    /// Reads the stored catalog again (changes made by other nodes) and publishes it.
    pub async fn reload(&self) -> Result<()> {
        if let Some(published) = read_published(self.store.as_ref()).await? {
            self.publish(published);
        }
        Ok(())
    }

    fn publish(&self, published: Published) {
        match self.current.write() {
            Ok(mut guard) => *guard = published,
            Err(poisoned) => *poisoned.into_inner() = published,
        }
    }

    fn published(&self) -> Published {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.published().snapshot
    }

    pub async fn create_share(&self, request: ShareRequest) -> Result<Share> {
        validate_name(NameKind::Share, &request.name)?;
        validate_description(request.description.as_deref())?;
        let schemas = request.schemas.unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        let schemas = self.checked_schemas(schemas, None).await?;
        let share = Share {
            id: Uuid::new_v4().to_string(),
            name: request.name,
            description: request.description.filter(|text| !text.is_empty()),
            schemas,
            created_at: Some(now),
            updated_at: Some(now),
        };
        self.change(|document| {
            if document
                .shares
                .iter()
                .any(|existing| name_key(&existing.name) == name_key(&share.name))
            {
                return Err(SharingError::new(
                    ErrorKind::AlreadyExists,
                    format!("share '{}' already exists", share.name),
                ));
            }
            if document.shares.len() >= SHARES_MAX {
                return Err(SharingError::invalid(format!(
                    "a node holds at most {SHARES_MAX} shares"
                )));
            }
            document.shares.push(share.clone());
            Ok(share.clone())
        })
        .await
    }

    /// Changes a share: its description, its whole schema list, and/or tables added and
    /// removed. Adds and removes apply to the stored share inside the compare-and-swap, so
    /// they are never lost to another change made at the same moment on another node.
    pub async fn update_share(&self, name: &str, request: ShareRequest) -> Result<Share> {
        validate_description(request.description.as_deref())?;
        let existing = self
            .snapshot()
            .share(name)
            .cloned()
            .ok_or_else(|| share_not_found(name))?;
        let schemas = match request.schemas {
            Some(schemas) => Some(self.checked_schemas(schemas, Some(&existing)).await?),
            None => None,
        };
        // Added tables are checked (names, bucket, table root) once, before the change.
        let mut additions: Vec<Schema> = Vec::new();
        for added in &request.add_tables {
            match additions
                .iter_mut()
                .find(|schema| name_key(&schema.name) == name_key(&added.schema))
            {
                Some(schema) => schema.tables.push(added.table.clone()),
                None => additions.push(Schema {
                    name: added.schema.clone(),
                    description: None,
                    tables: vec![added.table.clone()],
                }),
            }
        }
        let additions = match additions.is_empty() {
            true => additions,
            false => self.checked_schemas(additions, None).await?,
        };
        self.change(|document| {
            let share = document
                .shares
                .iter_mut()
                .find(|share| share.id == existing.id)
                .ok_or_else(|| share_not_found(name))?;
            if let Some(description) = &request.description {
                share.description = Some(description.clone()).filter(|text| !text.is_empty());
            }
            if let Some(schemas) = &schemas {
                share.schemas = schemas.clone();
            }
            for removed in &request.remove_tables {
                remove_table(share, removed)?;
            }
            for schema in &additions {
                for table in &schema.tables {
                    add_table(share, &schema.name, table.clone())?;
                }
            }
            let tables: usize = share.schemas.iter().map(|schema| schema.tables.len()).sum();
            if tables > TABLES_PER_SHARE_MAX {
                return Err(SharingError::invalid(format!(
                    "a share holds at most {TABLES_PER_SHARE_MAX} tables"
                )));
            }
            share.updated_at = Some(OffsetDateTime::now_utc());
            Ok(share.clone())
        })
        .await
    }

    /// Removes a share and, in the same write, every token of it.
    pub async fn delete_share(&self, name: &str) -> Result<()> {
        self.change(|document| {
            let index = document
                .shares
                .iter()
                .position(|share| name_key(&share.name) == name_key(name))
                .ok_or_else(|| share_not_found(name))?;
            let share = document.shares.remove(index);
            document.tokens.retain(|token| token.share_id != share.id);
            Ok(())
        })
        .await
    }

    pub async fn create_token(
        &self,
        share_name: &str,
        description: Option<String>,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<NewToken> {
        validate_description(description.as_deref())?;
        let now = OffsetDateTime::now_utc();
        if expires_at.is_some_and(|expires| expires <= now) {
            return Err(SharingError::invalid("expiresAt must be in the future"));
        }
        let mut random = [0u8; TOKEN_SECRET_BYTES];
        fill_random(&mut random)?;
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        );
        let digest = token_digest(&secret);
        self.change(|document| {
            let share = document
                .shares
                .iter()
                .find(|share| name_key(&share.name) == name_key(share_name))
                .ok_or_else(|| share_not_found(share_name))?;
            let record = TokenRecord {
                token_id: Uuid::new_v4().simple().to_string(),
                share_id: share.id.clone(),
                token_sha256: hex::encode(digest),
                description: description.clone().filter(|text| !text.is_empty()),
                created_at: now,
                expires_at,
            };
            document.tokens.push(record.clone());
            Ok(NewToken {
                record,
                secret: secret.clone(),
            })
        })
        .await
    }

    pub async fn delete_token(&self, token_id: &str) -> Result<()> {
        self.change(|document| {
            let before = document.tokens.len();
            document.tokens.retain(|token| token.token_id != token_id);
            if document.tokens.len() == before {
                return Err(SharingError::not_found(format!(
                    "token '{token_id}' not found"
                )));
            }
            Ok(())
        })
        .await
    }

    /// Validates a schema list, keeps the ids of tables that stay, and checks buckets exist.
    async fn checked_schemas(
        &self,
        mut schemas: Vec<Schema>,
        existing: Option<&Share>,
    ) -> Result<Vec<Schema>> {
        let mut schema_keys = std::collections::HashSet::new();
        let mut table_count = 0usize;
        let mut new_tables = Vec::new();
        for schema in &mut schemas {
            validate_name(NameKind::Schema, &schema.name)?;
            validate_description(schema.description.as_deref())?;
            if !schema_keys.insert(name_key(&schema.name)) {
                return Err(SharingError::invalid(format!(
                    "schema '{}' appears twice",
                    schema.name
                )));
            }
            let mut table_keys = std::collections::HashSet::new();
            for table in &mut schema.tables {
                validate_name(NameKind::Table, &table.name)?;
                if !table_keys.insert(name_key(&table.name)) {
                    return Err(SharingError::invalid(format!(
                        "table '{}.{}' appears twice",
                        schema.name, table.name
                    )));
                }
                normalise_table(table)?;
                let previous = existing
                    .and_then(|share| find_schema(share, &schema.name))
                    .and_then(|old| find_table(old, &table.name))
                    .filter(|old| same_source(old, table));
                table.id = match previous {
                    Some(old) => old.id.clone(),
                    None => {
                        new_tables.push(table.clone());
                        Uuid::new_v4().to_string()
                    }
                };
                table_count += 1;
            }
        }
        if table_count > TABLES_PER_SHARE_MAX {
            return Err(SharingError::invalid(format!(
                "a share holds at most {TABLES_PER_SHARE_MAX} tables"
            )));
        }
        let mut checked_buckets = std::collections::HashSet::new();
        for table in schemas.iter().flat_map(|schema| schema.tables.iter()) {
            if let Some(bucket) = &table.bucket {
                if checked_buckets.insert(bucket.clone())
                    && !self.store.bucket_exists(bucket).await?
                {
                    return Err(SharingError::invalid(format!(
                        "table '{}': bucket '{bucket}' does not exist",
                        table.name
                    )));
                }
            }
        }
        for table in &new_tables {
            if let (Some(bucket), Some(location)) = (&table.bucket, &table.location) {
                let store = self.store.bucket(bucket);
                let format = match table.source_type {
                    SourceType::Iceberg => "an Iceberg",
                    SourceType::Delta => "a Delta",
                    SourceType::Uniform => continue,
                };
                let found = self
                    .root_check
                    .check(store.as_ref(), table.source_type, location)
                    .await;
                found.map_err(|error| {
                    SharingError::invalid(format!(
                        "table '{}': {bucket}/{location} is not {format} table: {}",
                        table.name, error.message
                    ))
                })?;
            }
        }
        Ok(schemas)
    }

    /// Reads the stored document, applies `edit` to it and stores the result if the stored
    /// document is still the one edited (compare-and-swap on its version), then publishes it.
    /// When another node changed it in between, it is read again and `edit` applied to that:
    /// a change is never lost to another made at the same moment.
    async fn change<T>(
        &self,
        mut edit: impl FnMut(&mut CatalogDocument) -> Result<T>,
    ) -> Result<T> {
        let _writer = self.writer.lock().await;
        for _ in 0..CHANGE_ATTEMPTS_MAX {
            // Edited and checked against the stored catalog, not this node's copy: another
            // node may have changed it (a share this change names may exist only there).
            self.reload().await?;
            let base = self.published();
            let mut document = base.snapshot.document.clone();
            let value = edit(&mut document)?;
            document.revision = base.snapshot.document.revision + 1;
            let snapshot = CatalogSnapshot::new(document)?;
            match write_document(
                self.store.as_ref(),
                &snapshot.document,
                Expected::Version(base.version),
            )
            .await?
            {
                Written::Stored(version) => {
                    self.publish(Published {
                        snapshot: Arc::new(snapshot),
                        version,
                    });
                    return Ok(value);
                }
                Written::Conflict => {}
            }
        }
        Err(SharingError::new(
            ErrorKind::Unavailable,
            "the catalog kept changing under this change; try again",
        ))
    }
}

/// The stored catalog, if there is one.
async fn read_published(store: &dyn SharingStore) -> Result<Option<Published>> {
    let Some(stored) = store.read_system(CATALOG_KEY).await? else {
        return Ok(None);
    };
    let document = serde_json::from_slice::<CatalogDocument>(&stored.bytes)
        .map_err(|error| SharingError::internal(format!("catalog document: {error}")))?;
    Ok(Some(Published {
        snapshot: Arc::new(CatalogSnapshot::new(document)?),
        version: stored.version,
    }))
}

async fn write_document(
    store: &dyn SharingStore,
    document: &CatalogDocument,
    expected: Expected,
) -> Result<Written> {
    let bytes = serde_json::to_vec(document)
        .map_err(|error| SharingError::internal(format!("catalog encode: {error}")))?;
    Ok(store
        .write_system(CATALOG_KEY, Bytes::from(bytes), expected)
        .await?)
}

/// Parses a table spec: `NAME:delta:BUCKET:PATH/`, `NAME:iceberg:BUCKET:PATH/` or
/// `NAME:uniform:WAREHOUSE:NAMESPACE:TABLE`.
pub fn parse_table_spec(spec: &str) -> Result<Table> {
    let expected = "expected NAME:delta:BUCKET:PATH/, NAME:iceberg:BUCKET:PATH/ or \
                    NAME:uniform:WAREHOUSE:NAMESPACE:TABLE";
    let parts: Vec<&str> = spec.split(':').collect();
    let bad =
        |why: &str| SharingError::invalid(format!("bad table spec {spec:?}: {why}; {expected}"));
    if parts.len() < 2 {
        return Err(bad("too few fields"));
    }
    let source_type = match parts[1].to_ascii_lowercase().as_str() {
        "delta" => SourceType::Delta,
        "iceberg" => SourceType::Iceberg,
        "uniform" => SourceType::Uniform,
        other => return Err(bad(&format!("unknown table format {other:?}"))),
    };
    let mut table = Table {
        name: parts[0].to_string(),
        source_type,
        bucket: None,
        location: None,
        warehouse: None,
        namespace: None,
        table: None,
        id: String::new(),
        history_shared: true,
    };
    match source_type {
        SourceType::Delta | SourceType::Iceberg => {
            if parts.len() != 4 {
                return Err(bad("wrong number of fields"));
            }
            table.bucket = Some(parts[2].to_string());
            table.location = Some(parts[3].to_string());
        }
        SourceType::Uniform => {
            if parts.len() != 5 {
                return Err(bad("wrong number of fields"));
            }
            table.warehouse = Some(parts[2].to_string());
            table.namespace = Some(parts[3].to_string());
            table.table = Some(parts[4].to_string());
        }
    }
    validate_name(NameKind::Table, &table.name).map_err(|error| bad(&error.message))?;
    normalise_table(&mut table).map_err(|error| bad(&error.message))?;
    Ok(table)
}

/// Hex-free SHA-256 of a bearer token.
pub fn token_digest(bearer: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bearer.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

pub fn share_not_found(name: &str) -> SharingError {
    SharingError::not_found(format!("share '{name}' not found"))
}

fn normalise_table(table: &mut Table) -> Result<()> {
    match table.source_type {
        SourceType::Delta | SourceType::Iceberg => {
            let bucket = table.bucket.as_deref().unwrap_or("");
            if !valid_bucket_name(bucket) {
                return Err(SharingError::invalid(format!(
                    "table '{}': {bucket:?} is not a valid bucket name",
                    table.name
                )));
            }
            let location = table
                .location
                .as_deref()
                .unwrap_or("")
                .trim_start_matches('/');
            if location.is_empty()
                || location.contains('\0')
                || location
                    .split('/')
                    .any(|segment| segment == ".." || segment == ".")
            {
                return Err(SharingError::invalid(format!(
                    "table '{}': location {:?} must be a path inside the bucket",
                    table.name,
                    table.location.as_deref().unwrap_or("")
                )));
            }
            let mut location = location.to_string();
            if !location.ends_with('/') {
                location.push('/');
            }
            table.location = Some(location);
            table.warehouse = None;
            table.namespace = None;
            table.table = None;
        }
        SourceType::Uniform => {
            for (field, value) in [
                ("warehouse", &table.warehouse),
                ("namespace", &table.namespace),
                ("table", &table.table),
            ] {
                if value.as_deref().unwrap_or("").is_empty() {
                    return Err(SharingError::invalid(format!(
                        "table '{}': uniform tables need a {field}",
                        table.name
                    )));
                }
            }
            table.bucket = None;
            table.location = None;
        }
    }
    Ok(())
}

fn same_source(a: &Table, b: &Table) -> bool {
    a.source_type == b.source_type
        && a.bucket == b.bucket
        && a.location == b.location
        && a.warehouse == b.warehouse
        && a.namespace == b.namespace
        && a.table == b.table
}

/// S3 bucket naming rules (3-63 of lowercase letters, digits, `-`, `.`; starts and ends
/// with a letter or digit).
fn valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

fn validate_description(description: Option<&str>) -> Result<()> {
    match description {
        Some(text) if text.chars().count() > DESCRIPTION_CHARS_MAX => Err(SharingError::invalid(
            format!("description is longer than {DESCRIPTION_CHARS_MAX} characters"),
        )),
        _ => Ok(()),
    }
}

fn fill_random(target: &mut [u8]) -> Result<()> {
    SystemRandom::new()
        .fill(target)
        .map_err(|_| SharingError::internal("the system random source failed"))
}

fn default_true() -> bool {
    true
}

/// madmin sends a uniform table's namespace as a string or as an array of parts.
fn string_or_parts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Namespace {
        One(String),
        Parts(Vec<String>),
    }
    Ok(
        Option::<Namespace>::deserialize(deserializer)?.map(|namespace| match namespace {
            Namespace::One(text) => text,
            Namespace::Parts(parts) => parts.join("."),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_spec_form() {
        let delta = parse_table_spec("employees:delta:analytics:employees/").unwrap();
        assert_eq!(delta.source_type, SourceType::Delta);
        assert_eq!(delta.bucket.as_deref(), Some("analytics"));
        assert_eq!(delta.location.as_deref(), Some("employees/"));
        let iceberg = parse_table_spec("ev:iceberg:lake:/ns/events").unwrap();
        assert_eq!(iceberg.location.as_deref(), Some("ns/events/"));
        let uniform = parse_table_spec("t:uniform:wh:sales.eu:orders").unwrap();
        assert_eq!(uniform.namespace.as_deref(), Some("sales.eu"));
    }

    #[test]
    fn refuses_bad_specs_with_the_expected_format() {
        for spec in [
            "employees",
            "employees:parquet:analytics:x/",
            "employees:delta:analytics",
            "employees:delta:Bad_Bucket:x/",
            "employees:delta:analytics:../x/",
            "emp.loyees:delta:analytics:x/",
            "t:uniform:wh:ns",
        ] {
            let error = parse_table_spec(spec).unwrap_err();
            assert!(
                error.message.contains("NAME:delta:BUCKET:PATH/"),
                "{spec}: {error}"
            );
        }
    }

    #[test]
    fn namespace_accepts_string_or_array() {
        let table: Table = serde_json::from_str(
            r#"{"name":"t","sourceType":"uniform","warehouse":"w","namespace":["a","b"],"table":"x"}"#,
        )
        .unwrap();
        assert_eq!(table.namespace.as_deref(), Some("a.b"));
        assert!(table.history_shared);
    }

    #[test]
    fn authenticate_checks_digest_and_expiry() {
        let now = OffsetDateTime::now_utc();
        let secret = "dstkn_secret";
        let document = CatalogDocument {
            revision: 1,
            secret: base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
            shares: vec![Share {
                id: "s1".into(),
                name: "Share1".into(),
                description: None,
                schemas: vec![],
                created_at: None,
                updated_at: None,
            }],
            tokens: vec![
                TokenRecord {
                    token_id: "t1".into(),
                    share_id: "s1".into(),
                    token_sha256: hex::encode(token_digest(secret)),
                    description: None,
                    created_at: now,
                    expires_at: None,
                },
                TokenRecord {
                    token_id: "t2".into(),
                    share_id: "s1".into(),
                    token_sha256: hex::encode(token_digest("dstkn_old")),
                    description: None,
                    created_at: now,
                    expires_at: Some(now - time::Duration::seconds(1)),
                },
            ],
        };
        let snapshot = CatalogSnapshot::new(document).unwrap();
        let (token, share) = snapshot.authenticate(secret, now).unwrap();
        assert_eq!(
            (token.token_id.as_str(), share.name.as_str()),
            ("t1", "Share1")
        );
        assert!(snapshot.authenticate("dstkn_wrong", now).is_err());
        let expired = snapshot.authenticate("dstkn_old", now).unwrap_err();
        assert!(expired.message.contains("expired"));
        assert!(snapshot.share("sHARE1").is_some());
    }
}
