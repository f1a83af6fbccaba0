"""Issue 4: `maxFiles`/`pageToken` pagination of `/query`, the consistency of a paged read
while a writer commits, and the cached active-file lists (incremental updates, a cache too
small to hold anything) checked against deltalake's own file lists."""

from __future__ import annotations

import json
import threading
import urllib.parse

import pytest
import requests

from test_sharing_catalog import Cli
from test_sharing_delta import bearer, share_tables


def start_node(lakeshare_server, tmp_path, extra_args=()):
    server = lakeshare_server(drives=4, parity=2, extra_args=list(extra_args))
    cli = Cli(tmp_path / "home")
    cli.home.mkdir()
    cli.run("alias", "set", "local", server.endpoint, server.access_key, server.secret_key)
    server.s3_client().create_bucket(Bucket="lake")
    return server, cli


@pytest.fixture(params=["cached", "uncached"])
def node(request, lakeshare_server, tmp_path):
    """A node with the default cache, and one whose cache cannot hold any file list."""
    extra = ["--cache-size", "1"] if request.param == "uncached" else []
    return start_node(lakeshare_server, tmp_path, extra)


def write_partitioned(server, location: str, parts: int = 30, rows_per_part: int = 3):
    import pandas as pd
    from deltalake import write_deltalake

    frame = pd.DataFrame({
        "part": [f"p{index:02d}" for index in range(parts) for _ in range(rows_per_part)],
        "n": list(range(parts * rows_per_part)),
    })
    write_deltalake(f"s3://lake/{location}", frame, partition_by=["part"],
                    storage_options=server.storage_options())


