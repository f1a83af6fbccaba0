#!/usr/bin/env python3
"""Write a synthetic change-data-feed Delta table of C commits of A `add` actions each into an
S3 bucket, without data files (issue 12's change-range measurement).

`/changes` and streaming `/query` return URLs of the files a range changed and never open
them, so only the transaction log is written, one JSON commit per version:

    _delta_log/00000000000000000000.json     protocol (1, 2) + metaData (CDF on) + commitInfo
    _delta_log/<1..C>.json                   commitInfo + A adds (dataChange=true, stats)
    _delta_log/<C>.checkpoint.parquet        with --checkpoint: protocol, metaData, every add
    _delta_log/_last_checkpoint              with --checkpoint

The checkpoint at the latest version keeps the cost of resolving the latest snapshot small
and the same for any range (without it the kernel replays every commit for the latest
protocol and metadata), so a range answer's own memory shows in the node's peak RSS.

Invariants the measurement relies on: versions 1..C each add exactly A files with unique
paths (the add actions of loadtest/synth_delta.py: partition `part`, JSON stats), version 0
adds none, so `startingVersion=0` covers exactly C * A file lines and no `metaData` line
after line 2; change data is enabled from version 0 on.

Usage:
    .venv/bin/python loadtest/synth_changes.py --endpoint http://127.0.0.1:9000 \
        --access-key minioadmin --secret-key minioadmin --bucket lake --prefix changes/ \
        --commits 100 --adds-per-commit 1000
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

import synth_delta as synth


def checkpoint(adds: list, metadata: dict) -> bytes:
    """A classic checkpoint: protocol, metaData and every add of the commits."""
    table = pa.concat_tables([
        synth.single_column_table("protocol", pa.array([synth.protocol_action()],
                                                       synth.PROTOCOL)),
        synth.single_column_table("metaData", pa.array([metadata], synth.METADATA)),
        synth.single_column_table("add", pa.concat_arrays(adds)),
    ])
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue()


def build_log(commits: int, adds_per_commit: int, partitions: int, name: str,
              with_checkpoint: bool) -> dict:
    metadata = synth.metadata_action(str(uuid.uuid4()), name)
    metadata["configuration"] = {"delta.enableChangeDataFeed": "true"}
    metadata["description"] = "synthetic change range from loadtest/synth_changes.py"
    objects = {synth.commit_name(0, "json"): synth.json_lines([
        {"protocol": synth.protocol_action()},
        {"metaData": metadata},
        synth.commit_info(synth.TABLE_CREATED_MS, "CREATE TABLE"),
    ])}
    all_adds = []
    for version in range(1, commits + 1):
        commit_ms = synth.TABLE_CREATED_MS + version * synth.COMMIT_SPACING_MS
        added = synth.add_struct(synth.add_columns((version - 1) * adds_per_commit,
                                                   adds_per_commit, partitions, commit_ms))
        objects[synth.commit_name(version, "json")] = synth.json_lines(
            [synth.commit_info(commit_ms, "WRITE")] + synth.add_action_json(added))
        if with_checkpoint:
            all_adds.append(added)
    if with_checkpoint:
        objects[synth.commit_name(commits, "checkpoint.parquet")] = checkpoint(all_adds, metadata)
        objects["_delta_log/_last_checkpoint"] = json.dumps(
            {"version": commits, "size": 2 + commits * adds_per_commit}).encode()
    return objects


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--access-key", default="minioadmin")
    parser.add_argument("--secret-key", default="minioadmin")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--bucket", default="lake")
    parser.add_argument("--prefix", default="changes/")
    parser.add_argument("--create-bucket", action="store_true")
    parser.add_argument("--commits", type=int, default=100)
    parser.add_argument("--adds-per-commit", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--name", default="changes")
    parser.add_argument("--checkpoint", action="store_true",
                        help="also write a checkpoint at the latest version")
    args = parser.parse_args(argv)
    if args.commits < 1 or args.adds_per_commit < 1:
        parser.error("--commits and --adds-per-commit must be at least 1")
    started = time.monotonic()
    objects = build_log(args.commits, args.adds_per_commit, args.partitions, args.name,
                        args.checkpoint)
    built = time.monotonic()
    synth.upload(objects, args)
    finished = time.monotonic()
    print(json.dumps({
        "commits": args.commits,
        "adds_per_commit": args.adds_per_commit,
        "changed_files": args.commits * args.adds_per_commit,
        "latest_version": args.commits,
        "checkpoint": args.checkpoint,
        "log_bytes": sum(len(data) for data in objects.values()),
        "largest_commit_bytes": max(len(data) for key, data in objects.items()
                                    if key.endswith(".json")),
        "build_seconds": round(built - started, 3),
        "write_seconds": round(finished - built, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
