#!/usr/bin/env bash
# measure_large_query.sh: issue 4's large-snapshot `query` measurement, in one run on one machine.
#
# For each size (active files; default 10000 100000 1000000) it writes a synthetic Delta table
# with loadtest/synth_delta.py (log only: a checkpoint of adds with stats and a partition
# column, plus 3 JSON commits) into a fresh lakeshare node, shares it, and measures for each
# response format (parquet = default, delta = `responseformat=delta`):
#   cold  the server restarted (nothing cached in the process; the OS page cache stays warm),
#         then one POST .../query {} : time to first byte, to last byte, VmHWM after it
#   warm  WARM_RUNS more identical queries: median TTFB / total, files/s, VmHWM after them
# and, as the anchor, a fresh Python process listing the same snapshot with
# deltalake.DeltaTable(...).get_add_actions() under /usr/bin/time -v.
# Every query must answer 200 with exactly N + 2 lines (protocol, metaData, N files); after the
# warm runs one more query counts the `{"file":` lines, which must equal N. Anything else stops
# the script with a non-zero status.
#
# Usage:  loadtest/scripts/measure_large_query.sh [FILES...]     (from anywhere in the repo)
# Needs:  curl, jq; the repository's .venv (boto3, pyarrow, deltalake); a release build
#         (`cargo build --release --bin lakeshare`, or SKIP_BUILD=0 to let the script build).
# Knobs:  LAKESHARE_BIN [target/release/lakeshare]  THREADS [] (server --threads; default: all
#         cores)  DRIVES [4]  WARM_RUNS [5]  SKIP_BUILD [1]  RESULTS_JSON [] (all figures as JSON)
#         KEEP_WORK [0] (keep the temp folder)
# Every process it starts is stopped and the temp folder under /tmp removed on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
LAKESHARE=${LAKESHARE_BIN:-$TARGET_DIR/release/lakeshare}
PYTHON=$REPO/.venv/bin/python
THREADS=${THREADS:-}
DRIVES=${DRIVES:-4}
WARM_RUNS=${WARM_RUNS:-5}
SKIP_BUILD=${SKIP_BUILD:-1}
RESULTS_JSON=${RESULTS_JSON:-}
KEEP_WORK=${KEEP_WORK:-0}
CLOCK_TICKS=$(getconf CLK_TCK)
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(10000 100000 1000000)

ACCESS_KEY=bench
SECRET_KEY=bench-secret-key
BUCKET=lake
SHARE=bench
SCHEMA=s
TABLES_PATH=_delta-sharing/v1/shares/$SHARE/schemas/$SCHEMA/tables

for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y $tool" >&2; exit 2; }
done
[[ -x $PYTHON ]] || { echo "missing $PYTHON: run ./test.sh once to create .venv" >&2; exit 2; }
for size in "${SIZES[@]}"; do
    [[ $size =~ ^[0-9]+$ && $size -ge 10 ]] || { echo "bad size '$size'" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/lakeshare-large-query.XXXXXX)
