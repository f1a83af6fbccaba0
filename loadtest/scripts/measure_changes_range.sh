#!/usr/bin/env bash
# measure_changes_range.sh: issue 12's change-range measurement, in one run on one machine.
#
# Writes a synthetic change-data-feed Delta table with loadtest/synth_changes.py (log only:
# COMMITS JSON commits of ADDS_PER_COMMIT adds each after a version 0 without files; 100 x
# 1,000 = 100,000 changed files by default; with CHECKPOINT=1, the default, also a checkpoint at
# the latest version, so resolving the latest snapshot costs little whatever the range) into a
# fresh lakeshare node, shares it, and for each binary given (LABEL=PATH, e.g.
# old=/path/to/lakeshare new=target/release/lakeshare), on the same drives, restarts the node
# with that binary and measures one whole answer of
#   metadata   GET .../metadata                           (baseline: the latest snapshot only)
#   changes    GET .../changes?startingVersion=S          (parquet format)
#   streaming  POST .../query {"startingVersion":S}       (parquet format)
#   paged      with PAGE_FILES=N: every page of GET .../changes?startingVersion=S&maxFiles=N,
#              following nextPageToken (TTFB = the first page's, total = all pages')
# each on a freshly started node: the node's VmHWM (peak RSS) before and after the answer, the
# time to first byte and to last byte. The body is saved and must be 200 with exactly one
# `{"add":` line per file the range changed (ADDS_PER_COMMIT for each version from max(S, 1) to
# COMMITS) after protocol and metaData (the baseline: exactly protocol and metaData; pages:
# each page protocol, metaData, its adds and an endStreamAction); anything else stops the
# script with a non-zero status.
#
# Usage:  loadtest/scripts/measure_changes_range.sh [LABEL=BINARY...]   (default: new=LAKESHARE_BIN)
# Needs:  curl, jq, /usr/bin/time; the repository's .venv (boto3, pyarrow); release builds.
# Knobs:  COMMITS [100]  ADDS_PER_COMMIT [1000]  CHECKPOINT [1]  STARTING_VERSION [0]
#         PAGE_FILES [] (adds the paged route)  THREADS [] (server --threads)  DRIVES [4]
#         RESULTS_JSON [] (all figures as JSON)  KEEP_WORK [0]; see measure_lib.sh.
# Every process it starts is stopped and the temp folder under /tmp removed on exit.
set -euo pipefail

# shellcheck source=measure_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/measure_lib.sh"
COMMITS=${COMMITS:-100}
ADDS_PER_COMMIT=${ADDS_PER_COMMIT:-1000}
[[ $COMMITS =~ ^[0-9]+$ && $COMMITS -ge 1 ]] || { echo "bad COMMITS '$COMMITS'" >&2; exit 2; }
[[ $ADDS_PER_COMMIT =~ ^[0-9]+$ && $ADDS_PER_COMMIT -ge 1 ]] ||
    { echo "bad ADDS_PER_COMMIT '$ADDS_PER_COMMIT'" >&2; exit 2; }
STARTING_VERSION=${STARTING_VERSION:-0}
[[ $STARTING_VERSION =~ ^[0-9]+$ && $STARTING_VERSION -le $COMMITS ]] ||
    { echo "bad STARTING_VERSION '$STARTING_VERSION'" >&2; exit 2; }
PAGE_FILES=${PAGE_FILES:-}
[[ -z $PAGE_FILES || $PAGE_FILES =~ ^[1-9][0-9]*$ ]] || { echo "bad PAGE_FILES" >&2; exit 2; }
first_changed=$((STARTING_VERSION > 1 ? STARTING_VERSION : 1))
EXPECTED_FILES=$(((COMMITS - first_changed + 1) * ADDS_PER_COMMIT))
CHECKPOINT=${CHECKPOINT:-1}
checkpoint_args=()
[[ $CHECKPOINT == 1 ]] && checkpoint_args=(--checkpoint)
TABLE=changes

