#!/usr/bin/env bash
# compare_sharing_routes.sh: issue 4's small-request measurement, in one run on one machine.
#
#   version      GET  .../tables/t/version    (bearer token)  on a lakeshare node
#   metadata     GET  .../tables/t/metadata
#   query-small  POST .../tables/t/query {}   (a 3-file table: lines + 3 presigned URLs)
#   nginx        GET  /  answered by `return 200` (Debian nginx), the anchor
# each at CONCURRENCY keep-alive connections for DURATION, then the ratios to nginx.
#
# Usage:  loadtest/scripts/compare_sharing_routes.sh     (from anywhere in the repository)
# Needs:  nginx, curl, jq; the repository's .venv (./test.sh makes it) for deltalake.
# Knobs:  PORT [9320] NGINX_PORT [9390] CONCURRENCY [256] DURATION [10s] SKIP_BUILD [0]
#         THREADS [2] (node worker threads)  RESULTS_JSON [] (write every figure as JSON)
# Every process it starts is stopped and the temp dir removed on exit.
set -euo pipefail

PORT=${PORT:-9320}
NGINX_PORT=${NGINX_PORT:-9390}
CONCURRENCY=${CONCURRENCY:-256}
DURATION=${DURATION:-10s}
SKIP_BUILD=${SKIP_BUILD:-0}
THREADS=${THREADS:-2}
RESULTS_JSON=${RESULTS_JSON:-}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
LAKESHARE=$TARGET_DIR/release/lakeshare
LOADTEST=$TARGET_DIR/release/loadtest
PYTHON=$REPO/.venv/bin/python
for tool in nginx curl jq; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y $tool" >&2; exit 2; }
done
[[ -x $PYTHON ]] || { echo "missing $PYTHON: run ./test.sh once to create .venv" >&2; exit 2; }

WORK=$(mktemp -d /tmp/lakeshare-sharing.XXXXXX)
SERVER_PID=""
NGINX_PID=""
cleanup() {
    trap - EXIT INT TERM
    [[ -n $NGINX_PID ]] && { kill -QUIT "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; }
    [[ -n $SERVER_PID ]] && { kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
say() { printf '\n== %s\n' "$*" >&2; }

if [[ $SKIP_BUILD != 1 ]]; then
    say "building release binaries"
    (cd "$REPO" && cargo build --release -p lakeshare -p lakeshare-loadtest)
fi

say "starting lakeshare on 127.0.0.1:$PORT (4 drives, $THREADS threads)"
export LAKESHARE_ROOT_USER=loadtest LAKESHARE_ROOT_PASSWORD=loadtest-secret
"$LAKESHARE" server --address "127.0.0.1:$PORT" --threads "$THREADS" "$WORK"/drive{1...4} \
    2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/server.log" && break; sleep 0.1; done
ENDPOINT="http://127.0.0.1:$PORT"

say "writing a 3-commit Delta table with deltalake and sharing it"
"$PYTHON" - "$ENDPOINT" <<'PY'
import sys
import pandas as pd
from deltalake import write_deltalake
from minio import Minio
endpoint = sys.argv[1]
Minio(endpoint.split("//")[1], access_key="loadtest", secret_key="loadtest-secret",
      secure=False).make_bucket("lake")
options = {"AWS_ACCESS_KEY_ID": "loadtest", "AWS_SECRET_ACCESS_KEY": "loadtest-secret",
           "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
for day in ["2024-01-01", "2024-01-02", "2024-01-03"]:
    write_deltalake("s3://lake/t/", pd.DataFrame({"day": [day], "n": [1]}), mode="append",
                    partition_by=["day"], storage_options=options)
PY
export LAKESHARE_CONFIG_DIR=$WORK/cli
"$LAKESHARE" alias set bench "$ENDPOINT" loadtest loadtest-secret >/dev/null
"$LAKESHARE" table share create bench/bench s "t:delta:lake:t/" >/dev/null
TOKEN=$("$LAKESHARE" table share token create bench/bench --json | jq -r .token)
TABLE="$ENDPOINT/_delta-sharing/v1/shares/bench/schemas/s/tables/t"

cat >"$WORK/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx-tmp;
    proxy_temp_path $WORK/nginx-tmp;
    fastcgi_temp_path $WORK/nginx-tmp;
    uwsgi_temp_path $WORK/nginx-tmp;
    scgi_temp_path $WORK/nginx-tmp;
    server { listen 127.0.0.1:$NGINX_PORT; location / { return 200; } }
}
NGINX
nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" &
NGINX_PID=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.1; done

run() {
    local name=$1; shift
    say "$name: concurrency $CONCURRENCY, $DURATION"
    "$LOADTEST" "$@" --concurrency "$CONCURRENCY" --duration "$DURATION" --json >"$WORK/$name.json"
    jq -c '{scenario: "'"$name"'", req_per_s, p50: .latency_ms.p50, p99: .latency_ms.p99, errors}' \
        "$WORK/$name.json"
}
AUTH="Authorization: Bearer $TOKEN"
run nginx http-get --url "http://127.0.0.1:$NGINX_PORT/"
run version http-get --url "$TABLE/version" --header "$AUTH"
run metadata http-get --url "$TABLE/metadata" --header "$AUTH"
run query-small http-post --url "$TABLE/query" --header "$AUTH" \
    --header "Content-Type: application/json" --body '{}'

say "summary (req/s ratio to nginx return 200)"
NGINX_RPS=$(jq .req_per_s "$WORK/nginx.json")
for name in version metadata query-small; do
    jq -r --argjson anchor "$NGINX_RPS" \
        '"'"$name"': \(.req_per_s|floor) req/s, p99 \(.latency_ms.p99) ms, \(.req_per_s / $anchor * 100 | floor / 100)x nginx"' \
        "$WORK/$name.json"
done
if [[ -n $RESULTS_JSON ]]; then
    jq -s '.' "$WORK"/{nginx,version,metadata,query-small}.json >"$RESULTS_JSON"
fi
