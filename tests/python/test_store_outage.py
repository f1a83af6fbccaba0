"""Issue 13: a sharing node's requests to its remote store, seen through a proxy in front of it.

Item 6, the remote store unreachable or answering 503:
A sharing node (`--backend`) reaches its store, a lakeshare storage node, through Debian's nginx,
which the test switches between passing requests on, answering every one `503`, and not running
at all. While the store cannot be read the sharing routes answer `503` with the Delta Sharing
error `TEMPORARILY_UNAVAILABLE` within seconds (bounded retries, never a hang, never a wrong or
empty answer), and the node's file URLs answer S3's `503 ServiceUnavailable`; when the store is back the same node serves the table again without a restart."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from nginx_server import Nginx
from test_remote_backend import StorageNodeAsStore, cli_for, sharing_node, write_table

# Longest a request may take while the store is down: connect timeout 3 s, 2 retries within 5 s.
OUTAGE_ANSWER_SECONDS = 15


class StoreProxy(Nginx):
    """nginx on a free loopback port in front of one S3 store: `pass`, `refuse` (503) or down.
    Its access log names each request's method, path and status."""

    def __init__(self, folder: Path, upstream: str):
        super().__init__(folder)
        self.upstream = upstream

    def _configure(self, mode: str) -> None:
        answer = (
            f"proxy_pass http://{self.upstream};\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_set_header Host $http_host;\n"
            "            proxy_buffering off;\n"
            "            proxy_request_buffering off;"
            if mode == "pass" else
            "return 503 '<Error><Code>ServiceUnavailable</Code></Error>';"
        )
        self.configure(f"""
    log_format lookups '$request_method $uri $status';
    access_log {self.folder}/access.log lookups;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            {answer}
        }}
    }}""")

    def start(self, mode: str = "pass") -> None:
        self._configure(mode)
        super().start()

    def switch(self, mode: str) -> None:
        """Reloads nginx with `mode`; returns once a request sees it."""
        self._configure(mode)
        self.reload()
        deadline = time.monotonic() + 10
        while (requests_status(f"{self.endpoint}/minio/health/live") == 503) != (mode == "refuse"):
            assert time.monotonic() < deadline, f"nginx did not switch to {mode}"
            time.sleep(0.05)


def requests_status(url: str):
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return None


@pytest.fixture
def proxied_store(lakeshare_server, tmp_path):
    store = StorageNodeAsStore(lakeshare_server(drives=4, parity=2))
    proxy = StoreProxy(tmp_path / "nginx", store.server.host_port)
    proxy.start()
    yield store, proxy
    proxy.stop()


def shared_through_proxy(store, proxy, lakeshare_server, tmp_path, share: str):
    """A `people` table (ids 1-3) written to `store` and shared as SHARE.s.people by a sharing
    node that reaches the store through `proxy`; returns the node, the bucket, the token."""
    suffix = uuid.uuid4().hex[:8]
    bucket, catalog = f"lake-{suffix}", f"catalog-{suffix}"
    s3 = store.s3_client()
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=catalog)
    write_table(store, f"s3://{bucket}/people", [1, 2, 3])
    through_proxy = StorageNodeAsStore(store.server)
    through_proxy.endpoint = proxy.endpoint
    node = sharing_node(lakeshare_server, through_proxy, catalog)
    cli = cli_for(tmp_path, "h", node)
    cli.run("table", "share", "create", f"n/{share}", "s", f"people:delta:{bucket}:people/")
    return node, bucket, cli.json("table", "share", "token", "create", f"n/{share}")


def assert_unavailable(url: str, token: str, method: str = "GET", body=None) -> None:
    started = time.monotonic()
    answer = requests.request(method, url, headers={"Authorization": f"Bearer {token}"},
                              json=body, timeout=OUTAGE_ANSWER_SECONDS + 30)
    took = time.monotonic() - started
    assert answer.status_code == 503, (answer.status_code, answer.text[:500])
    error = answer.json()
    assert error["errorCode"] == "TEMPORARILY_UNAVAILABLE", error
    assert error["message"], error
    assert took < OUTAGE_ANSWER_SECONDS, f"a 503 took {took:.1f} s"


