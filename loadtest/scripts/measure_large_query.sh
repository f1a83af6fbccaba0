#!/usr/bin/env bash
# measure_large_query.sh: issue 4's large-snapshot `query` measurement, in one run on one machine.
#
# For each size (active files; default 10000 100000 1000000) it writes a synthetic Delta table
# with loadtest/synth_delta.py (log only: a checkpoint of adds with stats and a partition
# column, plus 3 JSON commits) into a fresh lakeshare node, shares it, and measures for each
# response format (parquet = default, delta = `responseformat=delta`):
#   cold  the server restarted (nothing cached in the process; the OS page cache stays warm),
#         then one POST .../query {} : time to first byte, to last byte, VmHWM after it
#   warm  WARM_RUNS more identical queries (the cached list keeps file ids and the URL
#         signatures of the current signing window): median TTFB / total, files/s, VmHWM after
#   new window  WARM_RUNS more, each started just after a signing window begins, so every URL
#         is signed anew: median total (the node runs with --presign-expiry 300: 5-s windows)
# and, as the anchor, a fresh Python process listing the same snapshot with
# deltalake.DeltaTable(...).get_add_actions() under /usr/bin/time -v.
# Timed answers go to /dev/null (the timed client only receives); each must be 200, every warm
# one exactly as long as the cold one. After the runs one more answer must hold exactly N + 2
# lines (protocol, metaData, N files), N of them `{"file":` lines, and be that long. Anything
# else stops the script with a non-zero status.
#
# Usage:  loadtest/scripts/measure_large_query.sh [FILES...]     (from anywhere in the repo)
# Needs:  curl, jq, /usr/bin/time; the repository's .venv (boto3, pyarrow, deltalake); a release
#         build (`cargo build --release --bin lakeshare`, or SKIP_BUILD=0 to let the script build).
# Knobs:  LAKESHARE_BIN [target/release/lakeshare]  THREADS [] (server --threads; default: all
#         cores)  DRIVES [4]  WARM_RUNS [5]  SKIP_BUILD [1]  RESULTS_JSON [] (all figures as JSON)
#         KEEP_WORK [0] (keep the temp folder)
# Every process it starts is stopped and the temp folder under /tmp removed on exit.
# The setup, node, query, anchor and table-row helpers it shares with measure_iceberg_query.sh
# live in measure_lib.sh.
set -euo pipefail

# shellcheck source=measure_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/measure_lib.sh"
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(10000 100000 1000000)
for size in "${SIZES[@]}"; do
    [[ $size =~ ^[0-9]+$ && $size -ge 10 ]] || { echo "bad size '$size'" >&2; exit 2; }
done

start_node large-query

TABLE_SPECS=()
for size in "${SIZES[@]}"; do
    generate_table table synth_delta.py "t$size" "$size" "$WORK/generate-$size.json"
    TABLE_SPECS+=("t$size:delta:$BUCKET:t$size/")
done
record_drive_bytes
share_tables "${TABLE_SPECS[@]}"

for size in "${SIZES[@]}"; do
    table=t$size
    for format in parquet delta; do
        measure_cold_warm "$table" "$format" "$size"
    done
    deltalake_anchor "deltalake-$size" "$table" "$size" '{}'
done

echo
echo "lakeshare POST /query {} on synthetic Delta tables; $(machine_summary); \
warm = median of $WARM_RUNS; warm, new window = median of $WARM_RUNS that each sign every \
URL anew (the first query of a signing window); \
warm server CPU = user+system per query; \
server peak RSS = VmHWM after cold → after warm; anchor = deltalake DeltaTable + get_add_actions \
in a fresh process (wall of that process in brackets)"
echo
print_result_header files
while read -r row; do
    size=$(jq .files <<<"$row")
    print_result_row "$size" "$row" "$WORK/deltalake-$size.json"
done <"$WORK/results.jsonl"
echo
echo "drives after generation: $(mib "$DRIVE_BYTES") MiB ($DRIVES drives, all tables)"

if [[ -n $RESULTS_JSON ]]; then
    jq -n --slurpfile queries "$WORK/results.jsonl" \
        --slurpfile anchors <(cat "$WORK"/deltalake-*.json) \
        --slurpfile generated <(cat "$WORK"/generate-*.json) \
        --argjson drive_bytes "$DRIVE_BYTES" \
        '{queries: $queries, deltalake: $anchors, generated: $generated,
          drive_bytes: $drive_bytes}' >"$RESULTS_JSON"
fi
