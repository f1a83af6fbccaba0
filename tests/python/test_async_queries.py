"""Issue 12, gap 8: asynchronous queries (`asyncquery=true`) as the Spark connector makes them.

The first request of a snapshot query with the capability and an `idempotency_key` is answered
at once with one `queryStatus` line while the node builds the file list; the client polls
`POST .../queries/{id}` (body `queryId`, `maxFiles`, `pageToken`) until the answer is the
query's own, then pages through it on the same route."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from test_sharing_delta import bearer, share_tables
from test_sharing_pages import file_id, lines_of, start_node, write_partitioned

REPO = Path(__file__).resolve().parents[2]
ASYNC = {"delta-sharing-capabilities": "responseformat=parquet;asyncquery=true"}


def post(url: str, headers: dict, body: dict) -> requests.Response:
    return requests.post(url, headers=headers, json=body, timeout=120)


def query_status(response: requests.Response) -> dict | None:
    """The `queryStatus` of a pending answer, or None for a finished one."""
    assert response.status_code == 200, response.text
    first = json.loads(response.text.splitlines()[0])
    return first.get("queryStatus")


def poll_until_done(table_url: str, headers: dict, query_id: str, body: dict,
                    timeout_s: float = 120) -> tuple[requests.Response, int]:
    """Polls `queries/{id}` as the Spark connector does; returns the answer and the polls."""
    deadline = time.monotonic() + timeout_s
    polls = 0
    while True:
        polls += 1
        response = post(f"{table_url}/queries/{query_id}", headers,
                        {"queryId": query_id, **body})
        status = query_status(response)
        if status is None:
            return response, polls
        assert status["queryId"] == query_id
        assert response.headers["delta-table-version"] == "0"
        assert time.monotonic() < deadline, "the query stays pending"
        time.sleep(0.05)


def synth_table(server, prefix: str, files: int, bucket: str = "lake") -> None:
    subprocess.run(
        [sys.executable, str(REPO / "loadtest" / "synth_delta.py"), "--endpoint",
         server.endpoint, "--access-key", server.access_key, "--secret-key", server.secret_key,
         "--bucket", bucket, "--prefix", prefix, "--files", str(files)],
        check=True, capture_output=True, timeout=300)


def test_async_query_is_pending_then_answers_the_sync_rows(lakeshare_server, tmp_path):
    server, cli = start_node(lakeshare_server, tmp_path)
    write_partitioned(server, "small/", parts=10)
    profile = share_tables(cli, tmp_path, "asyncs", {"small": "small/"})
    endpoint, auth = bearer(profile)
    table_url = f"{endpoint}/shares/asyncs/schemas/s/tables/small"
    headers = {**auth, **ASYNC}

    # The reference server's refusal of an async query without its key.
    refused = post(f"{table_url}/query", headers, {})
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"] == "idempotency_key is required for async query."

    key = str(uuid.uuid4())
    first = post(f"{table_url}/query", headers, {"idempotency_key": key})
    status = query_status(first)
    assert status is not None and status["queryId"], first.text
    assert len(first.text.splitlines()) == 1
    query_id = status["queryId"]

    answer, _ = poll_until_done(table_url, headers, query_id, {})
    lines = lines_of(answer)
    sync_answer = post(f"{table_url}/query", auth, {})
    sync = lines_of(sync_answer)
    assert lines[:2] == sync[:2]
    assert sorted(file_id(line) for line in lines[2:]) == sorted(
        file_id(line) for line in sync[2:])
    assert len(lines) == 12
    assert answer.headers["delta-table-version"] == sync_answer.headers["delta-table-version"]

    # The same key names the same query: now finished, it answers in full.
    again = post(f"{table_url}/query", headers, {"idempotencyKey": key})
    assert query_status(again) is None
    assert sorted(file_id(line) for line in lines_of(again)[2:]) == sorted(
        file_id(line) for line in lines[2:])

    # A list already cached: a new async query is answered at once, in full.
    cached = post(f"{table_url}/query", headers, {"idempotency_key": str(uuid.uuid4())})
    assert query_status(cached) is None and len(lines_of(cached)) == 12

    # Unknown ids, and ids polled with another token, are 404s in the protocol's shape.
    missing = post(f"{table_url}/queries/nope", headers, {"queryId": "nope"})
    assert missing.status_code == 404, missing.text
    assert missing.json()["errorCode"] == "RESOURCE_DOES_NOT_EXIST"
    other = cli.json("table", "share", "token", "create", "local/asyncs")["profile"]
    other_auth = {"Authorization": f"Bearer {other['bearerToken']}"}
    stolen = post(f"{table_url}/queries/{query_id}", {**other_auth, **ASYNC},
                  {"queryId": query_id})
    assert stolen.status_code == 404, stolen.text


def test_async_query_of_a_large_table_pages_every_file_once(lakeshare_server, tmp_path):
    server, cli = start_node(lakeshare_server, tmp_path)
    synth_table(server, "big/", 20_000)
    profile = share_tables(cli, tmp_path, "asyncb", {"big": "big/"})
    endpoint, auth = bearer(profile)
    table_url = f"{endpoint}/shares/asyncb/schemas/s/tables/big"
    headers = {**auth, **ASYNC}

    first = post(f"{table_url}/query", headers,
                 {"idempotency_key": "k1", "maxFiles": 3000})
    status = query_status(first)
    assert status is not None, "a cold 20,000-file list must be answered as pending"
    query_id = status["queryId"]

    answer, _ = poll_until_done(table_url, headers, query_id, {"maxFiles": 3000})
    version = answer.headers["delta-table-version"]
    ids: list[str] = []
    heads = []
    pages = 0
    while True:
        lines = lines_of(answer)
        heads.append(answer.text.splitlines()[:2])
        files = lines[2:-1]
        assert len(files) <= 3000
        ids.extend(file_id(line) for line in files)
        assert answer.headers["delta-table-version"] == version
        pages += 1
        token = lines[-1]["endStreamAction"].get("nextPageToken")
        if not token:
            break
        answer = post(f"{table_url}/queries/{query_id}", headers,
                      {"queryId": query_id, "maxFiles": 3000, "pageToken": token})
        assert answer.status_code == 200, answer.text
        assert query_status(answer) is None
    assert pages == 7
    assert len(ids) == 20_000 and len(set(ids)) == 20_000
    assert all(head == heads[0] for head in heads)


def test_async_query_failure_is_the_polls_error(lakeshare_server, tmp_path):
    server, cli = start_node(lakeshare_server, tmp_path)
    write_partitioned(server, "hist/", parts=2)
    cli.run("table", "share", "create", "local/asyncf", "s", "hist:delta:lake:hist/")
    token = cli.json("table", "share", "token", "create", "local/asyncf")["profile"]
    auth = {"Authorization": f"Bearer {token['bearerToken']}"}
    table_url = f"{token['endpoint']}/shares/asyncf/schemas/s/tables/hist"
    headers = {**auth, **ASYNC}

    sync_error = post(f"{table_url}/query", auth, {"version": 42})
    assert sync_error.status_code == 400, sync_error.text

    first = post(f"{table_url}/query", headers, {"version": 42, "idempotency_key": "v42"})
    status = query_status(first)
    assert status is not None
    poll = post(f"{table_url}/queries/{status['queryId']}", headers,
                {"queryId": status["queryId"]})
    deadline = time.monotonic() + 60
    while poll.status_code == 200 and query_status(poll) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        poll = post(f"{table_url}/queries/{status['queryId']}", headers,
                    {"queryId": status["queryId"]})
    assert poll.status_code == sync_error.status_code, poll.text
    assert poll.json() == sync_error.json()
