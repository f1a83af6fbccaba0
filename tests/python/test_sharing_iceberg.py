"""Issue 5: Iceberg tables written by pyiceberg (SQLite catalog, S3 FileIO at the node) and
read through Delta Sharing with the real `delta-sharing` client, compared with pyiceberg's
own scan of the same snapshot; a share mixing Delta and Iceberg; broken metadata."""

from __future__ import annotations

import datetime
import decimal
import json

import pyarrow as pa
import pytest
import requests

from test_pyiceberg import catalog_for as pyiceberg_catalog
from test_sharing_delta import assert_same_rows, bearer, load, node  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(600)


def catalog_for(server, tmp_path):
    """A pyiceberg SQL catalog writing into bucket `lake`, with namespace `ns`."""
    catalog = pyiceberg_catalog(server, tmp_path, warehouse="s3://lake/warehouse")
    catalog.create_namespace("ns")
    return catalog


def table_root(table) -> str:
    """`PATH/` of an Iceberg table inside bucket `lake`."""
    location = table.metadata.location
    assert location.startswith("s3://lake/"), location
    return location[len("s3://lake/"):].rstrip("/") + "/"


def share(cli, tmp_path, name: str, specs: list[str]) -> str:
    cli.run("table", "share", "create", f"local/{name}", "s", *specs)
    token = cli.json("table", "share", "token", "create", f"local/{name}")
    profile = tmp_path / f"{name}.share"
    profile.write_text(json.dumps(token["profile"]))
    return str(profile)


def scan(table, snapshot_id=None):
    return table.scan(snapshot_id=snapshot_id).to_arrow().to_pandas()


def versions_of(table) -> list[tuple[int, int]]:
    """(sequence number = sharing version, snapshot id) of each main-branch snapshot."""
    return [(snapshot.sequence_number, snapshot.snapshot_id)
            for snapshot in table.metadata.snapshots]


def check_every_version(profile: str, name: str, table, formats=(False, True)):
    table = table.refresh()
    for use_delta_format in formats:
        latest = load(profile, name, use_delta_format=use_delta_format)
        assert_same_rows(latest, scan(table), f"{name} latest delta={use_delta_format}")
        for version, snapshot_id in versions_of(table):
            shared = load(profile, name, version=version, use_delta_format=use_delta_format)
            assert_same_rows(shared, scan(table, snapshot_id),
                             f"{name} v{version} delta={use_delta_format}")


