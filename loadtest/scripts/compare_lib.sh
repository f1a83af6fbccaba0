# compare_lib.sh: the shared half of the storage comparisons against plain anchors
# (compare_get_put.sh, measure_storage_limits.sh). Sourced, never run, right after
# `set -euo pipefail`.
#
# On sourcing it reads PORT [9310], NGINX_PORT [9380], WORK_PARENT [/tmp], SKIP_BUILD [0],
# CARGO_TARGET_DIR, names the binaries (LAKESHARE, LOADTEST) and the node's credentials, checks
# that nginx, curl and jq are there (status 2 if not), makes the temp folder WORK with drive1..4,
# www (nginx's root) and the exit trap, and prints the machine. It starts nothing itself.
#
#   build_binaries            cargo build --release of lakeshare and loadtest unless SKIP_BUILD=1
#   start_lakeshare [ARGS]    the node on 127.0.0.1:PORT over WORK/drive1..4 (SERVER_PID, ENDPOINT)
#   start_nginx [CONNECTIONS] nginx serving WORK/www on NGINX_PORT (NGINX_PID)
#   peak_rss_mib PID          the process's peak resident memory (VmHWM) in MiB
#   ratio A B                 A / B with two decimals
# Invariants: on exit (also on failure or Ctrl-C) every started process and BACKGROUND_PIDS is
# stopped and WORK removed.

PORT=${PORT:-9310}
NGINX_PORT=${NGINX_PORT:-9380}
WORK_PARENT=${WORK_PARENT:-/tmp}
SKIP_BUILD=${SKIP_BUILD:-0}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
LAKESHARE=$TARGET_DIR/release/lakeshare
LOADTEST=$TARGET_DIR/release/loadtest
export LAKESHARE_ROOT_USER=loadtest-admin
export LAKESHARE_ROOT_PASSWORD=loadtest-secret-key
ENDPOINT=http://127.0.0.1:$PORT

for tool in nginx curl jq; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y $tool" >&2; exit 2; }
done

WORK=$(mktemp -d "$WORK_PARENT/lakeshare-compare.XXXXXX")
SERVER_PID=""
NGINX_PID=""
BACKGROUND_PIDS=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${BACKGROUND_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [[ -n $NGINX_PID ]]; then
        kill -QUIT "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*" >&2; }
ratio() { echo "$1 $2" | awk '{ if ($2 > 0) printf "%.2f", $1 / $2; else print "n/a" }'; }
peak_rss_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

build_binaries() {
    if [[ $SKIP_BUILD != 1 ]]; then
        say "building release binaries"
        (cd "$REPO" && cargo build --release -p lakeshare -p lakeshare-loadtest)
    fi
}

say "machine"
MACHINE_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MACHINE_CORES=$(nproc)
MACHINE_MEMORY_GIB=$(free -g | awk '/^Mem:/ {print $2}')
MACHINE_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "cpu: $MACHINE_CPU; cores: $MACHINE_CORES; memory: ${MACHINE_MEMORY_GIB} GiB" >&2
echo "load average before the run (1/5/15 min): $MACHINE_LOAD" >&2
TREE_STATE=clean
git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && TREE_STATE=dirty
echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "(work tree $TREE_STATE)" >&2
echo "work dir: $WORK on $(df -h "$WORK" | awk 'NR==2 {print $1}')" >&2

# Folders readable by nginx's workers (which drop to an unprivileged user when run as root).
chmod 755 "$WORK"
mkdir -p "$WORK"/drive{1,2,3,4} "$WORK/www" "$WORK/nginx/tmp"
chmod 755 "$WORK/www"

start_lakeshare() {
    say "starting lakeshare on $ENDPOINT with 4 drives $*"
    "$LAKESHARE" server --address "127.0.0.1:$PORT" "$@" \
        "$WORK/drive1" "$WORK/drive2" "$WORK/drive3" "$WORK/drive4" \
        >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for attempt in $(seq 1 300); do
        if curl -sf "$ENDPOINT/minio/health/live" >/dev/null; then break; fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null || [[ $attempt == 300 ]]; then
            echo "lakeshare did not come up; its log:" >&2; cat "$WORK/server.log" >&2; exit 1
        fi
        sleep 0.1
    done
    head -n 20 "$WORK/server.log" >&2
}

# nginx with sendfile serving WORK/www; CONNECTIONS (default 1024) per worker.
start_nginx() {
    local connections=${1:-1024}
    cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes auto;
worker_rlimit_nofile $((connections * 2 + 64));
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections $((connections + 64)); }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=16384;
        root $WORK/www;
        location / { }
    }
}
NGINX
    say "starting nginx on 127.0.0.1:$NGINX_PORT"
    nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
    NGINX_PID=$!
    for attempt in $(seq 1 100); do
        if curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/obj-0"; then break; fi
        if ! kill -0 "$NGINX_PID" 2>/dev/null || [[ $attempt == 100 ]]; then
            echo "nginx did not come up; its log:" >&2; cat "$WORK/nginx/error.log" >&2; exit 1
        fi
        sleep 0.1
    done
}
