"""Issue 4: reading shared Delta tables with the real `delta-sharing` client (both response
formats), compared with the same tables read directly; the wire rules the clients depend
on; presigned URL security."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
import time
from pathlib import Path

import pytest
import requests

from test_sharing_catalog import SHARING, Cli

GOLDEN = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "delta-golden"


# ----- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def node(lakeshare_server, tmp_path):
    server = lakeshare_server(drives=4, parity=2)
    cli = Cli(tmp_path / "home")
    cli.home.mkdir()
    cli.run("alias", "set", "local", server.endpoint, server.access_key, server.secret_key)
    server.s3_client().create_bucket(Bucket="lake")
    return server, cli


def share_tables(cli, tmp_path, share: str, tables: dict[str, str]) -> str:
    """Shares `{name: location}` of bucket `lake` in schema `s`; returns a profile path."""
    specs = [f"{name}:delta:lake:{location}" for name, location in tables.items()]
    cli.run("table", "share", "create", f"local/{share}", "s", *specs)
    token = cli.json("table", "share", "token", "create", f"local/{share}")
    profile = tmp_path / f"{share}.share"
    profile.write_text(json.dumps(token["profile"]))
    return str(profile)


def canonical_cell(value):
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        import pandas as pd

        if value is pd.NaT or (not isinstance(value, (list, dict, bytes, str)) and pd.isna(value)):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, (datetime.date, decimal.Decimal)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**53 else round(value, 9)
    if isinstance(value, (list, tuple)):
        return json.dumps([canonical_cell(v) for v in value], default=str)
    if isinstance(value, dict):
        return json.dumps({str(k): canonical_cell(v) for k, v in value.items()}, default=str)
    if hasattr(value, "isoformat"):
        return canonical_cell(value.to_pydatetime() if hasattr(value, "to_pydatetime") else value)
    return value


def canonical_rows(frame) -> list[tuple]:
    columns = sorted(frame.columns)
    rows = [
        tuple(canonical_cell(row[column]) for column in columns)
        for _, row in frame[columns].iterrows()
    ]
    return sorted(rows, key=lambda row: json.dumps(row, default=str))


def assert_same_rows(shared, direct, context: str) -> None:
    assert sorted(shared.columns) == sorted(direct.columns), context
    assert len(shared) == len(direct), context
    assert canonical_rows(shared) == canonical_rows(direct), context


def direct_read(uri: str, storage_options: dict | None = None, version=None):
    """The table read without the node's sharing path (QueryBuilder: correct on column mapping)."""
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(uri, storage_options=storage_options, version=version)
    import pyarrow as pa

    import pandas as pd

    result = pa.table(QueryBuilder().register("t", table).execute("select * from t").read_all())
    return pd.DataFrame(result.to_pylist(), columns=result.column_names)


def load(profile: str, table: str, **options):
    import delta_sharing

    return delta_sharing.load_as_pandas(f"{profile}#{table}", **options)


def bearer(profile: str) -> tuple[str, dict]:
    data = json.loads(Path(profile).read_text())
    return data["endpoint"], {"Authorization": f"Bearer {data['bearerToken']}"}


# ----- the product brief, whole ----------------------------------------------------------------


def test_quickstart_whole(lakeshare_server, tmp_path):
    """The product brief's quickstart, verbatim apart from the CLI name (and the port)."""
    import delta_sharing
    import pandas as pd
    from deltalake import write_deltalake
    from minio import Minio

    server = lakeshare_server(drives=1, root_user=None, root_password=None)
    endpoint = server.host_port
    access_key, secret_key = "minioadmin", "minioadmin"
    client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False)
    if not client.bucket_exists("analytics"):
        client.make_bucket("analytics")
    data = {
        "id": [1, 2, 3, 4, 5],
        "name": ["Alice", "Bob", "Carol", "David", "Eve"],
        "department": ["Engineering", "Sales", "Engineering", "Marketing", "Sales"],
        "salary": [95000, 65000, 110000, 72000, 68000],
    }
    write_deltalake(
        "s3://analytics/employees/",
        pd.DataFrame(data),
        mode="overwrite",
        storage_options={
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_ENDPOINT_URL": f"http://{endpoint}",
            "AWS_ALLOW_HTTP": "true",
        },
    )
    cli = Cli(tmp_path / "home")
    cli.home.mkdir()
    cli.run("alias", "set", "myaistor", server.endpoint, access_key, secret_key)
    cli.run("table", "share", "create", "myaistor/analytics-share", "HR",
            "employees:delta:analytics:employees/",
            "--description", "Analytics for current employees")
    created = cli.json("table", "share", "token", "create", "myaistor/analytics-share",
                       "--expires", "90d",
                       "--description", "Access to analytics share for HR-associated tables")
    profile = tmp_path / "profile.share"
    profile.write_text(json.dumps(created["profile"]))

    sharing = delta_sharing.SharingClient(str(profile))
    assert [share.name for share in sharing.list_shares()] == ["analytics-share"]
    assert [f"{t.share}.{t.schema}.{t.name}" for t in sharing.list_all_tables()] == [
        "analytics-share.HR.employees"
    ]
    df = delta_sharing.load_as_pandas(f"{profile}#analytics-share.HR.employees")
    expected = pd.DataFrame(data)
    assert_same_rows(df, expected, "load_as_pandas")
    eng_df = df[df["department"] == "Engineering"]
    assert sorted(eng_df["name"]) == ["Alice", "Carol"]


