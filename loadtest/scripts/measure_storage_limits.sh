#!/usr/bin/env bash
# measure_storage_limits.sh: issue 11's remaining storage figures, each against an anchor
# measured in the same run on the same filesystem:
#
#   small   4 KiB PUTs with `If-None-Match: *` to new keys (Delta commits) at SMALL_CONCURRENCY
#           vs `loadtest create-files`: a new 4 KiB file in each of 4 folders per request,
#           file and folder fsynced (what durable creation costs on 4 drives);
#   conns   CONNECTIONS keep-alive connections at once, each GETting a 4 KiB object over and
#           over, vs nginx with the same connections; errors and both servers' peak RSS;
#   cold    GET of OBJECTS x COLD_OBJECT_BYTES with the page cache of every shard file dropped
#           first (posix_fadvise DONTNEED through `dd iflag=nocache`; `fincore` checks it), vs
#           `dd iflag=direct` reading the same bytes as plain files, both COLD_CONCURRENCY wide.
#
# Usage:  loadtest/scripts/measure_storage_limits.sh [small] [conns] [cold]   (default: all)
# Needs:  nginx, curl, jq, fincore (util-linux); the open-files limit must allow CONNECTIONS.
# Knobs (environment, defaults in brackets): SMALL_CONCURRENCY [16], DURATION [8s],
#   CONNECTIONS [10000], CONNS_DURATION [20s], OBJECTS [8], COLD_OBJECT_BYTES [64MiB],
#   COLD_CONCURRENCY [8], PORT, NGINX_PORT, WORK_PARENT, SKIP_BUILD (see compare_lib.sh).
# Output: each run's text block, then one summary line per part with the ratio.
set -euo pipefail

