#!/usr/bin/env python3
"""Write a synthetic Iceberg table with N data files into an S3 bucket, without data files.

Issue 5's "Speed" benchmark needs an Iceberg table with 100k data files next to the Delta table
of the same size from loadtest/synth_delta.py. `query` returns URLs and never opens a data file,
so this script writes only the Iceberg metadata, through pyiceberg (SqlCatalog on SQLite in a
temporary folder, PyArrow S3 FileIO at the node):

    metadata/00000-<uuid>.metadata.json     table created (format v2), no snapshot
    metadata/00001-<uuid>.metadata.json     snapshot 1: fast append of N - A files
    metadata/00002-<uuid>.metadata.json     snapshot 2: fast append of A more files
    metadata/snap-<id>-0-<uuid>.avro         manifest list of each snapshot
    metadata/<uuid>-m<k>.avro                manifests, at most --entries-per-manifest each

No `version-hint.text` is written (pyiceberg does not write one); a reader finds the current
metadata file as the highest-numbered `*.metadata.json`.

Invariants the measurement relies on:
- The current snapshot (the second) holds exactly `--files` data files, all with status added
  or existing; no delete files.
- Every path is unique and lives under `<table root>/data/part=<value>/`.
- Columns (field ids 1..4): `part` string (identity partition, `--partitions` distinct values),
  `id` long, `value` double, `name` string, the same as synth_delta.py. Every data file has a
  record count, a size, value and null counts, and lower/upper bounds for `id`, `value`, `name`
  (the same min/max values synth_delta.py writes as JSON stats).
- Snapshot 1's added files are split over manifests of `--entries-per-manifest` entries, as
  writers with a manifest target size do (pyiceberg's own fast append writes one manifest per
  commit; `ChunkedFastAppend` below splits it).

Usage:
    .venv/bin/python loadtest/synth_iceberg.py --endpoint http://127.0.0.1:9000 \
        --access-key minioadmin --secret-key minioadmin --bucket lake --prefix ice100k/ \
        --files 100000
    # in a fresh process: pyiceberg plans the current snapshot; checks the count
    .venv/bin/python loadtest/synth_iceberg.py --endpoint ... --prefix ice100k/ \
        --files 100000 --plan
Both print one JSON line (timings in seconds, the table root).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from pathlib import Path

PARTITION_COLUMN = "part"
ROWS_PER_DATA_FILE = 1000
FIELD_PART, FIELD_ID, FIELD_VALUE, FIELD_NAME = 1, 2, 3, 4
NAMESPACE = "synth"


def partition_value(index: int) -> str:
    return f"p{index:03d}"


def file_properties(args: argparse.Namespace) -> dict[str, str]:
    return {
        "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO",
        "s3.endpoint": args.endpoint,
        "s3.access-key-id": args.access_key,
        "s3.secret-access-key": args.secret_key,
        "s3.region": args.region,
        "s3.path-style-access": "true",
        "s3.force-virtual-addressing": "false",
    }


def table_root(args: argparse.Namespace) -> str:
    return f"s3://{args.bucket}/{args.prefix.strip('/')}"


def table_schema():
    from pyiceberg.schema import Schema
    from pyiceberg.types import DoubleType, LongType, NestedField, StringType

    return Schema(
        NestedField(FIELD_PART, PARTITION_COLUMN, StringType(), required=False),
        NestedField(FIELD_ID, "id", LongType(), required=False),
        NestedField(FIELD_VALUE, "value", DoubleType(), required=False),
        NestedField(FIELD_NAME, "name", StringType(), required=False),
    )


def partition_spec():
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    return PartitionSpec(
        PartitionField(source_id=FIELD_PART, field_id=1000, transform=IdentityTransform(),
                       name=PARTITION_COLUMN),
        spec_id=0,
    )


def data_files(first_file: int, count: int, partitions: int, root: str, run_id: str) -> list:
    """DataFile records of files `first_file .. first_file + count` (never written).

    File i lives in partition `i % partitions`, holds ids `[i * ROWS, (i + 1) * ROWS)`, and
    has a size that varies with i: the same numbers as synth_delta.py's adds.
    """
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.typedef import Record

    pack_long = struct.Struct("<q").pack
    pack_double = struct.Struct("<d").pack
    partition_records = [Record(partition_value(p)) for p in range(partitions)]
    files = []
    for index in range(first_file, first_file + count):
        part = index % partitions
        id_min = index * ROWS_PER_DATA_FILE
        value_min = index * 0.5
        index_text = f"{index:09d}"
        data_file = DataFile.from_args(
            _table_format_version=2,
            content=DataFileContent.DATA,
            file_path=(f"{root}/data/{PARTITION_COLUMN}={partition_value(part)}/"
                       f"{index_text}-{run_id}.parquet"),
            file_format=FileFormat.PARQUET,
            partition=partition_records[part],
            record_count=ROWS_PER_DATA_FILE,
            file_size_in_bytes=100_000 + (index * 7919) % 900_000,
            column_sizes={FIELD_ID: 8_000, FIELD_VALUE: 8_000, FIELD_NAME: 12_000},
            value_counts={FIELD_ID: ROWS_PER_DATA_FILE, FIELD_VALUE: ROWS_PER_DATA_FILE,
                          FIELD_NAME: ROWS_PER_DATA_FILE},
            null_value_counts={FIELD_ID: 0, FIELD_VALUE: 0, FIELD_NAME: 0},
            nan_value_counts={FIELD_VALUE: 0},
            lower_bounds={FIELD_ID: pack_long(id_min), FIELD_VALUE: pack_double(value_min),
                          FIELD_NAME: f"a{index_text}".encode()},
            upper_bounds={FIELD_ID: pack_long(id_min + ROWS_PER_DATA_FILE - 1),
                          FIELD_VALUE: pack_double(value_min + 499.75),
                          FIELD_NAME: f"z{index_text}".encode()},
            split_offsets=[4],
            sort_order_id=0,
        )
        data_file.spec_id = 0
        files.append(data_file)
    return files


def chunked_fast_append_class():
    """A fast append that writes its added files into manifests of bounded entry counts.

    Built on pyiceberg's private `_FastAppendFiles` (0.12): only `_manifests` is replaced, the
    manifest list, summary and commit stay pyiceberg's.
    """
    from pyiceberg.manifest import ManifestEntry, ManifestEntryStatus
    from pyiceberg.table.update.snapshot import _FastAppendFiles

    class ChunkedFastAppend(_FastAppendFiles):
        entries_per_manifest = 10_000

        def _manifests(self):
            spec = self._transaction.table_metadata.spec()
            added = []
            files = self._added_data_files
            for start in range(0, len(files), self.entries_per_manifest):
                with self.new_manifest_writer(spec=spec) as writer:
                    for data_file in files[start:start + self.entries_per_manifest]:
                        writer.add(ManifestEntry.from_args(
                            status=ManifestEntryStatus.ADDED, snapshot_id=self._snapshot_id,
                            sequence_number=None, file_sequence_number=None,
                            data_file=data_file))
                added.append(writer.to_manifest_file())
            return added + self._existing_manifests()

    return ChunkedFastAppend


def ensure_bucket(args: argparse.Namespace) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=args.endpoint, aws_access_key_id=args.access_key,
        aws_secret_access_key=args.secret_key, region_name=args.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    if args.bucket not in existing:
        client.create_bucket(Bucket=args.bucket)


def generate(args: argparse.Namespace) -> dict:
    import uuid

    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.table.update.snapshot import Operation

    if args.files <= args.appended_files or args.appended_files < 1:
        raise ValueError("need --files > --appended-files >= 1")
    if args.create_bucket:
        ensure_bucket(args)
    started = time.monotonic()
    root = table_root(args)
    run_id = str(uuid.uuid4())
    first_files = args.files - args.appended_files
    with tempfile.TemporaryDirectory(prefix="synth-iceberg-") as catalog_dir:
        catalog = SqlCatalog("synth", uri=f"sqlite:///{Path(catalog_dir) / 'catalog.db'}",
                             warehouse=f"s3://{args.bucket}/", **file_properties(args))
        catalog.create_namespace(NAMESPACE)
        table = catalog.create_table(
            f"{NAMESPACE}.{args.name}", schema=table_schema(), partition_spec=partition_spec(),
            location=root, properties={"format-version": "2"})
        bulk = data_files(0, first_files, args.partitions, root, run_id)
        built = time.monotonic()

        append_class = chunked_fast_append_class()
        append_class.entries_per_manifest = args.entries_per_manifest
        transaction = table.transaction()
        append = append_class(operation=Operation.APPEND, transaction=transaction,
                              io=table.io)
        for data_file in bulk:
            append.append_data_file(data_file)
        append.commit()
        transaction.commit_transaction()
        first_committed = time.monotonic()

        table = catalog.load_table(f"{NAMESPACE}.{args.name}")
        with table.transaction() as transaction:
            with transaction.update_snapshot().fast_append() as small:
                for data_file in data_files(first_files, args.appended_files,
                                            args.partitions, root, run_id):
                    small.append_data_file(data_file)
        table = catalog.load_table(f"{NAMESPACE}.{args.name}")
        finished = time.monotonic()
        snapshot = table.current_snapshot()
        manifests = len(snapshot.manifests(table.io)) if snapshot is not None else 0
        return {
            "files": args.files,
            "table_root": root + "/",
            "share_spec": f"{args.name}:iceberg:{args.bucket}:{args.prefix.strip('/')}/",
            "metadata_location": table.metadata_location,
            "snapshots": len(table.metadata.snapshots),
            # A string: snapshot ids use all 64 bits, jq would round them as doubles.
            "current_snapshot_id": str(snapshot.snapshot_id) if snapshot is not None else None,
            "manifests": manifests,
            "build_seconds": round(built - started, 3),
            "first_commit_seconds": round(first_committed - built, 3),
            "second_commit_seconds": round(finished - first_committed, 3),
            "total_seconds": round(finished - started, 3),
        }


def newest_metadata_location(args: argparse.Namespace) -> str:
    """The highest-numbered `metadata/*.metadata.json` under the table root."""
    from pyarrow import fs

    s3 = fs.S3FileSystem(access_key=args.access_key, secret_key=args.secret_key,
                         endpoint_override=args.endpoint, region=args.region,
                         force_virtual_addressing=False)
    folder = f"{args.bucket}/{args.prefix.strip('/')}/metadata"
    names = [info.base_name for info in s3.get_file_info(fs.FileSelector(folder))
             if info.base_name.endswith(".metadata.json")]
    if not names:
        raise FileNotFoundError(f"no *.metadata.json under s3://{folder}/")
    newest = max(names, key=lambda name: int(name.split("-", 1)[0]))
    return f"s3://{folder}/{newest}"


def plan(args: argparse.Namespace) -> dict:
    from pyiceberg.table import StaticTable

    started = time.monotonic()
    location = newest_metadata_location(args)
    table = StaticTable.from_metadata(location, file_properties(args))
    opened = time.monotonic()
    tasks = list(table.scan().plan_files())
    finished = time.monotonic()
    planned = len(tasks)
    if args.files is not None and planned != args.files:
        raise SystemExit(f"pyiceberg planned {planned} files, expected {args.files}")
    return {
        "files": planned,
        "metadata_location": location,
        "open_seconds": round(opened - started, 3),
        "plan_seconds": round(finished - opened, 3),
        "listing_seconds": round(finished - started, 3),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000,
                        help="data files in the current snapshot")
    parser.add_argument("--endpoint", required=True, help="S3 endpoint of the node")
    parser.add_argument("--access-key", default="minioadmin")
    parser.add_argument("--secret-key", default="minioadmin")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--bucket", default="lake")
    parser.add_argument("--prefix", default="synthetic-iceberg/",
                        help="table root inside the bucket")
    parser.add_argument("--create-bucket", action="store_true")
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--entries-per-manifest", type=int, default=10_000)
    parser.add_argument("--appended-files", type=int, default=3,
                        help="files the second snapshot appends")
    parser.add_argument("--name", default="synthetic")
    parser.add_argument("--plan", action="store_true",
                        help="do not write: plan the current snapshot with pyiceberg and "
                             "check that it has --files files")
    args = parser.parse_args(argv)
    if not args.prefix.strip("/"):
        parser.error("--prefix must name a folder: the table root")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    summary = plan(args) if args.plan else generate(args)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