def test_partitioned_and_evolving_tables_read_equal(node, tmp_path):
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform
    from pyiceberg.types import (DateType, DoubleType, LongType, NestedField, StringType)

    server, cli = node
    catalog = catalog_for(server, tmp_path)
    schema = Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(2, "category", StringType(), required=False),
        NestedField(3, "value", DoubleType(), required=False),
        NestedField(4, "day", DateType(), required=False),
    )
    arrow_schema = pa.schema([("id", pa.int64()), ("category", pa.string()),
                              ("value", pa.float64()), ("day", pa.date32())])

    def rows(start: int, count: int, categories=("a", "b", None)) -> pa.Table:
        ids = list(range(start, start + count))
        return pa.table({
            "id": ids,
            "category": [categories[i % len(categories)] for i in ids],
            "value": [i * 0.5 for i in ids],
            "day": [datetime.date(2024, 1, 1 + i % 5) for i in ids],
        }, schema=arrow_schema)

    plain = catalog.create_table("ns.plain", schema=schema)
    identity = catalog.create_table("ns.identity", schema=schema, partition_spec=PartitionSpec(
        PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(),
                       name="category")))
    transformed = catalog.create_table("ns.transformed", schema=schema,
                                       partition_spec=PartitionSpec(
        PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="day_day"),
        PartitionField(source_id=1, field_id=1001, transform=BucketTransform(4),
                       name="id_bucket")))
    for table in (plain, identity, transformed):
        table.append(rows(0, 30))
        table.append(rows(30, 20))
    identity.overwrite(rows(100, 10, categories=("c", None)))
    plain.delete("id < 10")

    identity.delete("category == 'c'")
    assert identity.refresh().metadata.current_snapshot().summary.operation.value == "delete"

    profile = share(cli, tmp_path, "ice", [
        f"plain:iceberg:lake:{table_root(plain)}",
        f"identity:iceberg:lake:{table_root(identity)}",
        f"transformed:iceberg:lake:{table_root(transformed)}",
    ])
    check_every_version(profile, "ice.s.plain", plain)
    check_every_version(profile, "ice.s.identity", identity)
    check_every_version(profile, "ice.s.transformed", transformed)

    # A snapshot that drops whole files is a change feed of removes.
    identity = identity.refresh()
    last = identity.metadata.current_snapshot()
    removed = load_changes(profile, "ice.s.identity", starting_version=last.sequence_number)
    assert set(removed["_change_type"]) == {"delete"}
    before = scan(identity, last.parent_snapshot_id)
    assert sorted(removed["id"]) == sorted(before[before["category"] == "c"]["id"])

    metadata = requests.get(
        f"{bearer(profile)[0]}/shares/ice/schemas/s/tables/identity/metadata",
        headers=bearer(profile)[1], timeout=30)
    assert metadata.status_code == 200, metadata.text
    assert json.loads(metadata.text.splitlines()[1])["metaData"]["partitionColumns"] == [
        "category"]

    # Schema evolution: add, rename and drop columns, then append again.
    with plain.update_schema() as update:
        update.add_column("note", StringType())
    plain.append(pa.table({"id": [500], "category": ["z"], "value": [1.5],
                           "day": [datetime.date(2024, 2, 1)], "note": ["added"]}))
    with plain.update_schema() as update:
        update.rename_column("value", "amount")
    with plain.update_schema() as update:
        update.delete_column("category")
    plain.append(pa.table({"id": [501], "amount": [2.5], "day": [datetime.date(2024, 2, 2)],
                           "note": ["renamed"]}))
    plain = plain.refresh()
    # Every version, before and after the evolution, through Iceberg's field ids.
    check_every_version(profile, "ice.s.plain", plain, formats=(True,))
    refused = requests.post(f"{bearer(profile)[0]}/shares/ice/schemas/s/tables/plain/query",
                            headers=bearer(profile)[1], json={}, timeout=30)
    assert refused.status_code == 400, "a renamed column cannot be read by name (parquet)"


