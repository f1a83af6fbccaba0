//! The active files of a snapshot as a compact columnar list (`ActiveFiles`): the kernel's
//! scan rows with the replay's selection applied, kept as arrow batches. Each row is lent to
//! callers as a `FileRow` of borrowed columns; no action object is built per file.
//!
//! Invariant: a list's order is fixed by how it was built, and its `order_id` names that
//! build: a full replay of a version always yields the same order (`full_order_id`); an
//! incremental build (new commits replayed on top of an older list) usually yields the same
//! order too, but not always (log compaction files are read in a full replay, not in an
//! incremental one), so it gets its own id. Page tokens carry the id of the list they index
//! into, and a page is served only from a list with that id.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, OnceLock};

use delta_kernel::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, MapArray, MapBuilder,
    RecordBatch, StringBuilder, StructArray,
};
use delta_kernel::arrow::compute::{filter_record_batch, sum};
use delta_kernel::arrow::datatypes::{Fields, Int64Type};
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::scan::ScanMetadata;
use delta_kernel::{Engine, EngineData};

use super::FileIdHash;
use crate::error::{Result, SharingError};
use crate::tables::iceberg::IcebergDataFile;
use crate::tables::{TableSize, TableSnapshot, PATH_SEGMENT};

/// A deletion vector descriptor as the log stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletionVectorRef<'a> {
    pub storage_type: &'a str,
    pub path_or_inline_dv: &'a str,
    pub offset: Option<i32>,
    pub size_in_bytes: i32,
    pub cardinality: i64,
}

