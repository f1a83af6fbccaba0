# measure_lib.sh: the shared half of the `query` measurement scripts (measure_large_query.sh,
# measure_iceberg_query.sh). Sourced, never run: `source "$(dirname "${BASH_SOURCE[0]}")/..."`
# right after `set -euo pipefail`.
#
# On sourcing it reads the common knobs (LAKESHARE_BIN, CARGO_TARGET_DIR, THREADS, DRIVES,
# WARM_RUNS, SKIP_BUILD, RESULTS_JSON, KEEP_WORK), sets the fixed names of the node's credentials
# and share (ACCESS_KEY, SECRET_KEY, BUCKET, SHARE, SCHEMA, TABLES_PATH), and stops with status 2
# unless curl, jq, /usr/bin/time and the repository's .venv are there. It starts nothing.
#
# The caller then checks its own arguments and calls, in this order:
#   start_node NAME          temp folder /tmp/lakeshare-NAME.XXXXXX (WORK), exit trap, build,
#                            drives (DRIVE_DIRS), the node (SERVER_PID, ENDPOINT), an empty
#                            $WORK/results.jsonl
#   generate_table ...       per table: a synthetic table and its summary JSON
#   record_drive_bytes       after generating its tables: DRIVE_BYTES
#   share_tables SPEC...     one share of all tables, a bearer TOKEN
#   measure_cold_warm ...    per table and format: one row in $WORK/results.jsonl
#   deltalake_anchor / run_anchor, then print_result_row per row of results.jsonl
# Invariants: at most one server runs, and SERVER_PID names it or is empty; on exit (also on
# failure or Ctrl-C) it is stopped, the server log's tail is printed if the status is non-zero,
# and WORK is removed unless KEEP_WORK=1. `die` and every function that may call it must run in
# the main shell (not in $(...)), or the script goes on after the failure.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
LAKESHARE=${LAKESHARE_BIN:-$TARGET_DIR/release/lakeshare}
PYTHON=$REPO/.venv/bin/python
THREADS=${THREADS:-}
DRIVES=${DRIVES:-4}
WARM_RUNS=${WARM_RUNS:-5}
# URLs live 5 minutes, so a signing window (a sixtieth of that) is 5 s: the re-signing warm
# runs wait for a fresh window instead of a minute.
PRESIGN_EXPIRY_SECONDS=300
SIGNING_WINDOW_SECONDS=$((PRESIGN_EXPIRY_SECONDS / 60))
SKIP_BUILD=${SKIP_BUILD:-1}
RESULTS_JSON=${RESULTS_JSON:-}
KEEP_WORK=${KEEP_WORK:-0}
CLOCK_TICKS=$(getconf CLK_TCK)

ACCESS_KEY=bench
SECRET_KEY=bench-secret-key
BUCKET=lake
SHARE=bench
SCHEMA=s
TABLES_PATH=_delta-sharing/v1/shares/$SHARE/schemas/$SCHEMA/tables

WORK=""
SERVER_PID=""
ENDPOINT=""
TOKEN=""
DRIVE_DIRS=()
DRIVE_BYTES=0

for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y $tool" >&2; exit 2; }
done
[[ -x $PYTHON ]] || { echo "missing $PYTHON: run ./test.sh once to create .venv" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "missing /usr/bin/time: apt-get install -y time" >&2; exit 2; }

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

# "N cores, M GiB RAM" of this machine.
machine_summary() {
    echo "$(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM"
}

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

# Starts the node on an ephemeral port and sets SERVER_PID and ENDPOINT.
start_server() {
    local thread_args=() log_start
    [[ -n $THREADS ]] && thread_args=(--threads "$THREADS")
    log_start=$(($(wc -l <"$WORK/server.log") + 1))
    LAKESHARE_ROOT_USER=$ACCESS_KEY LAKESHARE_ROOT_PASSWORD=$SECRET_KEY \
        "$LAKESHARE" server --address 127.0.0.1:0 --presign-expiry "$PRESIGN_EXPIRY_SECONDS" \
        "${thread_args[@]}" "${DRIVE_DIRS[@]}" \
        </dev/null >/dev/null 2>>"$WORK/server.log" &
    SERVER_PID=$!
    wait_for_ready_line "$WORK/server.log" "$log_start" "$SERVER_PID" lakeshare
    ENDPOINT=$READY_URL
}