SERVER_PID=""
ENDPOINT=""
stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_server
    if [[ $status -ne 0 && -f $WORK/server.log ]]; then
        echo "---- last lines of the server log ($WORK/server.log)" >&2
        tail -n 40 "$WORK/server.log" >&2
    fi
    if [[ $KEEP_WORK == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT INT TERM
say() { printf '== %s\n' "$*" >&2; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

if [[ $SKIP_BUILD != 1 ]]; then
    say "building the release binary"
    (cd "$REPO" && cargo build --release --bin lakeshare)
fi
[[ -x $LAKESHARE ]] || die "no binary at $LAKESHARE: cargo build --release --bin lakeshare"

DRIVE_DIRS=()
for index in $(seq 1 "$DRIVES"); do DRIVE_DIRS+=("$WORK/drive$index"); done
mkdir -p "${DRIVE_DIRS[@]}"
: >"$WORK/server.log"

# Starts the node on an ephemeral port and sets SERVER_PID and ENDPOINT.
start_server() {
    local thread_args=() log_start line
    [[ -n $THREADS ]] && thread_args=(--threads "$THREADS")
    log_start=$(($(wc -l <"$WORK/server.log") + 1))
    LAKESHARE_ROOT_USER=$ACCESS_KEY LAKESHARE_ROOT_PASSWORD=$SECRET_KEY \
        "$LAKESHARE" server --address 127.0.0.1:0 "${thread_args[@]}" "${DRIVE_DIRS[@]}" \
        </dev/null >/dev/null 2>>"$WORK/server.log" &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        line=$(tail -n +"$log_start" "$WORK/server.log" | grep -m1 -o \
            'listening on http://127\.0\.0\.1:[0-9]*' || true)
        if [[ -n $line ]]; then
            ENDPOINT=${line#listening on }
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || die "lakeshare exited before it was ready"
        sleep 0.1
    done
    die "lakeshare printed no ready line in 30 s"
}

# Peak resident set of the server so far, in MiB.
server_peak_mib() {
    awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$SERVER_PID/status"
}

# CPU seconds (user + system) the server has used so far.
server_cpu_seconds() {
    awk -v ticks="$CLOCK_TICKS" '{ printf "%.2f", ($14 + $15) / ticks }' "/proc/$SERVER_PID/stat"
}

# One query; sets Q_TTFB, Q_TOTAL (seconds) and Q_BYTES. Stops the script unless the answer is
# 200 with exactly N + 2 lines. Call it in the main shell (not in $(...)) so that `die` exits.
# Usage: query TABLE FORMAT EXPECTED_FILES
query() {
    local table=$1 format=$2 expected=$3 lines status
    local capability=()
    [[ $format == delta ]] && capability=(-H "delta-sharing-capabilities: responseformat=delta")
    lines=$(curl -sS --max-time 900 -X POST "$ENDPOINT/$TABLES_PATH/$table/query" \
        -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
        "${capability[@]}" -d '{}' -o - \
        -w '%{stderr}%{http_code} %{time_starttransfer} %{time_total} %{size_download}\n' \
        2>"$WORK/curl.err" | wc -l) || true
    read -r status Q_TTFB Q_TOTAL Q_BYTES < <(tail -n 1 "$WORK/curl.err")
    [[ $status == 200 ]] || die "$table ($format): HTTP $status: $(head -c 400 "$WORK/curl.err")"
    [[ $lines -eq $((expected + 2)) ]] ||
        die "$table ($format): $lines lines, expected $((expected + 2)): protocol, metaData, files"
}

# Counts the file lines of one more query; must equal the active files.
assert_file_lines() {
    local table=$1 format=$2 expected=$3 files
    local capability=()
    [[ $format == delta ]] && capability=(-H "delta-sharing-capabilities: responseformat=delta")
    files=$(curl -sS --fail --max-time 900 -X POST "$ENDPOINT/$TABLES_PATH/$table/query" \
        -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
        "${capability[@]}" -d '{}' | LC_ALL=C grep -c '^{"file":' || true)
    [[ $files -eq $expected ]] ||
        die "$table ($format): $files file lines, expected $expected"
}

mib() { awk -v bytes="$1" 'BEGIN { printf "%.1f", bytes / 1048576 }'; }
median() { sort -g | awk '{ values[NR] = $1 } END { print values[int((NR + 1) / 2)] }'; }
ms() { awk -v seconds="$1" 'BEGIN { printf "%.1f ms", seconds * 1000 }'; }
seconds() {
    awk -v s="$1" 'BEGIN { if (s < 1) printf "%.0f ms", s * 1000; else printf "%.2f s", s }'
}

say "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; binary $LAKESHARE"
start_server
say "node at $ENDPOINT ($DRIVES drives under $WORK)"

TABLE_SPECS=()
for size in "${SIZES[@]}"; do
    say "generating a $size-file table at s3://$BUCKET/t$size/"
    "$PYTHON" "$REPO/loadtest/synth_delta.py" --endpoint "$ENDPOINT" --access-key "$ACCESS_KEY" \
        --secret-key "$SECRET_KEY" --bucket "$BUCKET" --prefix "t$size/" --create-bucket \
        --files "$size" --name "t$size" >"$WORK/generate-$size.json"
    jq -c . "$WORK/generate-$size.json" >&2
    TABLE_SPECS+=("t$size:delta:$BUCKET:t$size/")
done
DRIVE_BYTES=$(du -scb "${DRIVE_DIRS[@]}" | awk 'END { print $1 }')
say "disk use of the drives after generation: $(mib "$DRIVE_BYTES") MiB"

export LAKESHARE_CONFIG_DIR=$WORK/cli
"$LAKESHARE" alias set bench "$ENDPOINT" "$ACCESS_KEY" "$SECRET_KEY" >/dev/null
"$LAKESHARE" table share create "bench/$SHARE" "$SCHEMA" "${TABLE_SPECS[@]}" >/dev/null
TOKEN=$("$LAKESHARE" table share token create "bench/$SHARE" --json | jq -r .token)
[[ -n $TOKEN && $TOKEN != null ]] || die "no token from 'lakeshare table share token create'"

: >"$WORK/results.jsonl"
for size in "${SIZES[@]}"; do
    table=t$size
    for format in parquet delta; do
        say "$table, $format format: cold (server restarted)"
        stop_server
        start_server
        start_mib=$(server_peak_mib)
        query "$table" "$format" "$size"
        cold_ttfb=$Q_TTFB cold_total=$Q_TOTAL bytes=$Q_BYTES
        cold_mib=$(server_peak_mib)
        say "$table, $format format: $WARM_RUNS warm queries"
        : >"$WORK/warm"
        warm_cpu_start=$(server_cpu_seconds)
        for _ in $(seq 1 "$WARM_RUNS"); do
            query "$table" "$format" "$size"
            echo "$Q_TTFB $Q_TOTAL" >>"$WORK/warm"
        done
        warm_mib=$(server_peak_mib)
        warm_cpu=$(awk -v a="$warm_cpu_start" -v b="$(server_cpu_seconds)" -v n="$WARM_RUNS" \
            'BEGIN { printf "%.3f", (b - a) / n }')
        warm_ttfb=$(awk '{ print $1 }' "$WORK/warm" | median)
        warm_total=$(awk '{ print $2 }' "$WORK/warm" | median)
        assert_file_lines "$table" "$format" "$size"
        jq -nc --argjson files "$size" --arg format "$format" --argjson cold_ttfb "$cold_ttfb" \
            --argjson cold_total "$cold_total" --argjson warm_ttfb "$warm_ttfb" \
            --argjson warm_total "$warm_total" --argjson response_bytes "$bytes" \
            --argjson start_mib "$start_mib" --argjson cold_mib "$cold_mib" \
            --argjson warm_mib "$warm_mib" --argjson warm_cpu "$warm_cpu" \
            '{files: $files, format: $format, cold_ttfb_s: $cold_ttfb, cold_total_s: $cold_total,
              warm_ttfb_s: $warm_ttfb, warm_total_s: $warm_total,
              warm_files_per_s: ($files / $warm_total | floor), response_bytes: $response_bytes,
              warm_server_cpu_s_per_query: $warm_cpu,
              server_vmhwm_mib: {started: $start_mib, after_cold: $cold_mib,
                                 after_warm: $warm_mib}}' >>"$WORK/results.jsonl"
        tail -n 1 "$WORK/results.jsonl" >&2
    done
    say "$table: deltalake get_add_actions() in a fresh process"
    /usr/bin/time -v -o "$WORK/time-$size.txt" "$PYTHON" \
        "$REPO/loadtest/scripts/deltalake_listing.py" "s3://$BUCKET/$table/" "$ENDPOINT" \
        "$ACCESS_KEY" "$SECRET_KEY" --expect "$size" >"$WORK/deltalake-$size.json" ||
        die "deltalake listing of $table failed: $(cat "$WORK/deltalake-$size.json")"
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0;
        for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$WORK/time-$size.txt")
    rss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time-$size.txt")
    jq -c --argjson wall "$wall" --argjson rss_kb "$rss_kb" \
        '. + {process_wall_s: $wall, process_max_rss_kb: $rss_kb}' \
        "$WORK/deltalake-$size.json" >"$WORK/deltalake-$size.full.json"
    cat "$WORK/deltalake-$size.full.json" >&2
done

echo
echo "lakeshare POST /query {} on synthetic Delta tables; $(nproc) cores, \
$(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; warm = median of $WARM_RUNS; \
warm server CPU = user+system per query; \
server peak RSS = VmHWM after cold → after warm; deltalake = DeltaTable + get_add_actions \
in a fresh process (wall of that process in brackets)"
echo
printf '%s\n' "| files | format | response | cold TTFB | cold total | warm TTFB | warm total \
| warm files/s | warm server CPU | server peak RSS | deltalake listing | deltalake peak RSS |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while read -r row; do
    size=$(jq .files <<<"$row")
    anchor=$WORK/deltalake-$size.full.json
    row_format='| %s | %s | %s MiB | %s | %s | %s | %s | %s | %s '
    row_format+='| %s → %s MiB | %s (%s) | %s MiB |\n'
    printf "$row_format" \
        "$size" "$(jq -r .format <<<"$row")" \
        "$(jq '.response_bytes / 1048576 * 10 | floor / 10' <<<"$row")" \
        "$(ms "$(jq .cold_ttfb_s <<<"$row")")" "$(seconds "$(jq .cold_total_s <<<"$row")")" \
        "$(ms "$(jq .warm_ttfb_s <<<"$row")")" "$(seconds "$(jq .warm_total_s <<<"$row")")" \
        "$(jq .warm_files_per_s <<<"$row")" \
        "$(seconds "$(jq .warm_server_cpu_s_per_query <<<"$row")")" \
        "$(jq .server_vmhwm_mib.after_cold <<<"$row")" \
        "$(jq .server_vmhwm_mib.after_warm <<<"$row")" \
        "$(seconds "$(jq .listing_seconds "$anchor")")" \
        "$(seconds "$(jq .process_wall_s "$anchor")")" \
        "$(jq '.process_max_rss_kb / 1024 | floor' "$anchor")"
done <"$WORK/results.jsonl"
echo
echo "drives after generation: $(mib "$DRIVE_BYTES") MiB ($DRIVES drives, all tables)"

if [[ -n $RESULTS_JSON ]]; then
    jq -n --slurpfile queries "$WORK/results.jsonl" \
        --slurpfile anchors <(cat "$WORK"/deltalake-*.full.json) \
        --slurpfile generated <(cat "$WORK"/generate-*.json) \
        --argjson drive_bytes "$DRIVE_BYTES" \
        '{queries: $queries, deltalake: $anchors, generated: $generated,
          drive_bytes: $drive_bytes}' >"$RESULTS_JSON"
fi
