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
#   changes    GET .../changes?startingVersion=0          (parquet format)
#   streaming  POST .../query {"startingVersion":0}       (parquet format)
# each on a freshly started node: the node's VmHWM (peak RSS) before and after the answer, the
# time to first byte and to last byte. The body is saved and must be 200 with exactly
# COMMITS * ADDS_PER_COMMIT + 2 lines: protocol, metaData, then that many `{"add":` lines (the
# baseline: exactly protocol and metaData); anything else stops the script with a non-zero
# status.
#
# Usage:  loadtest/scripts/measure_changes_range.sh [LABEL=BINARY...]   (default: new=LAKESHARE_BIN)
# Needs:  curl, jq, /usr/bin/time; the repository's .venv (boto3, pyarrow); release builds.
# Knobs:  COMMITS [100]  ADDS_PER_COMMIT [1000]  CHECKPOINT [1]  THREADS [] (server --threads)  DRIVES [4]
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
EXPECTED_FILES=$((COMMITS * ADDS_PER_COMMIT))
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

# One whole answer of ROUTE into $WORK/body; sets R_STATUS, R_TTFB, R_TOTAL, R_BYTES.
range_answer() {
    local route=$1 request
    if [[ $route == metadata ]]; then
        request=("$ENDPOINT/$TABLES_PATH/$TABLE/metadata")
    elif [[ $route == changes ]]; then
        request=("$ENDPOINT/$TABLES_PATH/$TABLE/changes?startingVersion=0")
    else
        request=(-X POST "$ENDPOINT/$TABLES_PATH/$TABLE/query" \
            -H "Content-Type: application/json" -d '{"startingVersion":0}')
    fi
    curl -sS --max-time 900 -H "Authorization: Bearer $TOKEN" "${request[@]}" \
        -o "$WORK/body" -w '%{http_code} %{time_starttransfer} %{time_total} %{size_download}\n' \
        >"$WORK/curl.out" 2>&1 || true
    read -r R_STATUS R_TTFB R_TOTAL R_BYTES < <(tail -n 1 "$WORK/curl.out") ||
        die "$route: curl failed: $(head -c 400 "$WORK/curl.out")"
}

# Restarts the node with BINARY, answers ROUTE once and appends a row to results.jsonl.
# Usage: measure_range LABEL BINARY ROUTE
measure_range() {
    local label=$1 binary=$2 route=$3 start_mib after_mib counts files=$EXPECTED_FILES
    [[ $route == metadata ]] && files=0
    stop_server
    LAKESHARE=$binary
    start_server
    start_mib=$(server_peak_mib)
    say "$label: $route, startingVersion=0 (node restarted: $start_mib MiB)"
    range_answer "$route"
    after_mib=$(server_peak_mib)
    [[ $R_STATUS == 200 ]] ||
        die "$label $route: HTTP $R_STATUS: $(head -c 1500 "$WORK/body")"
    counts=$(LC_ALL=C awk '
        NR == 1 && /^\{"protocol":/ { head++ } NR == 2 && /^\{"metaData":/ { head++ }
        /^\{"add":/ { files++ } END { printf "%d %d %d", NR, head, files }' "$WORK/body")
    [[ $counts == "$((files + 2)) 2 $files" ]] ||
        die "$label $route: lines, head lines, add lines = $counts; expected \
$((files + 2)) 2 $files; last line: $(tail -n 1 "$WORK/body" | head -c 600)"
    rm -f "$WORK/body"
    jq -nc --arg name "$label" --arg binary "$binary" --arg route "$route" \
        '$ARGS.positional as [$files, $ttfb, $total, $bytes, $start_mib, $after_mib]
        | {label: $name, binary: $binary, route: $route, files: $files, ttfb_s: $ttfb,
           total_s: $total, response_bytes: $bytes,
           server_vmhwm_mib: {started: $start_mib, after_answer: $after_mib}}' \
        --jsonargs "$files" "$R_TTFB" "$R_TOTAL" "$R_BYTES" "$start_mib" "$after_mib" \
        >>"$WORK/results.jsonl"
    tail -n 1 "$WORK/results.jsonl" >&2
}

for spec in "${BINARIES[@]}"; do
    for route in metadata changes streaming; do
        measure_range "${spec%%=*}" "${spec#*=}" "$route"
    done
done

echo
echo "lakeshare range answers (startingVersion=0, parquet) of $COMMITS commits x \
$ADDS_PER_COMMIT adds = $EXPECTED_FILES changed files (checkpoint at the latest version: \
$CHECKPOINT); $(machine_summary); each on a freshly started node; peak RSS = VmHWM before -> \
after the answer; metadata = GET .../metadata, the cost of the latest snapshot alone"
echo
echo "| binary | route | lines | response | TTFB | total | server peak RSS |"
echo "|---|---|---:|---:|---:|---:|---:|"
while read -r row; do
    printf '| %s | %s | %s | %s MiB | %s | %s | %s → %s MiB |\n' \
        "$(jq -r .label <<<"$row")" "$(jq -r .route <<<"$row")" \
        "$(($(jq .files <<<"$row") + 2))" \
        "$(jq '.response_bytes / 1048576 * 10 | floor / 10' <<<"$row")" \
        "$(ms "$(jq .ttfb_s <<<"$row")")" "$(seconds "$(jq .total_s <<<"$row")")" \
        "$(jq .server_vmhwm_mib.started <<<"$row")" \
        "$(jq .server_vmhwm_mib.after_answer <<<"$row")"
done <"$WORK/results.jsonl"

if [[ -n $RESULTS_JSON ]]; then
    jq -n --slurpfile answers "$WORK/results.jsonl" --slurpfile generated "$WORK/generate.json" \
        '{answers: $answers, generated: $generated[0]}' >"$RESULTS_JSON"
fi