# Waits until LOG, from line START on, shows lakeshare's ready line while PID runs, and sets
# READY_URL to the URL it names. Usage: wait_for_ready_line LOG START PID WHAT
wait_for_ready_line() {
    local log=$1 start=$2 pid=$3 what=$4 line
    for _ in $(seq 1 300); do
        line=$(tail -n +"$start" "$log" | grep -m1 -o \
            'listening on http://127\.0\.0\.1:[0-9]*' || true)
        if [[ -n $line ]]; then
            READY_URL=${line#listening on }
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$what exited before it was ready"
        sleep 0.1
    done
    die "$what printed no ready line in 30 s"
}

# Makes the temp folder and its drives, installs the exit trap, builds the binary unless
# SKIP_BUILD=1 and starts the node. Usage: start_node NAME (the temp folder's name part)
start_node() {
    WORK=$(mktemp -d "/tmp/lakeshare-$1.XXXXXX")
    trap cleanup EXIT INT TERM
    if [[ $SKIP_BUILD != 1 ]]; then
        say "building the release binary"
        (cd "$REPO" && cargo build --release --bin lakeshare)
    fi
    [[ -x $LAKESHARE ]] || die "no binary at $LAKESHARE: cargo build --release --bin lakeshare"
    local index
    DRIVE_DIRS=()
    for index in $(seq 1 "$DRIVES"); do DRIVE_DIRS+=("$WORK/drive$index"); done
    mkdir -p "${DRIVE_DIRS[@]}"
    : >"$WORK/server.log"
    : >"$WORK/results.jsonl"
    say "machine: $(machine_summary); binary $LAKESHARE"
    start_server
    say "node at $ENDPOINT ($DRIVES drives under $WORK)"
}

# Writes a synthetic table of FILES data files with loadtest/GENERATOR (synth_delta.py or
# synth_iceberg.py) at s3://$BUCKET/TABLE/ and its summary to OUT_JSON, echoed to stderr.
# Usage: generate_table WHAT GENERATOR TABLE FILES OUT_JSON   (WHAT: "table", "Delta table", ...)
generate_table() {
    local what=$1 generator=$2 table=$3 files=$4 out=$5
    say "generating a $files-file $what at s3://$BUCKET/$table/"
    "$PYTHON" "$REPO/loadtest/$generator" --endpoint "$ENDPOINT" --access-key "$ACCESS_KEY" \
        --secret-key "$SECRET_KEY" --bucket "$BUCKET" --prefix "$table/" --create-bucket \
        --files "$files" --name "$table" >"$out" ||
        die "$generator failed"
    jq -c . "$out" >&2
}

# Sets DRIVE_BYTES to the bytes on all drives now, and says it.
record_drive_bytes() {
    DRIVE_BYTES=$(du -scb "${DRIVE_DIRS[@]}" | awk 'END { print $1 }')
    say "disk use of the drives after generation: $(mib "$DRIVE_BYTES") MiB"
}

# Shares the tables in one share and sets TOKEN. Usage: share_tables NAME:FORMAT:BUCKET:PREFIX...
share_tables() {
    export LAKESHARE_CONFIG_DIR=$WORK/cli
    "$LAKESHARE" alias set bench "$ENDPOINT" "$ACCESS_KEY" "$SECRET_KEY" >/dev/null
    "$LAKESHARE" table share create "bench/$SHARE" "$SCHEMA" "$@" >"$WORK/share.txt" 2>&1 ||
        die "share create failed: $(cat "$WORK/share.txt")"
    TOKEN=$("$LAKESHARE" table share token create "bench/$SHARE" --json | jq -r .token)
    [[ -n $TOKEN && $TOKEN != null ]] || die "no token from 'lakeshare table share token create'"
}

# Peak resident set of the server so far, in MiB.
server_peak_mib() {
    awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$SERVER_PID/status"
}

# CPU seconds (user + system) the server has used so far.
server_cpu_seconds() {
    awk -v ticks="$CLOCK_TICKS" '{ printf "%.2f", ($14 + $15) / ticks }' "/proc/$SERVER_PID/stat"
}

# Runs curl for one POST .../query {} of TABLE in FORMAT; further arguments go to curl.
# Usage: query_curl TABLE FORMAT [CURL_ARGS...]
query_curl() {
    local table=$1 format=$2
    shift 2
    local capability=()
    [[ $format == delta ]] && capability=(-H "delta-sharing-capabilities: responseformat=delta")
    curl -sS --max-time 900 -X POST "$ENDPOINT/$TABLES_PATH/$table/query" \
        -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
        "${capability[@]}" -d '{}' "$@"
}

# One query, its body sent to /dev/null (the timed client only receives: on 2 cores a client
# that also parses competes with the server); sets Q_TTFB, Q_TOTAL (seconds) and Q_BYTES. Stops
# the script unless the answer is 200 and, with EXPECTED_BYTES, exactly that long (every answer
# of one snapshot has the same length: its lines differ only in fixed-width signatures and
# times). On a wrong answer it prints the start of the body. Call it in the main shell (not in
# $(...)) so that `die` exits. Usage: query TABLE FORMAT [EXPECTED_BYTES]
query() {
    local table=$1 format=$2 expected_bytes=${3:-} status
    query_curl "$table" "$format" -o /dev/null \
        -w '%{stderr}%{http_code} %{time_starttransfer} %{time_total} %{size_download}\n' \
        2>"$WORK/curl.out" || true
    read -r status Q_TTFB Q_TOTAL Q_BYTES < <(tail -n 1 "$WORK/curl.out") ||
        die "$table ($format): curl failed: $(head -c 400 "$WORK/curl.out")"
    if [[ $status != 200 || ( -n $expected_bytes && $Q_BYTES -ne $expected_bytes ) ]]; then
        query_curl "$table" "$format" -o "$WORK/body" 2>"$WORK/curl.err" || true
        die "$table ($format): HTTP $status, $Q_BYTES bytes${expected_bytes:+, expected \
$expected_bytes}; first bytes: $(head -c 1500 "$WORK/body"); last line: \
$(tail -n 1 "$WORK/body" | head -c 1500) $(cat "$WORK/curl.err")"
    fi
}

# Checks one more (untimed) answer: exactly N + 2 lines (protocol, metaData, N files), N of them
# `{"file":` lines, and BYTES long, the length of every timed answer.
# Usage: assert_answer TABLE FORMAT FILES BYTES
assert_answer() {
    local table=$1 format=$2 expected=$3 bytes=$4 counts
    counts=$(query_curl "$table" "$format" --fail | LC_ALL=C awk '
        /^\{"file":/ { files++ } { bytes += length($0) + 1 }
        END { printf "%d %d %d", NR, files, bytes }') || true
    [[ $counts == "$((expected + 2)) $expected $bytes" ]] ||
        die "$table ($format): lines, file lines, bytes = $counts; expected \
$((expected + 2)) $expected $bytes"
}

# One cold query on a restarted server, then WARM_RUNS warm ones and a file-line count; appends
# EXTRA_JSON (an object, its keys first) + the figures as one line to $WORK/results.jsonl and
# echoes that line to stderr. Usage: measure_cold_warm TABLE FORMAT FILES [EXTRA_JSON]
measure_cold_warm() {
    local table=$1 format=$2 files=$3 extra=${4:-'{}'}
    local start_mib cold_ttfb cold_total cold_bytes bytes cold_mib warm_cpu_start warm_mib warm_cpu
    local warm_ttfb warm_total resigned_total
    say "$table, $format format: cold (server restarted)"
    stop_server
    start_server
    start_mib=$(server_peak_mib)
    query "$table" "$format"
    cold_ttfb=$Q_TTFB cold_total=$Q_TOTAL cold_bytes=$Q_BYTES
    cold_mib=$(server_peak_mib)
    say "$table, $format format: $WARM_RUNS warm queries"
    : >"$WORK/warm"
    warm_cpu_start=$(server_cpu_seconds)
    # Warm answers must all be as long as the first; the cold one may lack metaData's `size`
    # and `numFiles`, which are known once the file list is cached.
    bytes=
    for _ in $(seq 1 "$WARM_RUNS"); do
        query "$table" "$format" "$bytes"
        bytes=${bytes:-$Q_BYTES}
        echo "$Q_TTFB $Q_TOTAL" >>"$WORK/warm"
    done
    (( bytes >= cold_bytes && bytes - cold_bytes <= 64 )) ||
        die "$table ($format): the warm answer has $bytes bytes, the cold one $cold_bytes"
    warm_mib=$(server_peak_mib)
    warm_cpu=$(awk -v a="$warm_cpu_start" -v b="$(server_cpu_seconds)" -v n="$WARM_RUNS" \
        'BEGIN { printf "%.3f", (b - a) / n }')
    warm_ttfb=$(awk '{ print $1 }' "$WORK/warm" | median)
    warm_total=$(awk '{ print $2 }' "$WORK/warm" | median)
    say "$table, $format format: $WARM_RUNS warm queries, each the first of a signing window"
    : >"$WORK/resigned"
    for _ in $(seq 1 "$WARM_RUNS"); do
        wait_for_signing_window
        query "$table" "$format" "$bytes"
        echo "$Q_TOTAL" >>"$WORK/resigned"
    done
    resigned_total=$(median <"$WORK/resigned")
    assert_answer "$table" "$format" "$files" "$bytes"
    # The numbers go in as JSON, in the order of the names in the pattern.
    jq -nc --argjson extra "$extra" --arg format "$format" '$ARGS.positional as [$files,
          $cold_ttfb, $cold_total, $warm_ttfb, $warm_total, $response_bytes,
          $start_mib, $cold_mib, $warm_mib, $warm_cpu, $resigned_total]
        | $extra + {files: $files, format: $format,
          cold_ttfb_s: $cold_ttfb, cold_total_s: $cold_total,
          warm_resigned_total_s: $resigned_total, warm_ttfb_s: $warm_ttfb, warm_total_s: $warm_total,
          warm_files_per_s: ($files / $warm_total | floor), response_bytes: $response_bytes,
          warm_server_cpu_s_per_query: $warm_cpu,
          server_vmhwm_mib: {started: $start_mib, after_cold: $cold_mib,
                             after_warm: $warm_mib}}' \
        --jsonargs "$files" "$cold_ttfb" "$cold_total" "$warm_ttfb" "$warm_total" "$bytes" \
        "$start_mib" "$cold_mib" "$warm_mib" "$warm_cpu" "$resigned_total" >>"$WORK/results.jsonl"
    tail -n 1 "$WORK/results.jsonl" >&2
}

# Sleeps until just after the next signing window starts, so the next query signs every URL
# anew instead of reusing the signatures the cached list keeps.
wait_for_signing_window() {
    local now_ns
    now_ns=$(date +%s%N)
    sleep "$(awk -v ns="$now_ns" -v w="$SIGNING_WINDOW_SECONDS" 'BEGIN {
        left = w - (ns / 1e9) % w; printf "%.3f", left + 0.05 }')"
}

# Wall seconds and peak RSS (KiB) of a `/usr/bin/time -v` report, as a JSON object.
time_report_json() {
    local wall rss_kb
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0;
        for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$1")
    rss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$1")
    jq -nc --argjson wall "$wall" --argjson rss_kb "$rss_kb" \
        '{process_wall_s: $wall, process_max_rss_kb: $rss_kb}'
}

# Runs an anchor listing (a command that prints one JSON object) under /usr/bin/time -v and
# writes $WORK/NAME.json: its object + process_wall_s, process_max_rss_kb + EXTRA_JSON; echoes
# that to stderr. Stops the script with "FAILURE: <its output>" if the command fails.
# Usage: run_anchor NAME FAILURE EXTRA_JSON COMMAND...
run_anchor() {
    local name=$1 failure=$2 extra=$3
    shift 3
    /usr/bin/time -v -o "$WORK/time-$name.txt" "$@" >"$WORK/raw-$name.json" ||
        die "$failure: $(cat "$WORK/raw-$name.json")"
    jq -c --argjson process "$(time_report_json "$WORK/time-$name.txt")" \
        --argjson extra "$extra" '. + $process + $extra' "$WORK/raw-$name.json" \
        >"$WORK/$name.json"
    cat "$WORK/$name.json" >&2
}

# The Delta anchor: deltalake get_add_actions() of TABLE (FILES active files) in a fresh process,
# into $WORK/NAME.json. Usage: deltalake_anchor NAME TABLE FILES EXTRA_JSON
deltalake_anchor() {
    local name=$1 table=$2 files=$3 extra=$4
    say "$table: deltalake get_add_actions() in a fresh process"
    run_anchor "$name" "deltalake listing of $table failed" "$extra" \
        "$PYTHON" "$REPO/loadtest/scripts/deltalake_listing.py" "s3://$BUCKET/$table/" \
        "$ENDPOINT" "$ACCESS_KEY" "$SECRET_KEY" --expect "$files"
}

mib() { awk -v bytes="$1" 'BEGIN { printf "%.1f", bytes / 1048576 }'; }
median() { sort -g | awk '{ values[NR] = $1 } END { print values[int((NR + 1) / 2)] }'; }
ms() { awk -v seconds="$1" 'BEGIN { printf "%.1f ms", seconds * 1000 }'; }
seconds() {
    awk -v s="$1" 'BEGIN { if (s < 1) printf "%.0f ms", s * 1000; else printf "%.2f s", s }'
}

# The header of the results table; its first column is named LABEL_NAME.
# Usage: print_result_header LABEL_NAME
print_result_header() {
    local columns="| $1 | format | response | cold TTFB | cold total | warm TTFB | warm total"
    columns+=" | warm files/s | warm, new window | warm server CPU | server peak RSS"
    columns+=" | anchor listing"
    echo "$columns | anchor peak RSS |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
}

# One Markdown row of the results table: LABEL, then the figures of ROW (a line of
# results.jsonl) and of ANCHOR (an anchor's JSON file). Usage: print_result_row LABEL ROW ANCHOR
print_result_row() {
    local label=$1 row=$2 anchor=$3 row_format
    row_format='| %s | %s | %s MiB | %s | %s | %s | %s | %s | %s | %s '
    row_format+='| %s → %s MiB | %s (%s) | %s MiB |\n'
    # shellcheck disable=SC2059 # the format is the constant above
    printf "$row_format" \
        "$label" "$(jq -r .format <<<"$row")" \
        "$(jq '.response_bytes / 1048576 * 10 | floor / 10' <<<"$row")" \
        "$(ms "$(jq .cold_ttfb_s <<<"$row")")" "$(seconds "$(jq .cold_total_s <<<"$row")")" \
        "$(ms "$(jq .warm_ttfb_s <<<"$row")")" "$(seconds "$(jq .warm_total_s <<<"$row")")" \
        "$(jq .warm_files_per_s <<<"$row")" \
        "$(seconds "$(jq .warm_resigned_total_s <<<"$row")")" \
        "$(seconds "$(jq .warm_server_cpu_s_per_query <<<"$row")")" \
        "$(jq .server_vmhwm_mib.after_cold <<<"$row")" \
        "$(jq .server_vmhwm_mib.after_warm <<<"$row")" \
        "$(seconds "$(jq .listing_seconds "$anchor")")" \
        "$(seconds "$(jq .process_wall_s "$anchor")")" \
        "$(jq '.process_max_rss_kb / 1024 | floor' "$anchor")"
}
