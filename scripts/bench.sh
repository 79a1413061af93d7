#!/usr/bin/env bash
# Runs the criterion benches and prints their comparison tables as markdown.
#
# Usage: scripts/bench.sh [SECTION...]
#   SECTION  local   LocalCache vs quick_cache, moka and one Mutex<lru::LruCache>: throughput and hit path
#                    (benches/local_cache.rs), then the hit path in interleaved rounds, heap bytes per
#                    entry and hit ratios on a Zipf and a scan-mix trace (benches/local_capacity.rs, ~3 min)
#            pipeline  raw broker vs state node throughput, propagation latency (benches/pipeline/,
#                      against a redis-server and each broker in turn — Apache Kafka, then tansu — that
#                      it starts and stops; ~3 minutes per broker), then the brokers side by side
#            failover  SIGKILL a real distcache-state-node: restart with the same --instance-id, and two
#                      nodes with one killed; time until writes made right after the kill are in Redis
#                      (benches/failover.rs, on each broker in turn, ~2 minutes per broker)
#            drain   (also: cost) one distcache-state-node process, default settings, drains a
#                    pre-produced backlog of distinct keys; its rate against the Lua ceiling
#                    (redis-benchmark running the state node's apply script) in the same run, and CPU
#                    µs per event of the state node, redis-server and the broker next to the raw
#                    client-side cost (benches/pipeline/capacity.rs, ~1 minute per broker)
#            propagation-load  A → B propagation (p50/p90/p99/max, misses) while a writer process sustains
#                      10k set_with_sync/s through a real core node, against the raw one hop measured idle
#                      first and under the same load, as ratios; the achieved write rate and the state
#                      node's applied count (benches/pipeline/ --sections load, on each broker in turn,
#                      Apache Kafka only by default; ~2 minutes per broker)
#            scale   the drain with 1, 2 and 3 distcache-state-node processes in one group, against one
#                    redis-server and a 3-master Redis Cluster the bench starts, side by side
#                    (benches/pipeline/scale.rs, ~2 minutes per broker)
#   (none)   every section below, in order
# Environment:
#   BENCH_NO_RUN=1   do not run cargo bench; print tables from the results already in target/criterion
#                    (pipeline: the tables of its last run, kept in target/bench-pipeline.md)
#   PIPELINE_BENCH_ARGS  extra arguments for benches/pipeline/, e.g. "--n 20000 --samples 500"
#   PIPELINE_BROKERS     which brokers the pipeline section measures, in order (default "apache tansu")
#   DRAIN_BENCH_ARGS     arguments for the drain section (default "--n 100000 --rounds 3"; add
#                        "--node-args --trace,--threads=8" to run the node with other flags)
#   DRAIN_BROKERS        which brokers the drain section measures, in order (default "apache")
#   SCALE_BENCH_ARGS     arguments for the scale section (default "--n 100000")
#   SCALE_BROKERS        which brokers the scale section measures, in order (default "apache")
#   FAILOVER_BENCH_ARGS  extra arguments for benches/failover.rs, e.g. "--rounds 5 --session-timeout-ms 6000"
#   FAILOVER_BROKERS     which brokers the failover section measures, in order (default "apache tansu")
#   LOAD_BENCH_ARGS      extra arguments for propagation-load, e.g. "--samples 500 --load-rate 20000 --load-threads 512 --load-warmup-s 30"
#   LOAD_BROKERS         which brokers propagation-load measures, in order (default PIPELINE_BROKERS, else "apache")
#
# Each section is one function `section_<name>` that runs its bench and prints its tables with
# `criterion_table`; add a section by adding a function and its name to SECTIONS (a `-` in the name is a `_` in
# the function's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/progress.sh
source scripts/progress.sh

SECTIONS=(local pipeline drain scale failover propagation-load)
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
  ticking "cargo bench --bench $bench" cargo bench --bench "$bench" -- "$@" >&2
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

# print_last_run OUT SECTION: with BENCH_NO_RUN=1, prints OUT (the copy SECTION kept of its last run) and
# succeeds, or stops the script when there is none; without it, fails: the section runs.
print_last_run() {
  local out=$1 section=$2
  if [[ "${BENCH_NO_RUN:-0}" != 1 ]]; then
    return 1
  fi
  if [[ ! -f $out ]]; then
    echo "no $out yet: run scripts/bench.sh $section" >&2
    exit 1
  fi
  cat "$out"
}

