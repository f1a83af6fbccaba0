"""Fixtures that run the real `lakeshare` binary for the end-to-end suite.

`lakeshare_server(drives=1, ...)` starts `lakeshare server` on 127.0.0.1:0 with fresh temp drive
folders, waits for the `lakeshare: listening on http://127.0.0.1:PORT` line on stderr, and returns
a `LakeshareServer` with the endpoint, drives, credentials and client helpers. Every server a test
starts is stopped when the test ends, and the stderr of every running server is attached to the
report of a failing test. Nothing is skipped silently: a missing binary fails the test.

Environment:
- `LAKESHARE_BIN`: the binary to run (default: `target/release/lakeshare`, honouring
  `CARGO_TARGET_DIR`).
- `LAKESHARE_IO`: `uring`, `threads` or `auto`; passed to the server as `--io` and inherited.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Iterable, Optional
from xml.etree import ElementTree

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
READY_LINE = re.compile(r"lakeshare: listening on (https?)://127\.0\.0\.1:(\d+)")
STARTUP_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30
STDERR_TAIL_LINES = 300

# Servers started and not yet stopped; their stderr goes into the report of a failing test.
_RUNNING_SERVERS: list["LakeshareServer"] = []


def server_binary() -> Path:
    explicit = os.environ.get("LAKESHARE_BIN")
    if explicit:
        return Path(explicit)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    if not target_dir.is_absolute():
        target_dir = REPO_ROOT / target_dir
    return target_dir / "release" / "lakeshare"


def heal_report(result) -> dict:
    """The `admin heal --json` report of a finished `admin_heal`, with snake_case names."""
    assert result.returncode == 0, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(): value for name, value in report.items()}


def wipe_drive(drive: Path) -> None:
    """Empties a drive folder, as if the disk were replaced by a blank one."""
    for child in drive.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def random_bytes(size_bytes: int) -> bytes:
    """Incompressible bytes; a misplaced range or shard never matches by chance."""
    return os.urandom(size_bytes)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_error_code(body: bytes) -> Optional[str]:
    """The `<Code>` of an S3 XML error body, or None when the body is not one."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.split("}")[-1] == "Code":
            return element.text
    return None


class SignedResponse:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def error_code(self) -> Optional[str]:
        return s3_error_code(self.body)

    def __repr__(self) -> str:
        return f"SignedResponse(status={self.status}, body={self.body[:400]!r})"


