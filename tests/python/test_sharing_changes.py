"""Issue 4: the change data feed (`GET .../changes`) and streaming queries (`POST .../query`
with `startingVersion`) of shared Delta tables, read by the real `delta-sharing` client and
compared with the change data read directly with deltalake over S3."""

from __future__ import annotations

import json
import time

import pytest
import requests

SHARING = "/_delta-sharing/v1"
SHARE = "cdfshare"
SCHEMA = "sc"
DATA_COLUMNS = ["id", "value", "region"]
CDF_COLUMNS = DATA_COLUMNS + ["_change_type", "_commit_version"]


def table_uri(name: str) -> str:
    return f"s3://lake/{name}/"


def write_tables(server) -> dict:
    """Writes the tables; returns the commit time (s) after which the update was written."""
    import pandas as pd
    from deltalake import DeltaTable, write_deltalake

    options = server.storage_options()
    server.s3_client().create_bucket(Bucket="lake")
    cdf = {"delta.enableChangeDataFeed": "true"}

    def frame(ids, region="a"):
        return pd.DataFrame({
            "id": pd.array(ids, dtype="int64"),
            "value": [f"v{i}" for i in ids],
            "region": [region if isinstance(region, str) else region(i) for i in ids],
        })

    uri = table_uri("cdf")
    write_deltalake(uri, frame([1, 2, 3, 4, 5]), storage_options=options, configuration=cdf)
    write_deltalake(uri, frame([6, 7, 8]), mode="append", storage_options=options)
    time.sleep(1.1)
    marks = {"before_update": time.time()}
    time.sleep(1.1)
    table = DeltaTable(uri, storage_options=options)
    table.update(predicate="id = 2", updates={"value": "'updated'"})
    table = DeltaTable(uri, storage_options=options)
    table.delete("id = 3")
    time.sleep(1.1)
    marks["after_delete"] = time.time()
    time.sleep(1.1)
    table = DeltaTable(uri, storage_options=options)
    (
        table.merge(frame([4, 9], "b"), predicate="t.id = s.id",
                    source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )

    parted = table_uri("parted")
    write_deltalake(parted, frame([1, 2, 3, 4], lambda i: "a" if i % 2 else "b"),
                    partition_by=["region"], storage_options=options, configuration=cdf)
    write_deltalake(parted, frame([5, 6], "c"), partition_by=["region"], mode="append",
                    storage_options=options)
    DeltaTable(parted, storage_options=options).delete("region = 'a'")

    plain = table_uri("plain")
    write_deltalake(plain, frame([1, 2]), storage_options=options)
    write_deltalake(plain, frame([3]), mode="append", storage_options=options)
    write_deltalake(plain, frame([4, 5]), mode="append", storage_options=options)
    return marks


def share(server, name: str, tables: list, history: bool = True) -> str:
    body = {
        "name": name,
        "schemas": [{
            "name": SCHEMA,
            "tables": [
                {"name": table, "sourceType": "delta", "bucket": "lake",
                 "location": f"{table}/", "historyShared": history}
                for table in tables
            ],
        }],
    }
    created = server.signed_request(
        "POST", "/minio/admin/v4/delta-sharing/shares", body=json.dumps(body).encode())
    assert created.status == 200, created
    token = server.signed_request(
        "POST", f"/minio/admin/v4/delta-sharing/shares/{name}/tokens", body=b"{}")
    assert token.status == 200, token
    return json.loads(token.body)["token"]


@pytest.fixture
def node(lakeshare_server, tmp_path):
    server = lakeshare_server(drives=1)
    marks = write_tables(server)
    token = share(server, SHARE, ["cdf", "parted", "plain"])
    profile = tmp_path / "profile.share"
    profile.write_text(json.dumps({
        "shareCredentialsVersion": 1,
        "endpoint": f"{server.endpoint}{SHARING}",
        "bearerToken": token,
    }))
    return server, token, str(profile), marks


def table_path(table: str) -> str:
    return f"/shares/{SHARE}/schemas/{SCHEMA}/tables/{table}"


def direct_cdf(server, table: str, **kwargs):
    import pyarrow as pa
    from deltalake import DeltaTable

    reader = DeltaTable(table_uri(table), storage_options=server.storage_options()).load_cdf(
        **kwargs)
    return normalise(pa.table(reader).to_pandas())


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def normalise(frame):
    rows = frame[CDF_COLUMNS].copy()
    rows["id"] = rows["id"].astype("int64")
    rows["_commit_version"] = rows["_commit_version"].astype("int64")
    rows["region"] = rows["region"].astype(str)
    return sorted(rows.itertuples(index=False, name=None))


def shared_cdf(profile: str, table: str, **kwargs):
    import delta_sharing

    frame = delta_sharing.load_table_changes_as_pandas(
        f"{profile}#{SHARE}.{SCHEMA}.{table}", **kwargs)
    return normalise(frame)


def get(server, token: str, path: str, headers=None, **params) -> requests.Response:
    return requests.get(f"{server.endpoint}{SHARING}{path}", params=params, timeout=60,
                        headers={"Authorization": f"Bearer {token}", **(headers or {})})


def post(server, token: str, path: str, body: dict, **headers) -> requests.Response:
    return requests.post(f"{server.endpoint}{SHARING}{path}", json=body, timeout=60,
                         headers={"Authorization": f"Bearer {token}", **headers})


def ndjson(response: requests.Response) -> list:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


@pytest.mark.parametrize("use_delta_format", [False, True])
def test_change_data_feed_equals_the_direct_read(node, use_delta_format):
    server, _, profile, _ = node
    for table, start, end in [("cdf", 0, 4), ("cdf", 1, 3), ("cdf", 2, 2), ("cdf", 4, 4),
                              ("parted", 0, 2), ("parted", 2, 2)]:
        expected = direct_cdf(server, table, starting_version=start, ending_version=end)
        assert expected, (table, start, end)
        got = shared_cdf(profile, table, starting_version=start, ending_version=end,
                         use_delta_format=use_delta_format)
        assert got == expected, (table, start, end)
    # Without an end: up to the latest version.
    assert shared_cdf(profile, "cdf", starting_version=3,
                      use_delta_format=use_delta_format) == direct_cdf(
        server, "cdf", starting_version=3)


def test_change_types_cover_every_operation(node):
    server, _, profile, _ = node
    rows = shared_cdf(profile, "cdf", starting_version=0, ending_version=4)
    kinds = {(row[-1], row[-2]) for row in rows}
    assert {(0, "insert"), (1, "insert"), (2, "update_preimage"), (2, "update_postimage"),
            (3, "delete"), (4, "insert")} <= kinds, kinds
    parted = shared_cdf(profile, "parted", starting_version=2, ending_version=2)
    assert sorted(row[0] for row in parted if row[-2] == "delete") == [1, 3]


def test_whole_partition_delete_is_a_remove_only_commit(node):
    server, token, _, _ = node
    lines = ndjson(get(server, token, table_path("parted") + "/changes",
                       startingVersion=2, endingVersion=2))
    assert lines[2:] and all(set(line) == {"remove"} for line in lines[2:]), lines
    assert all(line["remove"]["version"] == 2 for line in lines[2:])
    # Without includeHistoricalMetadata only file lines follow line 2.
    everything = ndjson(get(server, token, table_path("parted") + "/changes",
                            startingVersion=0))
    assert all(set(line) <= {"add", "cdf", "remove"} for line in everything[2:])


def test_change_data_feed_by_timestamp(node):
    server, _, profile, marks = node
    got = shared_cdf(profile, "cdf", starting_timestamp=iso(marks["before_update"]),
                     ending_timestamp=iso(marks["after_delete"]))
    assert got == direct_cdf(server, "cdf", starting_version=2, ending_version=3)
    assert {row[-1] for row in got} == {2, 3}


def test_changes_lines_carry_versions_and_timestamps(node):
    server, token, _, _ = node
    response = get(server, token, table_path("cdf") + "/changes",
                   startingVersion=1, endingVersion=99, includeHistoricalMetadata="True")
    assert response.headers["delta-table-version"] == "1"
    lines = ndjson(response)
    assert lines[0] == {"protocol": {"minReaderVersion": 1}}
    assert lines[1]["metaData"]["version"] == 1
    assert lines[1]["metaData"]["configuration"] == {"enableChangeDataFeed": "true"}
    files = lines[2:]
    assert files
    versions = set()
    for line in files:
        (kind, file), = line.items()
        assert kind in ("add", "cdf", "remove"), line
        assert {"url", "id", "partitionValues", "size", "version", "timestamp",
                "expirationTimestamp"} <= set(file), line
        assert file["timestamp"] > 1_600_000_000_000
        versions.add(file["version"])
    assert versions == {1, 2, 3, 4}
    assert [line for line in files if "cdf" in line], "update/delete/merge write cdc files"
    # Delta format: file lines wrap the log action.
    delta = ndjson(get(server, token, table_path("cdf") + "/changes",
                       headers={"delta-sharing-capabilities": "responseformat=delta"},
                       startingVersion=0, includeHistoricalMetadata="true"))
    assert "deltaProtocol" in delta[0]["protocol"]
    assert delta[1]["metaData"]["version"] == 0
    for line in delta[2:]:
        if "metaData" in line:
            assert "version" in line["metaData"]
            continue
        file = line["file"]
        (kind, action), = file["deltaSingleAction"].items()
        assert kind in ("add", "remove", "cdc")
        assert action["path"].startswith("http") and "X-Amz-Signature" in action["path"]
        assert {"version", "timestamp", "id", "expirationTimestamp"} <= set(file)


def test_changes_refusals_use_the_reference_wording(node):
    server, token, profile, _ = node
    import delta_sharing

    plain = get(server, token, table_path("plain") + "/changes", startingVersion=0)
    assert plain.status_code == 400
    assert ("Error getting change data for range [0, 2] as change data was not recorded for "
            "version [0]") in plain.text
    with pytest.raises(Exception, match="Error getting change data for range"):
        delta_sharing.load_table_changes_as_pandas(
            f"{profile}#{SHARE}.{SCHEMA}.plain", starting_version=0)

    cases = [
        ({}, "No startingVersion or startingTimestamp provided for CDF read"),
        ({"startingVersion": 1, "startingTimestamp": "2024-01-01T00:00:00Z"},
         "Multiple starting arguments provided for CDF read"),
        ({"startingVersion": "one"}, "startingVersion is not a valid number."),
        ({"startingVersion": 3, "endingVersion": 2},
         "CDF range from start 3 to end 2 was invalid. End cannot be before start."),
        ({"startingVersion": 9},
         "Provided Start version(9) for reading change data is invalid. Start version cannot "
         "be greater than the latest version of the table(4)."),
    ]
    for params, message in cases:
        response = get(server, token, table_path("cdf") + "/changes", **params)
        assert response.status_code == 400, (params, response.text)
        assert message in response.json()["message"], (params, response.text)

    hidden = share(server, "nohistory", ["cdf"], history=False)
    refused = get(server, hidden, f"/shares/nohistory/schemas/{SCHEMA}/tables/cdf/changes",
                  startingVersion=0)
    assert refused.status_code == 400
    assert "cdf is not enabled on table nohistory.sc.cdf" in refused.json()["message"]
    streaming = post(server, hidden, f"/shares/nohistory/schemas/{SCHEMA}/tables/cdf/query",
                     {"startingVersion": 0})
    assert streaming.status_code == 400


def test_streaming_query_returns_each_version(node):
    server, token, _, _ = node
    response = post(server, token, table_path("plain") + "/query", {"startingVersion": 1})
    assert response.headers["delta-table-version"] == "1"
    lines = ndjson(response)
    assert lines[0] == {"protocol": {"minReaderVersion": 1}}
    assert lines[1]["metaData"]["version"] == 1
    adds = [line["add"] for line in lines[2:]]
    assert len(adds) == len(lines) - 2
    assert sorted(add["version"] for add in adds) == [1, 2]
    timestamps = {add["version"]: add["timestamp"] for add in adds}
    assert timestamps[1] <= timestamps[2]
    for add in adds:
        assert add["stats"] and "X-Amz-Signature" in add["url"]
        assert requests.get(add["url"], timeout=30).status_code == 200

    bounded = ndjson(post(server, token, table_path("plain") + "/query",
                          {"startingVersion": 0, "endingVersion": 1}))
    assert sorted(line["add"]["version"] for line in bounded[2:]) == [0, 1]

    # A delete streams remove lines (CDF not needed for streaming).
    parted = ndjson(post(server, token, table_path("parted") + "/query",
                         {"startingVersion": 2}))
    assert parted[2:] and all("remove" in line for line in parted[2:])
    assert {line["remove"]["partitionValues"]["region"] for line in parted[2:]} == {"a"}

    too_far = post(server, token, table_path("plain") + "/query",
                   {"startingVersion": 0, "endingVersion": 7})
    assert too_far.status_code == 400
    assert "End version cannot be greater than the latest version" in too_far.text


def test_streaming_includes_historical_protocols_when_asked(node):
    """`includeHistoricalProtocol` (delta format): a protocol upgrade inside the range is a
    protocol line with its version; without the flag, or in parquet, there is none."""
    import pandas as pd
    from deltalake import DeltaTable, write_deltalake
    from deltalake.table import TableFeatures

    server, token, _, _ = node
    options = server.storage_options()
    write_deltalake(table_uri("upgraded"), pd.DataFrame({"n": [1]}), storage_options=options)
    DeltaTable(table_uri("upgraded"), storage_options=options).alter.add_feature(
        TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)
    write_deltalake(table_uri("upgraded"), pd.DataFrame({"n": [2]}), mode="append",
                    storage_options=options)
    upgraded = share(server, "upgrades", ["upgraded"])
    path = f"/shares/upgrades/schemas/{SCHEMA}/tables/upgraded/query"
    delta = {"delta-sharing-capabilities":
             "responseformat=delta;readerfeatures=deletionvectors"}
    lines = ndjson(post(server, upgraded, path,
                        {"startingVersion": 0, "includeHistoricalProtocol": True}, **delta))
    historical = [line["protocol"] for line in lines[1:] if "protocol" in line]
    assert [entry["version"] for entry in historical] == [1], lines
    assert "deletionVectors" in historical[0]["deltaProtocol"]["readerFeatures"]
    plain = ndjson(post(server, upgraded, path, {"startingVersion": 0}, **delta))
    assert not any("protocol" in line for line in plain[1:])
