//! Listing: a walk of the key directories under the prefix, merged across every drive of
//! every set, in UTF-8 byte order.
//!
//! Invariants: keys come out strictly ascending and strictly after `after`; a directory is
//! descended only when keys under it can still be returned; an object is listed only when
//! its metadata has read quorum in its set, and each copy is read once per listing; every
//! folder walked is a `DrivePath` below the bucket folder, so a prefix with `.` or `..`
//! segments is refused instead of walking out of the bucket. A key ending in `/` (a directory
//! marker, kept in the reserved `DIRECTORY_KEY_DIR` child of its folder) is listed when its
//! folder is walked, before everything under it, as S3 orders `a/` before `a/b`.

use std::collections::BTreeSet;

use futures::future::join_all;
use futures::StreamExt;

use crate::drive::DrivePath;
use crate::error::Result;
use crate::meta::{DATA_DIR, DIRECTORY_KEY_DIR, META_FILE};
use crate::object::{ListRequest, ListResult};
use crate::set::{object_info, ErasureSet};
use crate::sets::SetGroup;

/// Child directories probed at once while walking one directory.
const PROBES_IN_FLIGHT_MAX: usize = 32;

struct Walk<'a> {
    bucket: &'a str,
    prefix: &'a str,
    delimiter: Option<&'a str>,
    after: Option<&'a str>,
    max_keys: usize,
    /// Queue a heal of each damaged object met (not when heal itself walks the bucket, which
    /// repairs and counts them in its own report).
    queue_heals: bool,
    result: ListResult,
    done: bool,
}

enum Item {
    Object(String),
    /// Ends with `/`.
    Directory(String),
}

impl Item {
    fn text(&self) -> &str {
        match self {
            Item::Object(text) | Item::Directory(text) => text,
        }
    }
}

impl SetGroup {
    pub(crate) async fn list(&self, bucket: &str, request: &ListRequest) -> Result<ListResult> {
        self.walk(bucket, request, true).await
    }

    /// A listing for heal's own walk, which leaves damaged objects to its caller.
    pub(crate) async fn list_for_heal(
        &self,
        bucket: &str,
        request: &ListRequest,
    ) -> Result<ListResult> {
        self.walk(bucket, request, false).await
    }

    async fn walk(
        &self,
        bucket: &str,
        request: &ListRequest,
        queue_heals: bool,
    ) -> Result<ListResult> {
        let mut walk = Walk {
            bucket,
            prefix: &request.prefix,
            delimiter: request
                .delimiter
                .as_deref()
                .filter(|delimiter| !delimiter.is_empty()),
            after: request.after.as_deref(),
            max_keys: request.max_keys,
            queue_heals,
            result: ListResult::default(),
            done: request.max_keys == 0,
        };
        let base = match request.prefix.rfind('/') {
            Some(slash) => request.prefix[..=slash].to_string(),
            None => String::new(),
        };
        if folder_path(bucket, &base).is_err() {
            // No key has an empty, `.` or `..` segment (`Node` refuses the last two).
            return Ok(ListResult::default());
        }
        if !walk.done {
            self.walk_dir(&mut walk, base).await?;
        }
        Ok(walk.result)
    }

