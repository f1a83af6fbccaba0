"""Issue 2, test 1: the product brief's quickstart step 1, verbatim, and Delta tables over S3.

The node runs with its embedded default credentials (minioadmin/minioadmin), as the brief's
code assumes; only the endpoint differs (127.0.0.1:PORT instead of localhost:9000).
"""

import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake
from minio import Minio

pytestmark = pytest.mark.timeout(300)

QUICKSTART_DATA = {
    "id": [1, 2, 3, 4, 5],
    "name": ["Alice", "Bob", "Carol", "David", "Eve"],
    "department": ["Engineering", "Sales", "Engineering", "Marketing", "Sales"],
    "salary": [95000, 65000, 110000, 72000, 68000],
}


@pytest.fixture
def default_server(lakeshare_server):
    """A node started with no credential variables: it must fall back to minioadmin."""
    return lakeshare_server(root_user=None, root_password=None)


def run_quickstart_step_1(endpoint: str) -> None:
    """Step 1 of the product brief, with only ENDPOINT changed."""
    # Connection settings
    ENDPOINT = endpoint
    ACCESS_KEY = "minioadmin"
    SECRET_KEY = "minioadmin"
    # Create bucket
    client = Minio(ENDPOINT, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    if not client.bucket_exists("analytics"):
        client.make_bucket("analytics")
    # Sample data
    data = QUICKSTART_DATA
    # Write Delta table
    write_deltalake(
        "s3://analytics/employees/",
        pd.DataFrame(data),
        mode="overwrite",
        storage_options={
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": f"http://{ENDPOINT}",
            "AWS_ALLOW_HTTP": "true",
        },
    )
    print("Delta table created at s3://analytics/employees/")


def sorted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("id").reset_index(drop=True)


def test_quickstart_step_1_verbatim_reads_back_equal(default_server):
    run_quickstart_step_1(default_server.host_port)

    assert default_server.minio_client().bucket_exists("analytics")
    options = default_server.storage_options()
    table = DeltaTable("s3://analytics/employees/", storage_options=options)
    assert table.version() == 0
    got = sorted_frame(table.to_pandas())
    expected = sorted_frame(pd.DataFrame(QUICKSTART_DATA))
    pd.testing.assert_frame_equal(got[expected.columns.tolist()], expected, check_dtype=False)

    # Running the script again (bucket exists, overwrite) gives version 1 with the same rows.
    run_quickstart_step_1(default_server.host_port)
    table = DeltaTable("s3://analytics/employees/", storage_options=options)
    assert table.version() == 1
    assert sorted(table.to_pandas()["id"].tolist()) == [1, 2, 3, 4, 5]

    assert default_server.stop() == 0, "SIGTERM must end the node gracefully with exit code 0"


def test_append_adds_rows_and_a_version(default_server):
    run_quickstart_step_1(default_server.host_port)
    options = default_server.storage_options()
    more = pd.DataFrame(
        {
            "id": [6, 7],
            "name": ["Frank", "Grace"],
            "department": ["Finance", "Engineering"],
            "salary": [81000, 120000],
        }
    )
    write_deltalake("s3://analytics/employees/", more, mode="append", storage_options=options)

    table = DeltaTable("s3://analytics/employees/", storage_options=options)
    assert table.version() == 1
    frame = sorted_frame(table.to_pandas())
    assert frame["id"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert frame.loc[frame["id"] == 7, "salary"].item() == 120000
    # Time travel to the first version still sees the original five rows.
    first = DeltaTable("s3://analytics/employees/", storage_options=options, version=0)
    assert sorted(first.to_pandas()["id"].tolist()) == [1, 2, 3, 4, 5]


def test_partitioned_table(default_server):
    default_server.minio_client().make_bucket("analytics")
    options = default_server.storage_options()
    frame = pd.DataFrame(QUICKSTART_DATA)
    write_deltalake(
        "s3://analytics/by_department/",
        frame,
        mode="overwrite",
        partition_by=["department"],
        storage_options=options,
    )

    table = DeltaTable("s3://analytics/by_department/", storage_options=options)
    assert table.metadata().partition_columns == ["department"]
    got = sorted_frame(table.to_pandas())
    expected = sorted_frame(frame)
    pd.testing.assert_frame_equal(got[expected.columns.tolist()], expected, check_dtype=False)

    sales = table.to_pandas(filters=[("department", "=", "Sales")])
    assert sorted(sales["name"].tolist()) == ["Bob", "Eve"]

    keys = [
        item.object_name
        for item in default_server.minio_client().list_objects(
            "analytics", prefix="by_department/", recursive=True
        )
    ]
    for department in ("Engineering", "Sales", "Marketing"):
        assert any(f"department={department}/" in key for key in keys), keys


def test_25_commits_with_a_checkpoint(default_server):
    default_server.minio_client().make_bucket("analytics")
    options = default_server.storage_options()
    uri = "s3://analytics/commits/"
    for commit in range(25):
        write_deltalake(
            uri,
            pd.DataFrame({"id": [commit], "value": [f"row-{commit}"]}),
            mode="append",
            configuration={"delta.checkpointInterval": "10"} if commit == 0 else None,
            storage_options=options,
        )
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 24
    table.create_checkpoint()

    s3 = default_server.s3_client()
    log_keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket="analytics", Prefix="commits/_delta_log/"
        )
        for item in page.get("Contents", [])
    ]
    assert "commits/_delta_log/_last_checkpoint" in log_keys
    assert "commits/_delta_log/00000000000000000024.checkpoint.parquet" in log_keys
    assert sum(key.endswith(".json") for key in log_keys) == 25

    # A fresh reader starts from the checkpoint and sees every row once.
    reread = DeltaTable(uri, storage_options=options)
    assert reread.version() == 24
    assert sorted(reread.to_pandas()["id"].tolist()) == list(range(25))
    old = DeltaTable(uri, storage_options=options, version=9)
    assert sorted(old.to_pandas()["id"].tolist()) == list(range(10))