/// One active file, borrowed from a scan batch.
pub struct FileRow<'a> {
    /// As in the log: relative (URL-encoded) or absolute.
    pub path: &'a str,
    pub size: i64,
    pub modification_time: i64,
    pub stats: Option<&'a str>,
    /// Physical partition column name → value (None is SQL NULL).
    pub partition_values: Vec<(&'a str, Option<&'a str>)>,
    pub deletion_vector: Option<DeletionVectorRef<'a>>,
    pub base_row_id: Option<i64>,
    pub default_row_commit_version: Option<i64>,
    /// The file's id digest, when a cached list already holds it.
    pub id_digest: Option<(FileIdHash, &'a [u8])>,
    /// The signature of the file's URL signed at the instant (unix seconds) it names, when a
    /// cached list already holds it.
    pub url_signature: Option<(i64, &'a [u8; 32])>,
}

/// Signs the URL of a file (see `KeptPerFile`); shared between the threads of a response.
pub trait UrlSigner: Sync {
    /// The signing instant (unix seconds) every signature of this signer names.
    fn signed_at(&self) -> i64;
    /// The signature of `file`'s URL.
    fn url_signature(&self, file: &FileRow<'_>) -> Result<[u8; 32]>;
}

/// What a response wants of the per-file values a cached list keeps, each computed for a
/// whole batch by the first response that asks: the file id digests of one hash, and the URL
/// signatures of one signing instant (the newest instant replaces an older one).
#[derive(Clone, Copy, Default)]
pub struct KeptPerFile<'a> {
    pub ids: Option<FileIdHash>,
    pub signer: Option<&'a dyn UrlSigner>,
}

/// The URL signatures of one batch's rows, all made at `signed_at`.
struct BatchSignatures {
    signed_at: i64,
    signatures: Box<[[u8; 32]]>,
}

/// The active files of one table version, in replay order.
pub struct ActiveFiles {
    version: u64,
    order_id: u64,
    batches: Vec<RecordBatch>,
    /// Index of each batch's first file.
    batch_starts: Vec<usize>,
    /// Per batch and `FileIdHash::ALL` position: the id digests of the batch's rows, computed
    /// by the first response that writes them (counted in `bytes` from the start).
    id_digests: Vec<[OnceLock<Box<[u8]>>; 2]>,
    /// Per batch: the URL signatures of its rows at the newest signing instant asked for
    /// (counted in `bytes` from the start).
    url_signatures: Vec<Mutex<Option<Arc<BatchSignatures>>>>,
    len: usize,
    /// Sum of the files' `size` (the table's size at the version).
    files_bytes: u64,
    bytes: usize,
}

impl ActiveFiles {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Names the order of the list (see the module doc).
    pub fn order_id(&self) -> u64 {
        self.order_id
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The total size of the files, in bytes.
    pub fn files_bytes(&self) -> u64 {
        self.files_bytes
    }

    /// The version's size as `metaData` carries it.
    pub fn size(&self) -> TableSize {
        TableSize {
            files_bytes: self.files_bytes,
            files: self.len() as u64,
        }
    }

    /// Memory held by the list's arrow buffers.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Calls `visit(index, file)` for each file from index `start` on: O(files visited).
    /// Files come with the values `kept` asks for, computed for each batch on first use.
    pub fn visit_from(
        &self,
        start: usize,
        kept: KeptPerFile<'_>,
        mut visit: impl FnMut(usize, &FileRow<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let first_batch = self
            .batch_starts
            .partition_point(|&batch_start| batch_start <= start)
            .saturating_sub(1);
        for batch_index in first_batch..self.batches.len() {
            if self
                .visit_batch_from(batch_index, start, kept, &mut visit)?
                .is_break()
            {
                break;
            }
        }
        Ok(())
    }

    /// `visit_from` within batch `batch_index`.
    fn visit_batch_from(
        &self,
        batch_index: usize,
        start: usize,
        kept: KeptPerFile<'_>,
        visit: &mut impl FnMut(usize, &FileRow<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        let batch_start = self.batch_starts[batch_index];
        let columns = ScanColumns::new(&self.batches[batch_index])?;
        let id_digests = kept
            .ids
            .map(|hash| (hash, self.id_digests_of(batch_index, &columns, hash)));
        let signatures = kept
            .signer
            .and_then(|signer| self.url_signatures_of(batch_index, &columns, signer));
        Ok(visit_rows(
            &columns,
            batch_start,
            start,
            id_digests,
            signatures.as_deref(),
            visit,
        ))
    }

    /// The id digests of batch `batch_index`'s rows, computed on first use.
    fn id_digests_of(
        &self,
        batch_index: usize,
        columns: &ScanColumns<'_>,
        hash: FileIdHash,
    ) -> &[u8] {
        self.id_digests[batch_index][hash_slot(hash)].get_or_init(|| id_digests(columns, hash))
    }

    /// The URL signatures of batch `batch_index`'s rows at `signer`'s instant, computed when
    /// the batch holds none of that instant. An older instant's are replaced; a newer one's are
    /// left in place (this response then signs its own). None when a row cannot be signed.
    fn url_signatures_of(
        &self,
        batch_index: usize,
        columns: &ScanColumns<'_>,
        signer: &dyn UrlSigner,
    ) -> Option<Arc<BatchSignatures>> {
        let mut slot = self.url_signatures[batch_index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(kept) = slot
            .as_ref()
            .filter(|kept| kept.signed_at >= signer.signed_at())
        {
            return Some(kept.clone());
        }
        let fresh = sign_rows(columns, signer)?;
        *slot = Some(fresh.clone());
        Some(fresh)
    }

    /// Stores values computed ahead for batch `batch_index` (see `BatchKept`).
    fn keep(&self, batch_index: usize, computed: BatchKept) {
        if let Some((hash, digests)) = computed.id_digests {
            let _ = self.id_digests[batch_index][hash_slot(hash)].set(digests);
        }
        if let Some(signatures) = computed.signatures {
            let mut slot = self.url_signatures[batch_index]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if slot
                .as_ref()
                .is_none_or(|kept| kept.signed_at < signatures.signed_at)
            {
                *slot = Some(signatures);
            }
        }
    }
}

/// The values `KeptPerFile` asks for, computed for one batch before its lines are written: a
/// cold query computes them on a stage of its own while the line writer writes the batch
/// before, and its list keeps them.
#[derive(Default)]
pub struct BatchKept {
    id_digests: Option<(FileIdHash, Box<[u8]>)>,
    signatures: Option<Arc<BatchSignatures>>,
}

impl BatchKept {
    /// The values of `batch`'s rows (signatures are left out when a row cannot be signed: the
    /// line writer then meets that row's error itself, where it is reported).
    pub fn compute(batch: &RecordBatch, kept: KeptPerFile<'_>) -> Result<BatchKept> {
        let columns = ScanColumns::new(batch)?;
        Ok(BatchKept {
            id_digests: kept.ids.map(|hash| (hash, id_digests(&columns, hash))),
            signatures: kept.signer.and_then(|signer| sign_rows(&columns, signer)),
        })
    }
}

/// Position of `hash` in `FileIdHash::ALL` (the per-batch digest slots).
fn hash_slot(hash: FileIdHash) -> usize {
    FileIdHash::ALL
        .iter()
        .position(|&candidate| candidate == hash)
        .unwrap_or(0)
}

/// The id digests of every row, `hash.digest_len()` bytes each.
fn id_digests(columns: &ScanColumns<'_>, hash: FileIdHash) -> Box<[u8]> {
    let len = hash.digest_len();
    let mut digests = vec![0u8; columns.rows * len].into_boxed_slice();
    for (row, digest) in digests.chunks_exact_mut(len).enumerate() {
        hash.digest_into(string_at(columns.path, row).unwrap_or_default(), digest);
    }
    digests
}

/// The URL signature of every row; None when one cannot be signed.
fn sign_rows(columns: &ScanColumns<'_>, signer: &dyn UrlSigner) -> Option<Arc<BatchSignatures>> {
    let mut signatures = vec![[0u8; 32]; columns.rows].into_boxed_slice();
    for (row, signature) in signatures.iter_mut().enumerate() {
        if let Some(file) = columns.row(row) {
            *signature = signer.url_signature(&file).ok()?;
        }
    }
    Some(Arc::new(BatchSignatures {
        signed_at: signer.signed_at(),
        signatures,
    }))
}

/// Calls `visit` for the rows of one batch (its first file at list index `batch_start`) from
/// list index `start` on, with the values given.
fn visit_rows(
    columns: &ScanColumns<'_>,
    batch_start: usize,
    start: usize,
    id_digests: Option<(FileIdHash, &[u8])>,
    signatures: Option<&BatchSignatures>,
    visit: &mut impl FnMut(usize, &FileRow<'_>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    for row in start.saturating_sub(batch_start)..columns.rows {
        let Some(mut file) = columns.row(row) else {
            continue;
        };
        if let Some((hash, digests)) = id_digests {
            let len = hash.digest_len();
            file.id_digest = Some((hash, &digests[row * len..(row + 1) * len]));
        }
        if let Some(signatures) = signatures {
            file.url_signature = Some((signatures.signed_at, &signatures.signatures[row]));
        }
        if visit(batch_start + row, &file).is_break() {
            return ControlFlow::Break(());
        }
    }
    ControlFlow::Continue(())
}

/// Bytes a cached list reserves per file for the values it keeps: an id digest of every hash
/// and one URL signature.
const KEPT_BYTES_PER_FILE: usize = 16 + 32 + 32;

/// Gathers the batches of a scan into an `ActiveFiles` list until it would exceed a byte
/// budget; past it, the scan still streams but nothing is kept.
pub struct ActiveFilesBuilder {
    files: ActiveFiles,
    bytes_max: usize,
    over_budget: bool,
}

impl ActiveFilesBuilder {
    /// A list of `version` whose order is named `order_id`.
    pub fn new(version: u64, order_id: u64, bytes_max: usize) -> Self {
        ActiveFilesBuilder {
            files: ActiveFiles {
                version,
                order_id,
                batches: Vec::new(),
                batch_starts: Vec::new(),
                id_digests: Vec::new(),
                url_signatures: Vec::new(),
                len: 0,
                files_bytes: 0,
                bytes: 0,
            },
            bytes_max,
            over_budget: false,
        }
    }

    /// Index the next pushed batch's first file gets.
    pub fn next_index(&self) -> usize {
        self.files.len
    }

    /// Adds the next batch, then calls `visit` for its files from list index `start` on, with
    /// the values `computed` ahead (see `BatchKept`). While the list is kept they stay with it,
    /// and what `kept` asks for beyond them is computed here; past the budget the line writer
    /// computes what is missing per file. Returns whether the list is still kept and whether
    /// `visit` broke.
    pub fn push_and_visit(
        &mut self,
        batch: RecordBatch,
        computed: Option<BatchKept>,
        start: usize,
        kept: KeptPerFile<'_>,
        mut visit: impl FnMut(usize, &FileRow<'_>) -> ControlFlow<()>,
    ) -> Result<(bool, ControlFlow<()>)> {
        let first_index = self.next_index();
        if batch.num_rows() == 0 || first_index + batch.num_rows() <= start {
            return Ok((self.push(batch), ControlFlow::Continue(())));
        }
        if self.push(batch.clone()) {
            let batch_index = self.files.batches.len() - 1;
            if let Some(computed) = computed {
                self.files.keep(batch_index, computed);
            }
            let visited = self
                .files
                .visit_batch_from(batch_index, start, kept, &mut visit)?;
            return Ok((true, visited));
        }
        let computed = computed.unwrap_or_default();
        let columns = ScanColumns::new(&batch)?;
        let id_digests = computed
            .id_digests
            .as_ref()
            .map(|(hash, digests)| (*hash, &digests[..]));
        let visited = visit_rows(
            &columns,
            first_index,
            start,
            id_digests,
            computed.signatures.as_deref(),
            &mut visit,
        );
        Ok((false, visited))
    }

    /// Adds the next batch; false once the list has outgrown the budget (nothing is kept).
    pub fn push(&mut self, batch: RecordBatch) -> bool {
        let rows = batch.num_rows();
        if !self.over_budget && rows > 0 {
            let bytes = batch.get_array_memory_size() + rows * KEPT_BYTES_PER_FILE;
            if self.files.bytes + bytes > self.bytes_max {
                self.over_budget = true;
                self.files.batches = Vec::new();
                self.files.batch_starts = Vec::new();
                self.files.id_digests = Vec::new();
                self.files.url_signatures = Vec::new();
            } else {
                self.files.bytes += bytes;
                self.files.files_bytes += batch_files_bytes(&batch);
                self.files.batch_starts.push(self.files.len);
                self.files.batches.push(batch);
                self.files.id_digests.push(Default::default());
                self.files.url_signatures.push(Mutex::new(None));
            }
        }
        self.files.len += rows;
        !self.over_budget
    }

    /// The list, unless it outgrew the budget.
    pub fn finish(self) -> Option<ActiveFiles> {
        (!self.over_budget).then_some(self.files)
    }
}

/// The summed `size` column of a scan-row batch (0 for a batch without one, which
/// `ScanColumns` refuses when the batch is read).
fn batch_files_bytes(batch: &RecordBatch) -> u64 {
    batch
        .column_by_name("size")
        .and_then(|column| column.as_primitive_opt::<Int64Type>())
        .and_then(sum)
        .map_or(0, |total| total.max(0) as u64)
}

/// The order id of a full replay of `version`.
pub fn full_order_id(version: u64) -> u64 {
    order_hash(&("full", version))
}

/// The order id of a list of `version` built on top of the list `base`.
pub fn incremental_order_id(base: &ActiveFiles, version: u64) -> u64 {
    order_hash(&("incremental", base.order_id, base.version, version))
}

fn order_hash(parts: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(parts)
}

/// Replays the log of `table` and calls `visit` with each batch of active files (selection
/// applied). With `base` (the list of an older version of the same table), only the commits
/// after it are read, on top of it. Blocking.
pub fn scan_active_files(
    table: &TableSnapshot,
    engine: &dyn Engine,
    base: Option<&ActiveFiles>,
    mut visit: impl FnMut(RecordBatch) -> ControlFlow<()>,
) -> Result<()> {
    let scan = table
        .delta()?
        .clone()
        .scan_builder()
        // Files are listed, never read here: no per-file transform expressions.
        .without_row_transforms()
        .build()
        .map_err(replay_error("scan"))?;
    let batches: Box<dyn Iterator<Item = delta_kernel::error::KernelResult<ScanMetadata>> + '_> =
        match base {
            Some(base) => {
                let existing: Vec<Box<dyn EngineData>> = base
                    .batches
                    .iter()
                    .map(|batch| {
                        Box::new(ArrowEngineData::new(batch.clone())) as Box<dyn EngineData>
                    })
                    .collect();
                scan.scan_metadata_from(engine, base.version, existing, None)
                    .map(|batches| batches as Box<dyn Iterator<Item = _>>)
            }
            None => scan
                .scan_metadata(engine)
                .map(|batches| Box::new(batches) as Box<dyn Iterator<Item = _>>),
        }
        .map_err(replay_error("scan metadata"))?;
    for metadata in batches {
        let metadata = metadata.map_err(replay_error("log replay"))?;
        let (data, selection) = metadata.scan_files.into_parts();
        let batch: RecordBatch = ArrowEngineData::try_from_engine_data(data)
            .map_err(replay_error("scan batch"))?
            .into();
        let selected: BooleanArray = (0..batch.num_rows())
            .map(|row| Some(selection.get(row).copied().unwrap_or(true)))
            .collect();
        let batch = filter_record_batch(&batch, &selected).map_err(replay_error("scan batch"))?;
        if batch.num_rows() > 0 && visit(batch).is_break() {
            return Ok(());
        }
    }
    Ok(())
}

/// An error of the log replay named `what`: internal, unless the store could not be read.
fn replay_error<E: std::error::Error + 'static>(what: &'static str) -> impl Fn(E) -> SharingError {
    move |error| {
        crate::store::library_error(&error, |message| {
            SharingError::internal(format!("{what}: {message}"))
        })
    }
}

/// Files per scan-row batch built from an Iceberg version.
pub const ICEBERG_BATCH_FILES: usize = 4096;

/// Scan rows (the columns `ScanColumns` reads) for data files of an Iceberg version, so its
/// file list is cached, paged and written exactly as a Delta table's. Paths are the object
/// keys relative to the table root, percent-encoded segment by segment as Delta log paths
/// are; file ids hash that path.
pub fn iceberg_scan_rows(
    files: &[IcebergDataFile],
    root: &str,
    modification_time_ms: i64,
) -> Result<RecordBatch> {
    let mut paths = StringBuilder::new();
    let mut stats = StringBuilder::new();
    let mut partition_values = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for file in files {
        paths.append_value(relative_path(&file.key, root)?);
        stats.append_value(&file.stats);
        for (column, value) in &file.partition_values {
            partition_values.keys().append_value(column);
            partition_values.values().append_option(value.as_deref());
        }
        partition_values
            .append(true)
            .map_err(|error| SharingError::internal(format!("partition values: {error}")))?;
    }
    let rows = files.len();
    let sizes: Int64Array = files.iter().map(|file| file.size_bytes as i64).collect();
    let modification_times = Int64Array::from(vec![modification_time_ms; rows]);
    let partition_values: ArrayRef = Arc::new(partition_values.finish());
    let no_row_ids: ArrayRef = Arc::new(Int64Array::new_null(rows));
    let constants = StructArray::try_from(vec![
        ("partitionValues", partition_values),
        ("baseRowId", no_row_ids.clone()),
        ("defaultRowCommitVersion", no_row_ids),
    ])
    .map_err(|error| SharingError::internal(format!("scan rows: {error}")))?;
    let no_deletion_vectors = StructArray::new_null(Fields::empty(), rows);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("path", Arc::new(paths.finish())),
        ("size", Arc::new(sizes)),
        ("modificationTime", Arc::new(modification_times)),
        ("stats", Arc::new(stats.finish())),
        ("deletionVector", Arc::new(no_deletion_vectors)),
        ("fileConstantValues", Arc::new(constants)),
    ];
    RecordBatch::try_from_iter(columns)
        .map_err(|error| SharingError::internal(format!("scan rows: {error}")))
}

/// The path of the object `key` relative to the table `root`, percent-encoded segment by
/// segment as Delta log paths are.
pub fn relative_path(key: &str, root: &str) -> Result<String> {
    let relative = key
        .strip_prefix(root)
        .ok_or_else(|| SharingError::internal(format!("data file {key} lies outside the table")))?;
    let mut path = String::with_capacity(relative.len() + 8);
    for (position, segment) in relative.split('/').enumerate() {
        if position > 0 {
            path.push('/');
        }
        path.extend(percent_encoding::utf8_percent_encode(
            segment,
            RELATIVE_PATH_SEGMENT,
        ));
    }
    Ok(path)
}

/// Characters escaped in a relative path segment: those of a table URL's segments, and `:`
/// too, so a relative path never reads as a URL.
const RELATIVE_PATH_SEGMENT: &percent_encoding::AsciiSet = &PATH_SEGMENT.add(b':');

/// Typed views of the scan-row columns of one batch.
struct ScanColumns<'a> {
    rows: usize,
    path: &'a dyn Array,
    size: &'a Int64Array,
    modification_time: &'a Int64Array,
    stats: &'a dyn Array,
    deletion_vector: &'a StructArray,
    partition_values: &'a MapArray,
    base_row_id: &'a Int64Array,
    default_row_commit_version: &'a Int64Array,
}

impl<'a> ScanColumns<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self> {
        let missing = |name: &str| SharingError::internal(format!("scan row has no {name} column"));
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| missing(name));
        let constants = column("fileConstantValues")?
            .as_struct_opt()
            .ok_or_else(|| missing("fileConstantValues struct"))?;
        let constant = |name: &str| constants.column_by_name(name).ok_or_else(|| missing(name));
        Ok(ScanColumns {
            rows: batch.num_rows(),
            path: column("path")?.as_ref(),
            size: column("size")?
                .as_primitive_opt()
                .ok_or_else(|| missing("size i64"))?,
            modification_time: column("modificationTime")?
                .as_primitive_opt()
                .ok_or_else(|| missing("modificationTime i64"))?,
            stats: column("stats")?.as_ref(),
            deletion_vector: column("deletionVector")?
                .as_struct_opt()
                .ok_or_else(|| missing("deletionVector struct"))?,
            partition_values: constant("partitionValues")?
                .as_map_opt()
                .ok_or_else(|| missing("partitionValues map"))?,
            base_row_id: constant("baseRowId")?
                .as_primitive_opt()
                .ok_or_else(|| missing("baseRowId i64"))?,
            default_row_commit_version: constant("defaultRowCommitVersion")?
                .as_primitive_opt()
                .ok_or_else(|| missing("defaultRowCommitVersion i64"))?,
        })
    }

    fn row(&self, row: usize) -> Option<FileRow<'a>> {
        let path = string_at(self.path, row)?;
        let mut partition_values = Vec::new();
        if self.partition_values.is_valid(row) {
            let offsets = self.partition_values.value_offsets();
            let keys = self.partition_values.keys();
            let values = self.partition_values.values();
            for entry in offsets[row] as usize..offsets[row + 1] as usize {
                if let Some(key) = string_at(keys.as_ref(), entry) {
                    partition_values.push((key, string_at(values.as_ref(), entry)));
                }
            }
        }
        Some(FileRow {
            path,
            size: self.size.value(row),
            modification_time: if self.modification_time.is_valid(row) {
                self.modification_time.value(row)
            } else {
                0
            },
            stats: string_at(self.stats, row),
            partition_values,
            deletion_vector: self.deletion_vector_at(row),
            base_row_id: self
                .base_row_id
                .is_valid(row)
                .then(|| self.base_row_id.value(row)),
            default_row_commit_version: self
                .default_row_commit_version
                .is_valid(row)
                .then(|| self.default_row_commit_version.value(row)),
            id_digest: None,
            url_signature: None,
        })
    }

    fn deletion_vector_at(&self, row: usize) -> Option<DeletionVectorRef<'a>> {
        let dv = self.deletion_vector;
        if !dv.is_valid(row) {
            return None;
        }
        let storage_type = string_at(dv.column_by_name("storageType")?.as_ref(), row)?;
        let path_or_inline_dv = string_at(dv.column_by_name("pathOrInlineDv")?.as_ref(), row)?;
        let offset = dv
            .column_by_name("offset")?
            .as_any()
            .downcast_ref::<Int32Array>()
            .and_then(|column| column.is_valid(row).then(|| column.value(row)));
        let size_in_bytes = dv
            .column_by_name("sizeInBytes")?
            .as_any()
            .downcast_ref::<Int32Array>()
            .map(|column| column.value(row))?;
        let cardinality = dv
            .column_by_name("cardinality")?
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|column| column.value(row))?;
        Some(DeletionVectorRef {
            storage_type,
            path_or_inline_dv,
            offset,
            size_in_bytes,
            cardinality,
        })
    }
}