# ----- generated tables ------------------------------------------------------------------------


def write_suite(server) -> dict[str, dict]:
    """Writes the generated tables; returns {name: {"location", "versions"}}."""
    import pandas as pd
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    options = server.storage_options()
    uri = lambda location: f"s3://lake/{location}"  # noqa: E731
    suite = {}

    awkward = pd.DataFrame({
        "id": list(range(8)),
        "region": ["a b", "a/b", "x=y", "p%q", "ünï", None, "plain", "a b"],
        "day": pd.to_datetime(["2024-01-01"] * 4 + ["2024-02-29"] * 4).date,
        "bucket": [1, 2, 1, 2, 3, 3, 1, 2],
    })
    write_deltalake(uri("awkward/"), awkward, partition_by=["region", "bucket"],
                    storage_options=options)
    suite["awkward"] = {"location": "awkward/"}

    types = pa.table({
        "i8": pa.array([1, -2, None], pa.int8()),
        "i16": pa.array([300, None, -300], pa.int16()),
        "i32": pa.array([None, 70000, -1], pa.int32()),
        "i64": pa.array([2**40, -(2**40), 0], pa.int64()),
        "f32": pa.array([1.5, None, -0.25], pa.float32()),
        "f64": pa.array([math.pi, -1e300, None], pa.float64()),
        "flag": pa.array([True, False, None]),
        "text": pa.array(["a", "ü", None]),
        "blob": pa.array([b"\x00\x01", None, b"x"]),
        "day": pa.array([datetime.date(2024, 1, 1), None, datetime.date(1970, 1, 1)]),
        "at": pa.array([datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.timezone.utc), None,
                        datetime.datetime(1999, 12, 31, tzinfo=datetime.timezone.utc)],
                       pa.timestamp("us", tz="UTC")),
        "local": pa.array([datetime.datetime(2024, 1, 1, 12), datetime.datetime(2000, 1, 1), None],
                          pa.timestamp("us")),
        "price": pa.array([decimal.Decimal("1.23"), None, decimal.Decimal("-9.99")],
                          pa.decimal128(10, 2)),
        "point": pa.array([{"x": 1, "y": "a"}, None, {"x": 3, "y": None}]),
        "tags": pa.array([["a", "b"], [], None]),
    })
    write_deltalake(uri("types/"), types, storage_options=options)
    suite["types"] = {"location": "types/"}

    for round_index in range(12):
        frame = pd.DataFrame({"round": [round_index] * 3, "value": [round_index * 10 + k for k in range(3)]})
        write_deltalake(uri("history/"), frame, mode="append", storage_options=options,
                        configuration={"delta.checkpointInterval": "5"})
    suite["history"] = {"location": "history/"}

    write_deltalake(uri("evolve/"), pd.DataFrame({"a": [1, 2]}), storage_options=options)
    write_deltalake(uri("evolve/"), pd.DataFrame({"a": [3], "b": ["new"]}), mode="append",
                    schema_mode="merge", storage_options=options)
    suite["evolve"] = {"location": "evolve/"}

    for round_index in range(6):
        write_deltalake(uri("compact/"), pd.DataFrame({"k": [round_index], "v": [str(round_index)]}),
                        mode="append", storage_options=options)
    table = DeltaTable(uri("compact/"), storage_options=options)
    table.optimize.compact()
    table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    suite["compact"] = {"location": "compact/"}

    write_deltalake(uri("restored/"), pd.DataFrame({"n": [1, 2, 3]}), storage_options=options)
    write_deltalake(uri("restored/"), pd.DataFrame({"n": [9]}), mode="overwrite",
                    storage_options=options)
    DeltaTable(uri("restored/"), storage_options=options).restore(0)
    suite["restored"] = {"location": "restored/"}
    return suite


