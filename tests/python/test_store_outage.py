"""Issue 13: a sharing node's requests to its remote store, seen through a proxy in front of it.

Item 6, the remote store unreachable or answering 503:
A sharing node (`--backend`) reaches its store, a lakeshare storage node, through Debian's nginx,
which the test switches between passing requests on, answering every one `503`, and not running
at all. While the store cannot be read the sharing routes answer `503` with the Delta Sharing
error `TEMPORARILY_UNAVAILABLE` within seconds (bounded retries, never a hang, never a wrong or
empty answer), and the node's file URLs answer S3's `503 ServiceUnavailable`; when the store is back the same node serves the table again without a restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from test_balancer import free_port
from test_remote_backend import StorageNodeAsStore, cli_for, sharing_node, write_table

# Longest a request may take while the store is down: connect timeout 3 s, 2 retries within 5 s.
OUTAGE_ANSWER_SECONDS = 15


class StoreProxy:
    """nginx on a free loopback port in front of one S3 store: `pass`, `refuse` (503) or down."""

    def __init__(self, folder: Path, upstream: str):
        self.folder = folder
        self.upstream = upstream
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        assert Path(self.nginx).exists(), "nginx is needed: apt-get install -y nginx (./test.sh does)"
        (folder / "tmp").mkdir(parents=True, exist_ok=True)

    def _configure(self, mode: str) -> None:
        temp = self.folder / "tmp"
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
        (self.folder / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {self.folder}/nginx.pid;
error_log {self.folder}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format lookups '$request_method $uri $status';
    access_log {self.folder}/access.log lookups;
    client_max_body_size 0;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            {answer}
        }}
    }}
}}
""")

    def start(self, mode: str = "pass") -> None:
        assert self.process is None or self.process.poll() is not None
        self._configure(mode)
        self.process = subprocess.Popen(
            [self.nginx, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"),
             "-e", str(self.folder / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while requests_status(f"{self.endpoint}/minio/health/live") is None:
            assert self.process.poll() is None, self.process.stderr.read().decode()
            assert time.monotonic() < deadline, "nginx did not listen in 10 s"
            time.sleep(0.05)

    def switch(self, mode: str) -> None:
        """Reloads nginx with `mode`; returns once a request sees it."""
        self._configure(mode)
        subprocess.run([self.nginx, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"),
                        "-e", str(self.folder / "error.log"), "-s", "reload"], check=True)
        deadline = time.monotonic() + 10
        while (requests_status(f"{self.endpoint}/minio/health/live") == 503) != (mode == "refuse"):
            assert time.monotonic() < deadline, f"nginx did not switch to {mode}"
            time.sleep(0.05)

    def stop(self) -> None:
        # SIGTERM: the master stops its workers (SIGKILL would leave them serving).
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        deadline = time.monotonic() + 10
        while requests_status(f"{self.endpoint}/minio/health/live") is not None:
            assert time.monotonic() < deadline, "nginx still answers after SIGTERM"
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
    suffix = uuid.uuid4().hex[:8]
    bucket, catalog = f"lake-{suffix}", f"catalog-{suffix}"
    s3 = store.s3_client()
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=catalog)
    write_table(store, f"s3://{bucket}/people", [1, 2, 3])

    class ThroughProxy(StorageNodeAsStore):
        def __init__(self):
            super().__init__(store.server)
            self.endpoint = proxy.endpoint

    node = sharing_node(lakeshare_server, ThroughProxy(), catalog)
    cli = cli_for(tmp_path, "h", node)
    cli.run("table", "share", "create", "n/outage", "s", f"people:delta:{bucket}:people/")
    token = cli.json("table", "share", "token", "create", "n/outage")
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
    suffix = uuid.uuid4().hex[:8]
    bucket, catalog = f"lake-{suffix}", f"catalog-{suffix}"
    s3 = store.s3_client()
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=catalog)
    write_table(store, f"s3://{bucket}/people", [1, 2, 3])

    class ThroughProxy(StorageNodeAsStore):
        def __init__(self):
            super().__init__(store.server)
            self.endpoint = proxy.endpoint

    node = sharing_node(lakeshare_server, ThroughProxy(), catalog)
    cli = cli_for(tmp_path, "h", node)
    cli.run("table", "share", "create", "n/load", "s", f"people:delta:{bucket}:people/")
    secret = cli.json("table", "share", "token", "create", "n/load")["profile"]["bearerToken"]
    url = f"{node.endpoint}/_delta-sharing/v1/shares/load/schemas/s/tables/people/version"

    def ask(session_index: int) -> int:
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