/// A string cell of any arrow string layout; None when null.
fn string_at(column: &dyn Array, row: usize) -> Option<&str> {
    if column.is_null(row) {
        return None;
    }
    if let Some(strings) = column.as_string_opt::<i32>() {
        return Some(strings.value(row));
    }
    if let Some(strings) = column.as_string_opt::<i64>() {
        return Some(strings.value(row));
    }
    column
        .as_string_view_opt()
        .map(|strings| strings.value(row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_name_how_a_list_was_built() {
        assert_eq!(full_order_id(7), full_order_id(7));
        assert_ne!(full_order_id(7), full_order_id(8));
        let base = ActiveFilesBuilder::new(5, full_order_id(5), 1 << 20)
            .finish()
            .unwrap();
        let incremental = incremental_order_id(&base, 7);
        assert_ne!(incremental, full_order_id(7));
        assert_eq!(incremental, incremental_order_id(&base, 7));
        assert_ne!(incremental, incremental_order_id(&base, 8));
    }

    #[test]
    fn iceberg_rows_read_back_and_a_list_over_budget_is_dropped() {
        let files = vec![IcebergDataFile {
            key: "t/data/a b.parquet".into(),
            file_path: "s3://lake/t/data/a b.parquet".into(),
            size_bytes: 10,
            record_count: 2,
            partition_values: vec![("p".into(), Some("x".into())), ("q".into(), None)],
            stats: r#"{"numRecords":2}"#.into(),
        }];
        let batch = iceberg_scan_rows(&files, "t/", 1_000).unwrap();
        let mut seen = Vec::new();
        let columns = ScanColumns::new(&batch).unwrap();
        let flow = visit_rows(&columns, 0, 0, None, None, &mut |index, file| {
            seen.push((
                index,
                file.path.to_string(),
                file.size,
                file.partition_values
                    .clone()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                    .collect::<Vec<_>>(),
            ));
            ControlFlow::Continue(())
        });
        assert!(flow.is_continue());
        assert_eq!(
            seen,
            vec![(
                0,
                "data/a%20b.parquet".to_string(),
                10,
                vec![
                    ("p".to_string(), Some("x".to_string())),
                    ("q".to_string(), None)
                ]
            )]
        );
        let mut tight = ActiveFilesBuilder::new(1, full_order_id(1), 16);
        assert!(!tight.push(batch.clone()));
        assert_eq!(tight.next_index(), 1);
        assert!(tight.finish().is_none());
        let mut roomy = ActiveFilesBuilder::new(1, full_order_id(1), 1 << 20);
        assert!(roomy.push(batch));
        let list = roomy.finish().unwrap();
        assert_eq!((list.len(), list.version()), (1, 1));
    }

    /// Signs a file's path with a counter, refusing paths that contain `bad`.
    struct CountingSigner {
        signed_at: i64,
        signed: std::sync::atomic::AtomicUsize,
    }

    impl CountingSigner {
        fn at(signed_at: i64) -> Self {
            CountingSigner {
                signed_at,
                signed: Default::default(),
            }
        }

        fn signed(&self) -> usize {
            self.signed.load(std::sync::atomic::Ordering::Relaxed)
        }

        /// Asks for this signer's signatures only.
        fn alone(&self) -> KeptPerFile<'_> {
            KeptPerFile {
                ids: None,
                signer: Some(self),
            }
        }
    }

    impl UrlSigner for CountingSigner {
        fn signed_at(&self) -> i64 {
            self.signed_at
        }

        fn url_signature(&self, file: &FileRow<'_>) -> Result<[u8; 32]> {
            if file.path.contains("bad") {
                return Err(SharingError::internal("unsignable"));
            }
            self.signed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut signature = [0u8; 32];
            signature[..8].copy_from_slice(&self.signed_at.to_le_bytes());
            signature[8] = file.path.len() as u8;
            Ok(signature)
        }
    }

    fn list_of(keys: &[&str]) -> ActiveFiles {
        let files: Vec<IcebergDataFile> = keys
            .iter()
            .map(|key| IcebergDataFile {
                key: format!("t/{key}"),
                file_path: format!("s3://lake/t/{key}"),
                size_bytes: 1,
                record_count: 1,
                partition_values: vec![],
                stats: "{}".into(),
            })
            .collect();
        let mut builder = ActiveFilesBuilder::new(3, full_order_id(3), 1 << 20);
        assert!(builder.push(iceberg_scan_rows(&files, "t/", 0).unwrap()));
        builder.finish().unwrap()
    }

    /// Issue 12: a kept list knows the version's size for `metaData` at no cost.
    #[test]
    fn r12_a_list_sums_its_files_sizes() {
        let list = list_of(&["a.parquet", "bb.parquet", "ccc.parquet"]);
        assert_eq!((list.len(), list.files_bytes()), (3, 3));
    }

    /// A file's id digest and its URL signature with the instant it names.
    type FileValues = (Option<Vec<u8>>, Option<(i64, [u8; 32])>);

    /// The values of each file visited from `start` with `kept`.
    fn kept_values(list: &ActiveFiles, start: usize, kept: KeptPerFile<'_>) -> Vec<FileValues> {
        let mut seen = Vec::new();
        list.visit_from(start, kept, |_, file| {
            seen.push((
                file.id_digest.map(|(_, digest)| digest.to_vec()),
                file.url_signature.map(|(at, signature)| (at, *signature)),
            ));
            ControlFlow::Continue(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn kept_ids_and_signatures_are_computed_once_per_batch_and_instant() {
        let list = list_of(&["a.parquet", "bb.parquet", "ccc.parquet"]);
        let signer = CountingSigner::at(60);
        let kept = KeptPerFile {
            ids: Some(FileIdHash::Md5),
            signer: Some(&signer),
        };
        let first = kept_values(&list, 1, kept);
        assert_eq!(first.len(), 2);
        assert_eq!(signer.signed(), 3, "the whole batch is signed at once");
        let mut digest = vec![0u8; 16];
        FileIdHash::Md5.digest_into("bb.parquet", &mut digest);
        assert_eq!(first[0].0.as_deref(), Some(digest.as_slice()));
        assert_eq!(first[0].1.map(|(at, s)| (at, s[8])), Some((60, 10)));
        assert_eq!(kept_values(&list, 0, kept).len(), 3);
        assert_eq!(signer.signed(), 3, "kept signatures are reused");
        let later = CountingSigner::at(120);
        let newer = kept_values(&list, 0, later.alone());
        assert!(newer
            .iter()
            .all(|(id, signature)| id.is_none() && signature.is_some_and(|(at, _)| at == 120)));
        assert_eq!(later.signed(), 3);
        // An older instant gets the newer signatures, which its writer does not use.
        assert!(kept_values(&list, 0, kept)
            .iter()
            .all(|(_, signature)| signature.is_some_and(|(at, _)| at == 120)));
        assert!(kept_values(&list, 0, KeptPerFile::default())
            .iter()
            .all(|values| *values == (None, None)));
    }

    #[test]
    fn a_batch_with_an_unsignable_file_keeps_no_signatures() {
        let list = list_of(&["a.parquet", "bad.parquet"]);
        let signer = CountingSigner::at(60);
        let seen = kept_values(&list, 0, signer.alone());
        assert!(seen.iter().all(|(_, signature)| signature.is_none()));
    }
}
