#!/usr/bin/env python3
"""The anchor of issue 4's large-query benchmark: how long `deltalake` takes to list a snapshot.

Run it as a fresh process (so nothing is cached) under `/usr/bin/time -v` for the process wall
time and peak RSS. It opens the table at its latest version through the node's S3 API, calls
`get_add_actions()`, and prints one JSON line:

    {"files": 1000000, "version": 13, "listing_seconds": 2.8, "import_seconds": 0.3,
     "max_rss_kb": 980000}

`listing_seconds` covers `DeltaTable(...)` plus `get_add_actions()`; `import_seconds` is the
cost of importing deltalake, which the process wall time also includes. `max_rss_kb` is this
process's own peak (getrusage), for machines without /usr/bin/time.

Usage:  deltalake_listing.py s3://BUCKET/PREFIX/ ENDPOINT ACCESS_KEY SECRET_KEY [--expect N]
`--expect N` exits with status 1 when the snapshot does not hold exactly N active files.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="time deltalake listing one snapshot")
    parser.add_argument("uri")
    parser.add_argument("endpoint")
    parser.add_argument("access_key")
    parser.add_argument("secret_key")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--expect", type=int, help="exact number of active files required")
    args = parser.parse_args(argv)

    import_started = time.monotonic()
    from deltalake import DeltaTable

    listing_started = time.monotonic()
    table = DeltaTable(args.uri, storage_options={
        "AWS_ACCESS_KEY_ID": args.access_key,
        "AWS_SECRET_ACCESS_KEY": args.secret_key,
        "AWS_ENDPOINT_URL": args.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": args.region,
    })
    actions = table.get_add_actions()
    listing_finished = time.monotonic()
    files = actions.num_rows if hasattr(actions, "num_rows") else len(actions)
    print(json.dumps({
        "files": files,
        "version": table.version(),
        "listing_seconds": round(listing_finished - listing_started, 3),
        "import_seconds": round(listing_started - import_started, 3),
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))
    if args.expect is not None and files != args.expect:
        print(f"deltalake lists {files} active files, expected {args.expect}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
