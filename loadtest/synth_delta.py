#!/usr/bin/env python3
"""Write a synthetic Delta table with N active files into an S3 bucket, without data files.

Issue 4's "Speed" benchmarks need Delta tables with 10k, 100k and 1M active files. Writing the
data files is pointless for a listing benchmark (`query` returns URLs, it never opens them), so
this script writes only the transaction log:

    _delta_log/00000000000000000000.json        protocol (1, 2) + metaData + commitInfo
    _delta_log/<K>.checkpoint.parquet            classic checkpoint: protocol, metaData, adds
    _delta_log/_last_checkpoint                  {"version": K, "size": rows, ...}
    _delta_log/<K+1..K+C>.json                   C commits, each adding A files, removing one

Commits 1..K-1 are omitted: a reader starts from `_last_checkpoint`, and the listing of
`_delta_log` begins at the checkpoint (both delta_kernel 0.30 and deltalake 1.6 accept this).

Invariants the measurement relies on:
- The snapshot at the latest version (K + C) holds exactly `--files` active files.
- Every path is unique; the removes name paths that the checkpoint adds.
- Columns: `part` (string partition column, `--partitions` distinct values), `id` long,
  `value` double, `name` string; every add has JSON stats (numRecords, minValues, maxValues,
  nullCount) for the three data columns.

The checkpoint rows are built column by column with pyarrow compute (no Python object per row),
so 1M files take a few seconds; the upload goes through boto3 (multipart when large).

Usage:
    .venv/bin/python loadtest/synth_delta.py --endpoint http://127.0.0.1:9000 \
        --access-key minioadmin --secret-key minioadmin --bucket lake --prefix t1m/ \
        --files 1000000
Use `--output-dir DIR` instead of `--endpoint` to write the log into a local folder.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

COMMIT_FILE_DIGITS = 20
PARTITION_COLUMN = "part"
ROWS_PER_DATA_FILE = 1000
# Milliseconds since the epoch of commit 0; later commits are one minute apart.
TABLE_CREATED_MS = 1_700_000_000_000
COMMIT_SPACING_MS = 60_000

TABLE_SCHEMA = {
    "type": "struct",
    "fields": [
        {"name": PARTITION_COLUMN, "type": "string", "nullable": True, "metadata": {}},
        {"name": "id", "type": "long", "nullable": True, "metadata": {}},
        {"name": "value", "type": "double", "nullable": True, "metadata": {}},
        {"name": "name", "type": "string", "nullable": True, "metadata": {}},
    ],
}

STRING_MAP = pa.map_(pa.string(), pa.string())
DELETION_VECTOR = pa.struct(
    [
        ("storageType", pa.string()),
        ("pathOrInlineDv", pa.string()),
        ("offset", pa.int32()),
        ("sizeInBytes", pa.int32()),
        ("cardinality", pa.int64()),
    ]
)
ADD = pa.struct(
    [
        pa.field("path", pa.string()),
        pa.field("partitionValues", STRING_MAP),
        pa.field("size", pa.int64()),
        pa.field("modificationTime", pa.int64()),
        pa.field("dataChange", pa.bool_()),
        pa.field("stats", pa.string()),
        pa.field("tags", STRING_MAP),
        pa.field("deletionVector", DELETION_VECTOR),
        pa.field("baseRowId", pa.int64()),
        pa.field("defaultRowCommitVersion", pa.int64()),
        pa.field("clusteringProvider", pa.string()),
    ]
)
REMOVE = pa.struct(
    [
        pa.field("path", pa.string()),
        pa.field("deletionTimestamp", pa.int64()),
        pa.field("dataChange", pa.bool_()),
        pa.field("extendedFileMetadata", pa.bool_()),
        pa.field("partitionValues", STRING_MAP),
        pa.field("size", pa.int64()),
        pa.field("stats", pa.string()),
        pa.field("tags", STRING_MAP),
        pa.field("deletionVector", DELETION_VECTOR),
        pa.field("baseRowId", pa.int64()),
        pa.field("defaultRowCommitVersion", pa.int64()),
    ]
)
METADATA = pa.struct(
    [
        pa.field("id", pa.string()),
        pa.field("name", pa.string()),
        pa.field("description", pa.string()),
        pa.field("format", pa.struct([("provider", pa.string()), ("options", STRING_MAP)])),
        pa.field("schemaString", pa.string()),
        pa.field("partitionColumns", pa.list_(pa.string())),
        pa.field("createdTime", pa.int64()),
        pa.field("configuration", STRING_MAP),
    ]
)
PROTOCOL = pa.struct(
    [
        pa.field("minReaderVersion", pa.int32()),
        pa.field("minWriterVersion", pa.int32()),
        pa.field("readerFeatures", pa.list_(pa.string())),
        pa.field("writerFeatures", pa.list_(pa.string())),
    ]
)
TXN = pa.struct(
    [
        pa.field("appId", pa.string()),
        pa.field("version", pa.int64()),
        pa.field("lastUpdated", pa.int64()),
    ]
)
CHECKPOINT_SCHEMA = pa.schema(
    [("txn", TXN), ("add", ADD), ("remove", REMOVE), ("metaData", METADATA),
     ("protocol", PROTOCOL)]
)


def commit_name(version: int, suffix: str) -> str:
    return f"_delta_log/{version:0{COMMIT_FILE_DIGITS}d}.{suffix}"


def partition_value(index: int) -> str:
    return f"p{index:03d}"


def protocol_action() -> dict:
    return {"minReaderVersion": 1, "minWriterVersion": 2}


def metadata_action(table_id: str, name: str) -> dict:
    return {
        "id": table_id,
        "name": name,
        "description": "synthetic table from loadtest/synth_delta.py (no data files)",
        "format": {"provider": "parquet", "options": {}},
        "schemaString": json.dumps(TABLE_SCHEMA, separators=(",", ":")),
        "partitionColumns": [PARTITION_COLUMN],
        "createdTime": TABLE_CREATED_MS,
        "configuration": {},
    }


def add_columns(first_file: int, count: int, partitions: int, modification_ms: int) -> dict:
    """The add action of files `first_file .. first_file + count` as pyarrow arrays.

    File i lives in partition `i % partitions`, holds ids `[i * ROWS, (i + 1) * ROWS)`, and
    has a size that varies with i so that no two neighbouring files look the same.
    """
    index = np.arange(first_file, first_file + count, dtype=np.int64)
    index_text = pc.utf8_lpad(pa.array(index).cast(pa.string()), 9, "0")
    part_index = index % partitions
    part_names = np.array([partition_value(p) for p in range(partitions)], dtype=object)
    part_text = pa.DictionaryArray.from_arrays(
        pa.array(part_index.astype(np.int32)), pa.array(part_names, pa.string())
    ).cast(pa.string())
    run_id = uuid.uuid4()
    path = pc.binary_join_element_wise(
        f"{PARTITION_COLUMN}=", part_text, "/part-", index_text,
        f"-{run_id}.c000.snappy.parquet", "",
    )
    id_min = index * ROWS_PER_DATA_FILE
    id_max = id_min + ROWS_PER_DATA_FILE - 1
    value_min = index.astype(np.float64) * 0.5
    value_max = value_min + 499.75
    stats = pc.binary_join_element_wise(
        f'{{"numRecords":{ROWS_PER_DATA_FILE},"minValues":{{"id":',
        pa.array(id_min).cast(pa.string()),
        ',"value":', pa.array(value_min).cast(pa.string()),
        ',"name":"a', index_text,
        '"},"maxValues":{"id":', pa.array(id_max).cast(pa.string()),
        ',"value":', pa.array(value_max).cast(pa.string()),
        ',"name":"z', index_text,
        '"},"nullCount":{"id":0,"value":0,"name":0}}', "",
    )
    offsets = pa.array(np.arange(count + 1, dtype=np.int32))
    keys = pa.array(np.full(count, PARTITION_COLUMN, dtype=object), pa.string())
    partition_values = pa.MapArray.from_arrays(offsets, keys, part_text)
    size = 100_000 + (index * 7919) % 900_000
    return {
        "path": path,
        "partitionValues": partition_values,
        "size": pa.array(size),
        "modificationTime": pa.array(np.full(count, modification_ms, dtype=np.int64)),
        "dataChange": pa.array(np.ones(count, dtype=bool)),
        "stats": stats,
    }


def add_struct(columns: dict) -> pa.StructArray:
    count = len(columns["path"])
    arrays = []
    for field in ADD:
        array = columns.get(field.name)
        arrays.append(array if array is not None else pa.nulls(count, field.type))
    return pa.StructArray.from_arrays(arrays, fields=list(ADD))


def single_column_table(column: str, values: pa.Array) -> pa.Table:
    """Checkpoint rows that hold only `column`; every other action column is null."""
    count = len(values)
    arrays = [values if field.name == column else pa.nulls(count, field.type)
              for field in CHECKPOINT_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=CHECKPOINT_SCHEMA)


def checkpoint_parquet(adds: pa.StructArray, table_id: str, name: str,
                       row_group_rows: int) -> tuple[bytes, int]:
    protocol = pa.array([protocol_action()], PROTOCOL)
    metadata = pa.array([metadata_action(table_id, name)], METADATA)
    table = pa.concat_tables([
        single_column_table("protocol", protocol),
        single_column_table("metaData", metadata),
        single_column_table("add", adds),
    ])
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy", row_group_size=row_group_rows)
    return sink.getvalue(), table.num_rows


def json_lines(actions: list[dict]) -> bytes:
    return "".join(json.dumps(action, separators=(",", ":")) + "\n" for action in actions).encode()


def commit_info(timestamp_ms: int, operation: str) -> dict:
    return {"commitInfo": {"timestamp": timestamp_ms, "operation": operation,
                           "operationParameters": {}, "engineInfo": "lakeshare-synth"}}


def add_action_json(adds: pa.StructArray) -> list[dict]:
    actions = []
    for row in adds.to_pylist():
        actions.append({"add": {key: row[key] for key in
                                ("path", "size", "modificationTime", "dataChange", "stats")}
                        | {"partitionValues": dict(row["partitionValues"])}})
    return actions


def build_log(files: int, checkpoint_version: int, commits: int, adds_per_commit: int,
              partitions: int, row_group_rows: int, name: str) -> dict[str, bytes]:
    """Every log object of the table, keyed by its path under the table root."""
    if checkpoint_version < 1:
        raise ValueError("--checkpoint-version must be at least 1")
    if adds_per_commit < 1:
        raise ValueError("--adds-per-commit must be at least 1")
    net_per_commit = adds_per_commit - 1
    checkpoint_files = files - commits * net_per_commit
    if checkpoint_files < commits:
        raise ValueError(f"--files {files} is too small for {commits} commits")
    table_id = str(uuid.uuid4())
    objects: dict[str, bytes] = {}
    objects[commit_name(0, "json")] = json_lines([
        {"protocol": protocol_action()},
        {"metaData": metadata_action(table_id, name)},
        commit_info(TABLE_CREATED_MS, "CREATE TABLE"),
    ])
    checkpoint_ms = TABLE_CREATED_MS + checkpoint_version * COMMIT_SPACING_MS
    checkpoint_adds = add_struct(add_columns(0, checkpoint_files, partitions, checkpoint_ms))
    parquet, rows = checkpoint_parquet(checkpoint_adds, table_id, name, row_group_rows)
    objects[commit_name(checkpoint_version, "checkpoint.parquet")] = parquet
    objects["_delta_log/_last_checkpoint"] = json.dumps(
        {"version": checkpoint_version, "size": rows, "sizeInBytes": len(parquet),
         "numOfAddFiles": checkpoint_files}, separators=(",", ":")).encode()
    next_file = checkpoint_files
    for commit in range(1, commits + 1):
        version = checkpoint_version + commit
        commit_ms = TABLE_CREATED_MS + version * COMMIT_SPACING_MS
        added = add_struct(add_columns(next_file, adds_per_commit, partitions, commit_ms))
        next_file += adds_per_commit
        # Remove one file of the checkpoint per commit: spread over the table, never twice.
        removed = checkpoint_adds[(commit - 1) * (checkpoint_files // commits)].as_py()
        remove = {"path": removed["path"], "deletionTimestamp": commit_ms, "dataChange": True,
                  "extendedFileMetadata": True,
                  "partitionValues": dict(removed["partitionValues"]), "size": removed["size"]}
        objects[commit_name(version, "json")] = json_lines(
            [commit_info(commit_ms, "WRITE"), {"remove": remove}] + add_action_json(added))
    return objects


def upload(objects: dict[str, bytes], args: argparse.Namespace) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=args.endpoint, aws_access_key_id=args.access_key,
        aws_secret_access_key=args.secret_key, region_name=args.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    if args.create_bucket:
        existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        if args.bucket not in existing:
            client.create_bucket(Bucket=args.bucket)
    prefix = args.prefix.strip("/") + "/" if args.prefix.strip("/") else ""
    transfer = TransferConfig(multipart_threshold=16 * 1024 * 1024,
                              multipart_chunksize=16 * 1024 * 1024)
    # Commit 0 first and _last_checkpoint after its checkpoint, as a writer would.
    for key in sorted(objects, key=upload_order):
        client.upload_fileobj(io.BytesIO(objects[key]), args.bucket, prefix + key,
                              Config=transfer)


def upload_order(key: str) -> tuple[int, str]:
    return (1 if key.endswith("_last_checkpoint") else 0, key)


def write_local(objects: dict[str, bytes], root: Path) -> None:
    for key, data in objects.items():
        target = root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, required=True, help="active files at the end")
    parser.add_argument("--endpoint", help="S3 endpoint, e.g. http://127.0.0.1:9000")
    parser.add_argument("--access-key", default="minioadmin")
    parser.add_argument("--secret-key", default="minioadmin")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--bucket", default="lake")
    parser.add_argument("--prefix", default="synthetic/", help="table root inside the bucket")
    parser.add_argument("--create-bucket", action="store_true")
    parser.add_argument("--output-dir", type=Path, help="write into this folder instead of S3")
    parser.add_argument("--checkpoint-version", type=int, default=10)
    parser.add_argument("--commits", type=int, default=3, help="JSON commits after it")
    parser.add_argument("--adds-per-commit", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--row-group-rows", type=int, default=131_072,
                        help="rows per checkpoint row group")
    parser.add_argument("--name", default="synthetic")
    args = parser.parse_args(argv)
    if (args.endpoint is None) == (args.output_dir is None):
        parser.error("give exactly one of --endpoint and --output-dir")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    objects = build_log(args.files, args.checkpoint_version, args.commits,
                        args.adds_per_commit, args.partitions, args.row_group_rows, args.name)
    built = time.monotonic()
    if args.output_dir is not None:
        write_local(objects, args.output_dir)
    else:
        upload(objects, args)
    finished = time.monotonic()
    summary = {
        "files": args.files,
        "latest_version": args.checkpoint_version + args.commits,
        "checkpoint_version": args.checkpoint_version,
        "log_bytes": sum(len(data) for data in objects.values()),
        "checkpoint_bytes": len(objects[commit_name(args.checkpoint_version,
                                                    "checkpoint.parquet")]),
        "build_seconds": round(built - started, 3),
        "write_seconds": round(finished - built, 3),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