class LakeshareServer:
    """One `lakeshare server` process over a fixed list of drive folders."""

    def __init__(
        self,
        base_dir: Path,
        drive_count: int,
        parity: Optional[int],
        threads: int,
        root_user: Optional[str],
        root_password: Optional[str],
        extra_args: Iterable[str],
        open_files_limit: Optional[int] = None,
        extra_env: Optional[dict] = None,
    ):
        self.base_dir = base_dir
        self.extra_env = dict(extra_env or {})
        self.drives = [base_dir / f"drive{index}" for index in range(1, drive_count + 1)]
        for drive in self.drives:
            drive.mkdir(parents=True, exist_ok=True)
        self.parity = parity
        self.threads = threads
        self.access_key = root_user or "minioadmin"
        self.secret_key = root_password or "minioadmin"
        self._root_user = root_user
        self._root_password = root_password
        self.extra_args = list(extra_args)
        self.open_files_limit = open_files_limit
        self.process: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.scheme = "http"
        self.stderr_lines: list[str] = []
        self._stderr_lock = threading.Lock()
        self._ready = threading.Event()
        self._reader: Optional[threading.Thread] = None
        self.start_count = 0

    # ----- process control -------------------------------------------------------------------

    def environment(self) -> dict:
        env = dict(os.environ)
        for name in (
            "LAKESHARE_ROOT_USER",
            "LAKESHARE_ROOT_PASSWORD",
            "MINIO_ROOT_USER",
            "MINIO_ROOT_PASSWORD",
        ):
            env.pop(name, None)
        if self._root_user is not None:
            env["LAKESHARE_ROOT_USER"] = self._root_user
        if self._root_password is not None:
            env["LAKESHARE_ROOT_PASSWORD"] = self._root_password
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        command = [str(server_binary()), "server", "--address", "127.0.0.1:0"]
        command += ["--threads", str(self.threads)]
        io_mode = os.environ.get("LAKESHARE_IO")
        if io_mode:
            command += ["--io", io_mode]
        if self.parity is not None:
            command += ["--parity", str(self.parity)]
        command += self.extra_args
        command += [str(drive) for drive in self.drives]
        return command

    def _limit_open_files(self) -> None:
        """Runs in the child before exec: soft and hard open-files limit."""
        limit = self.open_files_limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    def start(self) -> "LakeshareServer":
        binary = server_binary()
        if not binary.exists():
            pytest.fail(
                f"lakeshare binary not found at {binary}: run `cargo build --release` "
                "or set LAKESHARE_BIN",
                pytrace=False,
            )
        assert self.process is None or self.process.poll() is not None, "already running"
        self._ready.clear()
        self.port = None
        self.start_count += 1
        self._log(f"===== start #{self.start_count}: {' '.join(self.command())}")
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.environment(),
            cwd=self.base_dir,
            preexec_fn=self._limit_open_files if self.open_files_limit else None,
        )
        self._reader = threading.Thread(
            target=self._read_stderr, args=(self.process,), daemon=True
        )
        self._reader.start()
        if self not in _RUNNING_SERVERS:
            _RUNNING_SERVERS.append(self)
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self._ready.wait(0.05):
            if self.process.poll() is not None:
                self._reader.join(5)
                pytest.fail(
                    f"lakeshare exited with {self.process.returncode} before it was ready:\n"
                    + self.stderr_tail(),
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"lakeshare printed no ready line in {STARTUP_TIMEOUT_SECONDS} s:\n"
                    + self.stderr_tail(),
                    pytrace=False,
                )
        return self

    def stop(self) -> Optional[int]:
        """SIGTERM and wait; returns the exit code (SIGKILL after a timeout gives -9)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._log("===== did not exit after SIGTERM; sending SIGKILL")
                process.kill()
                process.wait()
        self._join_reader()
        self._log(f"===== exited with {process.returncode}")
        return process.returncode

    def kill9(self) -> None:
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
        self._join_reader()
        self._log("===== killed with SIGKILL")

    def restart(self) -> "LakeshareServer":
        """Stops (if running) and starts again on the same drives; the port may change."""
        if self.process is not None and self.process.poll() is None:
            self.stop()
        return self.start()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr_tail(self, line_count: int = STDERR_TAIL_LINES) -> str:
        with self._stderr_lock:
            return "".join(self.stderr_lines[-line_count:])

    def stderr_text(self) -> str:
        with self._stderr_lock:
            return "".join(self.stderr_lines)

    # ----- endpoints and clients ---------------------------------------------------------------

    @property
    def host_port(self) -> str:
        assert self.port is not None, "server not started"
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host_port}"

    def s3_client(self, secret_key: Optional[str] = None, max_attempts: int = 3, **config):
        """boto3 S3 client: region us-east-1, path-style, SigV4 unless config says otherwise."""
        import boto3
        from botocore.config import Config

        options = {
            "region_name": REGION,
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": max_attempts, "mode": "standard"},
            "signature_version": "s3v4",
            "connect_timeout": 10,
            "read_timeout": 120,
        }
        options.update(config)
        if options.get("signature_version") is None:
            options.pop("signature_version")
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(**options),
        )

    def minio_client(self):
        from minio import Minio

        return Minio(
            self.host_port,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=REGION,
        )

    def storage_options(self) -> dict:
        """deltalake / object_store options for this node."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def signed_request(
        self,
        method: str,
        path: str,
        query: str = "",
        body: bytes = b"",
        headers: Optional[dict] = None,
        secret_key: Optional[str] = None,
        timeout_seconds: float = 60,
    ) -> SignedResponse:
        """SigV4-signs and sends one request verbatim (no client-side path normalisation).

        `path` is the already percent-encoded path (e.g. `/bucket/a%00b`); `query` the raw query.
        """
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = f"{self.endpoint}{path}" + (f"?{query}" if query else "")
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
        credentials = Credentials(self.access_key, secret_key or self.secret_key)
        S3SigV4Auth(credentials, "s3", REGION).add_auth(request)
        target = path + (f"?{query}" if query else "")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_seconds)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", self.host_port)
            for name, value in request.headers.items():
                if name.lower() == "host":
                    continue
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body if body else None)
            response = connection.getresponse()
            return SignedResponse(
                response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
            )
        finally:
            connection.close()

    def admin_heal(self, target: Optional[str] = None, json_output: bool = True):
        """Runs `lakeshare admin heal [TARGET] --endpoint ...`; returns the CompletedProcess."""
        command = [str(server_binary()), "admin", "heal"]
        if target:
            command.append(target)
        command += ["--endpoint", self.endpoint]
        if json_output:
            command.append("--json")
        env = self.environment()
        env["LAKESHARE_ROOT_USER"] = self.access_key
        env["LAKESHARE_ROOT_PASSWORD"] = self.secret_key
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        self._log(f"===== admin heal: rc={result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    # ----- internals -------------------------------------------------------------------------

    def _read_stderr(self, process: subprocess.Popen) -> None:
        assert process.stderr is not None
        for raw_line in iter(process.stderr.readline, b""):
            line = raw_line.decode("utf-8", "replace")
            self._log(line.rstrip("\n"))
            match = READY_LINE.search(line)
            if match and not self._ready.is_set():
                self.scheme = match.group(1)
                self.port = int(match.group(2))
                self._ready.set()
        process.stderr.close()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(10)

    def _log(self, line: str) -> None:
        with self._stderr_lock:
            self.stderr_lines.append(line + "\n")


@pytest.fixture
def lakeshare_server(request, tmp_path_factory):
    """Factory: `lakeshare_server(drives=4, parity=2)` starts a server and returns it.

    The servers stop when the test ends; their drives are deleted when it passed and kept
    (under pytest's temp folder) when it failed.
    """
    started: list[LakeshareServer] = []

    def start(
        drives: int = 1,
        parity: Optional[int] = None,
        threads: int = 2,
        root_user: Optional[str] = "lakeshare-test",
        root_password: Optional[str] = "lakeshare-test-secret-key",
        extra_args: Iterable[str] = (),
        base_dir: Optional[Path] = None,
        start: bool = True,
        open_files_limit: Optional[int] = None,
        extra_env: Optional[dict] = None,
    ) -> LakeshareServer:
        server = LakeshareServer(
            base_dir or tmp_path_factory.mktemp("lakeshare"),
            drives,
            parity,
            threads,
            root_user,
            root_password,
            extra_args,
            open_files_limit,
            extra_env,
        )
        started.append(server)
        return server.start() if start else server

    yield start
    for server in started:
        server.stop()
        if server in _RUNNING_SERVERS:
            _RUNNING_SERVERS.remove(server)
    if not getattr(request.node, "_lakeshare_failed", False):
        for server in started:
            shutil.rmtree(server.base_dir, ignore_errors=True)


@pytest.fixture
def server(lakeshare_server) -> LakeshareServer:
    """One single-drive server."""
    return lakeshare_server()


@pytest.fixture(scope="session")
def ceph_rgw():
    """One single-host Ceph cluster with a RADOS Gateway (`ceph_rgw.CephRgw`) for the session.

    Started by the first test that asks for it, stopped (daemons killed, folder removed) at the
    end of the session. Missing Ceph binaries fail the test; they are never a skip.
    """
    from ceph_rgw import CephRgw

    with CephRgw() as rgw:
        yield rgw


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item._lakeshare_failed = True
        for index, running in enumerate(_RUNNING_SERVERS):
            report.sections.append(
                (f"lakeshare server {index} stderr ({report.when})", running.stderr_tail())
            )


def quote_key(key: str) -> str:
    """Percent-encodes a key the way S3 clients do (slashes kept)."""
    return urllib.parse.quote(key, safe="/~")
