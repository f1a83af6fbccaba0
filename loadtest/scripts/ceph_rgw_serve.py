#!/usr/bin/env python3
"""Run the tests' single-host Ceph cluster with a RADOS Gateway (tests/python/ceph_rgw.py) for a
shell script: start it, print one JSON line, keep it up until a signal, then stop it.

    .venv/bin/python loadtest/scripts/ceph_rgw_serve.py [--memstore-bytes N]
        [--frontend-options 'tcp_nodelay=1'] >rgw.json &

The JSON line on stdout (flushed as soon as S3 answers) holds `endpoint`, `access_key`,
`secret_key`, `region`, `frontend_options`, `timings` (seconds from the first command to each milestone), `pids`
(daemon name -> pid) and `base_dir`. SIGTERM, SIGINT or SIGHUP stop it: every daemon is killed
and its folder removed (CephRgw.stop). So does the death of the parent process (checked every
0.5 s), so an interrupted script leaves no daemon behind. A start that fails prints the error
and the daemon logs' tails on stderr and exits 1.

Nothing of the fixture is copied here: the recipe lives in tests/python/ceph_rgw.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "python"))

from ceph_rgw import MEMSTORE_DEVICE_BYTES, CephRgw, CephRgwError  # noqa: E402

PARENT_POLL_SECONDS = 0.5


class TunedCephRgw(CephRgw):
    """CephRgw with extra options on its `rgw frontends = beast ...` line (e.g. tcp_nodelay=1)."""

    def __init__(self, frontend_options: str = "", **kwargs):
        super().__init__(**kwargs)
        self.frontend_options = frontend_options

    def _write_config(self) -> None:
        super()._write_config()
        if self.frontend_options:
            line = f"rgw frontends = beast endpoint=127.0.0.1:{self.rgw_port}"
            text = self.conf.read_text()
            if line not in text:
                raise CephRgwError(f"no `{line}` in {self.conf} to add options to")
            self.conf.write_text(text.replace(line, f"{line} {self.frontend_options}"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memstore-bytes", type=int, default=MEMSTORE_DEVICE_BYTES,
                        help="size of the memstore OSD's device (it lives in RAM)")
    parser.add_argument("--frontend-options", default="",
                        help="appended to the beast frontend line, e.g. 'tcp_nodelay=1'")
    args = parser.parse_args(argv)

    stop_requested = False

    def request_stop(signum, _frame):
        nonlocal stop_requested
        stop_requested = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, request_stop)

    parent = os.getppid()
    rgw = TunedCephRgw(frontend_options=args.frontend_options,
                       memstore_device_bytes=args.memstore_bytes)
    try:
        rgw.start()
    except CephRgwError as error:
        print(f"ceph_rgw_serve: {error}", file=sys.stderr)
        return 1
    try:
        print(json.dumps({
            "endpoint": rgw.endpoint,
            "access_key": rgw.access_key,
            "secret_key": rgw.secret_key,
            "region": rgw.region,
            "frontend_options": rgw.frontend_options,
            "timings": rgw.timings,
            "pids": {name: process.pid for name, process in rgw.processes.items()},
            "base_dir": str(rgw.base_dir),
        }), flush=True)
        while not stop_requested and os.getppid() == parent:
            dead = [name for name, process in rgw.processes.items() if process.poll() is not None]
            if dead:
                print(f"ceph_rgw_serve: {', '.join(dead)} exited:\n{rgw.log_tails()}",
                      file=sys.stderr)
                return 1
            time.sleep(PARENT_POLL_SECONDS)
    finally:
        rgw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