def test_generated_tables_read_equal(node, tmp_path):
    from deltalake import DeltaTable

    server, cli = node
    suite = write_suite(server)
    profile = share_tables(cli, tmp_path, "gen", {name: t["location"] for name, t in suite.items()})
    options = server.storage_options()
    for name, entry in suite.items():
        uri = f"s3://lake/{entry['location']}"
        table = DeltaTable(uri, storage_options=options)
        latest = table.version()
        direct = direct_read(uri, options)
        shared = load(profile, f"gen.s.{name}")
        assert_same_rows(shared, direct, f"{name} latest, auto format")
        delta = load(profile, f"gen.s.{name}", use_delta_format=True)
        assert_same_rows(delta, direct, f"{name} latest, delta format")
        if name != "types":  # timestamp_ntz has no parquet form: auto chose delta above
            parquet = load(profile, f"gen.s.{name}", use_delta_format=False)
            assert_same_rows(parquet, direct, f"{name} latest, parquet format")
        if latest > 0:
            past = max(0, latest - 2)
            assert_same_rows(load(profile, f"gen.s.{name}", version=past),
                             direct_read(uri, options, version=past), f"{name} version {past}")
            # Without in-commit timestamps a version's time is its commit file's modification
            # time, as the node stored it.
            listing = server.s3_client().list_objects_v2(
                Bucket="lake", Prefix=f"{entry['location']}_delta_log/{past:020d}.json")
            stamp = listing["Contents"][0]["LastModified"].astimezone(datetime.timezone.utc)
            iso = stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            at_time = load(profile, f"gen.s.{name}", timestamp=iso)
            assert_same_rows(at_time, direct_read(uri, options, version=past), f"{name} at {iso}")


# ----- golden tables (read in place, uploaded by the test) -------------------------------------

GOLDEN_TABLES = {
    "g__dv-partitioned-with-checkpoint": 35,
    "g__dv-with-columnmapping": 35,
    "g__table-with-columnmapping-mode-id": 6,
    "g__table-with-columnmapping-mode-name": 6,
    "g__multi-part-checkpoint": 31,
    "g__v2-checkpoint-json": 10,
    "g__v2-checkpoint-parquet": 10,
    "k__v2-json-sidecars-struct-stats-only": 5,
    "k__v2-parquet-sidecars-struct-stats-only": 5,
    "kt__v2-checkpoints-parquet-with-sidecars": 1233,
    "k__with-short-dv": 7,
    "kd__basic-dv-with-checkpoint": 454,
    "rs__table-with-dv-small": 8,
    "k__data-reader-timestamp_ntz": 9,
    "g__data-reader-partition-values": 3,
    "kt__compacted-log-files-table": 5,
    "rs__partition-type-primitives": 16,
    "g__type-widening": 2,
}


