"""Issue 12, item 10: many readers query the same large table at once (as 16 Spark tasks do).

A 100,000-file table (log only, `loadtest/synth_delta.py`) on a node that has listed nothing
yet: 16 whole-snapshot queries start together (they race for the file-list build), then 16
paged readers walk the same snapshot together. Every answer must be complete (200, protocol,
metaData, every file once) and all answers must name the same files."""

from __future__ import annotations

import json
import threading

import requests

from test_async_queries import synth_table
from test_sharing_delta import bearer, share_tables
from test_sharing_pages import start_node

FILES = 100_000
READERS = 16


def file_ids(text: str) -> list[str]:
    lines = text.splitlines()
    assert json.loads(lines[0]).keys() == {"protocol"}, lines[0][:200]
    assert json.loads(lines[1]).keys() == {"metaData"}, lines[1][:200]
    ids = []
    for line in lines[2:]:
        if line.startswith('{"file":'):
            ids.append(json.loads(line)["file"]["id"])
        else:
            assert line.startswith('{"endStreamAction":'), line[:200]
    return ids


def run_together(work) -> list:
    """Runs `work(index)` on READERS threads released at the same moment."""
    start = threading.Barrier(READERS)
    results: list = [None] * READERS

    def reader(index: int) -> None:
        start.wait()
        try:
            results[index] = work(index)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            results[index] = error

    threads = [threading.Thread(target=reader, args=(index,)) for index in range(READERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    failures = [result for result in results if isinstance(result, BaseException)]
    assert not failures, failures[:3]
    return results


def test_sixteen_readers_of_one_large_table_get_the_same_whole_answer(lakeshare_server,
                                                                      tmp_path):
    server, cli = start_node(lakeshare_server, tmp_path)
    synth_table(server, "wide/", FILES)
    profile = share_tables(cli, tmp_path, "crowd", {"wide": "wide/"})
    endpoint, auth = bearer(profile)
    url = f"{endpoint}/shares/crowd/schemas/s/tables/wide/query"

    def whole(_: int) -> tuple[str, list[str]]:
        response = requests.post(url, headers=auth, json={}, timeout=600)
        assert response.status_code == 200, response.text[:300]
        return response.headers["delta-table-version"], file_ids(response.text)

    answers = run_together(whole)
    versions = {version for version, _ in answers}
    assert len(versions) == 1, versions
    expected = sorted(answers[0][1])
    assert len(expected) == FILES and len(set(expected)) == FILES
    for _, ids in answers:
        assert len(ids) == FILES and sorted(ids) == expected

    def paged(_: int) -> list[str]:
        ids, token = [], None
        while True:
            body = {"maxFiles": 20_000, **({"pageToken": token} if token else {})}
            response = requests.post(url, headers=auth, json=body, timeout=600)
            assert response.status_code == 200, response.text[:300]
            ids.extend(file_ids(response.text))
            token = json.loads(response.text.splitlines()[-1])["endStreamAction"].get(
                "nextPageToken")
            if not token:
                return ids

    for ids in run_together(paged):
        assert len(ids) == FILES and sorted(ids) == expected
