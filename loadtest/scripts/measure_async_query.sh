#!/usr/bin/env bash
# measure_async_query.sh: issue 12's asynchronous query (gap 8) on a large table, in one run.
#
# Writes a synthetic Delta table of FILES active files (default 1000000; loadtest/synth_delta.py,
# log only) into a fresh node, shares it, and on a restarted node (nothing cached in the
# process) measures, the way the Spark connector with `useAsyncQuery` makes the calls:
#   status    the first POST .../query with `asyncquery=true` and an idempotency_key: the time
#             of its whole answer, which must be one `queryStatus` line
#   ready     the time from the first request until POST .../queries/{id} stops answering
#             `queryStatus` (polled every POLL_SECONDS)
#   pages     every page (maxFiles PAGE_FILES) fetched through .../queries/{id}: the time to the
#             last one; the file lines of all pages must number FILES, each id once
# and, as the anchor in the same run, one synchronous cold query (node restarted again): its
# time to first byte and total. Any other answer stops the script with a non-zero status.
#
# Usage:  loadtest/scripts/measure_async_query.sh [FILES]     (from anywhere in the repo)
# Needs:  what measure_lib.sh checks (curl, jq, /usr/bin/time, .venv), a release build.
# Knobs:  PAGE_FILES [100000]  POLL_SECONDS [0.1]  and measure_lib.sh's (LAKESHARE_BIN,
#         THREADS, DRIVES, SKIP_BUILD, KEEP_WORK).
set -euo pipefail

# shellcheck source=measure_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/measure_lib.sh"
FILES=${1:-1000000}
[[ $FILES =~ ^[0-9]+$ && $FILES -ge 10 ]] || { echo "bad size '$FILES'" >&2; exit 2; }
PAGE_FILES=${PAGE_FILES:-100000}
POLL_SECONDS=${POLL_SECONDS:-0.1}
ASYNC_CAPABILITY="delta-sharing-capabilities: responseformat=parquet;asyncquery=true"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# POST BODY to PATH (under the table) with the async capability, the answer into FILE; dies
# unless it is 200. Usage: post_async PATH BODY FILE
post_async() {
    local status
    status=$(curl -sS --max-time 900 -X POST "$ENDPOINT/$TABLES_PATH/big/$1" \
        -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
        -H "$ASYNC_CAPABILITY" -d "$2" -o "$3" -w '%{http_code}') || die "curl failed on $1"
    [[ $status == 200 ]] || die "$1: HTTP $status: $(head -c 600 "$3")"
}

start_node async-query
generate_table "Delta table" synth_delta.py big "$FILES" "$WORK/table.json"
share_tables "big:delta:$BUCKET:big/"

say "asynchronous query, node restarted"
stop_server
start_server
started=$(now)
post_async query "{\"idempotency_key\":\"measure-1\",\"maxFiles\":$PAGE_FILES}" "$WORK/first"
status_s=$(since "$started")
[[ $(wc -l <"$WORK/first") -eq 1 ]] || die "the first answer is not one line: $(head -c 600 "$WORK/first")"
query_id=$(jq -er .queryStatus.queryId "$WORK/first") || die "no queryStatus: $(head -c 600 "$WORK/first")"
polls=0
while :; do
    polls=$((polls + 1))
    post_async "queries/$query_id" "{\"queryId\":\"$query_id\",\"maxFiles\":$PAGE_FILES}" "$WORK/page"
    head -n 1 "$WORK/page" | grep -q '^{"queryStatus"' || break
    sleep "$POLL_SECONDS"
done
ready_s=$(since "$started")
pages=1
cp "$WORK/page" "$WORK/page.1"
while :; do
    token=$(tail -n 1 "$WORK/page" | jq -r '.endStreamAction.nextPageToken // empty')
    [[ -n $token ]] || break
    pages=$((pages + 1))
    post_async "queries/$query_id" \
        "{\"queryId\":\"$query_id\",\"maxFiles\":$PAGE_FILES,\"pageToken\":\"$token\"}" "$WORK/page"
    cp "$WORK/page" "$WORK/page.$pages"
done
pages_s=$(since "$started")
# Counted after the clock stopped: parsing 100k lines with jq takes longer than the answer.
: >"$WORK/ids"
for page in $(seq 1 "$pages"); do
    grep '^{"file":' "$WORK/page.$page" | jq -r .file.id >>"$WORK/ids"
    rm "$WORK/page.$page"
done
async_mib=$(server_peak_mib)
ids=$(wc -l <"$WORK/ids")
unique=$(sort -u "$WORK/ids" | wc -l)
[[ $ids -eq $FILES && $unique -eq $FILES ]] || die "pages held $ids file lines ($unique distinct), expected $FILES"

say "synchronous cold query (the anchor), node restarted"
stop_server
start_server
query big parquet
sync_mib=$(server_peak_mib)

echo
echo "machine: $(machine_summary), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| files | async: status answer | async: ready (polls) | async: all $pages pages | async peak RSS | sync cold TTFB | sync cold total | sync peak RSS |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '| %s | %s | %s (%s) | %s | %s MiB | %s | %s | %s MiB |\n' "$FILES" \
    "$(seconds "$status_s")" "$(seconds "$ready_s")" "$polls" "$(seconds "$pages_s")" \
    "$async_mib" "$(ms "$Q_TTFB")" "$(seconds "$Q_TOTAL")" "$sync_mib"