    fn walk_dir<'a>(
        &'a self,
        walk: &'a mut Walk<'_>,
        dir: String,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (children, has_directory_key) = self.child_dirs(walk.bucket, &dir).await;
            let relevant: Vec<String> = children
                .into_iter()
                .map(|name| format!("{dir}{name}"))
                .filter(|child| {
                    let as_dir = format!("{child}/");
                    let under_prefix =
                        child.starts_with(walk.prefix) || walk.prefix.starts_with(&as_dir);
                    let all_before_after = walk.after.is_some_and(|after| {
                        child.as_str() < after && !after.starts_with(child.as_str())
                    });
                    under_prefix && !all_before_after
                })
                .collect();
            let bucket = walk.bucket;
            let probes = futures::stream::iter(relevant.into_iter().map(|child| async move {
                let (has_meta, has_children) = self.probe(bucket, &child).await;
                (child, has_meta, has_children)
            }))
            .buffered(PROBES_IN_FLIGHT_MAX)
            .collect::<Vec<_>>()
            .await;
            let mut items = Vec::new();
            if has_directory_key && !dir.is_empty() {
                items.push(Item::Object(dir.clone()));
            }
            for (child, has_meta, has_children) in probes {
                if has_children {
                    items.push(Item::Directory(format!("{child}/")));
                }
                if has_meta {
                    items.push(Item::Object(child));
                }
            }
            items.sort_by(|left, right| left.text().as_bytes().cmp(right.text().as_bytes()));
            for item in items {
                if walk.done {
                    break;
                }
                match item {
                    Item::Object(key) => {
                        if !key.starts_with(walk.prefix) {
                            continue;
                        }
                        if let Some(common) = common_prefix(walk, &key) {
                            add_prefix(walk, common);
                            continue;
                        }
                        if walk.after.is_some_and(|after| key.as_str() <= after) {
                            continue;
                        }
                        self.add_object(walk, key).await;
                    }
                    Item::Directory(path) => {
                        if walk
                            .after
                            .is_some_and(|after| path.as_str() < after && !after.starts_with(&path))
                        {
                            continue;
                        }
                        if walk.delimiter == Some("/")
                            && path.starts_with(walk.prefix)
                            && path.len() > walk.prefix.len()
                        {
                            if let Some(common) = common_prefix(walk, &path) {
                                add_prefix(walk, common);
                                continue;
                            }
                        }
                        self.walk_dir(walk, path).await?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Names of subdirectories of `bucket/dir` on any drive, data dirs and the folder of the
    /// key `dir` itself excluded; and whether any drive has that folder.
    async fn child_dirs(&self, bucket: &str, dir: &str) -> (BTreeSet<String>, bool) {
        let Ok(path) = folder_path(bucket, dir) else {
            return (BTreeSet::new(), false);
        };
        let reads = self.drives().map(|drive| {
            let path = &path;
            async move { drive.read_dir(path).await.unwrap_or_default() }
        });
        let mut names = BTreeSet::new();
        let mut has_directory_key = false;
        for entries in join_all(reads).await {
            for (name, is_dir) in entries {
                if !is_dir || name == DATA_DIR {
                    continue;
                }
                if name == DIRECTORY_KEY_DIR {
                    has_directory_key = true;
                } else {
                    names.insert(name);
                }
            }
        }
        (names, has_directory_key)
    }

    /// Whether `bucket/child` holds an object's metadata and whether it has subdirectories
    /// (the folder of the key `child/` counts: the walk lists that key inside `child/`).
    async fn probe(&self, bucket: &str, child: &str) -> (bool, bool) {
        let Ok(path) = folder_path(bucket, child) else {
            return (false, false);
        };
        let reads = self.drives().map(|drive| {
            let path = &path;
            async move { drive.read_dir(path).await.unwrap_or_default() }
        });
        let mut has_meta = false;
        let mut has_children = false;
        for entries in join_all(reads).await {
            for (name, is_dir) in entries {
                has_meta |= !is_dir && name == META_FILE;
                has_children |= is_dir && name != DATA_DIR;
            }
        }
        (has_meta, has_children)
    }

    async fn add_object(&self, walk: &mut Walk<'_>, key: String) {
        let set = self.set_for(walk.bucket, &key);
        let reads = set.read_metas(walk.bucket, &key).await;
        let Ok(Some(chosen)) = set.choose(&reads, false).await else {
            return;
        };
        if chosen.damaged && walk.queue_heals {
            set.queue_heal(walk.bucket, &key);
        }
        if walk.result.objects.len() + walk.result.common_prefixes.len() >= walk.max_keys {
            walk.result.is_truncated = true;
            walk.done = true;
            return;
        }
        walk.result
            .objects
            .push(object_info(walk.bucket, &key, &chosen.meta));
        walk.result.next_after = Some(key);
    }
}

/// The folder `dir` (`""` or ending with `/`) of `bucket` on a drive.
fn folder_path(bucket: &str, dir: &str) -> std::io::Result<DrivePath> {
    let bucket_dir = ErasureSet::bucket_dir(bucket)?;
    match dir.strip_suffix('/') {
        Some(folder) => bucket_dir.join_all(folder),
        None if dir.is_empty() => Ok(bucket_dir),
        None => bucket_dir.join_all(dir),
    }
}

/// The common prefix `key` rolls up into under the delimiter, if any.
fn common_prefix(walk: &Walk<'_>, key: &str) -> Option<String> {
    let delimiter = walk.delimiter?;
    let rest = &key[walk.prefix.len()..];
    let at = rest.find(delimiter)?;
    Some(format!("{}{}", walk.prefix, &rest[..at + delimiter.len()]))
}

fn add_prefix(walk: &mut Walk<'_>, common: String) {
    if walk.after.is_some_and(|after| common.as_str() <= after) {
        return;
    }
    if walk.result.common_prefixes.last() == Some(&common) {
        return;
    }
    if walk.result.objects.len() + walk.result.common_prefixes.len() >= walk.max_keys {
        walk.result.is_truncated = true;
        walk.done = true;
        return;
    }
    walk.result.common_prefixes.push(common.clone());
    walk.result.next_after = Some(common);
}