# section_local: benches/local_cache.rs (criterion: mixed workload and hit path), then
# benches/local_capacity.rs, which prints its own tables: the hit path timed in interleaved rounds,
# heap bytes per entry, hit ratios on a Zipf and a scan-mix trace. A copy of local_capacity's
# tables goes to target/bench-local-capacity.md, which BENCH_NO_RUN=1 prints again.
section_local() {
  local out=target/bench-local-capacity.md
  run_bench local_cache
  echo "### LocalCache: 90 % get / 10 % set, Zipf(0.99) over 1M 16-byte keys, capacity 100k, u64 values"
  echo
  echo "criterion (\`benches/local_cache.rs\`, group \`local_mixed\`): each thread replays its own pre-generated"
  echo "trace of 100k operations on a cache warmed with every trace; 10 samples of 2 s; LocalCache with its"
  echo "default shard count, quick_cache and moka with theirs, Mutex-lru one \`parking_lot::Mutex<lru::LruCache>\`."
  echo
  criterion_table local_mixed quick_cache
  echo
  echo "### LocalCache: hit path (get of a present key, one thread)"
  echo
  echo "criterion (group \`local_hit\`): capacity 100k, the 50k most popular of 1M 16-byte keys present,"
  echo "gets in Zipf(0.99) order restricted to them; 20 samples of 2 s, one implementation after the other."
  echo
  criterion_table local_hit quick_cache
  echo
  if print_last_run "$out" local; then
    return
  fi
  mkdir -p "$(dirname "$out")"
  echo "running: cargo bench --bench local_capacity" >&2
  ticking "cargo bench --bench local_capacity" cargo bench --bench local_capacity | tee "$out.tmp"
  mv -f "$out.tmp" "$out"
}

# section_pipeline: benches/pipeline/ measures against real services, so for each broker this starts a
# redis-server and that broker on free loopback ports (scripts/services.sh) in a private state dir, hands
# their addresses over in DISTCACHE_REDIS_URL / DISTCACHE_BROKERS, and stops them when the run ends, however it
# ends. Each run prints its markdown tables; then one table puts the brokers' headline figures side by side
# (each broker's ratios are within its own run). A copy of everything goes to target/bench-pipeline.md.
section_pipeline() {
  brokers_section pipeline "${PIPELINE_BROKERS:-apache tansu}" pipeline_side_by_side "${PIPELINE_BENCH_ARGS:-}"
}

# section_drain: the drain and cost tables of benches/pipeline/capacity.rs (`--sections drain`), against
# the state-node binary, on each broker of DRAIN_BROKERS. A copy goes to target/bench-drain.md.
section_drain() {
  brokers_section pipeline:drain "${DRAIN_BROKERS:-apache}" drain_side_by_side \
    "--sections drain ${DRAIN_BENCH_ARGS:---n 100000 --rounds 3}"
}

# section_scale: benches/pipeline/scale.rs (`--sections scale`) on each broker of SCALE_BROKERS. A copy goes
# to target/bench-scale.md.
section_scale() {
  brokers_section pipeline:scale "${SCALE_BROKERS:-apache}" scale_side_by_side \
    "--sections scale ${SCALE_BENCH_ARGS:---n 100000}"
}

# scale_side_by_side BROKER=SUMMARY...: drain rates per topology, one column per broker.
scale_side_by_side() {
  side_by_side "$(
    cat <<'PY'
header("Scale-out, brokers side by side (events/s)", "redis, state nodes")
for redis in ("single", "cluster"):
    for n in (1, 2, 3):
        key = f"scale_{redis}_{n}"
        label = ("one server" if redis == "single" else "cluster") + f", {n}"
        row(label, (f"{f[key]:,.0f}" if key in f else "n/a" for _, f in runs))
print()
PY
  )" "$@"
}

# section_cost: the cost table comes from the same run as the drain.
section_cost() {
  section_drain
}

# drain_side_by_side BROKER=SUMMARY...: each broker's drain rounds against their ceilings.
drain_side_by_side() {
  side_by_side "$(
    cat <<'PY'
header("Drain, brokers side by side (events/s; × the Lua ceiling of the same round)", "round")
r = 1
while any(f"drain_r{r}" in f for _, f in runs):
    cells = []
    for _, f in runs:
        d, c = f.get(f"drain_r{r}"), f.get(f"drain_ceiling_r{r}")
        cells.append(f"{d:,.0f} ({d / c:.2f}×)" if d and c else "n/a")
    row(r, cells)
    r += 1
print()
PY
  )" "$@"
}

