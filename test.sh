#!/usr/bin/env bash
# The one command that runs every lakeshare test on a fresh machine (Rust toolchain aside):
# formatting and lints, the Rust unit and integration tests, then the Python end-to-end suite
# against the release binary, once per drive I/O back-end (io_uring and the thread pool), and
# the Ceph RADOS Gateway store tests (Debian's ceph packages, installed when root) once, and the
# Spark tests (Java, pyspark and the Maven-fetched jars of tests/spark/pom.xml) once.
# Stops at the first failure with a non-zero exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

step() { printf '\n==> %s\n' "$*"; }

step "python environment (.venv, tests/requirements.txt)"
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
      python3 -m venv .venv
    else
      echo "python3 -m venv failed and python3-venv cannot be installed (not root)" >&2
      exit 1
    fi
  fi
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt \
  -r tests/requirements-spark.txt

step "Spark jars (tests/spark/pom.xml, into tests/spark/jars/)"
for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool is needed for the Spark tests (tests/python/test_spark_writer.py)" >&2
    exit 1
  fi
done
rm -rf tests/spark/jars
mvn -q -B -f tests/spark/pom.xml dependency:copy-dependencies \
  -DoutputDirectory="$PWD/tests/spark/jars"
echo "$(ls tests/spark/jars | wc -l) jars, $(du -sh tests/spark/jars | cut -f1)"

step "nginx (the balancer of tests/python/test_balancer.py, and the benchmarks' anchor)"
if command -v nginx >/dev/null 2>&1; then
  echo "nginx present: $(command -v nginx)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y -q nginx >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nginx >/dev/null 2>&1; }; then
    echo "nginx installed"
  else
    echo "apt-get install -y nginx failed; tests/python/test_balancer.py needs it" >&2
    exit 1
  fi
else
  echo "nginx missing and not root (apt-get install -y nginx); tests/python/test_balancer.py needs it" >&2
  exit 1
fi

step "Ceph RADOS Gateway (ceph-mon ceph-osd radosgw ceph-common; the remote-back-end tests)"
ceph_packages=(ceph-mon ceph-osd radosgw ceph-common)
ceph_needed="tests/python/test_ceph_rgw_store.py (pytest -m ceph) needs Ceph's mon, osd and radosgw"
ceph_missing() {
  local tool
  for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool; do
    command -v "$tool" >/dev/null 2>&1 || return 0
  done
  return 1
}
ceph_install() {
  apt-get install -y -q "${ceph_packages[@]}" >/dev/null 2>&1
}
if ! ceph_missing; then
  echo "ceph present: $(ceph --version)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  ceph_install_started=$SECONDS
  if { ceph_install || { apt-get update -q >/dev/null 2>&1 && ceph_install; }; } \
    && ! ceph_missing; then
    echo "ceph installed in $((SECONDS - ceph_install_started)) s: $(ceph --version)"
  else
    echo "apt-get install -y ${ceph_packages[*]} failed; $ceph_needed" >&2
    exit 1
  fi
else
  echo "Ceph missing and not root (install ${ceph_packages[*]}); $ceph_needed" >&2
  exit 1
fi

step "cargo fmt"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --release (the node and the load harness the tests drive)"
cargo build --release -p lakeshare -p lakeshare-loadtest

step "cargo test --release --workspace (includes the storage simulation: 2 x 1000 seeds)"
cargo test --release --workspace

step "storage and engine tests again on the blocking-pool back-end (LAKESHARE_FORCE_FALLBACK_IO=1)"
LAKESHARE_FORCE_FALLBACK_IO=1 cargo test --release -p lakeshare-storage -p lakeshare-engine -- --skip sim::

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
export LAKESHARE_BIN="${LAKESHARE_BIN:-$target_dir/release/lakeshare}"

io_modes=(uring threads)
if [ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" = 2 ]; then
  echo "kernel.io_uring_disabled=2: io_uring is off on this kernel; the uring run is skipped"
  io_modes=(threads)
fi
for io_mode in "${io_modes[@]}"; do
  step "pytest tests/python with LAKESHARE_IO=$io_mode"
  LAKESHARE_IO="$io_mode" .venv/bin/python -m pytest tests/python -x -q -m "not spark and not ceph"
done

# The Ceph store tests start no lakeshare drives: once, outside the I/O back-end loop.
step "pytest tests/python -m ceph (one single-host Ceph cluster on loopback for the session)"
.venv/bin/python -m pytest tests/python -x -q -m ceph

# Spark drives S3, not the drives: once, on the default back-end.
step "pytest tests/python -m spark (one JVM per module)"
.venv/bin/python -m pytest tests/python -x -q -m spark

step "all tests passed"
