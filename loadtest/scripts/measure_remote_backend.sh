#!/usr/bin/env bash
# measure_remote_backend.sh: issue 13's "Measured" figures, in one run on one machine: sharing
# nodes over a remote S3 store (a single-host Ceph RGW on loopback, memstore OSD) against the
# same tables on a local 4-drive lakeshare storage node, measured back to back.
#
# Setup: Ceph RGW (tests/python/ceph_rgw.py, through loadtest/scripts/ceph_rgw_serve.py) and a
# local storage node; on each store the same two Delta tables, both shared through one share
# (`bench`, schema `s`) with one bearer token per side:
#   big    FILES active files, log only (loadtest/synth_delta.py: checkpoint + 3 commits)
#   data   GET_FILES commits of one real parquet file of GET_FILE_MIB MiB each (deltalake)
# Over RGW the share is made on a `lakeshare server --backend RGW --backend-bucket catalog`
# node (no drives; its catalog lives in RGW); on the local side on the storage node itself.
#
# Phases, each side right after the other:
#   query     `big`: POST .../query {} on a just-started node (cold: nothing cached in the
#             process), then WARM_RUNS more (warm: the cached file list); TTFB, total, VmHWM;
#             one more answer must hold exactly FILES + 2 lines. Store anchor: one GET of the
#             table's checkpoint parquet straight from each store (presigned, curl).
#   version   GET .../tables/data/version at CONCURRENCY connections for DURATION (loadtest
#             http-get), and nginx `return 200` at the same concurrency, the anchor. Over a
#             remote store the latest snapshot is looked up at most once per second, so this
#             is the node more than the store.
#   get       the file URLs of a `data` query answer, GET whole, round robin, at GET_CONCURRENCY
#             connections for DURATION (loadtest get --url-file); where the URLs point is
#             printed. One URL is first fetched with curl and its length checked against the
#             answer's `size`. PRESIGN picks the URL mode(s) of the sharing node (below).
#   balancer  NODES fresh sharing nodes over RGW behind nginx (round robin, keep-alive
#             upstreams), against node 1 alone behind the same nginx and (from the phases
#             above) a node without nginx: `version` req/s at CONCURRENCY, the warm `big` query
#             (after every node answered it once), and NODES warm `big` queries at once.
#
# Usage:  loadtest/scripts/measure_remote_backend.sh        (from anywhere in the repository)
# Needs:  ceph-mon ceph-osd radosgw ceph-common (Debian), nginx, curl, jq, /usr/bin/time; the
#         repository's .venv (deltalake, boto3, pyarrow); release builds of lakeshare and of
#         loadtest with `get --url-file` (this branch), or SKIP_BUILD=0 to build both.
# Knobs:  FILES [1000000]  DURATION [10s] (each load phase)  CONCURRENCY [256] (version)
#         GET_FILES [8]  GET_FILE_MIB [32]  GET_CONCURRENCY [8]  NODES [3]  WARM_RUNS [5]
#         THREADS [] (every node's --threads; default all cores)  DRIVES [4] (local node)
#         PRESIGN [auto]: direct = file URLs presigned for the store, node = URLs pointing at
#           the sharing node (which then reads from the store), auto = both when the binary
#           has `--presign-direct ENDPOINT`, else direct only (a binary without that flag
#           presigns for the store: there is no node mode to measure)
#         MEMSTORE_BYTES [4294967296] (RGW's in-RAM OSD)  RGW_FRONTEND_OPTIONS [] (e.g. tcp_nodelay=1)
#         LAKESHARE_BIN [target/release/lakeshare]
#         LOADTEST_BIN [target/release/loadtest]  SKIP_BUILD [1]  RESULTS_JSON [] (all figures
#         as JSON)  KEEP_WORK [0] (keep the temp folder and logs)  PERF_DIR [] (profiles of the
#         serving process during the version and GET loads, with perf)
# Every process it starts (Ceph daemons, nodes, nginx) is stopped and the temp folder removed
# on exit, also on failure or Ctrl-C; a failure prints the tail of the logs.
set -euo pipefail

# shellcheck source=measure_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/measure_lib.sh"

FILES=${FILES:-1000000}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-256}
GET_FILES=${GET_FILES:-8}
GET_FILE_MIB=${GET_FILE_MIB:-32}
GET_CONCURRENCY=${GET_CONCURRENCY:-8}
NODES=${NODES:-3}
PRESIGN=${PRESIGN:-auto}
MEMSTORE_BYTES=${MEMSTORE_BYTES:-4294967296}
LOADTEST=${LOADTEST_BIN:-$TARGET_DIR/release/loadtest}
# URLs are signed for windows of a sixtieth of the expiry (60 s here): a warm query in a new
# window signs every URL anew, so a short expiry would make the balancer's warm queries, each
# node's turn coming every NODES queries, pay that more often than one node's.
PRESIGN_EXPIRY=${PRESIGN_EXPIRY:-1h}
# nginx's buffer for an unbuffered upstream answer (proxy_buffer_size): with the default (one
# page) a 700-MiB answer goes through the balancer in 4-KiB reads and writes.
BALANCER_BUFFER=${BALANCER_BUFFER:-256k}
CATALOG_BUCKET=catalog
# With a folder: `perf record -g` of the serving process during the version and GET loads
# (the node; RGW's radosgw for direct URLs), PERF_DIR/NAME.data and its report NAME.txt.
PERF_DIR=${PERF_DIR:-}
# Options appended to RGW's `rgw frontends = beast ...` line. Debian's default leaves Nagle's
# algorithm on, and every small answer after the first on a keep-alive connection then waits
# for the client's delayed ACK (~40 ms); `tcp_nodelay=1` turns it off.
RGW_FRONTEND_OPTIONS=${RGW_FRONTEND_OPTIONS:-}

