#!/usr/bin/env bash
# Soak test (minutes; not part of scripts/test.sh): sustained load against a real distcache-state-node and two
# examples/core_node processes, sampling the resident memory (VmRSS) of the state node and the core nodes.
#
#   scripts/soak.sh [--minutes N] [--interval S] [--max-slope KIB_PER_MIN] [--tansu]
#
# Starts redis-server and a broker (Apache Kafka; tansu with --tansu) on free loopback ports with
# scripts/services.sh, builds the state node and the example core node (debug profile, as the tests use), and
# feeds each core node an endless mix of commands over a 10 000-key space (50 % set-sync, 10 % del-sync,
# 20 % plain set, 20 % get-sync; 100-byte values). Every S seconds (default 5) it prints one sample line:
# elapsed time, RSS of each process and the writes done. At the end it prints, per process, the least-squares
# slope of RSS over the whole run and over its second half, in KiB/min, and a verdict: "flat" when the
# second-half slope is at most --max-slope (default 512 KiB/min), else "GROWING". The first half is warm-up
# (local caches and the version cache fill, librdkafka sizes its buffers), so only the second half judges.
# A bounded process shows a flat second half whatever the run length; a leak keeps its slope. Exit status 1
# when any process is GROWING.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

MINUTES=3 INTERVAL=5 MAX_SLOPE=512 BROKER=apache
while (($#)); do
	case $1 in
	--minutes) MINUTES=$2; shift 2 ;;
	--interval) INTERVAL=$2; shift 2 ;;
	--max-slope) MAX_SLOPE=$2; shift 2 ;;
	--tansu) BROKER=tansu; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
	esac
done

# shellcheck source=scripts/lib/stack.sh
source scripts/lib/stack.sh
stack_init soak 100

echo "soak: building distcache-state-node and examples/core_node" >&2
nice cargo build --quiet --bin distcache-state-node --example core_node
BIN=$REPO/target/debug

stack_services "$BROKER"
echo "soak: redis $REDIS, broker $BROKERS ($BROKER), $MINUTES min, a sample every ${INTERVAL}s" >&2

stack_state_node "$BIN" warn

# An endless command stream for one core node (pipe back-pressure sets the pace).
load() {
	python3 -u -c '
import random, sys
rng = random.Random(int(sys.argv[1]))
value = "x" * 100
i = 0
out = sys.stdout
while True:
    k = "k%d" % rng.randrange(10000)
    r = rng.random()
    if r < 0.5:
        out.write("set-sync %s %s%d\n" % (k, value, i))
    elif r < 0.6:
        out.write("del-sync %s\n" % k)
    elif r < 0.8:
        out.write("set %s %s%d\n" % (k, value, i))
    else:
        out.write("get-sync %s\n" % k)
    i += 1
' "$1" 2>/dev/null # a broken pipe at the end is expected
}
CORES=()
for n in 1 2; do
	load "$n" | "$BIN/examples/core_node" --brokers "$BROKERS" --redis "$REDIS" --namespace soak --node-id "$n" \
		>"$WORK/core$n.out" 2>"$WORK/core$n.err" &
	PIDS+=($!)
	CORES+=($!)
done

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
SAMPLES=$WORK/samples
: >"$SAMPLES"
start=$(date +%s)
end=$((start + MINUTES * 60))
printf '%8s %14s %14s %14s %12s\n' elapsed state_kib core1_kib core2_kib replies >&2
while (($(date +%s) < end)); do
	sleep "$INTERVAL"
	for pid in "$STATE_NODE" "${CORES[@]}"; do
		kill -0 "$pid" 2>/dev/null || { echo "soak: process $pid died; logs in $WORK" >&2; tail -5 "$WORK"/*.log "$WORK"/*.err >&2; trap - EXIT; exit 1; }
	done
	t=$(($(date +%s) - start))
	s=$(rss "$STATE_NODE") c1=$(rss "${CORES[0]}") c2=$(rss "${CORES[1]}")
	replies=$(cat "$WORK"/core*.out | wc -l)
	echo "$t $s $c1 $c2" >>"$SAMPLES"
	printf '%7ss %14s %14s %14s %12s\n' "$t" "$s" "$c1" "$c2" "$replies" >&2
done
errors=$(cat "$WORK"/core*.out | grep -c '^ERR' || true)
echo "soak: $(cat "$WORK"/core*.out | wc -l) replies, $errors errors" >&2

python3 - "$SAMPLES" "$MAX_SLOPE" <<'PY'
import sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
limit = float(sys.argv[2])
def slope(pts):
    # least squares, KiB per minute
    n = len(pts)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in pts) / n
    my = sum(v for _, v in pts) / n
    den = sum((t - mx) ** 2 for t, _ in pts)
    return 0.0 if den == 0 else 60 * sum((t - mx) * (v - my) for t, v in pts) / den
bad = False
for col, name in ((1, "state node"), (2, "core node 1"), (3, "core node 2")):
    pts = [(r[0], r[col]) for r in rows]
    half = pts[len(pts) // 2:]
    whole, second = slope(pts), slope(half)
    verdict = "flat" if second <= limit else "GROWING"
    bad |= verdict != "flat"
    print("%-12s rss %7.0f -> %7.0f KiB  slope %+8.1f KiB/min (whole run), %+8.1f KiB/min (second half): %s"
          % (name, pts[0][1], pts[-1][1], whole, second, verdict))
sys.exit(1 if bad else 0)
PY
