"""Issue 12: pages (`maxFiles`/`pageToken`) of the change data feed (`GET .../changes`) and of
streaming queries (`POST .../query` with `startingVersion`), `includeendstreamaction` and
`includeHistoricalProtocol` on every page, against tables written by deltalake.

A paged answer must hold exactly the lines of the whole answer, in the same order (URLs and
their expiry aside), every page repeating lines 1-2 of the first, and the range pinned at
page 1 even when a commit lands between pages."""

from __future__ import annotations

import json
import math

import pytest
import requests

from test_sharing_changes import SCHEMA, SHARING, share, table_uri

SHARE = "rangeshare"
FILE_KINDS = {"add", "cdf", "remove", "file"}
SIZES = [1, 2, 3, 1000]


def frame(ids, regions="abcd", value="v"):
    import pandas as pd

    return pd.DataFrame({
        "id": pd.array(ids, dtype="int64"),
        "value": [f"{value}{i}" for i in ids],
        "region": [regions[i % len(regions)] for i in ids],
    })


def write_ranges(server):
    """A CDF table partitioned by region: 8 commits of several files each (appends, a
    delete, an update, a merge, a table-description change); and a second CDF table."""
    from deltalake import DeltaTable, write_deltalake

    options = server.storage_options()
    server.s3_client().create_bucket(Bucket="lake")
    cdf = {"delta.enableChangeDataFeed": "true"}
    uri = table_uri("ranges")
    write_deltalake(uri, frame(range(0, 12)), partition_by=["region"], storage_options=options,
                    configuration=cdf)                                               # v0
    write_deltalake(uri, frame(range(12, 20)), partition_by=["region"], mode="append",
                    storage_options=options)                                         # v1
    write_deltalake(uri, frame(range(20, 28)), partition_by=["region"], mode="append",
                    storage_options=options)                                         # v2
    DeltaTable(uri, storage_options=options).delete("id % 3 = 0")                    # v3
    DeltaTable(uri, storage_options=options).alter.set_table_description("ranges")   # v4
    DeltaTable(uri, storage_options=options).update(
        predicate="region = 'b' OR region = 'c'", updates={"value": "'updated'"})   # v5
    (
        DeltaTable(uri, storage_options=options)
        .merge(frame([1, 2, 40, 41, 42, 43], value="m"), predicate="t.id = s.id",
               source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )                                                                                # v6
    write_deltalake(uri, frame(range(50, 58)), partition_by=["region"], mode="append",
                    storage_options=options)                                         # v7
    other = table_uri("other")
    write_deltalake(other, frame(range(0, 4)), partition_by=["region"],
                    storage_options=options, configuration=cdf)
    write_deltalake(other, frame(range(4, 8)), partition_by=["region"], mode="append",
                    storage_options=options)


@pytest.fixture
def node(lakeshare_server):
    server = lakeshare_server(drives=1)
    write_ranges(server)
    token = share(server, SHARE, ["ranges", "other"])
    return server, token


def table_path(table: str) -> str:
    return f"/shares/{SHARE}/schemas/{SCHEMA}/tables/{table}"


def capabilities(response_format: str, end_stream: bool = False) -> dict:
    value = f"responseformat={response_format}"
    if end_stream:
        value += ";includeendstreamaction=true"
    return {"delta-sharing-capabilities": value}


def ask(server, token, route: str, table: str, params: dict, headers: dict,
        max_files=None, page_token=None) -> requests.Response:
    """One request of `route` ("changes" or "streaming") with the page parameters."""
    auth = {"Authorization": f"Bearer {token}", **headers}
    if route == "changes":
        query = dict(params)
        if max_files is not None:
            query["maxFiles"] = max_files
        if page_token is not None:
            query["pageToken"] = page_token
        return requests.get(f"{server.endpoint}{SHARING}{table_path(table)}/changes",
                            params=query, headers=auth, timeout=60)
    body = dict(params)
    if max_files is not None:
        body["maxFiles"] = max_files
    if page_token is not None:
        body["pageToken"] = page_token
    return requests.post(f"{server.endpoint}{SHARING}{table_path(table)}/query", json=body,
                         headers=auth, timeout=60)


def ok_lines(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    assert all(lines), "no blank lines"
    return lines


def is_file(line: dict) -> bool:
    (kind,) = line.keys()
    return kind in FILE_KINDS


def without_urls(value):
    """A line without what depends on the signing window (URL and expiry)."""
    if isinstance(value, dict):
        return {key: without_urls(item) for key, item in value.items()
                if key not in ("url", "path", "expirationTimestamp")}
    return value


def pages_of(server, token, route, table, params, headers, max_files):
    """All pages: a list of (response, parsed lines); checks what every page must hold."""
    pages = []
    page_token = None
    while True:
        response = ask(server, token, route, table, params, headers, max_files, page_token)
        lines = [json.loads(line) for line in ok_lines(response)]
        end = lines[-1].get("endStreamAction")
        assert end is not None, f"a page must end with an endStreamAction: {lines[-1]}"
        assert "errorMessage" not in end, end
        body = lines[2:-1]
        files = [line for line in body if is_file(line)]
        assert len(files) <= max_files, (len(files), max_files)
        assert not any("endStreamAction" in line for line in body)
        if files:
            expiries = [(line.get("file") or next(iter(line.values())))["expirationTimestamp"]
                        for line in files]
            assert end["minUrlExpirationTimestamp"] == min(expiries), end
        pages.append((response, lines))
        page_token = end.get("nextPageToken")
        assert page_token != "", "the last page leaves nextPageToken out"
        if page_token is None:
            return pages
        assert files, "a page with a next token holds files"
        assert len(pages) < 500, "pagination does not end"


def check_pages_equal_whole(server, token, route, table, params, headers):
    whole = ask(server, token, route, table, params, headers)
    whole_text = ok_lines(whole)
    whole_lines = [json.loads(line) for line in whole_text]
    assert "endStreamAction" not in whole_lines[-1], "no endStreamAction unless asked"
    whole_body = [without_urls(line) for line in whole_lines[2:]]
    whole_files = [line for line in whole_lines[2:] if is_file(line)]
    assert len(whole_files) >= 12, len(whole_files)
    for max_files in SIZES:
        pages = pages_of(server, token, route, table, params, headers, max_files)
        assert len(pages) == max(1, math.ceil(len(whole_files) / max_files)), (
            max_files, len(pages), len(whole_files))
        for response, _ in pages:
            # Lines 1-2 and the version header of every page are those of the whole answer.
            assert response.text.splitlines()[:2] == whole_text[:2], max_files
            assert response.headers["delta-table-version"] == whole.headers["delta-table-version"]
            assert response.headers["delta-sharing-capabilities"] == (
                whole.headers["delta-sharing-capabilities"])
        paged_body = [without_urls(line) for _, lines in pages for line in lines[2:-1]]
        assert paged_body == whole_body, max_files
    return whole_lines


@pytest.mark.parametrize("response_format", ["parquet", "delta"])
@pytest.mark.parametrize("route", ["changes", "streaming"])
def test_pages_hold_exactly_the_whole_answer(node, route, response_format):
    """Fails on the old code: `/changes` ignored maxFiles (one page, no endStreamAction),
    and streaming queries ignored maxFiles and pageToken."""
    server, token = node
    headers = capabilities(response_format)
    if route == "changes":
        for params in ({"startingVersion": 0, "includeHistoricalMetadata": "true"},
                       {"startingVersion": 1, "endingVersion": 6}):
            lines = check_pages_equal_whole(server, token, route, "ranges", params, headers)
        kinds = {next(iter(line)) for line in lines[2:]}
        if response_format == "parquet":
            assert {"add", "cdf", "remove"} <= kinds or {"add", "cdf"} <= kinds, kinds
        else:
            actions = {next(iter(line["file"]["deltaSingleAction"]))
                       for line in lines[2:] if "file" in line}
            assert "cdc" in actions, actions
    else:
        lines = check_pages_equal_whole(server, token, route, "ranges",
                                        {"startingVersion": 0}, headers)
        # The description change of version 4 is a metaData line inside the range, on
        # exactly one page.
        assert [line["metaData"]["version"] for line in lines[2:] if "metaData" in line] == [4]
        kinds = {next(iter(line)) for line in lines[2:]} if response_format == "parquet" else {
            next(iter(line["file"]["deltaSingleAction"])) for line in lines[2:] if "file" in line}
        assert {"add", "remove"} <= kinds, kinds


@pytest.mark.parametrize("route", ["changes", "streaming"])
def test_a_commit_after_page_one_stays_out_of_the_range(node, route):
    from deltalake import write_deltalake

    server, token = node
    headers = capabilities("parquet")
    params = {"startingVersion": 5}
    whole = [json.loads(line) for line in ok_lines(ask(server, token, route, "ranges", params,
                                                          headers))]
    first = ask(server, token, route, "ranges", params, headers, max_files=2)
    first_lines = [json.loads(line) for line in ok_lines(first)]
    page_token = first_lines[-1]["endStreamAction"]["nextPageToken"]
    write_deltalake(table_uri("ranges"), frame(range(100, 108)), partition_by=["region"],
                    mode="append", storage_options=server.storage_options())       # v8
    rest = []
    while page_token:
        response = ask(server, token, route, "ranges", params, headers, 2, page_token)
        lines = [json.loads(line) for line in ok_lines(response)]
        assert response.text.splitlines()[:2] == first.text.splitlines()[:2]
        assert response.headers["delta-table-version"] == "5"
        rest.extend(lines[2:-1])
        page_token = lines[-1]["endStreamAction"].get("nextPageToken")
    paged = first_lines[2:-1] + rest
    assert [without_urls(line) for line in paged] == [without_urls(line) for line in whole[2:]]
    assert {next(iter(line.values()))["version"] for line in paged} <= {5, 6, 7}
    # A new first page sees the new commit.
    fresh = [json.loads(line) for line in ok_lines(ask(server, token, route, "ranges", params,
                                                          headers))]
    assert 8 in {next(iter(line.values()))["version"] for line in fresh[2:]}


def refused(response: requests.Response, message: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["errorCode"] == "INVALID_PARAMETER_VALUE", error
    assert message in error["message"], error


def next_token(response: requests.Response) -> str:
    return json.loads(ok_lines(response)[-1])["endStreamAction"]["nextPageToken"]


def test_page_token_misuse_is_refused(node):
    server, token = node
    headers = capabilities("parquet")
    changes = {"startingVersion": 0, "endingVersion": 6}
    streaming = {"startingVersion": 0, "endingVersion": 6}
    for route, params in (("changes", changes), ("streaming", streaming)):
        page_token = next_token(ask(server, token, route, "ranges", params, headers, 2))
        # Another table.
        other = ask(server, token, route, "other", {"startingVersion": 0, "endingVersion": 1},
                    headers, 2, page_token)
        refused(other, "The table specified in the page token does not match the table being "
                       "queried")
        # Changed parameters (the page size may change, nothing else).
        for changed in ({**params, "endingVersion": 5}, {**params, "startingVersion": 1},
                        {k: v for k, v in params.items() if k != "endingVersion"}):
            refused(ask(server, token, route, "ranges", changed, headers, 2, page_token),
                    "Query parameter mismatch detected for the next page query")
        assert ask(server, token, route, "ranges", params, headers, 5,
                   page_token).status_code == 200
        # Another response format than page 1's.
        refused(ask(server, token, route, "ranges", params, capabilities("delta"), 2,
                    page_token),
                "Query parameter mismatch detected for the next page query")
        # Garbage, and a forged or truncated token.
        for bad in ("garbage", page_token[:-3], "x" + page_token):
            refused(ask(server, token, route, "ranges", params, headers, 2, bad),
                    "Error decoding the page token")
    refused(ask(server, token, "changes", "ranges",
                {**changes, "includeHistoricalMetadata": "true"}, headers, 2,
                next_token(ask(server, token, "changes", "ranges", changes, headers, 2))),
            "Query parameter mismatch detected for the next page query")
    refused(ask(server, token, "streaming", "ranges",
                {**streaming, "includeHistoricalProtocol": True}, headers, 2,
                next_token(ask(server, token, "streaming", "ranges", streaming, headers, 2))),
            "Query parameter mismatch detected for the next page query")
    # A token of one route is refused by the other.
    refused(ask(server, token, "streaming", "ranges", streaming, headers, 2,
                next_token(ask(server, token, "changes", "ranges", changes, headers, 2))),
            "Query parameter mismatch detected for the next page query")
    # A snapshot query's token is not a range token.
    snapshot_token = next_token(ask(server, token, "streaming", "ranges", {}, headers, 1))
    refused(ask(server, token, "streaming", "ranges", streaming, headers, 2, snapshot_token),
            "Error decoding the page token")
    # Refresh tokens keep their errors with a range or a page token.
    refused(ask(server, token, "streaming", "ranges",
                {**streaming, "refreshToken": "r"}, headers),
            "refreshToken cannot be used when querying a specific version.")
    refused(ask(server, token, "streaming", "ranges",
                {"refreshToken": "r"}, headers, 2, "p"),
            "refreshToken must be used in the first page request.")
    refused(ask(server, token, "changes", "ranges", changes, headers, 0),
            "maxFiles must be positive")


@pytest.mark.parametrize("route", ["changes", "streaming"])
def test_include_end_stream_action_without_pages(node, route):
    server, token = node
    params = {"startingVersion": 0}
    plain = ask(server, token, route, "ranges", params, capabilities("parquet"))
    plain_lines = [json.loads(line) for line in ok_lines(plain)]
    assert "includeendstreamaction" not in plain.headers["delta-sharing-capabilities"]
    assert is_file(plain_lines[-1])
    asked = ask(server, token, route, "ranges", params, capabilities("parquet", end_stream=True))
    lines = [json.loads(line) for line in ok_lines(asked)]
    assert asked.headers["delta-sharing-capabilities"] == (
        "responseformat=parquet;includeendstreamaction=true")
    end = lines[-1]["endStreamAction"]
    assert "nextPageToken" not in end and "errorMessage" not in end, end
    expiries = [next(iter(line.values()))["expirationTimestamp"]
                for line in lines[2:-1] if is_file(line)]
    assert end["minUrlExpirationTimestamp"] == min(expiries)
    assert [without_urls(line) for line in lines[:-1]] == [
        without_urls(line) for line in plain_lines]
    # With pages too: the header is echoed on every page.
    response = ask(server, token, route, "ranges", params,
                   capabilities("parquet", end_stream=True), 3)
    assert "includeendstreamaction=true" in response.headers["delta-sharing-capabilities"]


@pytest.mark.parametrize("route", ["changes", "streaming"])
def test_historical_protocols_on_every_page(lakeshare_server, route):
    """`includeHistoricalProtocol` (delta format): the protocol upgrade inside the range is
    one protocol line carrying its version, on whichever page it falls, never repeated."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.table import TableFeatures

    server = lakeshare_server(drives=1)
    server.s3_client().create_bucket(Bucket="lake")
    options = server.storage_options()
    uri = table_uri("upgraded")
    cdf = {"delta.enableChangeDataFeed": "true"}
    write_deltalake(uri, frame(range(0, 8)), partition_by=["region"], storage_options=options,
                    configuration=cdf)
    write_deltalake(uri, frame(range(8, 16)), partition_by=["region"], mode="append",
                    storage_options=options)
    DeltaTable(uri, storage_options=options).alter.add_feature(
        TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)      # v2
    write_deltalake(uri, frame(range(16, 24)), partition_by=["region"], mode="append",
                    storage_options=options)
    token = share(server, "upgrades", ["upgraded"])
    headers = {"Authorization": f"Bearer {token}", "delta-sharing-capabilities":
               "responseformat=delta;readerfeatures=deletionvectors"}
    base = f"{server.endpoint}{SHARING}/shares/upgrades/schemas/{SCHEMA}/tables/upgraded"
    params = {"startingVersion": 0, "includeHistoricalProtocol": True}

    def page(max_files=None, page_token=None, historical=True):
        asked = dict(params) if historical else {"startingVersion": 0}
        if max_files:
            asked["maxFiles"] = max_files
        if page_token:
            asked["pageToken"] = page_token
        if route == "changes":
            asked = {key: str(value).lower() if isinstance(value, bool) else value
                     for key, value in asked.items()}
            response = requests.get(f"{base}/changes", params=asked, headers=headers,
                                    timeout=60)
        else:
            response = requests.post(f"{base}/query", json=asked, headers=headers, timeout=60)
        return [json.loads(line) for line in ok_lines(response)]

    whole = page()
    assert [line["protocol"]["version"] for line in whole[1:] if "protocol" in line] == [2]
    assert not any("protocol" in line for line in page(historical=False)[1:])
    for max_files in (1, 3):
        lines, page_token, heads = [], None, []
        while True:
            got = page(max_files, page_token)
            heads.append(got[:2])
            lines.extend(got[2:-1])
            page_token = got[-1]["endStreamAction"].get("nextPageToken")
            if not page_token:
                break
        assert all(head == heads[0] for head in heads)
        assert [without_urls(line) for line in lines] == [
            without_urls(line) for line in whole[2:]]
        protocols = [line["protocol"] for line in lines if "protocol" in line]
        assert [entry["version"] for entry in protocols] == [2], max_files
        assert "deletionVectors" in protocols[0]["deltaProtocol"]["readerFeatures"]


@pytest.mark.parametrize("route", ["changes", "streaming"])
def test_errors_after_the_status_end_in_words_or_cut_the_stream(lakeshare_server, route):
    """A file that cannot be shared (in another bucket) is found only while lines stream: a
    client that announced `includeendstreamaction` gets the lines before it and an
    endStreamAction with the error; any other client (paged or not) a cut stream, never a
    200 that looks complete."""
    server = lakeshare_server(drives=1)
    s3 = server.s3_client()
    s3.create_bucket(Bucket="lake")
    schema = {"type": "struct", "fields": [
        {"name": "n", "type": "long", "nullable": True, "metadata": {}}]}
    created = [
        {"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}},
        {"metaData": {"id": "0f1e2d3c-aaaa-bbbb-cccc-000000000002",
                      "format": {"provider": "parquet", "options": {}},
                      "schemaString": json.dumps(schema), "partitionColumns": [],
                      "configuration": {"delta.enableChangeDataFeed": "true"},
                      "createdTime": 1700000000000}},
    ]
    added = [
        {"add": {"path": f"inside-{index}.parquet", "partitionValues": {}, "size": 10,
                 "modificationTime": 1700000000000, "dataChange": True}}
        for index in range(3)
    ] + [{"add": {"path": "s3://elsewhere/outside.parquet", "partitionValues": {}, "size": 10,
                  "modificationTime": 1700000000000, "dataChange": True}}]
    for version, actions in enumerate([created, added]):
        s3.put_object(Bucket="lake", Key=f"leaky/_delta_log/{version:020d}.json",
                      Body="\n".join(json.dumps(action) for action in actions).encode())
    token = share(server, "leaks", ["leaky"])
    base = f"{server.endpoint}{SHARING}/shares/leaks/schemas/{SCHEMA}/tables/leaky"

    def answer(capability: str, max_files=None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", "delta-sharing-capabilities": capability}
        if route == "changes":
            params = {"startingVersion": 0, **({"maxFiles": max_files} if max_files else {})}
            return requests.get(f"{base}/changes", params=params, headers=headers, timeout=60)
        body = {"startingVersion": 0, **({"maxFiles": max_files} if max_files else {})}
        return requests.post(f"{base}/query", json=body, headers=headers, timeout=60)

    for max_files in (None, 10):
        told = answer("responseformat=parquet;includeendstreamaction=true", max_files)
        assert told.status_code == 200, told.text
        lines = [json.loads(line) for line in told.text.splitlines()]
        assert [line["add"]["id"] for line in lines[2:-1]] and all(
            "add" in line for line in lines[2:-1])
        end = lines[-1]["endStreamAction"]
        assert end["httpStatusErrorCode"] == 400 and "outside" in end["errorMessage"], end
        assert "nextPageToken" not in end
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            answer("responseformat=parquet", max_files)
