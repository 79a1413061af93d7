#!/usr/bin/env bash
# Runs the criterion benches and prints their comparison tables as markdown.
#
# Usage: scripts/bench.sh [SECTION...]
#   SECTION  local   LocalCache vs quick_cache, moka and one Mutex<lru::LruCache> (benches/local_cache.rs)
#            pipeline  raw broker vs state node throughput, propagation latency (benches/pipeline.rs,
#                      against a redis-server and tansu broker it starts and stops; ~3 minutes)
#   (none)   every section below, in order
# Environment:
#   BENCH_NO_RUN=1   do not run cargo bench; print tables from the results already in target/criterion
#                    (pipeline: the tables of its last run, kept in target/bench-pipeline.md)
#   PIPELINE_BENCH_ARGS  extra arguments for benches/pipeline.rs, e.g. "--n 20000 --samples 500"
#
# Each section is one function `section_<name>` that runs its bench and prints its tables with
# `criterion_table`; add a section by adding a function and its name to SECTIONS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECTIONS=(local pipeline)
CRITERION_DIR=target/criterion
# Results older than this run are left out of the tables (unless BENCH_NO_RUN=1), so a bench
# that was renamed or removed does not linger in them.
RUN_STARTED=$(date +%s)

# run_bench BENCH [criterion args...]: cargo bench for one bench target, unless BENCH_NO_RUN=1.
run_bench() {
  local bench=$1
  shift
  if [[ "${BENCH_NO_RUN:-0}" == 1 ]]; then
    return
  fi
  echo "running: cargo bench --bench $bench $*" >&2
  # criterion's own report goes to stderr so that stdout is only the tables.
  cargo bench --bench "$bench" -- "$@" >&2
}

# criterion_table GROUP BASELINE: one markdown table for a criterion benchmark group, one row
# per benchmark id `<implementation>/<threads>`, throughput from the id's `Elements` per
# iteration and its mean time per iteration, ratio against the row of implementation BASELINE
# with the same thread count.
criterion_table() {
  local since=$RUN_STARTED
  if [[ "${BENCH_NO_RUN:-0}" == 1 ]]; then
    since=0
  fi
  python3 - "$CRITERION_DIR/$1" "$2" "$since" <<'PY'
import json, os, sys

group_dir, baseline, since = sys.argv[1], sys.argv[2], float(sys.argv[3])
rows = []
for root, _dirs, files in os.walk(group_dir):
    if os.path.basename(root) != "new" or "benchmark.json" not in files:
        continue
    bench_file = os.path.join(root, "benchmark.json")
    if os.path.getmtime(bench_file) < since:
        continue
    with open(bench_file) as f:
        bench = json.load(f)
    with open(os.path.join(root, "estimates.json")) as f:
        mean_ns = json.load(f)["mean"]["point_estimate"]
    elements = (bench.get("throughput") or {}).get("Elements")
    if not elements:
        continue
    threads = int(bench.get("value_str") or 1)
    rows.append((threads, bench["function_id"], elements * 1e9 / mean_ns, mean_ns / elements))

if not rows:
    sys.exit(f"no criterion results under {group_dir}")
base = {t: ops for t, name, ops, _ in rows if name == baseline}
print(f"| implementation | threads | ops/s | ratio to {baseline} | ns/op |")
print("|---|---:|---:|---:|---:|")
for threads, name, ops, ns in sorted(rows, key=lambda r: (r[0], -r[2])):
    ratio = f"{ops / base[threads]:.2f}x" if threads in base else "n/a"
    print(f"| {name} | {threads} | {ops / 1e6:.2f}M | {ratio} | {ns:.1f} |")
PY
}

section_local() {
  run_bench local_cache
  echo "### LocalCache: 90 % get / 10 % set, Zipf(0.99) over 1M 16-byte keys, capacity 100k"
  echo
  criterion_table local_mixed quick_cache
  echo
  echo "### LocalCache: hit path (get of a present key, Zipf order, one thread)"
  echo
  criterion_table local_hit quick_cache
  echo
}

# section_pipeline: benches/pipeline.rs measures against real services, so this starts a
# redis-server and a tansu broker on free loopback ports (scripts/services.sh) in a private state
# dir, hands their addresses over in DISTCACHE_REDIS_URL / DISTCACHE_BROKERS, and stops them when
# the section ends, however it ends. A subshell, so its traps stay its own. The bench prints
# markdown on stdout; a copy goes to target/bench-pipeline.md.
section_pipeline() (
  local out=target/bench-pipeline.md state
  if [[ "${BENCH_NO_RUN:-0}" == 1 ]]; then
    if [[ ! -f $out ]]; then
      echo "no $out yet: run scripts/bench.sh pipeline" >&2
      exit 1
    fi
    cat "$out"
    exit 0
  fi
  scripts/services.sh install
  # Compile before the services start: nothing else should compete for the cores while measuring.
  echo "building: cargo bench --bench pipeline --no-run" >&2
  cargo bench --bench pipeline --no-run >&2
  state=$(mktemp -d "${TMPDIR:-/tmp}/distcache-bench.XXXXXX")
  stop_services() {
    scripts/services.sh stop redis "$state/redis" || true
    scripts/services.sh stop kafka "$state/kafka" || true
    rm -rf "$state"
  }
  trap stop_services EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  DISTCACHE_REDIS_URL=$(scripts/services.sh start redis "$state/redis")
  DISTCACHE_BROKERS=$(scripts/services.sh start kafka "$state/kafka")
  export DISTCACHE_REDIS_URL DISTCACHE_BROKERS
  local args=()
  read -r -a args <<<"${PIPELINE_BENCH_ARGS:-}"
  echo "running: cargo bench --bench pipeline -- ${args[*]}" >&2
  mkdir -p "$(dirname "$out")"
  if ! cargo bench --bench pipeline -- "${args[@]}" | tee "$out.tmp"; then
    echo "pipeline bench failed; service logs:" >&2
    tail -n 20 "$state/redis/log" "$state/kafka/log" >&2 || true
    exit 1
  fi
  mv -f "$out.tmp" "$out"
)

main() {
  local sections=("$@")
  if [[ ${#sections[@]} -eq 0 ]]; then
    sections=("${SECTIONS[@]}")
  fi
  for section in "${sections[@]}"; do
    if ! declare -F "section_$section" >/dev/null; then
      echo "unknown section '$section'; known: ${SECTIONS[*]}" >&2
      exit 2
    fi
  done
  echo "machine: $(nproc) cores, $(uname -sr), $(rustc --version)"
  echo
  for section in "${sections[@]}"; do
    "section_$section"
  done
}

main "$@"