def post(url: str, headers: dict, body: dict) -> requests.Response:
    response = requests.post(url, headers=headers, json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response


def lines_of(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines()]


def file_id(line: dict) -> str:
    return line["file"]["id"]


def page_through(url: str, headers: dict, body: dict, max_files: int):
    """All pages of a query: (pages of file lines, head lines of each page, versions)."""
    pages, heads, versions = [], [], []
    token = None
    while True:
        request = {**body, "maxFiles": max_files}
        if token:
            request["pageToken"] = token
        response = post(url, headers, request)
        lines = lines_of(response)
        end = lines[-1]["endStreamAction"]
        files = lines[2:-1]
        assert len(files) <= max_files
        if files:
            assert end["minUrlExpirationTimestamp"] == min(
                line["file"]["expirationTimestamp"] for line in files)
        pages.append(files)
        heads.append(response.text.splitlines()[:2])
        versions.append(response.headers["delta-table-version"])
        token = end.get("nextPageToken")
        assert token != ""
        if token is None:
            return pages, heads, versions
        assert len(pages) < 1000, "pagination does not end"


@pytest.mark.parametrize("response_format", ["parquet", "delta"])
def test_pages_cover_the_snapshot_once(node, tmp_path, response_format):
    server, cli = node
    write_partitioned(server, "paged/")
    profile = share_tables(cli, tmp_path, "pages", {"paged": "paged/"})
    endpoint, headers = bearer(profile)
    headers = {**headers, "delta-sharing-capabilities": f"responseformat={response_format}"}
    url = f"{endpoint}/shares/pages/schemas/s/tables/paged/query"
    whole = [file_id(line) for line in lines_of(post(url, headers, {}))[2:]]
    assert len(whole) == 30

    pages, heads, versions = page_through(url, headers, {}, 7)
    assert [len(page) for page in pages] == [7, 7, 7, 7, 2]
    assert sorted(file_id(line) for page in pages for line in page) == sorted(whole)
    assert all(head == heads[0] for head in heads) and len(set(versions)) == 1

    # Exactly one page: no token.
    one = lines_of(post(url, headers, {"maxFiles": 30}))
    assert "nextPageToken" not in one[-1]["endStreamAction"] and len(one) == 33

    # Filters apply across pages: the pages hold exactly the unpaged filtered answer.
    hint = json.dumps({"op": "or", "children": [
        {"op": "equal", "children": [
            {"op": "column", "name": "part", "valueType": "string"},
            {"op": "literal", "value": f"p{index:02d}", "valueType": "string"}]}
        for index in (1, 5, 9, 13, 17)]})
    filtered = [file_id(line) for line in
                lines_of(post(url, headers, {"jsonPredicateHints": hint}))[2:]]
    assert len(filtered) == 5
    pages, _, _ = page_through(url, headers, {"jsonPredicateHints": hint}, 2)
    assert sorted(file_id(line) for page in pages for line in page) == sorted(filtered)

    # limitHint counts records across pages (3 rows per file: 7 rows need 3 files).
    pages, _, _ = page_through(url, headers, {"limitHint": 7}, 2)
    assert [len(page) for page in pages] == [2, 1]
    unpaged = lines_of(post(url, headers, {"limitHint": 7}))[2:]
    assert [file_id(line) for page in pages for line in page] == [
        file_id(line) for line in unpaged]

    # The page size may change between pages; nothing else may.
    first = lines_of(post(url, headers, {"maxFiles": 4}))
    token = first[-1]["endStreamAction"]["nextPageToken"]
    resized = lines_of(post(url, headers, {"maxFiles": 26, "pageToken": token}))
    assert len(resized) == 29 and "nextPageToken" not in resized[-1]["endStreamAction"]
    assert sorted(file_id(line) for line in first[2:-1] + resized[2:-1]) == sorted(whole)

    def refused(body: dict, text: str):
        response = requests.post(url, headers=headers, json=body, timeout=60)
        assert response.status_code == 400, response.text
        assert response.json()["errorCode"] == "INVALID_PARAMETER_VALUE"
        assert text in response.json()["message"], response.text

    refused({"maxFiles": 4, "pageToken": token, "jsonPredicateHints": hint},
            "Query parameter mismatch detected for the next page query")
    refused({"maxFiles": 4, "pageToken": token[:-2]}, "Error decoding the page token")
    refused({"maxFiles": 4, "pageToken": "garbage"}, "Error decoding the page token")
    refused({"maxFiles": 4, "pageToken": token, "includeRefreshToken": True},
            "includeRefreshToken must be used in the first page request")
    refused({"maxFiles": 0}, "maxFiles must be positive")

    write_partitioned(server, "other/", parts=3)
    cli.run("table", "share", "update", "local/pages", "--add", "s:other:delta:lake:other/")
    other_url = f"{endpoint}/shares/pages/schemas/s/tables/other/query"
    other = requests.post(other_url, headers=headers, json={"maxFiles": 4, "pageToken": token},
                          timeout=60)
    assert other.status_code == 400
    assert "does not match the table being queried" in other.json()["message"]


def test_paging_while_a_writer_commits_stays_on_one_version(node, tmp_path):
    import pandas as pd
    from deltalake import write_deltalake

    server, cli = node
    options = server.storage_options()
    write_partitioned(server, "busy/", parts=24)
    profile = share_tables(cli, tmp_path, "busy", {"busy": "busy/"})
    endpoint, headers = bearer(profile)
    url = f"{endpoint}/shares/busy/schemas/s/tables/busy/query"
    pinned = post(url, headers, {"version": 0})
    pinned_ids = sorted(file_id(line) for line in lines_of(pinned)[2:])

    first = post(url, headers, {"maxFiles": 5})
    assert first.headers["delta-table-version"] == "0"
    token = lines_of(first)[-1]["endStreamAction"]["nextPageToken"]
    seen = [file_id(line) for line in lines_of(first)[2:-1]]

    stop = threading.Event()
    commits = []

    def writer():
        round_index = 0
        while not stop.is_set() and round_index < 8:
            mode = "overwrite" if round_index % 3 == 2 else "append"
            frame = pd.DataFrame({"part": ["p99"], "n": [1000 + round_index]})
            write_deltalake("s3://lake/busy/", frame, mode=mode, partition_by=["part"],
                            storage_options=options)
            commits.append(mode)
            round_index += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while token:
            response = post(url, headers, {"maxFiles": 5, "pageToken": token})
            assert response.headers["delta-table-version"] == "0"
            lines = lines_of(response)
            assert response.text.splitlines()[:2] == first.text.splitlines()[:2]
            seen.extend(file_id(line) for line in lines[2:-1])
            token = lines[-1]["endStreamAction"].get("nextPageToken")
    finally:
        stop.set()
        thread.join()
    assert sorted(seen) == pinned_ids
    assert commits, "the writer committed nothing"
    latest = post(url, headers, {})
    assert latest.headers["delta-table-version"] == str(len(commits))


def shared_keys(lines: list[dict], table: str) -> list[str]:
    """Object keys (relative to the table root) of the file lines' presigned URLs."""
    keys = []
    for line in lines:
        if "file" not in line:
            continue
        url = line["file"].get("url") or line["file"]["deltaSingleAction"]["add"]["path"]
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        prefix = f"/lake/{table}/"
        assert path.startswith(prefix), path
        keys.append(path[len(prefix):])
    return sorted(keys)


def test_file_lists_follow_every_kind_of_commit(node, tmp_path):
    """Each step's latest answer (served from a list updated incrementally, or rebuilt)
    equals deltalake's file list at that version; so do past versions afterwards."""
    import pandas as pd
    from deltalake import DeltaTable, write_deltalake

    server, cli = node
    options = server.storage_options()
    uri = "s3://lake/steps/"
    write_partitioned(server, "steps/", parts=6)
    profile = share_tables(cli, tmp_path, "steps", {"steps": "steps/"})
    endpoint, headers = bearer(profile)
    url = f"{endpoint}/shares/steps/schemas/s/tables/steps/query"

    def expected(version=None) -> list[str]:
        table = DeltaTable(uri, storage_options=options, version=version)
        paths = table.get_add_actions(flatten=True).column("path").to_pylist()
        return sorted(urllib.parse.unquote(path) for path in paths)

    def step(action):
        action()
        response = post(url, headers, {})
        assert shared_keys(lines_of(response), "steps") == expected(), action.__name__
        return int(response.headers["delta-table-version"])

    def append():
        write_deltalake(uri, pd.DataFrame({"part": ["p01", "p07"], "n": [1, 2]}),
                        mode="append", partition_by=["part"], storage_options=options)

    def delete_rows():
        DeltaTable(uri, storage_options=options).delete("n < 4")

    def compact():
        DeltaTable(uri, storage_options=options).optimize.compact()

    def checkpoint():
        DeltaTable(uri, storage_options=options).create_checkpoint()

    def overwrite_partition():
        write_deltalake(uri, pd.DataFrame({"part": ["p02"], "n": [7]}), mode="overwrite",
                        partition_by=["part"], predicate="part = 'p02'",
                        storage_options=options)

    versions = [step(lambda: None)]
    for action in (append, append, delete_rows, checkpoint, append, compact, overwrite_partition,
                   append, checkpoint, append):
        versions.append(step(action))
    assert versions[-1] > versions[0]
    for version in sorted(set(versions)):
        response = post(url, headers, {"version": version})
        assert shared_keys(lines_of(response), "steps") == expected(version), version