def test_all_primitive_types_and_history(node, tmp_path):
    from pyiceberg.schema import Schema
    from pyiceberg.types import (BinaryType, BooleanType, DateType, DecimalType, DoubleType,
                                 FixedType, FloatType, IntegerType, LongType, NestedField,
                                 StringType, TimestampType, TimestamptzType)

    server, cli = node
    catalog = catalog_for(server, tmp_path)
    schema = Schema(
        NestedField(1, "b", BooleanType(), required=False),
        NestedField(2, "i", IntegerType(), required=False),
        NestedField(3, "l", LongType(), required=False),
        NestedField(4, "f", FloatType(), required=False),
        NestedField(5, "d", DoubleType(), required=False),
        NestedField(6, "dec", DecimalType(12, 3), required=False),
        NestedField(7, "day", DateType(), required=False),
        NestedField(8, "ts", TimestampType(), required=False),
        NestedField(9, "tstz", TimestamptzType(), required=False),
        NestedField(10, "s", StringType(), required=False),
        NestedField(11, "bin", BinaryType(), required=False),
    )
    table = catalog.create_table("ns.types", schema=schema)
    arrow_schema = schema.as_arrow()
    for commit in range(3):
        count = 4
        table.append(pa.table({
            "b": [i % 2 == 0 for i in range(count)],
            "i": [commit * 10 + i for i in range(count)],
            "l": [2**40 + i for i in range(count)],
            "f": [1.5 * i for i in range(count)],
            "d": [None] + [2.25 * i for i in range(1, count)],
            "dec": [decimal.Decimal(f"{commit}{i}.125") for i in range(count)],
            "day": [datetime.date(2024, 3, 1 + i) for i in range(count)],
            "ts": [datetime.datetime(2024, 3, 1, 12, i, 30, 250000) for i in range(count)],
            "tstz": [datetime.datetime(2024, 3, 1, 12, i, tzinfo=datetime.timezone.utc)
                     for i in range(count)],
            "s": [f"é{i}" if i else None for i in range(count)],
            "bin": [bytes([i, 255]) for i in range(count)],
        }, schema=arrow_schema))
    # Fixed-length binary has no Delta type that readers accept: refused, clearly.
    fixed_schema = Schema(NestedField(1, "fixed", FixedType(4), required=False))
    fixed = catalog.create_table("ns.fixed", schema=fixed_schema)
    fixed.append(pa.table({"fixed": [b"abcd"]}, schema=fixed_schema.as_arrow()))
    profile = share(cli, tmp_path, "types", [f"types:iceberg:lake:{table_root(table)}",
                                             f"fixed:iceberg:lake:{table_root(fixed)}"])
    endpoint, headers = bearer(profile)
    refused = requests.post(f"{endpoint}/shares/types/schemas/s/tables/fixed/query",
                            headers=headers, json={}, timeout=30)
    assert refused.status_code == 400 and "fixed[4]" in refused.json()["message"], refused.text
    # timestamp without zone is timestamp_ntz: the delta format only.
    check_every_version(profile, "types.s.types", table, formats=(True,))

    base = f"{endpoint}/shares/types/schemas/s/tables/types"
    version = requests.get(f"{base}/version", headers=headers, timeout=30)
    assert version.headers["delta-table-version"] == str(table.refresh().metadata
                                                        .current_snapshot().sequence_number)
    # Time travel by timestamp, and the first version at or after a time.
    snapshots = table.refresh().metadata.snapshots
    second = snapshots[1]
    when = datetime.datetime.fromtimestamp(second.timestamp_ms / 1000, datetime.timezone.utc)
    at_time = load(profile, "types.s.types", timestamp=when.isoformat(), use_delta_format=True)
    assert_same_rows(at_time, scan(table, second.snapshot_id), "types as of the 2nd snapshot")
    after = requests.get(f"{base}/version", headers=headers, timeout=30,
                         params={"startingTimestamp": when.isoformat()})
    assert after.headers["delta-table-version"] == str(second.sequence_number), after.text

    # Pages over an Iceberg version: the same files as the unpaged answer.
    delta_format = {**headers, "delta-sharing-capabilities": "responseformat=delta"}
    whole = requests.post(f"{base}/query", headers=delta_format, json={}, timeout=30)
    whole_ids = sorted(json.loads(line)["file"]["id"] for line in whole.text.splitlines()[2:])
    paged_ids, token, pages = [], None, 0
    while True:
        body = {"maxFiles": 1, **({"pageToken": token} if token else {})}
        page = requests.post(f"{base}/query", headers=delta_format, json=body, timeout=30)
        lines = [json.loads(line) for line in page.text.splitlines()]
        paged_ids += [line["file"]["id"] for line in lines[2:-1]]
        pages += 1
        token = lines[-1]["endStreamAction"].get("nextPageToken")
        if not token:
            break
    assert pages == 3 and sorted(paged_ids) == whole_ids

    # The change feed of appends: every appended row, with its version.
    changes = load_changes(profile, "types.s.types", starting_version=2, use_delta_format=True)
    assert sorted(changes["_commit_version"].unique().tolist()) == [2, 3]
    assert len(changes) == 8 and set(changes["_change_type"]) == {"insert"}

    # Stats drive predicate hints; a limit cuts files.
    hint = json.dumps({"op": "greaterThan", "children": [
        {"op": "column", "name": "i", "valueType": "int"},
        {"op": "literal", "value": "15", "valueType": "int"}]})
    delta_headers = {**headers, "delta-sharing-capabilities": "responseformat=delta"}
    hinted = requests.post(f"{base}/query", headers=delta_headers,
                           json={"jsonPredicateHints": hint}, timeout=30)
    assert hinted.status_code == 200, hinted.text
    assert len(hinted.text.splitlines()) == 2 + 1, "only the third append holds i > 15"
    limited = requests.post(f"{base}/query", headers=delta_headers, json={"limitHint": 1},
                            timeout=30)
    assert len(limited.text.splitlines()) == 3


