//! The active files of a snapshot, read from the kernel's scan metadata (arrow batches)
//! without building an action object per file: each row is lent to the caller as a
//! `FileRow` of borrowed columns.

use std::ops::ControlFlow;

use delta_kernel::arrow::array::{
    Array, AsArray, Int32Array, Int64Array, MapArray, RecordBatch, StructArray,
};
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::Engine;

use crate::delta::TableSnapshot;
use crate::error::{Result, SharingError};

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
}

/// Calls `visit` for every active file of the snapshot, in log-replay order. Blocking.
pub fn for_each_active_file(
    table: &TableSnapshot,
    engine: &dyn Engine,
    mut visit: impl FnMut(&FileRow<'_>) -> ControlFlow<()>,
) -> Result<()> {
    let scan = table
        .snapshot
        .clone()
        .scan_builder()
        .build()
        .map_err(|error| SharingError::internal(format!("scan: {error}")))?;
    let batches = scan
        .scan_metadata(engine)
        .map_err(|error| SharingError::internal(format!("scan metadata: {error}")))?;
    for metadata in batches {
        let metadata =
            metadata.map_err(|error| SharingError::internal(format!("log replay: {error}")))?;
        let (data, selection) = metadata.scan_files.into_parts();
        let batch: RecordBatch = ArrowEngineData::try_from_engine_data(data)
            .map_err(|error| SharingError::internal(format!("scan batch: {error}")))?
            .into();
        let columns = ScanColumns::new(&batch)?;
        for row in 0..batch.num_rows() {
            if !selection.get(row).copied().unwrap_or(true) {
                continue;
            }
            let Some(file) = columns.row(row) else {
                continue;
            };
            if visit(&file).is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Typed views of the scan-row columns of one batch.
struct ScanColumns<'a> {
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
