"""Issue 2, test 4: pyiceberg (SQLite catalog, pyarrow S3 FileIO at the node) writes a
partitioned table in three commits and reads it back equal.

pyarrow uploads every file as an aws-chunked multipart upload with a CRC64NVME trailer, so this
also covers the streaming-trailer body encoding.
"""

import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import DateType, DoubleType, LongType, NestedField, StringType

pytestmark = pytest.mark.timeout(300)

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "category", StringType(), required=False),
    NestedField(3, "value", DoubleType(), required=False),
    NestedField(4, "day", DateType(), required=False),
)
SPEC = PartitionSpec(
    PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="category"),
    PartitionField(source_id=4, field_id=1001, transform=DayTransform(), name="day_day"),
)
ARROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("category", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("day", pa.date32()),
    ]
)


def catalog_for(server, tmp_path, warehouse: str = "s3://warehouse/iceberg") -> SqlCatalog:
    return SqlCatalog(
        "lakeshare",
        **{
            "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
            "warehouse": warehouse,
            "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO",
            "s3.endpoint": server.endpoint,
            "s3.access-key-id": server.access_key,
            "s3.secret-access-key": server.secret_key,
            "s3.region": "us-east-1",
            "s3.path-style-access": "true",
            "s3.force-virtual-addressing": "false",
        },
    )


def batch(commit: int) -> pa.Table:
    ids = list(range(commit * 100, commit * 100 + 100))
    return pa.table(
        {
            "id": ids,
            "category": [("alpha", "beta", "gamma")[row % 3] for row in ids],
            "value": [row * 1.5 for row in ids],
            "day": [datetime.date(2026, 1, 1 + commit) for _ in ids],
        },
        schema=ARROW_SCHEMA,
    )


def test_partitioned_table_in_three_commits_reads_back_equal(server, tmp_path):
    server.s3_client().create_bucket(Bucket="warehouse")
    catalog = catalog_for(server, tmp_path)
    catalog.create_namespace("sales")
    table = catalog.create_table("sales.orders", schema=SCHEMA, partition_spec=SPEC)

    batches = [batch(commit) for commit in range(3)]
    for commit_batch in batches:
        table.append(commit_batch)

    # A fresh catalog object reads the metadata back from the node.
    reloaded = catalog_for(server, tmp_path).load_table("sales.orders")
    assert len(reloaded.snapshots()) == 3
    assert reloaded.spec().fields == SPEC.fields

    got = reloaded.scan().to_arrow().sort_by("id")
    expected = pa.concat_tables(batches).sort_by("id")
    assert got.num_rows == 300
    assert got.select(ARROW_SCHEMA.names).cast(ARROW_SCHEMA).equals(expected)

    beta = reloaded.scan(row_filter="category == 'beta'").to_arrow()
    assert beta.num_rows == 100
    assert pc.all(pc.equal(beta["category"], "beta")).as_py()

    # The first snapshot still reads as the first commit alone.
    first_snapshot = reloaded.snapshots()[0].snapshot_id
    first = reloaded.scan(snapshot_id=first_snapshot).to_arrow().sort_by("id")
    assert first["id"].to_pylist() == list(range(100))

    s3 = server.s3_client()
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket="warehouse", Prefix="iceberg/"
        )
        for item in page.get("Contents", [])
    ]
    assert any("category=beta" in key and key.endswith(".parquet") for key in keys), keys
    assert any(key.endswith(".metadata.json") for key in keys), keys