def test_store_outage_is_a_clear_503_and_the_node_recovers(proxied_store, lakeshare_server,
                                                          tmp_path):
    import delta_sharing

    store, proxy = proxied_store
    node, bucket, token = shared_through_proxy(store, proxy, lakeshare_server, tmp_path, "outage")
    profile = tmp_path / "outage.share"
    profile.write_text(json.dumps(token["profile"]))
    secret = token["profile"]["bearerToken"]
    table = f"{node.endpoint}/_delta-sharing/v1/shares/outage/schemas/s/tables/people"
    assert sorted(delta_sharing.load_as_pandas(f"{profile}#outage.s.people")["id"]) == [1, 2, 3]
    answer = requests.post(f"{table}/query", json={}, timeout=60,
                           headers={"Authorization": f"Bearer {secret}"})
    file_url = json.loads(answer.text.splitlines()[2])["file"]["url"]
    assert file_url.startswith(node.endpoint), file_url
    assert requests.get(file_url, timeout=30).status_code == 200

    for outage in ("refuse", "down"):
        if outage == "refuse":
            proxy.switch("refuse")
        else:
            proxy.stop()
        # The latest snapshot is looked up again once the freshness bound (1 s) has passed.
        time.sleep(1.2)
        assert_unavailable(f"{table}/version", secret)
        assert_unavailable(f"{table}/metadata", secret)
        assert_unavailable(f"{table}/query", secret, "POST", {})
        # A file URL the node made is a 503 in S3's shape, never a 404 or an empty 200.
        started = time.monotonic()
        fetched = requests.get(file_url, timeout=OUTAGE_ANSWER_SECONDS + 30)
        assert fetched.status_code == 503, (fetched.status_code, fetched.text[:300])
        assert "<Code>ServiceUnavailable</Code>" in fetched.text
        assert time.monotonic() - started < OUTAGE_ANSWER_SECONDS
        # The catalog is kept while it cannot be re-read: the token is still known.
        listed = requests.get(f"{node.endpoint}/_delta-sharing/v1/shares", timeout=30,
                              headers={"Authorization": f"Bearer {secret}"})
        assert listed.status_code == 200, listed.text
        # Back: the same process serves again, with a commit made meanwhile.
        if outage == "refuse":
            proxy.switch("pass")
        else:
            proxy.start("pass")
        write_table(store, f"s3://{bucket}/people", [4], mode="append")
        deadline = time.monotonic() + 10
        while True:
            answer = requests.get(f"{table}/version", timeout=30,
                                  headers={"Authorization": f"Bearer {secret}"})
            if answer.status_code == 200:
                break
            assert answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, "the node did not recover within 10 s"
            time.sleep(0.2)
        assert requests.get(file_url, timeout=30).status_code == 200
        rows = delta_sharing.load_as_pandas(f"{profile}#outage.s.people")
        expected = [1, 2, 3, 4] if outage == "refuse" else [1, 2, 3, 4, 4]
        assert sorted(rows["id"]) == expected
    assert node.is_running()


def test_latest_version_lookups_are_one_per_bound_under_load(proxied_store, lakeshare_server,
                                                             tmp_path):
    """Found measuring over Ceph RGW: 256 connections asking `version` sent ~113 `HEAD`s of the
    next commit a second (up to 704 in one second) and built the same snapshot 256 times."""
    from concurrent.futures import ThreadPoolExecutor

    store, proxy = proxied_store
    node, _, token = shared_through_proxy(store, proxy, lakeshare_server, tmp_path, "load")
    secret = token["profile"]["bearerToken"]
    url = f"{node.endpoint}/_delta-sharing/v1/shares/load/schemas/s/tables/people/version"

    def ask(session_index: int) -> set:
        session = requests.Session()
        statuses = set()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            answer = session.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
            statuses.add(answer.status_code)
            assert answer.headers.get("delta-table-version") == "0", answer.text
        return statuses

    log = proxy.folder / "access.log"
    before = len(log.read_text().splitlines())
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        statuses = set().union(*pool.map(ask, range(32)))
    took = time.monotonic() - started
    assert statuses == {200}, statuses
    lines = log.read_text().splitlines()[before:]
    next_commit = [line for line in lines
                   if "_delta_log/00000000000000000001.json" in line and line.startswith("HEAD")]
    # One lookup per second of load (and one at the start), with a little slack for timing.
    assert 1 <= len(next_commit) <= took + 3, (len(next_commit), took, next_commit[:5])
    snapshot_reads = [line for line in lines if line.startswith("GET") and "_delta_log" in line]
    assert len(snapshot_reads) <= 2 * (took + 3), (len(snapshot_reads), snapshot_reads[:5])
