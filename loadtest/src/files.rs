//! The file-system anchor of small durable writes: what creating one new small file on each
//! drive costs when it must survive a crash (data fsync, then the folder's fsync for the name).
//! A node's small `PUT` does at least this on every drive of the set, so its rate is the bound
//! that the node's small PUT rate is compared with.
//!
//! Invariants: each request creates new files only (`O_EXCL`, names never reused within a run),
//! in every folder at once, and counts as done when every file and folder is synced.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::report::Report;
use crate::runner::{latency_histogram, record_latency, run_nonce, Limit};

/// Runs `concurrency` workers that each create one file of `file_bytes` in every folder of
/// `dirs` per request, until `limit`.
pub async fn run_create_files(
    dirs: &[PathBuf],
    file_bytes: u64,
    concurrency: usize,
    limit: Limit,
) -> anyhow::Result<Report> {
    anyhow::ensure!(concurrency > 0, "concurrency must be at least 1");
    anyhow::ensure!(!dirs.is_empty(), "--dirs names no folder");
    let run = run_nonce()?;
    let body: Arc<[u8]> = vec![0x5a; usize::try_from(file_bytes)?].into();
    let dirs: Arc<[PathBuf]> = dirs.into();
    let next_index = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (dirs, body, next_index) = (dirs.clone(), body.clone(), next_index.clone());
            tokio::spawn(async move {
                let mut latency_us = latency_histogram()?;
                let mut errors = 0u64;
                loop {
                    let index = next_index.fetch_add(1, Ordering::Relaxed);
                    let done = match limit {
                        Limit::Requests(count) => index >= count,
                        Limit::Duration(duration) => started.elapsed() >= duration,
                    };
                    if done {
                        break;
                    }
                    let request_started = Instant::now();
                    let writes: Vec<_> = dirs
                        .iter()
                        .map(|dir| {
                            let path = dir.join(format!("anchor-{run}-{index}"));
                            let body = body.clone();
                            tokio::task::spawn_blocking(move || create_durably(&path, &body))
                        })
                        .collect();
                    let mut failed = false;
                    for write in writes {
                        failed |= !matches!(write.await, Ok(Ok(())));
                    }
                    if failed {
                        errors += 1;
                    } else {
                        record_latency(&mut latency_us, request_started);
                    }
                }
                anyhow::Ok((latency_us, errors))
            })
        })
        .collect();
    let mut latency_us = latency_histogram()?;
    let mut error_count = 0;
    for worker in workers {
        let (worker_latency, worker_errors) = worker.await.context("worker task failed")??;
        latency_us.add(&worker_latency)?;
        error_count += worker_errors;
    }
    let ok = latency_us.len();
    let mut errors = BTreeMap::new();
    if error_count > 0 {
        errors.insert("io".to_string(), error_count);
    }
    Ok(Report::new(
        "create-files",
        concurrency,
        ok,
        errors,
        started.elapsed().as_secs_f64(),
        ok * file_bytes,
        &latency_us,
    ))
}

/// Creates `path` (which must not exist) holding `body`, syncs it, then syncs its folder.
fn create_durably(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(body)?;
    file.sync_all()?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn creates_one_synced_file_per_folder_per_request() {
        let root = std::env::temp_dir().join(format!("loadtest-files-{}", std::process::id()));
        let dirs = vec![root.join("a"), root.join("b")];
        for dir in &dirs {
            std::fs::create_dir_all(dir).unwrap();
        }
        let report = run_create_files(&dirs, 4096, 3, Limit::Requests(7))
            .await
            .unwrap();
        assert_eq!((report.ok, report.errors.len()), (7, 0));
        for dir in &dirs {
            let files: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
            assert_eq!(files.len(), 7);
            for file in files {
                assert_eq!(file.unwrap().metadata().unwrap().len(), 4096);
            }
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
