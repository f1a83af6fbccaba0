#!/usr/bin/env bash
# compare_get_put.sh: issue 2's speed measurement, in one run on one machine.
#
#   GET  64 MiB objects at concurrency 32 from a 4-drive lakeshare node (EC default: 2+2)
#        vs nginx (sendfile on) serving the same bytes as plain files;
#   PUT  64 MiB objects at concurrency 32 to the node
#        vs `dd if=/dev/zero ... conv=fsync` writing to the same 4 drive folders in parallel.
#
# Usage:  loadtest/scripts/compare_get_put.sh            (from anywhere in the repository)
# Needs:  nginx, curl, jq on PATH  (Debian: apt-get install -y nginx curl jq)
# Knobs (environment variables, defaults in brackets):
#   PORT [9310]          node port on 127.0.0.1      NGINX_PORT [9380]   nginx port on 127.0.0.1
#   OBJECTS [8]          objects to GET round robin  OBJECT_BYTES [64MiB]
#   CONCURRENCY [32]     workers (connections)       DURATION [10s]      per GET/PUT run
#   DD_MIB_PER_DRIVE [1024]  MiB dd writes to each of the 4 folders
#   WORK_PARENT [/tmp]   where the temp dir goes     SKIP_BUILD [0]      1: use existing binaries
#   RESULTS_JSON []      also write every figure to this file as one JSON object
#   RANGE_BYTES []       GET ranges of this size (e.g. 64KiB) instead of whole objects
# Output: each run's text block, then a summary with the ratios (node GET / nginx GET,
# node PUT / dd). Every process it starts is stopped and the temp dir removed on exit,
# including on failure or Ctrl-C.
set -euo pipefail

OBJECTS=${OBJECTS:-8}
OBJECT_BYTES=${OBJECT_BYTES:-64MiB}
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-10s}
DD_MIB_PER_DRIVE=${DD_MIB_PER_DRIVE:-1024}
RESULTS_JSON=${RESULTS_JSON:-}
RANGE_BYTES=${RANGE_BYTES:-}
RANGE_ARGS=()
if [[ -n $RANGE_BYTES ]]; then RANGE_ARGS=(--range-bytes "$RANGE_BYTES" --object-bytes "$OBJECT_BYTES"); fi

source "$(dirname "${BASH_SOURCE[0]}")/compare_lib.sh"
build_binaries
start_lakeshare

say "uploading $OBJECTS objects of $OBJECT_BYTES (get --setup), one warm-up pass"
"$LOADTEST" get --endpoint "$ENDPOINT" --bucket compare --objects "$OBJECTS" \
    --object-bytes "$OBJECT_BYTES" --concurrency "$CONCURRENCY" --requests "$OBJECTS" \
    --setup >/dev/null

say "writing the same bytes as plain files for nginx"
"$LOADTEST" write-files --dir "$WORK/www" --objects "$OBJECTS" --object-bytes "$OBJECT_BYTES"

start_nginx

# Both servers must serve the same bytes before their speeds are compared.
NODE_URL=$("$LOADTEST" presign --endpoint "$ENDPOINT" --bucket compare --index 1)
NODE_SHA=$(curl -sf "$NODE_URL" | sha256sum | cut -d' ' -f1)
NGINX_SHA=$(curl -sf "http://127.0.0.1:$NGINX_PORT/obj-1" | sha256sum | cut -d' ' -f1)
if [[ $NODE_SHA != "$NGINX_SHA" ]]; then
    echo "node and nginx serve different bytes for obj-1: $NODE_SHA vs $NGINX_SHA" >&2
    exit 1
fi

say "GET node: $OBJECTS x $OBJECT_BYTES, concurrency $CONCURRENCY, $DURATION"
NODE_GET=$("$LOADTEST" --json get --endpoint "$ENDPOINT" --bucket compare \
    --objects "$OBJECTS" --concurrency "$CONCURRENCY" --duration "$DURATION" "${RANGE_ARGS[@]}")

say "GET nginx: same files, concurrency $CONCURRENCY, $DURATION"
NGINX_GET=$("$LOADTEST" --json get --objects "$OBJECTS" --concurrency "$CONCURRENCY" \
    --duration "$DURATION" --url-template "http://127.0.0.1:$NGINX_PORT/obj-{i}" "${RANGE_ARGS[@]}")