BINARIES=("$@")
[[ ${#BINARIES[@]} -gt 0 ]] || BINARIES=("new=$LAKESHARE")
for spec in "${BINARIES[@]}"; do
    [[ $spec == *=* && -x ${spec#*=} ]] || { echo "bad binary '$spec' (LABEL=PATH)" >&2; exit 2; }
done

LAKESHARE=${BINARIES[0]#*=}
start_node changes-range
say "generating $COMMITS commits of $ADDS_PER_COMMIT adds at s3://$BUCKET/$TABLE/"
"$PYTHON" "$REPO/loadtest/synth_changes.py" --endpoint "$ENDPOINT" --access-key "$ACCESS_KEY" \
    --secret-key "$SECRET_KEY" --bucket "$BUCKET" --prefix "$TABLE/" --create-bucket \
    --commits "$COMMITS" --adds-per-commit "$ADDS_PER_COMMIT" --name "$TABLE" \
    "${checkpoint_args[@]}" \
    >"$WORK/generate.json" || die "synth_changes.py failed"
jq -c . "$WORK/generate.json" >&2
share_tables "$TABLE:delta:$BUCKET:$TABLE/"

# One request into $WORK/body; sets R_STATUS, R_TTFB, R_TOTAL, R_BYTES. Usage: fetch CURL_ARGS...
fetch() {
    curl -sS --max-time 900 -H "Authorization: Bearer $TOKEN" "$@" \
        -o "$WORK/body" -w '%{http_code} %{time_starttransfer} %{time_total} %{size_download}\n' \
        >"$WORK/curl.out" 2>&1 || true
    read -r R_STATUS R_TTFB R_TOTAL R_BYTES < <(tail -n 1 "$WORK/curl.out") ||
        die "curl failed: $(head -c 400 "$WORK/curl.out")"
}

# One whole answer of ROUTE into $WORK/body (for `paged`, every page, the pages appended to
# $WORK/pages); sets R_STATUS, R_TTFB, R_TOTAL, R_BYTES and R_PAGES.
range_answer() {
    local route=$1 url=$ENDPOINT/$TABLES_PATH/$TABLE ttfb total=0 bytes=0 token=""
    R_PAGES=1
    case $route in
        metadata) fetch "$url/metadata" ;;
        changes) fetch "$url/changes?startingVersion=$STARTING_VERSION" ;;
        streaming) fetch -X POST "$url/query" -H "Content-Type: application/json" \
            -d "{\"startingVersion\":$STARTING_VERSION}" ;;
        paged)
            : >"$WORK/pages"
            R_PAGES=0
            while :; do
                fetch "$url/changes?startingVersion=$STARTING_VERSION&maxFiles=$PAGE_FILES${token:+&pageToken=$token}"
                [[ $R_STATUS == 200 ]] || return 0
                R_PAGES=$((R_PAGES + 1))
                ttfb=${ttfb:-$R_TTFB}
                total=$(awk -v a="$total" -v b="$R_TOTAL" 'BEGIN { print a + b }')
                bytes=$((bytes + R_BYTES))
                cat "$WORK/body" >>"$WORK/pages"
                token=$(tail -n 1 "$WORK/body" | jq -r '.endStreamAction.nextPageToken // empty')
                [[ -n $token ]] || break
            done
            mv "$WORK/pages" "$WORK/body"
            R_TTFB=$ttfb R_TOTAL=$total R_BYTES=$bytes
            ;;
    esac
}

# Restarts the node with BINARY, answers ROUTE once and appends a row to results.jsonl.
# Usage: measure_range LABEL BINARY ROUTE
measure_range() {
    local label=$1 binary=$2 route=$3 start_mib after_mib counts files=$EXPECTED_FILES
    local expected_lines expected_head=2
    [[ $route == metadata ]] && files=0
    stop_server
    LAKESHARE=$binary
    start_server
    start_mib=$(server_peak_mib)
    say "$label: $route, startingVersion=$STARTING_VERSION (node restarted: $start_mib MiB)"
    range_answer "$route"
    after_mib=$(server_peak_mib)
    [[ $R_STATUS == 200 ]] ||
        die "$label $route: HTTP $R_STATUS: $(head -c 1500 "$WORK/body")"
    expected_lines=$((files + 2))
    if [[ $route == paged ]]; then
        expected_lines=$((files + 3 * R_PAGES)) expected_head=$((2 * R_PAGES))
    fi
    counts=$(LC_ALL=C awk '
        /^\{"protocol":/ || /^\{"metaData":/ { head++ }
        /^\{"add":/ { files++ } END { printf "%d %d %d", NR, head, files }' "$WORK/body")
    [[ $counts == "$expected_lines $expected_head $files" ]] ||
        die "$label $route: lines, head lines, add lines = $counts; expected \
$expected_lines $expected_head $files; last line: $(tail -n 1 "$WORK/body" | head -c 600)"
    rm -f "$WORK/body"
    jq -nc --arg name "$label" --arg binary "$binary" --arg route "$route" \
        '$ARGS.positional as [$files, $ttfb, $total, $bytes, $start_mib, $after_mib, $pages]
        | {label: $name, binary: $binary, route: $route, files: $files, ttfb_s: $ttfb,
           total_s: $total, response_bytes: $bytes, pages: $pages,
           server_vmhwm_mib: {started: $start_mib, after_answer: $after_mib}}' \
        --jsonargs "$files" "$R_TTFB" "$R_TOTAL" "$R_BYTES" "$start_mib" "$after_mib" \
        "$R_PAGES" \
        >>"$WORK/results.jsonl"
    tail -n 1 "$WORK/results.jsonl" >&2
}

for spec in "${BINARIES[@]}"; do
    routes=(metadata changes streaming)
    [[ -n $PAGE_FILES ]] && routes+=(paged)
    for route in "${routes[@]}"; do
        measure_range "${spec%%=*}" "${spec#*=}" "$route"
    done
done

echo
echo "lakeshare range answers (startingVersion=$STARTING_VERSION, parquet; pages of \
${PAGE_FILES:-none}) of $COMMITS commits x $ADDS_PER_COMMIT adds: $EXPECTED_FILES changed files in the range (checkpoint at the latest version: \
$CHECKPOINT); $(machine_summary); each on a freshly started node; peak RSS = VmHWM before -> \
after the answer; metadata = GET .../metadata, the cost of the latest snapshot alone"
echo
echo "| binary | route | pages | file lines | response | TTFB | total | server peak RSS |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
while read -r row; do
    printf '| %s | %s | %s | %s | %s MiB | %s | %s | %s → %s MiB |\n' \
        "$(jq -r .label <<<"$row")" "$(jq -r .route <<<"$row")" \
        "$(jq .pages <<<"$row")" "$(jq .files <<<"$row")" \
        "$(jq '.response_bytes / 1048576 * 10 | floor / 10' <<<"$row")" \
        "$(ms "$(jq .ttfb_s <<<"$row")")" "$(seconds "$(jq .total_s <<<"$row")")" \
        "$(jq .server_vmhwm_mib.started <<<"$row")" \
        "$(jq .server_vmhwm_mib.after_answer <<<"$row")"
done <"$WORK/results.jsonl"

if [[ -n $RESULTS_JSON ]]; then
    jq -n --slurpfile answers "$WORK/results.jsonl" --slurpfile generated "$WORK/generate.json" \
        '{answers: $answers, generated: $generated[0]}' >"$RESULTS_JSON"
fi
