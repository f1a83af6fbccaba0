"""Issue 12, "Protocol gaps to close": request sequences as the Spark connector sends them,
parquet answers for reader-v3 tables that need nothing parquet cannot carry, and the reference
server's error codes and words. The Spark connector cannot be run here, so its requests are
rebuilt byte for byte from its code (quoted where used); the real `delta_sharing` 1.4 client
is used wherever it sends the request."""

from __future__ import annotations

import datetime
import json

import pytest
import requests

from test_sharing_delta import (  # noqa: F401 (node is a fixture)
    GOLDEN, assert_same_rows, bearer, direct_read, load, node, share_tables,
    share_without_history, upload_folder)
from test_sharing_catalog import SHARING
from test_sharing_pages import start_node, write_partitioned

# `DeltaSharingUtils.SUPPORTED_READER_FEATURES` of Delta's Spark connector
# (delta-io/delta sharing/src/main/scala/io/delta/sharing/spark/DeltaSharingUtils.scala).
SPARK_READER_FEATURES = (
    "deletionVectors,columnMapping,timestampNtz,typeWidening-preview,typeWidening,"
    "variantType-preview,geospatial,variantType,variantShredding-preview,variantShredding"
)
SPARK_USER_AGENT = "Delta-Sharing-Spark/1.3.0 Spark/3.5.3 QueryId-12 Hadoop/3.3.4"


def spark_capabilities(response_format: str, include_end_stream_action: bool) -> str:
    """`constructDeltaSharingCapabilities` of the connector's `DeltaSharingRestClient`."""
    capabilities = [f"responseformat={response_format}"]
    if response_format == "delta":
        capabilities.append(f"readerfeatures={SPARK_READER_FEATURES}")
    if include_end_stream_action:
        capabilities.append("includeendstreamaction=true")
    return ";".join(capabilities)


def spark_query_body(**fields) -> bytes:
    """`QueryTableRequest` as the connector's Jackson mapper writes it: declaration order,
    `NON_ABSENT` (no `None` fields), compact."""
    order = ["predicateHints", "limitHint", "version", "timestamp", "startingVersion",
             "endingVersion", "jsonPredicateHints", "maxFiles", "pageToken",
             "includeRefreshToken", "refreshToken", "idempotency_key"]
    body = {"predicateHints": fields.pop("predicateHints", [])}
    for name in order[1:]:
        if fields.get(name) is not None:
            body[name] = fields[name]
    return json.dumps(body, separators=(",", ":")).encode()


