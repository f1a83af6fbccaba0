"""Debian's nginx as a test server: one master and one worker on a loopback port, everything it
writes (pid, logs, temp files) in the test's own folder. `Balancer` (test_balancer.py) and
`StoreProxy` (test_store_outage.py) give it their `http {}` contents."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Nginx:
    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        assert Path(self.binary).exists(), \
            "nginx is needed: apt-get install -y nginx (./test.sh does)"
        (folder / "tmp").mkdir(parents=True, exist_ok=True)

    def configure(self, http: str) -> None:
        """Writes the configuration; `http` is the inside of its `http {}` block."""
        temp = self.folder / "tmp"
        (self.folder / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {self.folder}/nginx.pid;
error_log {self.folder}/error.log warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{http}
}}
""")

    def _command(self) -> list[str]:
        return [self.binary, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"),
                "-e", str(self.folder / "error.log")]

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not self.listening():
            assert self.process.poll() is None, self.process.stderr.read().decode()
            assert time.monotonic() < deadline, "nginx did not listen in 10 s"
            time.sleep(0.05)

    def reload(self) -> None:
        subprocess.run(self._command() + ["-s", "reload"], check=True)

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        # SIGTERM: the master stops its workers (SIGKILL would leave them serving).
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        deadline = time.monotonic() + 10
        while self.listening():
            assert time.monotonic() < deadline, "nginx still listens after SIGTERM"
            time.sleep(0.05)