def load_changes(profile: str, table: str, **options):
    import delta_sharing

    return delta_sharing.load_table_changes_as_pandas(f"{profile}#{table}", **options)


def test_mixed_share_and_broken_metadata(node, tmp_path):
    import pandas as pd
    from deltalake import write_deltalake
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField

    server, cli = node
    write_deltalake("s3://lake/delta/", pd.DataFrame({"n": [1, 2, 3]}),
                    storage_options=server.storage_options())
    catalog = catalog_for(server, tmp_path)
    schema = Schema(NestedField(1, "n", LongType(), required=False))
    good = catalog.create_table("ns.good", schema=schema)
    good.append(pa.table({"n": [4, 5]}, schema=schema.as_arrow()))
    broken = catalog.create_table("ns.broken", schema=schema)
    broken.append(pa.table({"n": [6]}, schema=schema.as_arrow()))

    s3 = server.s3_client()
    s3.put_object(Bucket="lake", Key="not-iceberg/readme.txt", Body=b"nothing here")
    refused = cli.run("table", "share", "create", "local/bad", "s",
                      "x:iceberg:lake:not-iceberg/", check=False)
    assert refused.returncode == 1 and "not an Iceberg table" in refused.stderr, refused

    profile = share(cli, tmp_path, "mixed", [
        "d:delta:lake:delta/",
        f"good:iceberg:lake:{table_root(good)}",
        f"broken:iceberg:lake:{table_root(broken)}",
    ])
    import delta_sharing

    client = delta_sharing.SharingClient(profile)
    assert sorted(t.name for t in client.list_all_tables()) == ["broken", "d", "good"]
    assert sorted(load(profile, "mixed.s.d")["n"]) == [1, 2, 3]
    assert sorted(load(profile, "mixed.s.good")["n"]) == [4, 5]

    endpoint, headers = bearer(profile)
    broken_url = f"{endpoint}/shares/mixed/schemas/s/tables/broken/query"
    root = table_root(broken.refresh())
    listed = s3.list_objects_v2(Bucket="lake", Prefix=f"{root}metadata/")["Contents"]
    metadata_keys = sorted(o["Key"] for o in listed if o["Key"].endswith(".metadata.json"))
    manifest_lists = [o["Key"] for o in listed if o["Key"].split("/")[-1].startswith("snap-")]
    manifests = [o["Key"] for o in listed
                 if o["Key"].endswith(".avro") and o["Key"] not in manifest_lists]

    def assert_broken(what: str):
        response = requests.post(broken_url, headers=headers, json={}, timeout=30)
        assert response.status_code == 500, (what, response.text)
        body = response.json()
        assert body["errorCode"] == "INTERNAL_ERROR" and "broken" in body["message"], (what, body)
        assert sorted(load(profile, "mixed.s.good")["n"]) == [4, 5], what
        assert sorted(load(profile, "mixed.s.d")["n"]) == [1, 2, 3], what

    # A truncated manifest.
    manifest = s3.get_object(Bucket="lake", Key=manifests[0])["Body"].read()
    s3.put_object(Bucket="lake", Key=manifests[0], Body=manifest[: len(manifest) // 2])
    assert_broken("truncated avro")
    # A missing manifest.
    s3.delete_object(Bucket="lake", Key=manifests[0])
    assert_broken("missing manifest")
    # The current metadata file is not JSON.
    s3.put_object(Bucket="lake", Key=metadata_keys[-1], Body=b"{not json")
    assert_broken("wrong JSON")