say "PUT node: $OBJECT_BYTES objects, concurrency $CONCURRENCY, $DURATION"
NODE_PUT=$("$LOADTEST" --json put --endpoint "$ENDPOINT" --bucket compare \
    --object-bytes "$OBJECT_BYTES" --concurrency "$CONCURRENCY" --duration "$DURATION")

say "dd: ${DD_MIB_PER_DRIVE} MiB to each of the 4 drive folders in parallel, conv=fsync"
sync
DD_START=$(date +%s.%N)
for drive in 1 2 3 4; do
    dd if=/dev/zero of="$WORK/drive$drive/dd-raw-write.bin" bs=1M count="$DD_MIB_PER_DRIVE" \
        conv=fsync status=none &
    BACKGROUND_PIDS+=($!)
done
for pid in "${BACKGROUND_PIDS[@]}"; do wait "$pid"; done
BACKGROUND_PIDS=()
DD_END=$(date +%s.%N)
rm -f "$WORK"/drive{1,2,3,4}/dd-raw-write.bin

DD_SECONDS=$(echo "$DD_START $DD_END" | awk '{printf "%.3f", $2 - $1}')
DD_BYTES=$((4 * DD_MIB_PER_DRIVE * 1048576))
DD_GBPS=$(echo "$DD_BYTES $DD_SECONDS" | awk '{printf "%.3f", $1 / $2 / 1e9}')

field() { jq -r "$2" <<<"$1"; }
NODE_GET_GBPS=$(field "$NODE_GET" .gb_per_s)
NGINX_GET_GBPS=$(field "$NGINX_GET" .gb_per_s)
NODE_PUT_GBPS=$(field "$NODE_PUT" .gb_per_s)
GET_RATIO=$(ratio "$NODE_GET_GBPS" "$NGINX_GET_GBPS")
PUT_RATIO=$(ratio "$NODE_PUT_GBPS" "$DD_GBPS")

row() {
    jq -r --arg name "$1" '[$name, (.req_per_s*10|round/10), (.gb_per_s*1000|round/1000),
        .latency_ms.p50, .latency_ms.p99, .latency_ms.max, .ok, (.errors|tostring)]
        | @tsv' <<<"$2"
}
say "summary"
{
    printf 'run\treq/s\tGB/s\tp50_ms\tp99_ms\tmax_ms\tok\terrors\n'
    row "node GET" "$NODE_GET"
    row "nginx GET" "$NGINX_GET"
    row "node PUT" "$NODE_PUT"
    printf 'dd x4\t-\t%s\t-\t-\t-\t-\t{}\n' "$DD_GBPS"
} | column -t -s $'\t'
echo
echo "GET ratio node/nginx: $GET_RATIO   (target >= 0.8, goal 0.9)"
echo "PUT ratio node/dd:    $PUT_RATIO   (target >= 0.4;" \
    "dd wrote ${DD_BYTES} bytes in ${DD_SECONDS} s)"
echo "load average after the run (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ -n $RESULTS_JSON ]]; then
    jq -n --arg cpu "$MACHINE_CPU" --argjson cores "$MACHINE_CORES" --arg load "$MACHINE_LOAD" \
        --argjson memory_gib "$MACHINE_MEMORY_GIB" \
        --argjson node_get "$NODE_GET" --argjson nginx_get "$NGINX_GET" \
        --argjson node_put "$NODE_PUT" --argjson dd_bytes "$DD_BYTES" \
        --argjson dd_seconds "$DD_SECONDS" --argjson dd_gb_per_s "$DD_GBPS" \
        --arg get_ratio "$GET_RATIO" --arg put_ratio "$PUT_RATIO" \
        '{machine: {cpu: $cpu, cores: $cores, memory_gib: $memory_gib, load_average: $load},
          node_get: $node_get, nginx_get: $nginx_get, node_put: $node_put,
          dd: {bytes: $dd_bytes, seconds: $dd_seconds, gb_per_s: $dd_gb_per_s},
          ratio_get_node_over_nginx: $get_ratio, ratio_put_node_over_dd: $put_ratio}' \
        >"$RESULTS_JSON"
    echo "figures written to $RESULTS_JSON" >&2
fi
