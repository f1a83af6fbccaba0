#!/usr/bin/env python3
"""Run the tests' single-host Ceph cluster with a RADOS Gateway (tests/python/ceph_rgw.py) for a
shell script: start it, print one JSON line, keep it up until a signal, then stop it.

    .venv/bin/python loadtest/scripts/ceph_rgw_serve.py [--memstore-bytes N] >rgw.json &

The JSON line on stdout (flushed as soon as S3 answers) holds `endpoint`, `access_key`,
`secret_key`, `region`, `timings` (seconds from the first command to each milestone), `pids`
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memstore-bytes", type=int, default=MEMSTORE_DEVICE_BYTES,
                        help="size of the memstore OSD's device (it lives in RAM)")
    args = parser.parse_args(argv)

    stop_requested = False

    def request_stop(signum, _frame):
        nonlocal stop_requested
        stop_requested = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, request_stop)

    parent = os.getppid()
    rgw = CephRgw(memstore_device_bytes=args.memstore_bytes)
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
