"""A single-host Ceph cluster with a RADOS Gateway, for tests that need a real remote S3 store.

`CephRgw()` (a context manager) starts, in one temp folder and on free loopback ports: a monitor,
one memstore OSD and `radosgw` (beast frontend), with cephx on and no manager daemon (S3 does not
need one). It then creates an S3 user and waits until a signed `ListBuckets` answers. It exposes
`endpoint`, `access_key`, `secret_key`, `region`, `s3_client()` and `signed_request()` (SigV4 on a
raw request, for headers boto3 does not send as given, such as an unquoted `If-Match`).

On exit, and on any failure while starting, every daemon it started is killed and the folder is
removed. Every step has a deadline; a missed one raises `CephRgwError` with the tail of the daemon
logs. Missing Ceph binaries raise `CephRgwError` naming the Debian packages: nothing is skipped.

The recipe is `../shared/notes/ceph-rgw.md` (checked with Ceph 16.2 "pacific" from Debian 12).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

DEBIAN_PACKAGES = ("ceph-mon", "ceph-osd", "radosgw", "ceph-common")
BINARIES = (
    "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "ceph-authtool", "monmaptool"
)
REGION = "us-east-1"
STARTUP_TIMEOUT_SECONDS = 120
COMMAND_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 15
LOG_TAIL_LINES = 40
MEMSTORE_DEVICE_BYTES = 2 * 1024**3


class CephRgwError(RuntimeError):
    """Ceph could not be started (or its binaries are missing)."""


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def free_port() -> int:
    """A loopback port free right now (the daemons bind it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid: int) -> Optional[int]:
    """Resident memory of a process in KiB, None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no such file)"
    return "\n".join(text.splitlines()[-lines:])


class CephRgw:
    """One mon, one memstore OSD and one radosgw under `base_dir` (a fresh temp folder)."""

    def __init__(
        self,
        base_dir: Optional[Path] = None,
        startup_timeout_seconds: float = STARTUP_TIMEOUT_SECONDS,
        memstore_device_bytes: int = MEMSTORE_DEVICE_BYTES,
        access_key: str = "lakeshare-ceph-test",
        secret_key: str = "lakeshare-ceph-test-secret-key",
    ):
        self._own_dir = base_dir is None
        # A fresh temp folder unless given; made by start(), once the binaries are known present.
        self.base_dir: Optional[Path] = Path(base_dir) if base_dir else None
        self.startup_timeout_seconds = startup_timeout_seconds
        self.memstore_device_bytes = memstore_device_bytes
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = REGION
        self.fsid = str(uuid.uuid4())
        self.mon_port = free_port()
        self.mon_port_v2 = free_port()
        self.rgw_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.rgw_port}"
        # Daemon name -> process (each runs in the foreground, in its own session).
        self.processes: dict[str, subprocess.Popen] = {}
        # Seconds from the first command to each milestone.
        self.timings: dict[str, float] = {}
        self._started_at = 0.0
        self._deadline = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "CephRgw":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "CephRgw":
        missing = missing_binaries()
        if missing:
            raise CephRgwError(
                f"Ceph binaries missing ({', '.join(missing)}): install the Debian packages "
                f"`apt-get install -y {' '.join(DEBIAN_PACKAGES)}` (./test.sh does when root)"
            )
        self._started_at = time.monotonic()
        self._deadline = self._started_at + self.startup_timeout_seconds
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="ceph-rgw-"))
        self.conf = self.base_dir / "ceph.conf"
        try:
            self._write_config()
            self._start_mon()
            self._start_osd()
            self._start_rgw()
            self._create_user()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kills every daemon this cluster started, then removes its folder. Idempotent."""
        if self.base_dir is None:
            return
        # SIGKILL straight away: all state is thrown away with the folder, and on SIGTERM the
        # daemons take about 5 s to shut down.
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for process in self.processes.values():
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                pass  # unkillable (D state): nothing more a test can do; the folder still goes
        # A daemon that forked away despite `-f` still leaves its pid file; kill it only while
        # that pid still runs with this cluster's ceph.conf (a pid can be reused by a stranger).
        for pid_file in (self.base_dir / "run").glob("*.pid"):
            try:
                pid = int(pid_file.read_text().strip())
                command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if str(self.conf).encode() in command_line:
                    os.kill(pid, signal.SIGKILL)
            except (ValueError, OSError):
                pass
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- what the tests use ------------------------------------------------------------------

    def s3_client(self, **config):
        """boto3 S3 client: path-style, SigV4, checksums only when an operation requires them
        (RGW 16.2 does not accept the aws-chunked trailer checksums newer botocore sends)."""
        import boto3
        from botocore.config import Config

        options = {
            "region_name": self.region,
            "s3": {"addressing_style": "path"},
            "signature_version": "s3v4",
            "retries": {"max_attempts": 3, "mode": "standard"},
            "connect_timeout": 10,
            "read_timeout": 120,
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
        options.update(config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(**options),
        )

    def signed_request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Optional[dict] = None,
        params: Optional[dict] = None,
        timeout_seconds: float = 60,
    ):
        """Sends one SigV4-signed request with exactly the given headers; a `requests.Response`.

        `path` is the percent-encoded path, e.g. `/bucket/key`.
        """
        import requests
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        request = AWSRequest(
            method=method,
            url=f"{self.endpoint}{path}",
            data=body,
            headers=dict(headers or {}),
            params=dict(params or {}),
        )
        S3SigV4Auth(Credentials(self.access_key, self.secret_key), "s3", self.region).add_auth(
            request
        )
        prepared = request.prepare()
        return requests.request(
            method,
            prepared.url,
            data=body,
            headers=dict(prepared.headers.items()),
            timeout=timeout_seconds,
        )

    def daemon_rss_kib(self) -> dict[str, Optional[int]]:
        return {name: rss_kib(process.pid) for name, process in self.processes.items()}

    def log_tails(self, lines: int = LOG_TAIL_LINES) -> str:
        parts = []
        for log in sorted((self.base_dir / "log").glob("*")):
            parts.append(f"--- {log.name} (last {lines} lines) ---\n{tail(log, lines)}")
        return "\n".join(parts) or "(no logs)"

    # -- steps -------------------------------------------------------------------------------

    def _mark(self, milestone: str) -> None:
        self.timings[milestone] = round(time.monotonic() - self._started_at, 2)

    def _fail(self, message: str) -> CephRgwError:
        return CephRgwError(f"{message}\n{self.log_tails()}")

    def _remaining(self) -> float:
        return max(1.0, self._deadline - time.monotonic())

    def _run(self, *args: str, timeout: Optional[float] = None) -> str:
        """Runs a Ceph command to completion; its stdout, or CephRgwError with its output."""
        budget = min(timeout or COMMAND_TIMEOUT_SECONDS, self._remaining())
        try:
            result = subprocess.run(
                args, capture_output=True, text=True, timeout=budget, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise self._fail(f"`{' '.join(args)}` did not finish within {budget:.0f} s") from None
        if result.returncode != 0:
            raise self._fail(
                f"`{' '.join(args)}` exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _ceph(self, *args: str) -> str:
        return self._run("ceph", "-c", str(self.conf), "--connect-timeout", "10", *args)

    def _spawn(self, name: str, *args: str) -> None:
        output = open(self.base_dir / "log" / f"{name}.stdout", "wb")
        try:
            self.processes[name] = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            output.close()

    def _wait_for(self, what: str, probe, interval_seconds: float = 0.2):
        """Polls `probe()` until it returns a true value; fails on the deadline or a dead daemon."""
        last_error = None
        while time.monotonic() < self._deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise self._fail(
                        f"{name} exited with {process.returncode} while waiting for {what}"
                    )
            try:
                value = probe()
                if value:
                    return value
            except Exception as error:  # the probe's failure is the reason we keep polling
                last_error = error
            time.sleep(interval_seconds)
        raise self._fail(
            f"{what} not reached within {self.startup_timeout_seconds:.0f} s of the first command"
            f" (last probe error: {last_error!r})"
        )

    def _write_config(self) -> None:
        for sub in ("run", "log", "crash", "mon.a", "osd.0", "rgw"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        d = self.base_dir
        mon_addrs = f"[v2:127.0.0.1:{self.mon_port_v2},v1:127.0.0.1:{self.mon_port}]"
        self.conf.write_text(
            f"""[global]
fsid = {self.fsid}
mon host = {mon_addrs}
public addr = 127.0.0.1
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
crash dir = {d}/crash
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon data avail warn = 1
mon data avail crit = 0

[mon]
mon data = {d}/mon.$id

[osd]
osd data = {d}/osd.$id
keyring = {d}/osd.$id/keyring
osd objectstore = memstore
memstore device bytes = {self.memstore_device_bytes}

[client.rgw]
keyring = {d}/rgw/keyring
rgw data = {d}/rgw
rgw frontends = beast endpoint=127.0.0.1:{self.rgw_port}
"""
        )
        self._mon_addrs = mon_addrs

    def _start_mon(self) -> None:
        keyring = str(self.base_dir / "keyring")
        self._run("ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon.",
                  "--cap", "mon", "allow *")
        self._run("ceph-authtool", keyring, "--gen-key", "-n", "client.admin", "--cap", "mon",
                  "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *")
        monmap = str(self.base_dir / "monmap")
        self._run("monmaptool", "--create", "--clobber", "--fsid", self.fsid, "--addv", "a",
                  self._mon_addrs, monmap)
        self._run("ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", monmap,
                  "--keyring", keyring)
        self._spawn("mon.a", "ceph-mon", "-f", "-c", str(self.conf), "-i", "a")
        self._wait_for("the monitor answering `ceph -s`", lambda: self._ceph("-s") is not None)
        self._mark("mon_up")

    def _start_osd(self) -> None:
        osd_uuid = str(uuid.uuid4())
        self._ceph("osd", "new", osd_uuid, "0")
        self._ceph("auth", "get-or-create", "osd.0", "mon", "allow profile osd", "osd", "allow *",
                   "mgr", "allow profile osd", "-o", str(self.base_dir / "osd.0" / "keyring"))
        self._run("ceph-osd", "-c", str(self.conf), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self._spawn("osd.0", "ceph-osd", "-f", "-c", str(self.conf), "-i", "0")
        self._wait_for("one OSD up", lambda: " 1 up" in self._ceph("osd", "stat"))
        self._mark("osd_up")

    def _start_rgw(self) -> None:
        import requests

        self._ceph("auth", "get-or-create", "client.rgw", "mon", "allow rw", "osd", "allow rwx",
                   "-o", str(self.base_dir / "rgw" / "keyring"))
        self._spawn("client.rgw", "radosgw", "-f", "-c", str(self.conf), "-n", "client.rgw")
        self._wait_for(
            f"radosgw answering HTTP on {self.endpoint}",
            lambda: requests.get(self.endpoint + "/", timeout=2).status_code == 200,
        )
        self._mark("rgw_http")

    def _create_user(self) -> None:
        self._run("radosgw-admin", "-c", str(self.conf), "user", "create",
                  "--uid", "lakeshare-test", "--display-name", "lakeshare test",
                  "--access-key", self.access_key, "--secret", self.secret_key)
        client = self.s3_client(retries={"max_attempts": 1, "mode": "standard"})
        self._wait_for("a signed ListBuckets answering", lambda: client.list_buckets() is not None)
        self._mark("s3_ready")


if __name__ == "__main__":
    # `python tests/python/ceph_rgw.py`: start a cluster, print its timings and memory, stop it.
    with CephRgw() as rgw:
        print(f"endpoint {rgw.endpoint}")
        print(f"timings (s from first command): {rgw.timings}")
        print(f"RSS (KiB): {rgw.daemon_rss_kib()}")