def upload_folder(s3, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(".crc"):
            s3.upload_file(str(path), "lake", prefix + path.relative_to(folder).as_posix())


@pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden tables not found at {GOLDEN}")
def test_golden_tables_read_equal(node, tmp_path):
    server, cli = node
    s3 = server.s3_client()
    names = {}
    for folder, rows in GOLDEN_TABLES.items():
        name = folder.replace("-", "_").replace("__", "_")
        upload_folder(s3, GOLDEN / folder, f"golden/{folder}/")
        names[folder] = name
    profile = share_tables(
        cli, tmp_path, "golden", {names[f]: f"golden/{f}/" for f in GOLDEN_TABLES})
    for folder, rows in GOLDEN_TABLES.items():
        shared = load(profile, f"golden.s.{names[folder]}", use_delta_format=True)
        assert len(shared) == rows, folder
        if folder != "g__type-widening":  # deltalake cannot read the preview feature
            direct = direct_read(str(GOLDEN / folder))
            assert_same_rows(shared, direct, folder)
        auto = load(profile, f"golden.s.{names[folder]}")
        assert len(auto) == rows, f"{folder} auto"


# ----- the wire ----------------------------------------------------------------------------


def test_wire_rules(node, tmp_path):
    import pandas as pd
    from deltalake import write_deltalake

    server, cli = node
    options = server.storage_options()
    for day in ["2024-01-01", "2024-01-02", "2024-01-03"]:
        frame = pd.DataFrame({"day": [day] * 2, "age": [10, 20] if day != "2024-01-03" else [30, 40]})
        write_deltalake("s3://lake/people/", frame, mode="append", partition_by=["day"],
                        storage_options=options)
    profile = share_tables(cli, tmp_path, "wire", {"people": "people/"})
    endpoint, headers = bearer(profile)
    table = f"{endpoint}/shares/wire/schemas/s/tables/people"

    version = requests.get(f"{table}/version", headers=headers, timeout=30)
    assert version.status_code == 200 and version.headers["delta-table-version"] == "2"
    assert version.content == b""
    head = requests.head(table, headers=headers, timeout=30)
    assert head.headers["delta-table-version"] == "2"

    metadata = requests.get(f"{table}/metadata", headers=headers, timeout=30)
    assert metadata.headers["content-type"] == "application/x-ndjson; charset=utf-8"
    assert metadata.headers["delta-sharing-capabilities"] == "responseformat=parquet"
    lines = metadata.text.split("\n")
    assert lines[-1] == "" and len(lines) == 3
    assert json.loads(lines[0]) == {"protocol": {"minReaderVersion": 1}}
    assert json.loads(lines[1])["metaData"]["partitionColumns"] == ["day"]

    query = requests.post(f"{table}/query", headers=headers, json={}, timeout=30)
    assert query.status_code == 200 and query.headers["delta-table-version"] == "2"
    lines = [json.loads(line) for line in query.text.splitlines()]
    assert lines[0] == json.loads(metadata.text.split("\n")[0])
    assert lines[1] == json.loads(metadata.text.split("\n")[1])
    files = [line["file"] for line in lines[2:]]
    assert len(files) == 3 and all(len(f["id"]) == 32 for f in files)
    for file in files:
        assert "X-Amz-Signature=" in file["url"] and file["expirationTimestamp"] > time.time() * 1000
        body = requests.get(file["url"], timeout=30)
        assert body.status_code == 200 and len(body.content) == file["size"]
        ranged = requests.get(file["url"], headers={"Range": "bytes=0-3"}, timeout=30)
        assert ranged.status_code == 206 and ranged.content == b"PAR1"
        assert requests.head(file["url"], timeout=30).headers["content-length"] == str(file["size"])
    again = requests.post(f"{table}/query", headers=headers, json={}, timeout=30)
    assert sorted(f["file"]["id"] for f in map(json.loads, again.text.splitlines()[2:])) == sorted(
        f["id"] for f in files)

    # Delta format, file id hashes.
    delta_headers = {**headers, "delta-sharing-capabilities": "responseformat=delta",
                     "fileidhash": "DELTA"}
    delta = requests.post(f"{table}/query", headers=delta_headers, json={}, timeout=30)
    assert delta.headers["delta-sharing-capabilities"] == "responseformat=delta"
    assert delta.headers["fileidhash"] == "delta"
    delta_lines = [json.loads(line) for line in delta.text.splitlines()]
    assert "deltaProtocol" in delta_lines[0]["protocol"]
    assert delta_lines[1]["metaData"]["deltaMetadata"]["format"]["options"] == {}
    add = delta_lines[2]["file"]["deltaSingleAction"]["add"]
    assert add["path"].startswith("http") and len(delta_lines[2]["file"]["id"]) == 64

    # Predicate and limit hints: partition pruning is exact, stats pruning safe.
    day_is = {"op": "equal", "children": [{"op": "column", "name": "day", "valueType": "date"},
                                          {"op": "literal", "value": "2024-01-02", "valueType": "date"}]}
    pruned = requests.post(f"{table}/query", headers=headers,
                           json={"jsonPredicateHints": json.dumps(day_is)}, timeout=30)
    pruned_files = [json.loads(line)["file"] for line in pruned.text.splitlines()[2:]]
    assert [f["partitionValues"]["day"] for f in pruned_files] == ["2024-01-02"]
    old = {"op": "greaterThan", "children": [{"op": "column", "name": "age", "valueType": "int"},
                                             {"op": "literal", "value": "25", "valueType": "int"}]}
    by_stats = requests.post(f"{table}/query", headers=headers,
                             json={"jsonPredicateHints": json.dumps(old)}, timeout=30)
    assert [json.loads(l)["file"]["partitionValues"]["day"]
            for l in by_stats.text.splitlines()[2:]] == ["2024-01-03"]
    broken = requests.post(f"{table}/query", headers=headers,
                           json={"jsonPredicateHints": "{not json"}, timeout=30)
    assert len(broken.text.splitlines()) == 5
    limited = requests.post(f"{table}/query", headers=headers, json={"limitHint": 1}, timeout=30)
    assert len(limited.text.splitlines()) == 3
    df = load(profile, "wire.s.people", jsonPredicateHints=json.dumps(day_is))
    assert sorted(df["age"]) == [10, 20, 10, 20, 30, 40] or set(df["day"].astype(str)) >= {"2024-01-02"}

    # Errors with the reference wording.
    def error(response, status, code, text):
        assert response.status_code == status, response.text
        body = response.json()
        assert body["errorCode"] == code and text in body["message"], body

    error(requests.post(f"{table}/query", headers=headers, data=b"", timeout=30),
          400, "MALFORMED_REQUEST", "No content to map")
    error(requests.post(f"{table}/query", headers=headers, json={"version": 1, "timestamp": "x"},
                        timeout=30), 400, "INVALID_PARAMETER_VALUE", "Please only provide one of")
    error(requests.post(f"{table}/query", headers=headers, json={"version": -1}, timeout=30),
          400, "INVALID_PARAMETER_VALUE", "cannot be negative")
    error(requests.post(f"{table}/query", headers=headers, json={"version": "x3"}, timeout=30),
          400, "INVALID_PARAMETER_VALUE", "Not a numeric value")
    error(requests.post(f"{table}/query", headers=headers, json={"predicateHints": "x"},
                        timeout=30), 400, "MALFORMED_REQUEST", "predicateHints")
    error(requests.get(f"{table}/metadata?version=1&timestamp=2024-01-01T00:00:00Z",
                       headers=headers, timeout=30), 400, "INVALID_PARAMETER_VALUE",
          "Please only provide one of")
    error(requests.post(f"{table}/query", headers={**headers, "fileidhash": "sha1"}, json={},
                        timeout=30), 400, "INVALID_PARAMETER_VALUE", "Unsupported fileidhash")
    error(requests.post(f"{endpoint}/shares/wire/schemas/s/tables/nope/query", headers=headers,
                        json={}, timeout=30), 404, "RESOURCE_DOES_NOT_EXIST", "does not exist")
    error(requests.get(f"{table}/version?startingTimestamp=yesterday", headers=headers,
                       timeout=30), 400, "INVALID_PARAMETER_VALUE", "Invalid startingTimestamp")


def test_features_the_client_did_not_announce_are_refused(node, tmp_path):
    if not GOLDEN.is_dir():
        pytest.skip(f"golden tables not found at {GOLDEN}")
    server, cli = node
    upload_folder(server.s3_client(), GOLDEN / "rs__table-with-dv-small", "dv/")
    profile = share_tables(cli, tmp_path, "dv", {"dv": "dv/"})
    endpoint, headers = bearer(profile)
    table = f"{endpoint}/shares/dv/schemas/s/tables/dv"
    for capabilities in (None, "responseformat=parquet", "responseformat=delta"):
        request_headers = dict(headers)
        if capabilities:
            request_headers["delta-sharing-capabilities"] = capabilities
        response = requests.post(f"{table}/query", headers=request_headers, json={}, timeout=30)
        assert response.status_code == 400, capabilities
        assert "Unsupported Delta Table Properties" in response.json()["message"]
    both = {**headers, "delta-sharing-capabilities":
            "responseformat=parquet,delta;readerfeatures=deletionVectors"}
    answer = requests.post(f"{table}/query", headers=both, json={}, timeout=30)
    assert answer.headers["delta-sharing-capabilities"] == "responseformat=delta"
    dvs = [json.loads(line)["file"]["deltaSingleAction"]["add"].get("deletionVector")
           for line in answer.text.splitlines()[2:]]
    stored = [dv for dv in dvs if dv and dv["storageType"] != "i"]
    assert stored and all(dv["storageType"] == "p" and "X-Amz-Signature" in dv["pathOrInlineDv"]
                          for dv in stored)
    assert requests.get(stored[0]["pathOrInlineDv"], timeout=30).status_code == 200


def share_without_history(server, cli):
    """Shares a one-row Delta table as `nohist.s.t` with `historyShared` off; returns the
    table's URL and the bearer headers of a new token."""
    import pandas as pd
    from deltalake import write_deltalake

    write_deltalake("s3://lake/t/", pd.DataFrame({"a": [1]}), storage_options=server.storage_options())
    body = {"name": "nohist", "schemas": [{"name": "s", "tables": [
        {"name": "t", "sourceType": "delta", "bucket": "lake", "location": "t/",
         "historyShared": False}]}]}
    assert server.signed_request("POST", "/minio/admin/v4/delta-sharing/shares",
                                 body=json.dumps(body).encode()).status == 200
    token = cli.json("table", "share", "token", "create", "local/nohist")
    endpoint, headers = token["profile"]["endpoint"], {"Authorization": f"Bearer {token['token']}"}
    return f"{endpoint}/shares/nohist/schemas/s/tables/t", headers


def test_history_sharing_off_refuses_time_travel(node):
    table, headers = share_without_history(*node)
    for response in (
        requests.post(f"{table}/query", headers=headers, json={"version": 0}, timeout=30),
        requests.get(f"{table}/metadata?version=0", headers=headers, timeout=30),
        requests.get(f"{table}/version?startingTimestamp=2024-01-01T00:00:00Z", headers=headers,
                     timeout=30),
    ):
        assert response.status_code == 400
        assert "history sharing is not enabled on table: nohist.s.t" in response.json()["message"]
    assert requests.post(f"{table}/query", headers=headers, json={}, timeout=30).status_code == 200


def test_latest_is_never_stale(node, tmp_path):
    import pandas as pd
    from deltalake import write_deltalake

    server, cli = node
    options = server.storage_options()
    write_deltalake("s3://lake/grow/", pd.DataFrame({"n": [0]}), storage_options=options)
    profile = share_tables(cli, tmp_path, "grow", {"grow": "grow/"})
    for round_index in range(1, 4):
        assert len(load(profile, "grow.s.grow")) == round_index
        write_deltalake("s3://lake/grow/", pd.DataFrame({"n": [round_index]}), mode="append",
                        storage_options=options)
    endpoint, headers = bearer(profile)
    version = requests.get(f"{endpoint}/shares/grow/schemas/s/tables/grow/version",
                           headers=headers, timeout=30)
    assert version.headers["delta-table-version"] == "3"


# ----- security of presigned URLs --------------------------------------------------------------


def test_presigned_urls_name_one_object_for_a_while(lakeshare_server, tmp_path):
    import pandas as pd
    from deltalake import write_deltalake

    server = lakeshare_server(drives=1, extra_args=["--presign-expiry", "3s"])
    cli = Cli(tmp_path / "home")
    cli.home.mkdir()
    cli.run("alias", "set", "local", server.endpoint, server.access_key, server.secret_key)
    s3 = server.s3_client()
    s3.create_bucket(Bucket="lake")
    options = server.storage_options()
    write_deltalake("s3://lake/a/", pd.DataFrame({"x": [1]}), storage_options=options)
    write_deltalake("s3://lake/b/", pd.DataFrame({"x": [2]}), storage_options=options)
    s3.put_object(Bucket="lake", Key="secret.txt", Body=b"not shared")
    profile_a = share_tables(cli, tmp_path, "share-a", {"a": "a/"})
    share_tables(cli, tmp_path, "share-b", {"b": "b/"})
    endpoint, headers = bearer(profile_a)
    lines = requests.post(f"{endpoint}/shares/share-a/schemas/s/tables/a/query", headers=headers,
                          json={}, timeout=30).text.splitlines()
    url = json.loads(lines[2])["file"]["url"]
    assert requests.get(url, timeout=30).status_code == 200
    # The same signature on another key: refused.
    other_key = requests.get(url.replace("/lake/a/", "/lake/b/", 1), timeout=30)
    assert other_key.status_code == 403
    bent = url.split("?")[0].rsplit("/", 1)[0] + "/../../secret.txt?" + url.split("?")[1]
    assert requests.get(bent, timeout=30).status_code in (400, 403)
    # The sharing credential cannot list, write or read outside shared tables.
    query = url.split("?")[1]
    assert requests.get(f"{server.endpoint}/lake/secret.txt?{query}", timeout=30).status_code == 403
    assert requests.put(url, data=b"x", timeout=30).status_code == 403
    # A token of share A never reaches share B.
    assert requests.post(f"{endpoint}/shares/share-b/schemas/s/tables/b/query", headers=headers,
                         json={}, timeout=30).status_code == 404
    # Expired: refused.
    time.sleep(4)
    assert requests.get(url, timeout=30).status_code == 403


def test_urls_of_one_signing_window_are_kept_and_work(node, tmp_path):
    """A cached list keeps the URL signatures of the current signing window (a sixtieth of the
    URL lifetime): every query in the window hands out the same URLs, signed at the window's
    start and valid for the whole lifetime from there, whether signed anew (cold, or under a
    predicate) or kept; each one reads its file."""
    import calendar
    from urllib.parse import parse_qs, urlsplit

    import pandas as pd
    from deltalake import write_deltalake

    server, cli = node
    options = server.storage_options()
    for part in range(3):
        write_deltalake("s3://lake/kept/", pd.DataFrame({"n": [part]}), mode="append",
                        storage_options=options)
    profile = share_tables(cli, tmp_path, "kept", {"kept": "kept/"})
    endpoint, headers = bearer(profile)
    url = f"{endpoint}/shares/kept/schemas/s/tables/kept/query"

    def answer(body, capabilities=None):
        asked = {**headers, "delta-sharing-capabilities": capabilities} if capabilities \
            else headers
        response = requests.post(url, headers=asked, json=body, timeout=30)
        assert response.status_code == 200, response.text
        lines = [json.loads(line) for line in response.text.splitlines()[2:]]
        return {line["file"]["id"]: (line["file"].get("url") or
                                     line["file"]["deltaSingleAction"]["add"]["path"],
                                     line["file"]["expirationTimestamp"]) for line in lines}

    hint = json.dumps({"op": "greaterThanOrEqual", "children": [
        {"op": "column", "name": "n", "valueType": "long"},
        {"op": "literal", "value": "0", "valueType": "long"}]})
    for attempt in range(3):
        cold, warm = answer({}), answer({})
        hinted = answer({"jsonPredicateHints": hint})
        delta = answer({}, "responseformat=delta")
        dates = {parse_qs(urlsplit(u).query)["X-Amz-Date"][0]
                 for u, _ in [*cold.values(), *warm.values(), *hinted.values()]}
        if len(dates) == 1:
            break  # otherwise a window ended between the queries: try again
    assert len(dates) == 1, dates
    assert len(cold) == 3 and cold == warm == hinted
    assert {u for u, _ in delta.values()} == {u for u, _ in cold.values()}
    signed_at = calendar.timegm(time.strptime(dates.pop(), "%Y%m%dT%H%M%SZ"))
    assert signed_at % 60 == 0 and signed_at <= time.time()
    for file_url, expiration_ms in cold.values():
        assert expiration_ms == (signed_at + 3600) * 1000
        assert parse_qs(urlsplit(file_url).query)["X-Amz-Expires"] == ["3600"]
        got = requests.get(file_url, timeout=30)
        assert got.status_code == 200 and got.content[:4] == b"PAR1"


def test_refresh_tokens_and_end_of_stream(node, tmp_path):
    import pandas as pd
    from deltalake import write_deltalake

    server, cli = node
    options = server.storage_options()
    for table in ("r1", "r2"):
        write_deltalake(f"s3://lake/{table}/", pd.DataFrame({"n": [1, 2]}), storage_options=options)
    profile = share_tables(cli, tmp_path, "refresh", {"r1": "r1/", "r2": "r2/"})
    endpoint, headers = bearer(profile)
    table = f"{endpoint}/shares/refresh/schemas/s/tables/r1/query"

    first = requests.post(table, headers=headers, json={"includeRefreshToken": True}, timeout=30)
    lines = [json.loads(line) for line in first.text.splitlines()]
    end = lines[-1]["endStreamAction"]
    files = [line["file"] for line in lines[2:-1]]
    assert end["refreshToken"] and end["minUrlExpirationTimestamp"] == min(
        f["expirationTimestamp"] for f in files)
    assert "includeendstreamaction" not in first.headers["delta-sharing-capabilities"]

    write_deltalake("s3://lake/r1/", pd.DataFrame({"n": [3]}), mode="append",
                    storage_options=options)
    refreshed = requests.post(table, headers=headers, timeout=30, json={
        "refreshToken": end["refreshToken"], "includeRefreshToken": True})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.headers["delta-table-version"] == first.headers["delta-table-version"]
    again = [json.loads(line) for line in refreshed.text.splitlines()]
    assert sorted(f["file"]["id"] for f in again[2:-1]) == sorted(f["id"] for f in files)
    assert again[-1]["endStreamAction"]["refreshToken"]
    latest = requests.post(table, headers=headers, json={}, timeout=30)
    assert latest.headers["delta-table-version"] == "1" and len(latest.text.splitlines()) == 4

    def refused(token, text):
        response = requests.post(table, headers=headers, json={"refreshToken": token}, timeout=30)
        assert response.status_code == 400 and text in response.json()["message"], response.text

    refused(end["refreshToken"][:-3], "Error decoding refresh token")
    other = requests.post(f"{endpoint}/shares/refresh/schemas/s/tables/r2/query", headers=headers,
                          json={"includeRefreshToken": True}, timeout=30)
    other_token = json.loads(other.text.splitlines()[-1])["endStreamAction"]["refreshToken"]
    refused(other_token, "does not match the table being queried")
    versioned = requests.post(table, headers=headers,
                              json={"version": 0, "includeRefreshToken": True}, timeout=30)
    assert versioned.status_code == 400
    assert "cannot be used when querying a specific version" in versioned.json()["message"]

    asked = {**headers, "delta-sharing-capabilities": "responseformat=parquet;includeendstreamaction=true"}
    ended = requests.post(table, headers=asked, json={}, timeout=30)
    assert ended.headers["delta-sharing-capabilities"] == (
        "responseformat=parquet;includeendstreamaction=true")
    last = json.loads(ended.text.splitlines()[-1])["endStreamAction"]
    assert "refreshToken" not in last and last["minUrlExpirationTimestamp"] > 0


def test_tables_not_yet_served_are_refused_clearly(node, tmp_path):
    server, cli = node
    cli.run("table", "share", "create", "local/mixed", "s", "uni:uniform:wh:ns:orders")
    token = cli.json("table", "share", "token", "create", "local/mixed")
    endpoint, headers = token["profile"]["endpoint"], {"Authorization": f"Bearer {token['token']}"}
    listed = requests.get(f"{endpoint}/shares/mixed/all-tables", headers=headers, timeout=30)
    assert [item["name"] for item in listed.json()["items"]] == ["uni"]
    response = requests.post(f"{endpoint}/shares/mixed/schemas/s/tables/uni/query",
                             headers=headers, json={}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == "UNSUPPORTED_OPERATION"
    assert "UniForm" in response.json()["message"]


def test_errors_after_the_first_line_end_the_stream_in_words(node, tmp_path):
    """A file that cannot be shared (it lies in another bucket) is found only while lines
    stream: a client that announced `includeendstreamaction` gets an endStreamAction with the
    error and its status; the next query (the list now cached) gets a plain 400."""
    server, cli = node
    s3 = server.s3_client()
    schema = {"type": "struct", "fields": [
        {"name": "n", "type": "long", "nullable": True, "metadata": {}}]}
    actions = [
        {"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}},
        {"metaData": {"id": "0f1e2d3c-aaaa-bbbb-cccc-000000000001",
                      "format": {"provider": "parquet", "options": {}},
                      "schemaString": json.dumps(schema), "partitionColumns": [],
                      "configuration": {}, "createdTime": 1700000000000}},
        {"add": {"path": "inside.parquet", "partitionValues": {}, "size": 10,
                 "modificationTime": 1700000000000, "dataChange": True}},
        {"add": {"path": "s3://elsewhere/outside.parquet", "partitionValues": {}, "size": 10,
                 "modificationTime": 1700000000000, "dataChange": True}},
    ]
    s3.put_object(Bucket="lake", Key="leaky/_delta_log/00000000000000000000.json",
                  Body="\n".join(json.dumps(action) for action in actions).encode())
    profile = share_tables(cli, tmp_path, "leaky", {"leaky": "leaky/"})
    endpoint, headers = bearer(profile)
    url = f"{endpoint}/shares/leaky/schemas/s/tables/leaky/query"
    asked = {**headers, "delta-sharing-capabilities": "includeendstreamaction=true"}
    first = requests.post(url, headers=asked, json={}, timeout=30)
    assert first.status_code == 200
    last = json.loads(first.text.splitlines()[-1])["endStreamAction"]
    assert last["httpStatusErrorCode"] == 400 and "outside" in last["errorMessage"], last
    again = requests.post(url, headers=headers, json={}, timeout=30)
    assert again.status_code == 400 and "outside" in again.json()["message"], again.text