# section_propagation_load: benches/pipeline/'s `load` section on each broker in LOAD_BROKERS (started by
# bench_on), then the brokers side by side. A copy goes to target/bench-propagation-load.md.
section_propagation_load() {
  brokers_section pipeline:propagation-load "${LOAD_BROKERS:-${PIPELINE_BROKERS:-apache}}" \
    propagation_load_side_by_side "--sections load ${LOAD_BENCH_ARGS:-}"
}

# propagation_load_side_by_side BROKER=SUMMARY...: the load run's headline figures, one column per broker.
propagation_load_side_by_side() {
  side_by_side "$(
    cat <<'PY'
rows = [
    ("target write rate (writes/s)", "load_target_rate"),
    ("achieved write rate (writes/s)", "load_achieved_rate"),
    ("state node applied (events/s)", "load_applied_rate"),
    ("load writes failed", "load_failed"),
    ("writers' mean set_with_sync → broker ack (ms)", "load_writer_ack_ms"),
    ("idle raw one hop p50 (ms)", "idle_one_hop_p50_ms"),
    ("idle raw one hop p99 (ms)", "idle_one_hop_p99_ms"),
    ("raw one hop under load p50 (ms)", "load_one_hop_p50_ms"),
    ("raw one hop under load p99 (ms)", "load_one_hop_p99_ms"),
    ("distcache A → B under load p50 (ms)", "load_distcache_p50_ms"),
    ("distcache A → B under load p99 (ms)", "load_distcache_p99_ms"),
    ("distcache A → B misses under load", "load_distcache_misses"),
    ("distcache under load ÷ idle raw one hop, p50", "load_ratio_idle_hop_p50"),
    ("distcache under load ÷ idle raw one hop, p99 (goal ≤ 3×)", "load_ratio_idle_hop_p99"),
    ("distcache under load ÷ raw one hop under load, p50", "load_ratio_loaded_hop_p50"),
    ("distcache under load ÷ raw one hop under load, p99", "load_ratio_loaded_hop_p99"),
]
def cell(f, key):
    if key not in f:
        return "n/a"
    v = f[key]
    if v == float("inf"):
        return "miss"
    if "ratio" in key:
        return f"{v:.2f}×"
    return f"{v:,.0f}" if v >= 1000 or "rate" in key or key.endswith(("failed", "misses")) else f"{v:.2f}"
header("Propagation under load, brokers side by side (each column is its own run; ratios within it)", "figure")
for label, key in rows:
    row(label, (cell(f, key) for _, f in runs))
print()
PY
  )" "$@"
}

broker_title() {
  case $1 in
  apache) echo "Apache Kafka" ;;
  tansu) echo "tansu" ;;
  *) echo "$1" ;;
  esac
}

