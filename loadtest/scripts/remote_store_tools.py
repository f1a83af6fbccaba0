#!/usr/bin/env python3
"""Small S3 chores of measure_remote_backend.sh, the same against a Ceph RGW and a lakeshare
storage node (boto3, path-style, SigV4, checksums only where an operation needs them, which RGW
16.2 requires).

    remote_store_tools.py buckets    ENDPOINT AK SK BUCKET...      create them (existing: fine)
    remote_store_tools.py data-table ENDPOINT AK SK URI FILES MIB  a Delta table of FILES commits,
                                     each one data file of MIB MiB (random bytes, fixed seed)
    remote_store_tools.py presign    ENDPOINT AK SK BUCKET KEY     a presigned GET URL (1 h)

`data-table` writes real parquet files with deltalake (columns `id` long and `blob` binary, one
1-MiB value per row, so the files do not compress) and prints {"files", "bytes"} of the table.
"""

from __future__ import annotations

import json
import sys

REGION = "us-east-1"
SEED = 13


def client(endpoint: str, access_key: str, secret_key: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                      retries={"max_attempts": 3, "mode": "standard"},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))


def buckets(endpoint: str, access_key: str, secret_key: str, *names: str) -> None:
    s3 = client(endpoint, access_key, secret_key)
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    for name in names:
        if name not in existing:
            s3.create_bucket(Bucket=name)


def data_table(endpoint: str, access_key: str, secret_key: str, uri: str, files: str,
               mib: str) -> None:
    import numpy as np
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    options = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
               "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_ALLOW_HTTP": "true",
               "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    rng = np.random.default_rng(SEED)
    rows = int(mib)
    for index in range(int(files)):
        table = pa.table({
            "id": pa.array(range(index * rows, (index + 1) * rows), pa.int64()),
            "blob": pa.array([rng.bytes(1 << 20) for _ in range(rows)], pa.binary()),
        })
        write_deltalake(uri, table, mode="append", storage_options=options)
    adds = DeltaTable(uri, storage_options=options).get_add_actions(flatten=True)
    sizes = pa.table(adds).column("size_bytes").to_pylist()
    print(json.dumps({"files": len(sizes), "bytes": sum(sizes)}))


def presign(endpoint: str, access_key: str, secret_key: str, bucket: str, key: str) -> None:
    print(client(endpoint, access_key, secret_key).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600))


COMMANDS = {"buckets": buckets, "data-table": data_table, "presign": presign}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