for number in FILES GET_FILES GET_FILE_MIB GET_CONCURRENCY CONCURRENCY NODES WARM_RUNS; do
    [[ ${!number} =~ ^[0-9]+$ && ${!number} -ge 1 ]] || { echo "bad $number '${!number}'" >&2; exit 2; }
done
[[ $FILES -ge 10 ]] || { echo "FILES must be at least 10" >&2; exit 2; }
[[ $PRESIGN =~ ^(auto|direct|node)$ ]] || { echo "PRESIGN is auto, direct or node" >&2; exit 2; }
command -v nginx >/dev/null || { echo "missing nginx: apt-get install -y nginx" >&2; exit 2; }
for tool in ceph-mon ceph-osd radosgw radosgw-admin; do
    command -v "$tool" >/dev/null ||
        { echo "missing $tool: apt-get install -y ceph-mon ceph-osd radosgw ceph-common" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/lakeshare-remote.XXXXXX)
chmod 755 "$WORK"   # nginx's workers drop to an unprivileged user when run as root
mkdir -p "$WORK/results"
R=$WORK/results
RGW_PID=""
declare -A NODE_PID=() NODE_URL=() NODE_LOG_START=() NGINX_PIDS=() NODE_COLD_MIB=()

stop_pid() {   # stop_pid PID SIGNAL: signal it, wait up to 10 s, then SIGKILL
    local pid=$1 signal=$2
    kill -"$signal" "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$? name
    trap - EXIT INT TERM
    for name in "${!NGINX_PIDS[@]}"; do stop_pid "${NGINX_PIDS[$name]}" QUIT; done
    for name in "${!NODE_PID[@]}"; do stop_pid "${NODE_PID[$name]}" TERM; done
    [[ -n $RGW_PID ]] && stop_pid "$RGW_PID" TERM
    if [[ $status -ne 0 ]]; then
        for log in "$WORK"/*.log "$WORK"/nginx-*/error.log; do
            [[ -s $log ]] || continue
            echo "---- last lines of $log" >&2
            tail -n 25 "$log" >&2
        done
    fi
    if [[ $KEEP_WORK == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
set -o errtrace
trap 'echo "FAILED: line $LINENO: $BASH_COMMAND (status $?)" >&2' ERR

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts node NAME (`lakeshare server` on an ephemeral loopback port, the given arguments:
# drive folders or --backend ...) and sets NODE_PID[NAME], NODE_URL[NAME]. Its stderr goes to
# $WORK/NAME.log (appended over restarts). Usage: start_lakeshare NAME ARGS...
start_lakeshare() {
    local name=$1 log=$WORK/$1.log thread_args=()
    shift
    [[ -n $THREADS ]] && thread_args=(--threads "$THREADS")
    touch "$log"
    NODE_LOG_START[$name]=$(($(wc -l <"$log") + 1))
    LAKESHARE_ROOT_USER=$ACCESS_KEY LAKESHARE_ROOT_PASSWORD=$SECRET_KEY \
        "$LAKESHARE" server --address 127.0.0.1:0 --presign-expiry "$PRESIGN_EXPIRY" \
        "${thread_args[@]}" "$@" </dev/null >/dev/null 2>>"$log" &
    NODE_PID[$name]=$!
    wait_for_ready_line "$log" "${NODE_LOG_START[$name]}" "${NODE_PID[$name]}" \
        "lakeshare node $name"
    NODE_URL[$name]=$READY_URL
}

stop_lakeshare() {
    local name=$1
    [[ -n ${NODE_PID[$name]:-} ]] || return 0
    stop_pid "${NODE_PID[$name]}" TERM
    unset "NODE_PID[$name]" "NODE_URL[$name]"
}

node_peak_mib() { awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/${NODE_PID[$1]}/status"; }

# The arguments of a sharing node over RGW in URL mode MODE (default, direct or node).
remote_node_args() {
    local args=(--backend "$RGW_ENDPOINT" --backend-bucket "$CATALOG_BUCKET")
    [[ $1 == direct && $HAS_PRESIGN_DIRECT == 1 ]] && args+=(--presign-direct "$RGW_ENDPOINT")
    echo "${args[@]}"
}

start_remote_node() {   # start_remote_node NAME [MODE]
    local mode=${2:-default} args
    read -r -a args <<<"$(remote_node_args "$mode")"
    LAKESHARE_BACKEND_ACCESS_KEY=$RGW_ACCESS_KEY LAKESHARE_BACKEND_SECRET_KEY=$RGW_SECRET_KEY \
        LAKESHARE_BACKEND_REGION=$RGW_REGION start_lakeshare "$1" "${args[@]}"
}

start_local_node() { start_lakeshare local "${LOCAL_DRIVES[@]}"; }

# nginx with the given http{} body, in $WORK/nginx-NAME. Usage: start_nginx NAME PORT BODY
start_nginx() {
    local name=$1 port=$2 body=$3 dir=$WORK/nginx-$1
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<NGINX
worker_processes auto;
worker_rlimit_nofile 16384;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
$body
}
NGINX
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
    NGINX_PIDS[$name]=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "${NGINX_PIDS[$name]}" 2>/dev/null || die "nginx $name exited: $(cat "$dir/error.log")"
        sleep 0.1
    done
    die "nginx $name did not listen on $port in 10 s"
}

stop_nginx() {
    [[ -n ${NGINX_PIDS[$1]:-} ]] || return 0
    stop_pid "${NGINX_PIDS[$1]}" QUIT
    unset "NGINX_PIDS[$1]"
}

# Points `query` and `assert_answer` (measure_lib.sh) at a node: ENDPOINT and TOKEN.
target() { ENDPOINT=$1 TOKEN=$2; }

# One loadtest run into $WORK/results/NAME.json, echoed in short; stops the script if no
# request succeeded. Usage: load NAME LOADTEST_ARGS...
load() {
    local name=$1
    shift
    say "$name: $*"
    local perf_pid=""
    if [[ -n $PERF_DIR && -n ${PROFILE_PID:-} ]]; then
        perf record -F 499 -g -o "$PERF_DIR/$name.data" -p "$PROFILE_PID" -- sleep "$DURATION" \
            >"$PERF_DIR/$name.record.log" 2>&1 &
        perf_pid=$!
    fi
    "$LOADTEST" "$@" --duration "$DURATION" --json >"$WORK/results/$name.json" \
        2>"$WORK/loadtest-$name.err" || die "loadtest $name failed: $(tail -n 5 "$WORK/loadtest-$name.err")"
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" || true
        perf report -i "$PERF_DIR/$name.data" --no-children --sort dso,symbol --stdio \
            --percent-limit 0.7 2>/dev/null | grep -v '^$' | head -n 400 >"$PERF_DIR/$name.txt" || true
    fi
    jq -c '{req_per_s, gb_per_s, p50: .latency_ms.p50, p99: .latency_ms.p99, errors, first_error}' \
        "$WORK/results/$name.json" >&2
    [[ $(jq .ok "$WORK/results/$name.json") -gt 0 ]] || die "$name: no request succeeded"
}

version_load() {   # version_load NAME BASE_URL TOKEN
    load "$1" http-get --url "$2/$TABLES_PATH/data/version" --header "Authorization: Bearer $3" \
        --concurrency "$CONCURRENCY"
}

# One `big` query on node NAME with TOKEN (EXPECTED_BYTES: as in `query`); appends
# "TTFB TOTAL BYTES" to $WORK/runs-NAME-KIND. Usage: query_on NAME TOKEN KIND [EXPECTED_BYTES]
query_on() {
    target "${NODE_URL[$1]}" "$2"
    query big parquet "${4:-}"
    echo "$Q_TTFB $Q_TOTAL $Q_BYTES" >>"$WORK/runs-$1-$3"
}

# Cold and warm `big` queries on the local node and the sharing node over RGW, interleaved so
# that the machine's drift falls on both alike: both restarted (nothing cached in the
# process), cold local, cold remote, then WARM_RUNS times warm local, warm remote; one more
# answer of each must hold exactly FILES + 2 lines. Into $WORK/results/query-{local,remote}.json.
measure_queries() {
    local name bytes_local bytes_remote
    say "query: both nodes restarted; cold local, cold remote, then $WARM_RUNS x (warm local, warm remote)"
    stop_lakeshare local
    stop_lakeshare remote
    start_local_node
    start_remote_node remote
    rm -f "$WORK"/runs-*
    query_on local "$LOCAL_TOKEN" cold
    NODE_COLD_MIB[local]=$(node_peak_mib local)
    query_on remote "$REMOTE_TOKEN" cold
    NODE_COLD_MIB[remote]=$(node_peak_mib remote)
    bytes_local='' bytes_remote=''
    for _ in $(seq 1 "$WARM_RUNS"); do
        query_on local "$LOCAL_TOKEN" warm "$bytes_local"
        bytes_local=${bytes_local:-$Q_BYTES}
        query_on remote "$REMOTE_TOKEN" warm "$bytes_remote"
        bytes_remote=${bytes_remote:-$Q_BYTES}
    done
    for name in local remote; do
        target "${NODE_URL[$name]}" "$([[ $name == local ]] && echo "$LOCAL_TOKEN" || echo "$REMOTE_TOKEN")"
        assert_answer big parquet "$FILES" "$(awk 'NR == 1 { print $3 }' "$WORK/runs-$name-warm")"
        jq -nc --arg node "$name" --rawfile cold "$WORK/runs-$name-cold" \
            --rawfile warm "$WORK/runs-$name-warm" \
            --argjson cold_mib "${NODE_COLD_MIB[$name]}" --argjson warm_mib "$(node_peak_mib "$name")" '
            def runs($text): [$text | splits("\n") | select(length > 0) | split(" ") | map(tonumber)];
            def median: sort | .[(length - 1) / 2 | floor];
            runs($cold)[0] as $c | runs($warm) as $w
            | {node: $node, cold_ttfb_s: $c[0], cold_total_s: $c[1],
               warm_ttfb_s: ($w | map(.[0]) | median), warm_total_s: ($w | map(.[1]) | median),
               warm_totals_s: ($w | map(.[1])), response_bytes: $w[0][2],
               vmhwm_mib_after_cold: $cold_mib, vmhwm_mib_after_warm: $warm_mib}' \
            | tee "$WORK/results/query-$name.json" >&2
    done
}

# Seconds of one GET of the `big` table's checkpoint straight from a store (presigned).
# Usage: checkpoint_get NAME ENDPOINT ACCESS_KEY SECRET_KEY
checkpoint_get() {
    local url status seconds bytes
    url=$("$PYTHON" "$REPO/loadtest/scripts/remote_store_tools.py" presign "$2" "$3" "$4" \
        "$BUCKET" "big/_delta_log/$(printf '%020d' "$CHECKPOINT_VERSION").checkpoint.parquet")
    curl -sS -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' "$url" >"$WORK/ckpt.out" ||
        die "checkpoint GET from $1 failed"
    read -r status seconds bytes <"$WORK/ckpt.out"
    [[ $status == 200 ]] || die "checkpoint GET from $1: HTTP $status"
    jq -nc --arg store "$1" --argjson s "$seconds" --argjson b "$bytes" \
        '{store: $store, seconds: $s, bytes: $b}' | tee "$WORK/results/checkpoint-$1.json" >&2
}

# The file URLs of a `data` query on node BASE_URL into $WORK/urls-NAME, checked (GET_FILES
# of them, one fetched whole with the answer's size), then loadtest GETs them round robin.
# Usage: measure_get NAME BASE_URL TOKEN
measure_get() {
    local name=$1 base=$2 token=$3 answer=$WORK/answer-$1 first size got hosts
    curl -sS --fail --max-time 120 -X POST "$base/$TABLES_PATH/data/query" \
        -H "Authorization: Bearer $token" -H "Content-Type: application/json" -d '{}' \
        -o "$answer" || die "$name: the data query failed"
    jq -r 'select(.file) | .file.url' "$answer" >"$WORK/urls-$name"
    [[ $(wc -l <"$WORK/urls-$name") -eq $GET_FILES ]] ||
        die "$name: $(wc -l <"$WORK/urls-$name") file URLs in the data answer, expected $GET_FILES"
    hosts=$(sed -E 's|^(https?://[^/]*)/.*|\1|' "$WORK/urls-$name" | sort -u | paste -sd, -)
    first=$(head -n 1 "$WORK/urls-$name")
    size=$(jq -r 'select(.file) | .file.size' "$answer" | head -n 1)
    got=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' "$first") || die "$name: GET of a file URL failed"
    [[ $got == "200 $size" ]] || die "$name: a file URL answered '$got', expected '200 $size': $first"
    say "$name: $GET_FILES file URLs, pointing at $hosts"
    load "get-$name" get --url-file "$WORK/urls-$name" --concurrency "$GET_CONCURRENCY"
    jq --arg hosts "$hosts" '. + {url_hosts: $hosts}' "$WORK/results/get-$name.json" \
        >"$WORK/results/get-$name.json.tmp" && mv "$WORK/results/get-$name.json.tmp" "$WORK/results/get-$name.json"
}

# --- start ---------------------------------------------------------------------------------

if [[ -n $PERF_DIR ]]; then
    command -v perf >/dev/null || die "PERF_DIR needs perf"
    mkdir -p "$PERF_DIR"
fi
if [[ $SKIP_BUILD != 1 ]]; then
    say "building the release binaries"
    (cd "$REPO" && cargo build --release -p lakeshare -p lakeshare-loadtest)
fi
[[ -x $LAKESHARE ]] || die "no binary at $LAKESHARE (LAKESHARE_BIN)"
[[ -x $LOADTEST ]] || die "no binary at $LOADTEST (LOADTEST_BIN)"
"$LOADTEST" get --help | grep -q -- '--url-file' ||
    die "$LOADTEST has no 'get --url-file': build loadtest from this branch (cargo build --release -p lakeshare-loadtest)"
HAS_PRESIGN_DIRECT=0
"$LAKESHARE" server --help | grep -q -- '--presign-direct' && HAS_PRESIGN_DIRECT=1
case $PRESIGN in
    auto) if [[ $HAS_PRESIGN_DIRECT == 1 ]]; then URL_MODES=(node direct); else URL_MODES=(direct); fi ;;
    node) [[ $HAS_PRESIGN_DIRECT == 1 ]] ||
              die "PRESIGN=node: $LAKESHARE has no --presign-direct, its URLs always point at the store"
          URL_MODES=(node) ;;
    direct) URL_MODES=(direct) ;;
esac
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "machine: $(machine_summary), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); load $LOAD_BEFORE"
say "binaries: $LAKESHARE ($(stat -c %y "$LAKESHARE" | cut -d. -f1)), $LOADTEST; --presign-direct: $HAS_PRESIGN_DIRECT"

say "starting Ceph RGW (memstore of $((MEMSTORE_BYTES >> 20)) MiB)"
"$PYTHON" "$REPO/loadtest/scripts/ceph_rgw_serve.py" --memstore-bytes "$MEMSTORE_BYTES" \
    --frontend-options "$RGW_FRONTEND_OPTIONS" >"$WORK/rgw.json" 2>"$WORK/rgw.log" &
RGW_PID=$!
for _ in $(seq 1 1800); do
    [[ -s $WORK/rgw.json ]] && break
    kill -0 "$RGW_PID" 2>/dev/null || die "Ceph RGW did not start: $(tail -n 30 "$WORK/rgw.log")"
    sleep 0.1
done
[[ -s $WORK/rgw.json ]] || die "Ceph RGW did not start in 180 s"
RGW_ENDPOINT=$(jq -r .endpoint "$WORK/rgw.json")
RGW_ACCESS_KEY=$(jq -r .access_key "$WORK/rgw.json")
RGW_SECRET_KEY=$(jq -r .secret_key "$WORK/rgw.json")
RGW_REGION=$(jq -r .region "$WORK/rgw.json")
say "RGW at $RGW_ENDPOINT: $(jq -c .timings "$WORK/rgw.json")"
RGW_ACCESS_LOG=$(jq -r .base_dir "$WORK/rgw.json")/log/client.rgw.log
# Requests RGW logged so far whose request line matches the extended regex. RGW's beast
# frontend logs one access line per request (debug_rgw 1, the default).
rgw_requests() { grep -E -c "beast: .*\"($1) HTTP" "$RGW_ACCESS_LOG" || true; }
rgw_alive() { kill -0 "$RGW_PID" 2>/dev/null || die "Ceph RGW stopped: $(tail -n 30 "$WORK/rgw.log")"; }

LOCAL_DRIVES=()
for index in $(seq 1 "$DRIVES"); do LOCAL_DRIVES+=("$WORK/drive$index"); done
mkdir -p "${LOCAL_DRIVES[@]}"
start_local_node
LOCAL_URL=${NODE_URL[local]}
say "local storage node at $LOCAL_URL ($DRIVES drives)"

# --- tables and shares ---------------------------------------------------------------------

"$PYTHON" "$REPO/loadtest/scripts/remote_store_tools.py" buckets "$RGW_ENDPOINT" \
    "$RGW_ACCESS_KEY" "$RGW_SECRET_KEY" "$BUCKET" "$CATALOG_BUCKET" || die "RGW buckets failed"
"$PYTHON" "$REPO/loadtest/scripts/remote_store_tools.py" buckets "$LOCAL_URL" \
    "$ACCESS_KEY" "$SECRET_KEY" "$BUCKET" || die "local bucket failed"
for side in local rgw; do
    if [[ $side == local ]]; then store=$LOCAL_URL ak=$ACCESS_KEY sk=$SECRET_KEY
    else store=$RGW_ENDPOINT ak=$RGW_ACCESS_KEY sk=$RGW_SECRET_KEY; fi
    say "$side: a $FILES-file Delta table (log only) at s3://$BUCKET/big/"
    started=$(date +%s.%N)
    "$PYTHON" "$REPO/loadtest/synth_delta.py" --endpoint "$store" --access-key "$ak" \
        --secret-key "$sk" --bucket "$BUCKET" --prefix big/ --files "$FILES" --name big \
        >"$WORK/results/synth-$side.json" 2>"$WORK/synth-$side.err" ||
        die "synth_delta.py into $side failed: $(tail -n 20 "$WORK/synth-$side.err")"
    jq -c --arg s "$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" \
        '. + {process_wall_s: ($s | tonumber)}' "$WORK/results/synth-$side.json" >&2
    say "$side: $GET_FILES data files of $GET_FILE_MIB MiB at s3://$BUCKET/data/ (deltalake)"
    "$PYTHON" "$REPO/loadtest/scripts/remote_store_tools.py" data-table "$store" "$ak" "$sk" \
        "s3://$BUCKET/data/" "$GET_FILES" "$GET_FILE_MIB" >"$WORK/results/data-$side.json" \
        2>"$WORK/data-$side.err" || die "the data table on $side failed: $(tail -n 20 "$WORK/data-$side.err")"
    cat "$WORK/results/data-$side.json" >&2
    rgw_alive
done
CHECKPOINT_VERSION=$(jq .checkpoint_version "$WORK/results/synth-local.json")

start_remote_node remote
REMOTE_URL=${NODE_URL[remote]}
say "sharing node over RGW at $REMOTE_URL"
export LAKESHARE_CONFIG_DIR=$WORK/cli
SPECS=("big:delta:$BUCKET:big/" "data:delta:$BUCKET:data/")
for side in local remote; do
    "$LAKESHARE" alias set "$side" "${NODE_URL[$side]}" "$ACCESS_KEY" "$SECRET_KEY" >/dev/null
    "$LAKESHARE" table share create "$side/$SHARE" "$SCHEMA" "${SPECS[@]}" >"$WORK/share-$side.txt" 2>&1 ||
        die "share create on $side failed: $(cat "$WORK/share-$side.txt")"
done
LOCAL_TOKEN=$("$LAKESHARE" table share token create "local/$SHARE" --json | jq -r .token)
REMOTE_TOKEN=$("$LAKESHARE" table share token create "remote/$SHARE" --json | jq -r .token)
[[ -n $LOCAL_TOKEN && $LOCAL_TOKEN != null && -n $REMOTE_TOKEN && $REMOTE_TOKEN != null ]] ||
    die "no token from 'lakeshare table share token create'"

# --- query: cold and warm, then the store anchor ------------------------------------------

measure_queries
LOCAL_URL=${NODE_URL[local]}
REMOTE_URL=${NODE_URL[remote]}
rgw_alive
checkpoint_get local "$LOCAL_URL" "$ACCESS_KEY" "$SECRET_KEY"
checkpoint_get rgw "$RGW_ENDPOINT" "$RGW_ACCESS_KEY" "$RGW_SECRET_KEY"

# --- version at CONCURRENCY: nginx return 200, local node, sharing node over RGW -----------

ANCHOR_PORT=$(free_port)
start_nginx anchor "$ANCHOR_PORT" "    server { listen 127.0.0.1:$ANCHOR_PORT backlog=4096; location / { return 200; } }"
load nginx http-get --url "http://127.0.0.1:$ANCHOR_PORT/" --concurrency "$CONCURRENCY"
stop_nginx anchor
PROFILE_PID=${NODE_PID[local]} version_load version-local "$LOCAL_URL" "$LOCAL_TOKEN"
# What the store saw during the remote node's version load: HEADs of the next commit (the
# freshness lookups) and snapshot builds (each reads _last_checkpoint first).
HEADS_PATTERN="HEAD /$BUCKET/data/_delta_log/[0-9]+\.json"
BUILDS_PATTERN="GET /$BUCKET/data/_delta_log/_last_checkpoint"
heads_before=$(rgw_requests "$HEADS_PATTERN") builds_before=$(rgw_requests "$BUILDS_PATTERN")
PROFILE_PID=${NODE_PID[remote]} version_load version-remote "$REMOTE_URL" "$REMOTE_TOKEN"
jq --argjson heads "$(($(rgw_requests "$HEADS_PATTERN") - heads_before))" \
    --argjson builds "$(($(rgw_requests "$BUILDS_PATTERN") - builds_before))" \
    '. + {store_next_commit_heads: $heads, store_snapshot_builds: $builds}' \
    "$R/version-remote.json" >"$R/version-remote.json.tmp" && mv "$R/version-remote.json.tmp" "$R/version-remote.json"
say "the store saw $(jq .store_next_commit_heads "$R/version-remote.json") HEADs of the next commit and \
$(jq .store_snapshot_builds "$R/version-remote.json") snapshot builds during the remote version load"
rgw_alive

# --- GET of the answer's file URLs ---------------------------------------------------------

PROFILE_PID=${NODE_PID[local]} measure_get local "$LOCAL_URL" "$LOCAL_TOKEN"
# The anchor: nginx (sendfile) serving the same files from a folder (page cache), same client.
mkdir -p "$WORK/www"
chmod 755 "$WORK/www"
index=0
while read -r url; do
    curl -sS --fail -o "$WORK/www/obj-$index" "$url" || die "download of a data file failed"
    index=$((index + 1))
done <"$WORK/urls-local"
chmod 644 "$WORK"/www/obj-*
FILES_PORT=$(free_port)
start_nginx files "$FILES_PORT" "    sendfile on;
    tcp_nopush on;
    server { listen 127.0.0.1:$FILES_PORT backlog=4096; root $WORK/www; location / { } }"
load get-nginx get --url-template "http://127.0.0.1:$FILES_PORT/obj-{i}" --objects "$GET_FILES" \
    --concurrency "$GET_CONCURRENCY"
stop_nginx files
rm -rf "$WORK/www"
stop_lakeshare remote
for mode in "${URL_MODES[@]}"; do
    start_remote_node "remote-$mode" "$mode"
    profile=$(jq -r '.pids["client.rgw"]' "$WORK/rgw.json")
    [[ $mode == node ]] && profile=${NODE_PID[remote-$mode]}
    PROFILE_PID=$profile measure_get "remote-$mode" "${NODE_URL[remote-$mode]}" "$REMOTE_TOKEN"
    expected=$RGW_ENDPOINT
    [[ $mode == node ]] && expected=${NODE_URL[remote-$mode]}
    [[ $(jq -r .url_hosts "$WORK/results/get-remote-$mode.json") == "$expected" ]] ||
        die "remote-$mode: file URLs point at $(jq -r .url_hosts "$WORK/results/get-remote-$mode.json"), expected $expected"
    stop_lakeshare "remote-$mode"
    rgw_alive
done
stop_lakeshare local   # its memory is not needed for the balancer phase

# --- NODES sharing nodes behind nginx against node 1 behind the same nginx ------------------

say "balancer: $NODES sharing nodes over RGW behind nginx"
UPSTREAMS=""
for index in $(seq 1 "$NODES"); do
    start_remote_node "lb$index"
    UPSTREAMS+="server ${NODE_URL[lb$index]#http://}; "
done
LB1_PORT=$(free_port)
LBN_PORT=$(free_port)
proxy="proxy_buffer_size $BALANCER_BUFFER; proxy_buffers 4 $BALANCER_BUFFER; proxy_busy_buffers_size $BALANCER_BUFFER;
           proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$host:\$server_port;
           proxy_buffering off; proxy_request_buffering off; add_header X-Upstream \$upstream_addr always;"
start_nginx balancer "$LBN_PORT" "
    upstream one { zone one 64k; server ${NODE_URL[lb1]#http://}; keepalive 512; }
    upstream all { zone all 64k; $UPSTREAMS keepalive 512; }
    server { listen 127.0.0.1:$LB1_PORT backlog=4096; location / { proxy_pass http://one; $proxy } }
    server { listen 127.0.0.1:$LBN_PORT backlog=4096; location / { proxy_pass http://all; $proxy } }"
LB1_URL=http://127.0.0.1:$LB1_PORT
LBN_URL=http://127.0.0.1:$LBN_PORT
# The nodes read the catalog every second: wait until each knows the token.
for index in $(seq 1 "$NODES"); do
    for attempt in $(seq 1 50); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $REMOTE_TOKEN" \
            "${NODE_URL[lb$index]}/$TABLES_PATH/data/version") == 200 ]] && break
        [[ $attempt == 50 ]] && die "node lb$index does not accept the token after 5 s"
        sleep 0.1
    done
done

version_load version-lb1 "$LB1_URL" "$REMOTE_TOKEN"
version_load "version-lb$NODES" "$LBN_URL" "$REMOTE_TOKEN"

# Warm every node: query through the balancer until each upstream answered `big` once.
say "balancer: warming every node's file list of big"
target "$LBN_URL" "$REMOTE_TOKEN"
: >"$WORK/upstreams"
for attempt in $(seq 1 $((NODES * 4))); do
    query_curl big parquet -o /dev/null -D "$WORK/headers" --fail || die "a warm-up query failed"
    grep -i '^x-upstream:' "$WORK/headers" | tr -d '\r' | awk '{ print $2 }' >>"$WORK/upstreams"
    [[ $(sort -u "$WORK/upstreams" | wc -l) -ge $NODES ]] && break
    [[ $attempt == $((NODES * 4)) ]] &&
        die "the balancer reached only $(sort -u "$WORK/upstreams" | paste -sd' ') in $attempt queries"
done

# WARM_RUNS warm queries one after another, then NODES at once; into results/lb-NAME.json.
# Usage: balancer_queries NAME BASE_URL
balancer_queries() {
    local name=$1 started finished index status bytes expected
    target "$2" "$REMOTE_TOKEN"
    : >"$WORK/warm"
    for _ in $(seq 1 "$WARM_RUNS"); do
        query big parquet "$(jq .response_bytes "$WORK/results/query-remote.json")"
        echo "$Q_TOTAL" >>"$WORK/warm"
    done
    say "$name: $NODES warm queries at once"
    local curls=()
    started=$(date +%s.%N)
    for index in $(seq 1 "$NODES"); do
        query_curl big parquet -o /dev/null -w '%{http_code} %{size_download}\n' \
            >"$WORK/parallel-$index" 2>&1 &
        curls+=($!)
    done
    wait "${curls[@]}" || true
    finished=$(date +%s.%N)
    expected=$(jq .response_bytes "$WORK/results/query-remote.json")
    for index in $(seq 1 "$NODES"); do
        read -r status bytes <"$WORK/parallel-$index" || true
        [[ $status == 200 && $bytes == "$expected" ]] ||
            die "$name: a concurrent query answered '$(cat "$WORK/parallel-$index")', expected 200 $expected"
    done
    jq -nc --arg name "$name" --argjson warm "$(median <"$WORK/warm")" \
        --argjson parallel "$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.3f", b - a }')" \
        '{name: $name, warm_total_s: $warm, parallel_wall_s: $parallel}' \
        | tee "$WORK/results/lb-$name.json" >&2
}
balancer_queries lb1 "$LB1_URL"
balancer_queries "lb$NODES" "$LBN_URL"
rgw_alive
RGW_RSS=$(jq -r '.pids | to_entries[] | "\(.key)=\(.value)"' "$WORK/rgw.json" | while IFS='=' read -r daemon pid; do
    awk -v d="$daemon" '/^VmHWM:/ { printf "%s %d MiB; ", d, $2 / 1024 }' "/proc/$pid/status"
done)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table -----------------------------------------------------------------------------

jv() { jq -r "$2" "$R/$1.json"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
rps() {   # an integer with thousands separators, whatever the locale
    awk -v v="$1" 'BEGIN { s = sprintf("%d", v); while (s ~ /[0-9][0-9][0-9][0-9]/) \
        sub(/[0-9][0-9][0-9]($|,)/, ",&", s); print s }'
}
p99() { jv "$1" '.latency_ms.p99 * 10 | round / 10'; }
load_cell() { echo "$(rps "$(jv "$1" .req_per_s)") req/s (p99 $(p99 "$1") ms$(
    [[ $(jv "$1" '.errors | length') == 0 ]] || echo ", errors $(jv "$1" '.errors | tostring')"))"; }
get_cell() {
    echo "$(jv "get-$1" '.gb_per_s * 1000 | round / 1000') GB/s (p99 $(p99 "get-$1") ms) → $(jv "get-$1" .url_hosts)"
}
NGINX_RPS=$(jv nginx .req_per_s)

echo
echo "Issue 13: a sharing node over Ceph RGW (beast options: '${RGW_FRONTEND_OPTIONS:-none}') against a local $DRIVES-drive storage node; \
$(machine_summary); load average $LOAD_BEFORE before, $LOAD_AFTER after; $FILES-file table \
(log only), warm = median of $WARM_RUNS, loads $DURATION each; RGW: one memstore OSD on \
loopback (peak RSS: ${RGW_RSS% })"
echo
echo "| figure | sharing node over RGW | local storage node | RGW / local | anchor, same run | RGW / anchor | local / anchor |"
echo "|---|---:|---:|---:|---:|---:|---:|"
a=$(jv checkpoint-rgw .seconds) b=$(jv checkpoint-local .seconds)
echo "| anchor: one GET of the $(mib "$(jv checkpoint-local .bytes)") MiB checkpoint straight from the store | \
$(seconds "$a") | $(seconds "$b") | $(ratio "$a" "$b") | | | |"
for field in cold_ttfb_s:"cold, first byte" cold_total_s:"cold, whole answer" \
    warm_ttfb_s:"warm, first byte" warm_total_s:"warm, whole answer"; do
    a=$(jv query-remote ".${field%%:*}") b=$(jv query-local ".${field%%:*}")
    format=seconds
    [[ $field == *ttfb* ]] && format=ms
    echo "| query of $FILES files, ${field#*:} | $($format "$a") | $($format "$b") | $(ratio "$a" "$b") | | | |"
done
echo "| node peak RSS after cold → warm | $(jv query-remote .vmhwm_mib_after_cold) → \
$(jv query-remote .vmhwm_mib_after_warm) MiB | $(jv query-local .vmhwm_mib_after_cold) → \
$(jv query-local .vmhwm_mib_after_warm) MiB | | | | |"
echo "| \`version\` at $CONCURRENCY connections (anchor: nginx \`return 200\`) | $(load_cell version-remote) | \
$(load_cell version-local) | $(ratio "$(jv version-remote .req_per_s)" "$(jv version-local .req_per_s)") | \
$(load_cell nginx) | $(ratio "$(jv version-remote .req_per_s)" "$NGINX_RPS") | \
$(ratio "$(jv version-local .req_per_s)" "$NGINX_RPS") |"
echo "| ... requests the store saw during that load: HEADs of the next commit / snapshot builds | \
$(jv version-remote .store_next_commit_heads) / $(jv version-remote .store_snapshot_builds) | | | | | |"
for mode in "${URL_MODES[@]}"; do
    echo "| GET of the answer's $GET_FILES file URLs ($GET_FILE_MIB MiB each, $GET_CONCURRENCY \
connections), URLs $mode (anchor: nginx sendfile of the same files) | $(get_cell "remote-$mode") | \
$(get_cell local) | $(ratio "$(jv "get-remote-$mode" .gb_per_s)" "$(jv get-local .gb_per_s)") | \
$(jv get-nginx '.gb_per_s * 1000 | round / 1000') GB/s (p99 $(p99 get-nginx) ms) | \
$(ratio "$(jv "get-remote-$mode" .gb_per_s)" "$(jv get-nginx .gb_per_s)") | \
$(ratio "$(jv get-local .gb_per_s)" "$(jv get-nginx .gb_per_s)") |"
done
echo
echo "RGW at $RGW_ENDPOINT, local node at $LOCAL_URL; warm totals (s) over RGW: \
$(jv query-remote '.warm_totals_s | map(. * 1000 | round / 1000) | join(" ")'), local: \
$(jv query-local '.warm_totals_s | map(. * 1000 | round / 1000) | join(" ")')"
echo
echo "| over RGW | 1 node, no balancer | 1 node behind nginx | $NODES nodes behind nginx | $NODES / 1 behind nginx |"
echo "|---|---:|---:|---:|---:|"
echo "| \`version\` at $CONCURRENCY connections | $(load_cell version-remote) | $(load_cell version-lb1) | \
$(load_cell "version-lb$NODES") | $(ratio "$(jv "version-lb$NODES" .req_per_s)" "$(jv version-lb1 .req_per_s)") |"
echo "| warm query, $FILES files | $(seconds "$(jv query-remote .warm_total_s)") | \
$(seconds "$(jv lb-lb1 .warm_total_s)") | $(seconds "$(jv "lb-lb$NODES" .warm_total_s)") | \
$(ratio "$(jv "lb-lb$NODES" .warm_total_s)" "$(jv lb-lb1 .warm_total_s)") |"
echo "| $NODES warm queries at once, wall | | $(seconds "$(jv lb-lb1 .parallel_wall_s)") | \
$(seconds "$(jv "lb-lb$NODES" .parallel_wall_s)") | \
$(ratio "$(jv "lb-lb$NODES" .parallel_wall_s)" "$(jv lb-lb1 .parallel_wall_s)") |"
echo
echo "answer of the $FILES-file query: $(mib "$(jv query-local .response_bytes)") MiB; tables written: \
$(jq -c . "$R/synth-rgw.json")"

if [[ -n $RESULTS_JSON ]]; then
    (cd "$R" && for file in *.json; do jq -c --arg name "${file%.json}" '{($name): .}' "$file"; done) \
        | jq -s --arg machine "$(machine_summary)" --arg load_before "$LOAD_BEFORE" \
            --arg load_after "$LOAD_AFTER" --arg rgw_rss "$RGW_RSS" \
            'add + {machine: $machine, load_before: $load_before, load_after: $load_after,
                    rgw_peak_rss: $rgw_rss}' >"$RESULTS_JSON"
fi
