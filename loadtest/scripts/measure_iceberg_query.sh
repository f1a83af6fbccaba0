#!/usr/bin/env bash
# measure_iceberg_query.sh: issue 5's Iceberg `query` measurement next to a Delta table of the
# same size, in one run on one machine.
#
# It starts a fresh lakeshare node on temp drives, writes two synthetic tables of FILES data
# files each (default 100000; metadata only, no data files):
#   ice<N>    Iceberg v2, loadtest/synth_iceberg.py: 2 snapshots, manifests of 10k entries,
#             identity partition `part`, bounds and null counts for id/value/name
#   delta<N>  Delta, loadtest/synth_delta.py: checkpoint + 3 JSON commits, the same columns,
#             partition values and min/max stats
# shares both in one share and measures, for each table and each response format in FORMATS
# (default: delta only, `delta-sharing-capabilities: responseformat=delta`, which Iceberg
# tables are served in; the same format for both tables keeps the comparison fair):
#   cold  the server restarted (nothing cached in the process; the OS page cache stays warm),
#         then one POST .../query {} : time to first byte, to last byte, VmHWM after it
#   warm  WARM_RUNS more identical queries (the cached list keeps file ids and the URL
#         signatures of the current signing window): median TTFB / total, files/s, VmHWM after
#   new window  WARM_RUNS more, each started just after a signing window begins, so every URL
#         is signed anew: median total (the node runs with --presign-expiry 300: 5-s windows)
# and, as the anchors, a fresh Python process listing the same snapshot under /usr/bin/time -v:
# pyiceberg `table.scan().plan_files()` for the Iceberg table (synth_iceberg.py --plan),
# deltalake `get_add_actions()` for the Delta table (deltalake_listing.py).
# Timed answers go to /dev/null (the timed client only receives); each must be 200, every warm
# one exactly as long as the cold one. After the runs one more answer must hold exactly N + 2
# lines (protocol, metaData, N files), N of them `{"file":` lines, and be that long. Anything
# else stops the script with a non-zero status and prints the response body.
#
# Usage:  loadtest/scripts/measure_iceberg_query.sh [FILES]     (from anywhere in the repo)
# Needs:  curl, jq; the repository's .venv (boto3, pyarrow, pyiceberg, deltalake); a release
#         build (`cargo build --release --bin lakeshare`, or SKIP_BUILD=0 to let the script build).
# Knobs:  LAKESHARE_BIN [target/release/lakeshare]  THREADS [] (server --threads; default: all
#         cores)  DRIVES [4]  WARM_RUNS [5]  FORMATS [delta] (e.g. "delta parquet")
#         SKIP_BUILD [1]  RESULTS_JSON [] (all figures as JSON)  KEEP_WORK [0] (keep the temp dir)
# Every process it starts is stopped and the temp folder under /tmp removed on exit.
# The setup, node, query, anchor and table-row helpers it shares with measure_large_query.sh
# live in measure_lib.sh.
set -euo pipefail

# shellcheck source=measure_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/measure_lib.sh"
FORMATS=${FORMATS:-delta}
FILES=${1:-100000}
ICEBERG_TABLE=ice$FILES
DELTA_TABLE=delta$FILES

[[ $FILES =~ ^[0-9]+$ && $FILES -ge 10 ]] || { echo "bad size '$FILES'" >&2; exit 2; }
for format in $FORMATS; do
    [[ $format == delta || $format == parquet ]] || { echo "bad format '$format'" >&2; exit 2; }
done

start_node iceberg-query

generate_table "Iceberg table" synth_iceberg.py "$ICEBERG_TABLE" "$FILES" \
    "$WORK/generate-iceberg.json"
generate_table "Delta table" synth_delta.py "$DELTA_TABLE" "$FILES" "$WORK/generate-delta.json"
record_drive_bytes
share_tables "$ICEBERG_TABLE:iceberg:$BUCKET:$ICEBERG_TABLE/" \
    "$DELTA_TABLE:delta:$BUCKET:$DELTA_TABLE/"

for table in "$ICEBERG_TABLE" "$DELTA_TABLE"; do
    kind=delta
    [[ $table == "$ICEBERG_TABLE" ]] && kind=iceberg
    for format in $FORMATS; do
        measure_cold_warm "$table" "$format" "$FILES" \
            "$(jq -nc --arg table "$table" --arg kind "$kind" '{table: $table, kind: $kind}')"
    done
done

say "$ICEBERG_TABLE: pyiceberg plan_files() in a fresh process"
run_anchor anchor-iceberg "pyiceberg planning of $ICEBERG_TABLE failed" \
    '{"tool": "pyiceberg plan_files()"}' \
    "$PYTHON" "$REPO/loadtest/synth_iceberg.py" --endpoint "$ENDPOINT" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" --bucket "$BUCKET" \
    --prefix "$ICEBERG_TABLE/" --files "$FILES" --plan
deltalake_anchor anchor-delta "$DELTA_TABLE" "$FILES" '{"tool": "deltalake get_add_actions()"}'

echo
echo "lakeshare POST /query {} on synthetic tables of $FILES data files (Iceberg: \
$(jq .manifests "$WORK/generate-iceberg.json") manifests, 2 snapshots; Delta: checkpoint + \
3 commits); $(machine_summary); \
warm = median of $WARM_RUNS; warm, new window = median of $WARM_RUNS that each sign every \
URL anew (the first query of a signing window); \
warm server CPU = user+system per query; \
server peak RSS = VmHWM after cold → after warm; anchor = pyiceberg plan_files() (Iceberg) or \
deltalake get_add_actions() (Delta) in a fresh process (wall of that process in brackets)"
echo
print_result_header table
while read -r row; do
    print_result_row "$(jq -r '"\(.kind) \(.files)"' <<<"$row")" "$row" \
        "$WORK/anchor-$(jq -r .kind <<<"$row").json"
done <"$WORK/results.jsonl"
echo
DELTA_GENERATION_S=$(jq '(.build_seconds + .write_seconds) * 1000 | round / 1000' \
    "$WORK/generate-delta.json")
echo "generation: Iceberg $(jq .total_seconds "$WORK/generate-iceberg.json") s, Delta \
$DELTA_GENERATION_S s; drives after generation: $(mib "$DRIVE_BYTES") MiB ($DRIVES drives, \
both tables)"

if [[ -n $RESULTS_JSON ]]; then
    jq -n --slurpfile queries "$WORK/results.jsonl" \
        --slurpfile iceberg_anchor "$WORK/anchor-iceberg.json" \
        --slurpfile delta_anchor "$WORK/anchor-delta.json" \
        --slurpfile iceberg_generated "$WORK/generate-iceberg.json" \
        --slurpfile delta_generated "$WORK/generate-delta.json" \
        --argjson drive_bytes "$DRIVE_BYTES" \
        '{queries: $queries, anchors: {iceberg: $iceberg_anchor[0], delta: $delta_anchor[0]},
          generated: {iceberg: $iceberg_generated[0], delta: $delta_generated[0]},
          drive_bytes: $drive_bytes}' >"$RESULTS_JSON"
fi