# starts_state_node BENCH ARGS...: whether benches/BENCH with ARGS starts `distcache-state-node` processes
# itself: benches/pipeline/'s drain and scale sections (its last `--sections` counts, as in its parser).
# benches/failover.rs gets the binary from cargo, which builds it with the bench.
starts_state_node() {
  local bench=$1 sections=""
  shift
  [[ $bench == pipeline ]] || return 1
  while [[ $# -gt 0 ]]; do
    if [[ $1 == --sections && $# -gt 1 ]]; then
      sections=$2
      shift
    fi
    shift
  done
  [[ ",$sections," == *,drain,* || ",$sections," == *,scale,* ]]
}

# build_state_node: builds `distcache-state-node` (the bench profile, whose dependencies the benches already
# built) once per bench.sh run, and names it in DISTCACHE_STATE_NODE_BIN for the benches that start it.
STATE_NODE_BUILT=0
build_state_node() {
  if [[ $STATE_NODE_BUILT == 1 ]]; then
    return
  fi
  ticking "building distcache-state-node" cargo build --profile bench --bin distcache-state-node >&2
  DISTCACHE_STATE_NODE_BIN=$PWD/target/release/distcache-state-node
  export DISTCACHE_STATE_NODE_BIN
  STATE_NODE_BUILT=1
}

# brokers_section BENCH[:NAME] BROKERS SIDE_BY_SIDE ARGS: runs benches/BENCH.rs once per broker of the
# space-separated BROKERS (apache, tansu) with ARGS (one string, split on white space as the *_BENCH_ARGS
# variables are), then SIDE_BY_SIDE BROKER=SUMMARY... prints the brokers' headline figures in one table.
# Everything printed is kept in target/bench-NAME.md (NAME: the section, BENCH when not given), which
# BENCH_NO_RUN=1 prints again.
brokers_section() {
  local bench=${1%%:*} name=${1#*:} brokers_list=$2 side_by_side=$3 args=() brokers=() broker summaries=()
  local out="target/bench-$name.md"
  read -r -a args <<<"$4"
  if print_last_run "$out" "$name"; then
    return
  fi
  ticking "installing services" scripts/services.sh install >&2
  # Compile before the services start: nothing else should compete for the cores while measuring.
  echo "building: cargo bench --bench $bench --no-run" >&2
  ticking "building $bench" cargo bench --bench "$bench" --no-run >&2
  if starts_state_node "$bench" "${args[@]}"; then
    build_state_node
  fi
  read -r -a brokers <<<"$brokers_list"
  mkdir -p "$(dirname "$out")"
  : >"$out.tmp"
  local i=0
  for broker in "${brokers[@]}"; do
    i=$((i + 1))
    echo "   $name: broker $i/${#brokers[@]}, $(broker_title "$broker")  ($(elapsed) in)" >&2
    bench_on "$bench" "$broker" "target/bench-$name-$broker.summary" "${args[@]}" | tee -a "$out.tmp"
    summaries+=("$broker=target/bench-$name-$broker.summary")
  done
  "$side_by_side" "${summaries[@]}" | tee -a "$out.tmp"
  mv -f "$out.tmp" "$out"
}

# bench_on BENCH BROKER SUMMARY ARGS...: one run of benches/BENCH.rs with ARGS and `--summary SUMMARY` against
# a fresh redis-server and BROKER (apache or tansu). A subshell, so its traps stay its own.
bench_on() (
  local bench=$1 broker=$2 summary=$3 state
  shift 3
  state=$(mktemp -d "${TMPDIR:-/tmp}/distcache-bench.XXXXXX")
  stop_services() {
    scripts/services.sh stop redis "$state/redis" || true
    scripts/services.sh stop kafka "$state/kafka" || true
    rm -rf "$state"
  }
  trap stop_services EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  echo "== $bench on $(broker_title "$broker"): starting redis-server and the broker" >&2
  DISTCACHE_REDIS_URL=$(scripts/services.sh start redis "$state/redis")
  DISTCACHE_BROKERS=$(DISTCACHE_BROKER=$broker scripts/services.sh start kafka "$state/kafka")
  DISTCACHE_BROKER_NAME=$(broker_title "$broker")
  # So a bench can read the services' CPU time from /proc.
  DISTCACHE_REDIS_PID=$(<"$state/redis/pid")
  DISTCACHE_BROKER_PID=$(<"$state/kafka/pid")
  export DISTCACHE_REDIS_URL DISTCACHE_BROKERS DISTCACHE_BROKER_NAME DISTCACHE_REDIS_PID DISTCACHE_BROKER_PID
  echo "running: cargo bench --bench $bench -- $* --summary $summary" >&2
  echo "## ${bench^} on $DISTCACHE_BROKER_NAME"
  echo
  rm -f "$summary"
  if ! ticking "$bench on $DISTCACHE_BROKER_NAME" cargo bench --bench "$bench" -- "$@" --summary "$summary"; then
    echo "$bench bench on $broker failed; service logs:" >&2
    tail -n 20 "$state/redis/log" "$state/kafka/log" >&2 || true
    exit 1
  fi
)

# pipeline_side_by_side BROKER=SUMMARY...: the headline figures of each broker's run in one table.
pipeline_side_by_side() {
  side_by_side "$(
    cat <<'PY'
rows = [
    ("raw one hop p50 (ms)", "one_hop_p50_ms_wait0"),
    ("raw one hop p99 (ms)", "one_hop_p99_ms_wait0"),
    ("distcache A → B p50 (ms)", "distcache_p50_ms_wait0"),
    ("distcache A → B p99 (ms)", "distcache_p99_ms_wait0"),
    ("raw consume (msg/s)", "raw_consume"),
    ("state-node drain, max_batch=1024 (events/s)", "drain_batch1024"),
]
def cell(figures, key):
    return f"{figures[key]:,.2f}" if key in figures and figures[key] < 1000 else (
        f"{figures[key]:,.0f}" if key in figures else "n/a")
header("Brokers side by side (`max_wait=0`, the default; each column is its own run)", "figure")
for label, key in rows:
    row(label, (cell(f, key) for _, f in runs))
for label, num, den in [
    ("distcache ÷ raw one hop, p50", "distcache_p50_ms_wait0", "one_hop_p50_ms_wait0"),
    ("distcache ÷ raw one hop, p99", "distcache_p99_ms_wait0", "one_hop_p99_ms_wait0"),
]:
    cells = []
    for _, f in runs:
        cells.append(f"{f[num] / f[den]:.2f}×" if num in f and f.get(den) else "n/a")
    row(label, cells)
print()
PY
  )" "$@"
}

# section_failover: benches/failover.rs kills and restarts real distcache-state-node processes against a
# fresh redis-server and each broker in turn (started by bench_on), prints one table per broker,
# then the brokers side by side. A copy goes to target/bench-failover.md.
section_failover() {
  brokers_section failover "${FAILOVER_BROKERS:-apache tansu}" failover_side_by_side "${FAILOVER_BENCH_ARGS:-}"
}

# failover_side_by_side BROKER=SUMMARY...: median and max of each scenario, one column per broker.
failover_side_by_side() {
  side_by_side "$(
    cat <<'PY'
rows = [
    ("restart, same instance id: median (s)", "restart_static_median"),
    ("restart, same instance id: max (s)", "restart_static_max"),
    ("restart, no instance id: median (s)", "restart_dynamic_median"),
    ("survivor takes over, instance ids: median (s)", "takeover_static_median"),
    ("survivor takes over, instance ids: max (s)", "takeover_static_max"),
    ("survivor takes over, no ids: median (s)", "takeover_dynamic_median"),
    ("survivor takes over, no ids: max (s)", "takeover_dynamic_max"),
    ("session timeout (s)", "session_s"),
]
header("Failover, brokers side by side (SIGKILL until writes made right after it are in Redis)", "figure")
def cell(f, key):
    if key not in f:
        return "n/a"
    return "never (> 30 s)" if f[key] == float("inf") else f"{f[key]:.2f}"
for label, key in rows:
    row(label, (cell(f, key) for _, f in runs))
print()
PY
  )" "$@"
}

# side_by_side PYTHON BROKER=SUMMARY...: runs PYTHON with `runs`, a list of (broker title, {figure: value}),
# read from each SUMMARY file (lines `name=value`; a missing file gives no figures), brokers in order, and
# `header(title, first column)` and `row(label, cells)`, which print a markdown table with a column per broker.
side_by_side() {
  local body=$1
  shift
  python3 -c "$(
    cat <<'PY'
import sys

titles = {"apache": "Apache Kafka", "tansu": "tansu"}
runs = []
for arg in sys.argv[1:]:
    broker, path = arg.split("=", 1)
    figures = {}
    try:
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.strip().split("=", 1)
                    figures[k] = float(v)
    except OSError:
        pass
    runs.append((titles.get(broker, broker), figures))

def header(title, first):
    """A table's title, then its header: `first`, then one column per broker."""
    print(f"## {title}")
    print()
    print(f"| {first} | " + " | ".join(t for t, _ in runs) + " |")
    print("|---|" + "---:|" * len(runs))

def row(label, cells):
    print(f"| {label} | " + " | ".join(cells) + " |")

PY
  )
$body" "$@"
}

main() {
  local sections=("$@")
  if [[ ${#sections[@]} -eq 0 ]]; then
    sections=("${SECTIONS[@]}")
  fi
  for section in "${sections[@]}"; do
    if ! declare -F "section_${section//-/_}" >/dev/null; then
      echo "unknown section '$section'; known: ${SECTIONS[*]}" >&2
      exit 2
    fi
  done
  echo "machine: $(nproc) cores, $(uname -sr), $(rustc --version)"
  echo
  local i=0
  for section in "${sections[@]}"; do
    i=$((i + 1))
    step "$i" "${#sections[@]}" "bench.sh: section $section"
    "section_${section//-/_}"
  done
  echo "bench.sh: done in $(elapsed)" >&2
}

main "$@"