SMALL_CONCURRENCY=${SMALL_CONCURRENCY:-16}
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-10000}
CONNS_DURATION=${CONNS_DURATION:-20s}
OBJECTS=${OBJECTS:-8}
COLD_OBJECT_BYTES=${COLD_OBJECT_BYTES:-64MiB}
COLD_CONCURRENCY=${COLD_CONCURRENCY:-8}
PARTS=("$@")
[[ ${#PARTS[@]} -gt 0 ]] || PARTS=(small conns cold)

source "$(dirname "${BASH_SOURCE[0]}")/compare_lib.sh"
command -v fincore >/dev/null || { echo "missing fincore: apt-get install -y util-linux" >&2; exit 2; }
if [[ " ${PARTS[*]} " == *" conns "* ]]; then
    ulimit -n $((CONNECTIONS * 2 + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    (( $(ulimit -n) > CONNECTIONS + 256 )) ||
        { echo "open-files limit $(ulimit -n) is too low for $CONNECTIONS connections" >&2; exit 2; }
fi
build_binaries
start_lakeshare
SUMMARY=()
field() { jq -r "$2" <<<"$1"; }
ok_or_die() {
    local errors
    errors=$(field "$1" '.errors | length')
    [[ $errors == 0 ]] || { echo "$2 had errors: $(field "$1" .errors)" >&2; exit 1; }
}

measure_small() {
    say "small PUT node: 4 KiB, If-None-Match: *, new keys, concurrency $SMALL_CONCURRENCY, $DURATION"
    local node anchor
    node=$("$LOADTEST" --json put --endpoint "$ENDPOINT" --bucket small --setup --if-none-match \
        --object-bytes 4KiB --concurrency "$SMALL_CONCURRENCY" --duration "$DURATION")
    ok_or_die "$node" "the node's small PUTs"
    mkdir -p "$WORK"/anchor{1,2,3,4}
    say "anchor: create-files, 4 KiB in each of 4 folders per request, concurrency $SMALL_CONCURRENCY"
    anchor=$("$LOADTEST" --json create-files --dirs "$WORK/anchor1,$WORK/anchor2,$WORK/anchor3,$WORK/anchor4" \
        --file-bytes 4KiB --concurrency "$SMALL_CONCURRENCY" --duration "$DURATION")
    ok_or_die "$anchor" "create-files"
    rm -rf "$WORK"/anchor{1,2,3,4}
    SUMMARY+=("small PUT: node $(field "$node" '.req_per_s|round') req/s (p99 $(field "$node" .latency_ms.p99) ms)," \
        "anchor $(field "$anchor" '.req_per_s|round') req/s (p99 $(field "$anchor" .latency_ms.p99) ms)," \
        "ratio $(ratio "$(field "$node" .req_per_s)" "$(field "$anchor" .req_per_s)") (target >= 0.5)")
}

nginx_rss_mib() {
    local total=0 pid
    for pid in "$NGINX_PID" $(pgrep -P "$NGINX_PID"); do
        total=$(awk -v sum="$total" '/^VmHWM:/ { print sum + $2 }' "/proc/$pid/status")
    done
    awk -v kib="$total" 'BEGIN { printf "%.1f", kib / 1024 }'
}

measure_conns() {
    say "connections: one 4 KiB object, $CONNECTIONS keep-alive connections"
    "$LOADTEST" get --endpoint "$ENDPOINT" --bucket conns --objects 1 --object-bytes 4KiB \
        --concurrency 1 --requests 1 --setup >/dev/null
    "$LOADTEST" write-files --dir "$WORK/www" --objects 1 --object-bytes 4KiB
    [[ -n $NGINX_PID ]] || start_nginx "$CONNECTIONS"
    local before node nginx
    before=$(peak_rss_mib "$SERVER_PID")
    node=$("$LOADTEST" --json get --endpoint "$ENDPOINT" --bucket conns --objects 1 \
        --concurrency "$CONNECTIONS" --duration "$CONNS_DURATION")
    local node_rss nginx_rss
    node_rss=$(peak_rss_mib "$SERVER_PID")
    nginx=$("$LOADTEST" --json get --objects 1 --concurrency "$CONNECTIONS" \
        --duration "$CONNS_DURATION" --url-template "http://127.0.0.1:$NGINX_PORT/obj-{i}")
    nginx_rss=$(nginx_rss_mib)
    SUMMARY+=("$CONNECTIONS connections: node $(field "$node" '.req_per_s|round') req/s," \
        "errors $(field "$node" '.errors|tostring'), p99 $(field "$node" .latency_ms.p99) ms," \
        "peak RSS ${before} -> ${node_rss} MiB; nginx $(field "$nginx" '.req_per_s|round') req/s," \
        "errors $(field "$nginx" '.errors|tostring'), peak RSS ${nginx_rss} MiB;" \
        "ratio $(ratio "$(field "$node" .req_per_s)" "$(field "$nginx" .req_per_s)")")
    ok_or_die "$node" "the node at $CONNECTIONS connections"
}

# Drops the page cache of every file under the folders given (clean pages only: sync first).
drop_cache() {
    sync
    find "$@" -type f -print0 | xargs -0 -r -n 64 sh -c \
        'for f; do dd if="$f" iflag=nocache count=0 status=none; done' drop
}
cached_bytes() { find "$@" -type f -print0 | xargs -0 -r fincore -b -n -o RES | awk '{ s += $1 } END { print s + 0 }'; }

measure_cold() {
    say "cold GET: $OBJECTS x $COLD_OBJECT_BYTES, concurrency $COLD_CONCURRENCY, page cache dropped"
    "$LOADTEST" get --endpoint "$ENDPOINT" --bucket cold --objects "$OBJECTS" \
        --object-bytes "$COLD_OBJECT_BYTES" --concurrency "$COLD_CONCURRENCY" --requests "$OBJECTS" \
        --setup >/dev/null
    rm -f "$WORK"/www/obj-*
    "$LOADTEST" write-files --dir "$WORK/www" --objects "$OBJECTS" --object-bytes "$COLD_OBJECT_BYTES"
    local drives=("$WORK"/drive{1,2,3,4}) node_runs=() dd_runs=() run node dd_seconds left
    for run in 1 2 3; do
        drop_cache "${drives[@]}"
        left=$(cached_bytes "${drives[@]}")
        node=$("$LOADTEST" --json get --endpoint "$ENDPOINT" --bucket cold --objects "$OBJECTS" \
            --concurrency "$COLD_CONCURRENCY" --requests "$OBJECTS")
        ok_or_die "$node" "the node's cold GET"
        node_runs+=("$(field "$node" .gb_per_s)")
        echo "node cold run $run: $(field "$node" .gb_per_s) GB/s; bytes still cached before it: $left" >&2
        drop_cache "$WORK/www"
        local started ended
        started=$(date +%s.%N)
        for file in "$WORK"/www/obj-*; do
            dd if="$file" of=/dev/null bs=1M iflag=direct status=none &
            BACKGROUND_PIDS+=($!)
            if (( ${#BACKGROUND_PIDS[@]} >= COLD_CONCURRENCY )); then
                wait "${BACKGROUND_PIDS[0]}"; BACKGROUND_PIDS=("${BACKGROUND_PIDS[@]:1}")
            fi
        done
        for pid in "${BACKGROUND_PIDS[@]}"; do wait "$pid"; done
        BACKGROUND_PIDS=()
        ended=$(date +%s.%N)
        dd_seconds=$(echo "$started $ended" | awk '{ printf "%.3f", $2 - $1 }')
        dd_runs+=("$(du -cb "$WORK"/www/obj-* | awk -v s="$dd_seconds" 'END { printf "%.3f", $1 / s / 1e9 }')")
        echo "dd iflag=direct run $run: ${dd_runs[-1]} GB/s" >&2
    done
    local node_median dd_median
    node_median=$(printf '%s\n' "${node_runs[@]}" | sort -g | sed -n 2p)
    dd_median=$(printf '%s\n' "${dd_runs[@]}" | sort -g | sed -n 2p)
    SUMMARY+=("cold GET (median of 3): node ${node_median} GB/s (runs ${node_runs[*]})," \
        "dd iflag=direct ${dd_median} GB/s (runs ${dd_runs[*]}), ratio $(ratio "$node_median" "$dd_median")")
}

for part in "${PARTS[@]}"; do
    case $part in
        small) measure_small ;;
        conns) measure_conns ;;
        cold) measure_cold ;;
        *) echo "unknown part $part (small, conns, cold)" >&2; exit 2 ;;
    esac
done

say "summary"
printf '%s\n' "${SUMMARY[@]}"
echo "load average after the run (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