def spark_paged_snapshot(url: str, token: str, response_format: str, max_files: int,
                         limit=None, version=None, timestamp=None, json_predicate=None):
    """A snapshot read with `spark.delta.sharing.queryPagination.enabled=true` and the default
    `spark.delta.sharing.query.includeEndStreamAction=false`, following delta-sharing
    client/src/main/scala/io/delta/sharing/client/DeltaSharingClient.scala:
    `getFiles` builds the first request (`includeRefreshToken` for the latest snapshot only,
    `maxFiles`); `getFilesByPage` sends it with `setIncludeEndStreamAction =
    endStreamActionEnabled` (false), then, while the endStreamAction has a `nextPageToken`,
    sends `request.clone(maxFiles, pageToken)` (refresh fields dropped) through
    `fetchNextPageFiles` with `setIncludeEndStreamAction = !enableAsyncQuery` (true), which
    fails unless every page repeats the version, the format and lines 1 and 2 byte for byte.
    Returns (file lines, first page's endStreamAction, version, head lines)."""
    base = {
        "limitHint": limit, "version": version, "timestamp": timestamp,
        "jsonPredicateHints": json_predicate, "maxFiles": max_files,
    }
    latest = version is None and timestamp is None

    def post(body: bytes, end_stream: bool) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {token}",
            "User-Agent": SPARK_USER_AGENT,
            "Content-Type": "application/json; charset=UTF-8",
            "delta-sharing-capabilities": spark_capabilities(response_format, end_stream),
        }
        response = requests.post(url, data=body, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        return response

    first = post(spark_query_body(**base, includeRefreshToken=latest), False)
    assert first.headers["delta-sharing-capabilities"].startswith(
        f"responseformat={response_format}")
    lines = first.text.splitlines()
    head, version_seen = lines[:2], first.headers["delta-table-version"]
    first_end = json.loads(lines[-1])["endStreamAction"]
    files = lines[2:-1]
    end = first_end
    pages = 1
    while end.get("nextPageToken"):
        pages += 1
        assert pages < 1000, "pagination does not end"
        page = post(spark_query_body(**base, pageToken=end["nextPageToken"]), True)
        assert page.headers["delta-table-version"] == version_seen
        assert page.headers["delta-sharing-capabilities"] == (
            f"responseformat={response_format};includeendstreamaction=true")
        page_lines = page.text.splitlines()
        assert page_lines[:2] == head, "lines 1 and 2 changed between pages"
        end = json.loads(page_lines[-1])["endStreamAction"]
        files.extend(page_lines[2:-1])
        assert len(page_lines) - 3 <= max_files
    return [json.loads(line) for line in files], first_end, version_seen, head


def file_ids(lines) -> list[str]:
    return sorted(line["file"]["id"] for line in lines)


def post_query(url: str, headers: dict, body: dict, capabilities: str | None = None):
    if capabilities:
        headers = {**headers, "delta-sharing-capabilities": capabilities}
    return requests.post(url, headers=headers, json=body, timeout=60)


def assert_error(response: requests.Response, status: int, code: str, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()
    assert error["errorCode"] == code, error
    assert text in error["message"], error


# ----- gap 1: paged queries as the Spark connector sends them ---------------------------------


@pytest.mark.parametrize("response_format", ["parquet", "delta"])
@pytest.mark.parametrize("cache", ["cached", "uncached"])
def test_r12_spark_paged_query_reads_to_the_end(lakeshare_server, tmp_path, response_format,
                                                cache):
    import pandas as pd
    from deltalake import write_deltalake

    extra = ["--cache-size", "1"] if cache == "uncached" else []
    server, cli = start_node(lakeshare_server, tmp_path, extra)
    write_partitioned(server, "paged/", parts=23)
    write_deltalake("s3://lake/paged/", pd.DataFrame({"part": ["p99"], "n": [999]}),
                    mode="append", partition_by=["part"], storage_options=server.storage_options())
    profile = share_tables(cli, tmp_path, "spark", {"paged": "paged/"})
    endpoint, headers = bearer(profile)
    token = headers["Authorization"].split(" ", 1)[1]
    url = f"{endpoint}/shares/spark/schemas/s/tables/paged/query"
    capabilities = spark_capabilities(response_format, False)
    whole = post_query(url, headers, {}, capabilities)
    assert whole.status_code == 200, whole.text
    whole_ids = file_ids(json.loads(line) for line in whole.text.splitlines()[2:])
    assert len(whole_ids) == 24

    files, first_end, version, head = spark_paged_snapshot(url, token, response_format, 5)
    assert file_ids(files) == whole_ids and version == "1"
    assert head == whole.text.splitlines()[:2]
    assert first_end["refreshToken"], "the latest snapshot's first page carries a refresh token"

    # Time travel and a limit hint, page by page: the pages hold the unpaged answer.
    old, _, version, _ = spark_paged_snapshot(url, token, response_format, 4, version=0)
    unpaged_old = post_query(url, headers, {"version": 0}, capabilities)
    assert version == "0" and len(old) == 23
    assert file_ids(old) == file_ids(json.loads(line) for line in unpaged_old.text.splitlines()[2:])
    limited, _, _, _ = spark_paged_snapshot(url, token, response_format, 2, limit=7)
    assert len(limited) == 3  # 3 rows per file: 7 rows need 3 files

    # The parameter check still covers the body: a changed limit on page 2 is refused.
    first = post_query(url, headers, {"maxFiles": 2, "limitHint": 7}, capabilities)
    page_token = json.loads(first.text.splitlines()[-1])["endStreamAction"]["nextPageToken"]
    changed = post_query(url, headers, {"maxFiles": 2, "limitHint": 8, "pageToken": page_token},
                         spark_capabilities(response_format, True))
    assert_error(changed, 400, "INVALID_PARAMETER_VALUE",
                 "Query parameter mismatch detected for the next page query")


# ----- gap 2: parquet answers for reader-v3 tables parquet can carry ---------------------------


def test_r12_parquet_serves_timestamp_ntz_tables(node, tmp_path):
    """A frame with naive datetimes makes a `timestampNtz` (reader version 3) table. The
    reference refuses parquet only for column mapping and deletion vectors, and shows a client
    that announced no reader features the protocol as reader version 1. (delta_sharing 1.4's
    parquet path cannot convert `timestamp_ntz`, so this answer is checked on the wire.)"""
    import pandas as pd
    from deltalake import write_deltalake

    server, cli = node
    frame = pd.DataFrame({"at": [datetime.datetime(2024, 1, 1, 12, 30)], "n": [1]})
    write_deltalake("s3://lake/ntz/", frame, storage_options=server.storage_options())
    profile = share_tables(cli, tmp_path, "ntz", {"ntz": "ntz/"})
    endpoint, headers = bearer(profile)
    table = f"{endpoint}/shares/ntz/schemas/s/tables/ntz"
    for capabilities in (None, "responseformat=parquet", "responseformat=parquet,delta"):
        request_headers = dict(headers)
        if capabilities:
            request_headers["delta-sharing-capabilities"] = capabilities
        for response in (
            requests.post(f"{table}/query", headers=request_headers, json={}, timeout=30),
            requests.get(f"{table}/metadata", headers=request_headers, timeout=30),
        ):
            assert response.status_code == 200, (capabilities, response.text)
            assert response.headers["delta-sharing-capabilities"] == "responseformat=parquet"
            lines = [json.loads(line) for line in response.text.splitlines()]
            assert lines[0] == {"protocol": {"minReaderVersion": 1}}
            schema = json.loads(lines[1]["metaData"]["schemaString"])
            assert schema["fields"][0]["type"] == "timestamp_ntz"
            assert all("file" in line for line in lines[2:])
    # A client that announces reader features reads the real protocol, in delta format.
    python_auto = {**headers, "delta-sharing-capabilities":
                   "responseformat=delta,parquet;readerfeatures=deletionvectors,columnmapping,"
                   "timestampntz"}
    metadata = requests.get(f"{table}/metadata", headers=python_auto, timeout=30)
    assert metadata.headers["delta-sharing-capabilities"] == "responseformat=delta"
    protocol = json.loads(metadata.text.splitlines()[0])["protocol"]["deltaProtocol"]
    assert protocol["minReaderVersion"] == 3 and protocol["readerFeatures"] == ["timestampNtz"]
    assert_same_rows(load(profile, "ntz.s.ntz"), direct_read("s3://lake/ntz/",
                     server.storage_options()), "delta path of a timestampNtz table")


def test_r12_parquet_client_reads_a_reader_v3_table(node, tmp_path):
    """`v2Checkpoint` raises the reader version to 3 and changes nothing in the rows: the real
    client's parquet path reads it."""
    import pandas as pd
    from deltalake import DeltaTable, TableFeatures, write_deltalake

    server, cli = node
    options = server.storage_options()
    write_deltalake("s3://lake/v3/", pd.DataFrame({"n": [1, 2, 3], "s": ["a", "b", "c"]}),
                    storage_options=options)
    DeltaTable("s3://lake/v3/", storage_options=options).alter.add_feature(
        TableFeatures.V2Checkpoint, allow_protocol_versions_increase=True)
    assert DeltaTable("s3://lake/v3/", storage_options=options).protocol().min_reader_version == 3
    profile = share_tables(cli, tmp_path, "v3", {"v3": "v3/"})
    direct = direct_read("s3://lake/v3/", options)
    assert_same_rows(load(profile, "v3.s.v3", use_delta_format=False), direct, "parquet path")
    assert_same_rows(load(profile, "v3.s.v3"), direct, "auto-resolved path")

    # Column mapping still cannot be carried by parquet: refused in the reference's words.
    upload_folder(server.s3_client(), GOLDEN / "g__table-with-columnmapping-mode-name", "cm/")
    cli.run("table", "share", "update", "local/v3", "--add", "s:cm:delta:lake:cm/")
    endpoint, headers = bearer(profile)
    for capabilities in (None, "responseformat=parquet",
                         "responseformat=parquet;readerfeatures=columnmapping"):
        response = post_query(f"{endpoint}/shares/v3/schemas/s/tables/cm/query", headers, {},
                              capabilities)
        assert_error(response, 400, "UNSUPPORTED_OPERATION", "Unsupported Delta Table Properties")


# ----- gap 5: the reference server's error codes and words --------------------------------------


def test_r12_refresh_tokens_where_they_cannot_be_used(node, tmp_path):
    server, cli = node
    write_partitioned(server, "r/", parts=3)
    profile = share_tables(cli, tmp_path, "refresh", {"r": "r/"})
    endpoint, headers = bearer(profile)
    url = f"{endpoint}/shares/refresh/schemas/s/tables/r/query"
    first = post_query(url, headers, {"includeRefreshToken": True, "maxFiles": 1})
    end = json.loads(first.text.splitlines()[-1])["endStreamAction"]
    for body, text in (
        ({"startingVersion": 0, "refreshToken": end["refreshToken"]},
         "refreshToken cannot be used when querying a specific version."),
        ({"maxFiles": 1, "pageToken": end["nextPageToken"], "refreshToken": end["refreshToken"]},
         "refreshToken must be used in the first page request."),
        ({"version": 0, "includeRefreshToken": True},
         "includeRefreshToken cannot be used when querying a specific version."),
        ({"maxFiles": 1, "pageToken": end["nextPageToken"], "includeRefreshToken": True},
         "includeRefreshToken must be used in the first page request."),
    ):
        assert_error(post_query(url, headers, body), 400, "INVALID_PARAMETER_VALUE", text)


def test_r12_no_shared_history_wins_over_a_malformed_timestamp(node):
    table, headers = share_without_history(*node)
    words = ("Reading table by version or timestamp is not supported because history sharing "
             "is not enabled on table: nohist.s.t")
    for response in (
        post_query(f"{table}/query", headers, {"timestamp": "abc"}),
        post_query(f"{table}/query", headers, {"startingVersion": 0}),
        requests.get(f"{table}/metadata?timestamp=abc", headers=headers, timeout=30),
        requests.get(f"{table}/version?startingTimestamp=abc", headers=headers, timeout=30),
    ):
        assert_error(response, 400, "INVALID_PARAMETER_VALUE", words)


def test_r12_protocol_upgrade_inside_a_streaming_range(node, tmp_path):
    """`table_reader_version_increased` of the reference suite: a parquet stream over a range
    where the reader version rises is refused with `UNSUPPORTED_OPERATION`."""
    import pandas as pd
    from deltalake import DeltaTable, TableFeatures, write_deltalake

    server, cli = node
    options = server.storage_options()
    write_deltalake("s3://lake/up/", pd.DataFrame({"n": [1]}), storage_options=options)
    DeltaTable("s3://lake/up/", storage_options=options).alter.add_feature(
        TableFeatures.V2Checkpoint, allow_protocol_versions_increase=True)
    profile = share_tables(cli, tmp_path, "up", {"up": "up/"})
    endpoint, headers = bearer(profile)
    url = f"{endpoint}/shares/up/schemas/s/tables/up/query"
    assert_error(post_query(url, headers, {"startingVersion": 0}), 400, "UNSUPPORTED_OPERATION",
                 "Delta protocol version (3,7) is too new for this version of Delta")
    delta = post_query(url, headers, {"startingVersion": 0},
                       "responseformat=delta;readerfeatures=v2checkpoint")
    assert delta.status_code == 200, delta.text


# ----- gap 3: a timestamp after the latest commit ---------------------------------------------


def test_r12_timestamp_after_the_latest_commit_is_refused(node, tmp_path):
    import pandas as pd
    from deltalake import write_deltalake

    server, cli = node
    options = server.storage_options()
    for round_index in range(2):
        write_deltalake("s3://lake/tt/", pd.DataFrame({"n": [round_index]}), mode="append",
                        storage_options=options)
    profile = share_tables(cli, tmp_path, "tt", {"tt": "tt/"})
    endpoint, headers = bearer(profile)
    table = f"{endpoint}/shares/tt/schemas/s/tables/tt"
    future = "9999-01-01T00:00:00Z"
    for response in (
        post_query(f"{table}/query", headers, {"timestamp": future}),
        requests.get(f"{table}/metadata?timestamp={future}", headers=headers, timeout=30),
    ):
        assert_error(response, 400, "INVALID_PARAMETER_VALUE",
                     "is after the latest available version 1. Please use a timestamp less than")
    assert_error(requests.get(f"{table}/version?startingTimestamp={future}", headers=headers,
                              timeout=30),
                 400, "INVALID_PARAMETER_VALUE",
                 "The provided timestamp (9999-01-01T00:00:00Z) is after the latest version "
                 "available to this table")
    import delta_sharing

    with pytest.raises(Exception, match="is after the latest available version"):
        delta_sharing.load_as_pandas(f"{profile}#tt.s.tt", timestamp=future)
    # A time inside the history still travels.
    from deltalake import DeltaTable

    history = DeltaTable("s3://lake/tt/", storage_options=options).history()
    latest_ms = max(entry["timestamp"] for entry in history)
    at = datetime.datetime.fromtimestamp(latest_ms / 1000, datetime.timezone.utc)
    travelled = post_query(f"{table}/query", headers,
                           {"timestamp": at.isoformat(timespec="milliseconds")})
    assert travelled.status_code == 200, travelled.text


# ----- gap 4: maxResults=0 --------------------------------------------------------------------


def test_r12_max_results_zero_lists_nothing_and_points_on(node, tmp_path):
    server, cli = node
    write_partitioned(server, "a/", parts=1)
    profile = share_tables(cli, tmp_path, "zero", {"t1": "a/", "t2": "a/"})
    endpoint, headers = bearer(profile)
    for path, names in (
        ("/shares", ["zero"]),
        ("/shares/zero/schemas", ["s"]),
        ("/shares/zero/schemas/s/tables", ["t1", "t2"]),
        ("/shares/zero/all-tables", ["t1", "t2"]),
    ):
        empty = requests.get(f"{endpoint}{path}?maxResults=0", headers=headers, timeout=30)
        assert empty.status_code == 200, empty.text
        assert "\n" not in empty.text.strip()
        body = empty.json()
        assert body.get("items", []) == [] and body["nextPageToken"], (path, body)
        # The token points where the empty page started: the next pages list everything.
        seen, token = [], body["nextPageToken"]
        while token:
            page = requests.get(f"{endpoint}{path}", params={"maxResults": 1, "pageToken": token},
                                headers=headers, timeout=30).json()
            seen += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
        assert seen == names, path
        again = requests.get(f"{endpoint}{path}", params={"maxResults": 0,
                             "pageToken": body["nextPageToken"]}, headers=headers, timeout=30)
        assert again.json().get("items", []) == [] and again.json()["nextPageToken"]


# ----- gap 6: size and numFiles in metaData ----------------------------------------------------


@pytest.mark.parametrize("response_format", ["parquet", "delta"])
def test_r12_metadata_carries_size_and_file_count_when_known(node, tmp_path, response_format):
    import pyarrow as pa
    from deltalake import DeltaTable

    server, cli = node
    write_partitioned(server, "sized/", parts=6)
    adds = pa.table(DeltaTable("s3://lake/sized/", storage_options=server.storage_options()
                               ).get_add_actions(flatten=True)).to_pydict()
    expected = {"size": sum(adds["size_bytes"]), "numFiles": len(adds["path"])}
    profile = share_tables(cli, tmp_path, "sized", {"sized": "sized/"})
    endpoint, headers = bearer(profile)
    headers = {**headers, "delta-sharing-capabilities": f"responseformat={response_format}"}
    table = f"{endpoint}/shares/sized/schemas/s/tables/sized"

    def metadata_of(response: requests.Response) -> dict:
        assert response.status_code == 200, response.text
        return json.loads(response.text.splitlines()[1])["metaData"]

    # Nothing is listed for /metadata: before any query the size is not known, so not sent.
    cold = metadata_of(requests.get(f"{table}/metadata", headers=headers, timeout=30))
    assert "size" not in cold and "numFiles" not in cold
    metadata_of(requests.post(f"{table}/query", headers=headers, json={}, timeout=30))
    warm = metadata_of(requests.get(f"{table}/metadata", headers=headers, timeout=30))
    assert {key: warm[key] for key in expected} == expected
    query = metadata_of(requests.post(f"{table}/query", headers=headers, json={}, timeout=30))
    assert {key: query[key] for key in expected} == expected
    # Pages leave it out: every page repeats the first page's line 2 byte for byte.
    paged = metadata_of(requests.post(f"{table}/query", headers=headers, json={"maxFiles": 2},
                                      timeout=30))
    assert "size" not in paged
    assert {key: value for key, value in warm.items() if key not in expected} == paged


# ----- gap 7: tables without a Delta log ------------------------------------------------------


def test_r12_a_path_without_a_delta_log_is_refused_at_share_time(node, tmp_path):
    server, cli = node
    server.s3_client().put_object(Bucket="lake", Key="empty/readme.txt", Body=b"no table here")
    refused = cli.run("table", "share", "create", "local/nolog", "s", "t:delta:lake:empty/",
                      check=False)
    assert refused.returncode == 1, refused
    assert "table 't': lake/empty/ is not a Delta table" in refused.stderr, refused.stderr
    write_partitioned(server, "later/", parts=1)
    cli.run("table", "share", "create", "local/nolog", "s", "t:delta:lake:later/")
    added = cli.run("table", "share", "update", "local/nolog", "--add", "s:u:delta:lake:empty/",
                    check=False)
    assert added.returncode == 1 and "is not a Delta table" in added.stderr, added.stderr
    assert [t["name"] for t in cli.json("table", "share", "info", "local/nolog")["share"][
        "schemas"][0]["tables"]] == ["t"]


def test_r12_an_unreadable_table_is_named_in_the_error(node, tmp_path):
    server, cli = node
    s3 = server.s3_client()
    write_partitioned(server, "gone/", parts=2)
    write_partitioned(server, "torn/", parts=2)
    profile = share_tables(cli, tmp_path, "broken", {"gone": "gone/", "torn": "torn/"})
    endpoint, headers = bearer(profile)
    table = f"{endpoint}/shares/broken/schemas/s/tables"
    # A commit that does not parse: the error names the table and says why.
    s3.put_object(Bucket="lake", Key="torn/_delta_log/00000000000000000001.json",
                  Body=b"{not json")
    torn = post_query(f"{table}/torn/query", headers, {})
    assert torn.status_code == 500, torn.text
    assert torn.json()["errorCode"] == "INTERNAL_ERROR"
    assert "table 'torn' cannot be read" in torn.json()["message"], torn.text
    # A log deleted under the share: 404 naming the table, which clients do not retry.
    listed = s3.list_objects_v2(Bucket="lake", Prefix="gone/_delta_log/")
    for item in listed["Contents"]:
        s3.delete_object(Bucket="lake", Key=item["Key"])
    server.restart()
    table = f"{server.endpoint}{SHARING}/shares/broken/schemas/s/tables"  # the port may change
    for response in (
        post_query(f"{table}/gone/query", headers, {}),
        requests.get(f"{table}/gone/metadata", headers=headers, timeout=30),
        requests.get(f"{table}/gone/version", headers=headers, timeout=30),
    ):
        assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST",
                     "table 'gone' has no readable Delta log at lake/gone/_delta_log/")


@pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden tables not found at {GOLDEN}")
def test_r12_metadata_size_from_the_version_checksum(node, tmp_path):
    """A version with a checksum file: its size is known before any file is listed."""
    server, cli = node
    s3 = server.s3_client()
    folder = GOLDEN / "k__crc-full"
    upload_folder(s3, folder, "crc/")  # (leaves Hadoop-style .crc files out)
    s3.upload_file(str(folder / "_delta_log" / "00000000000000000000.crc"), "lake",
                   "crc/_delta_log/00000000000000000000.crc")
    profile = share_tables(cli, tmp_path, "crc", {"crc": "crc/"})
    endpoint, headers = bearer(profile)
    headers = {**headers, "delta-sharing-capabilities":
               "responseformat=delta;readerfeatures=deletionvectors,columnmapping"}
    response = requests.get(f"{endpoint}/shares/crc/schemas/s/tables/crc/metadata",
                            headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    metadata = json.loads(response.text.splitlines()[1])["metaData"]
    assert (metadata.get("size"), metadata.get("numFiles")) == (5259, 10), metadata
