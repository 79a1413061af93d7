#!/usr/bin/env bash
# The distcache demo, from a fresh machine: installs and starts redis-server and a Kafka broker on free
# loopback ports — Apache Kafka 4 (KRaft, single node) by default, tansu with --tansu — builds the state node
# and the example core node, starts one state node and two core nodes (A and B), and narrates:
#   1. a write on A visible on B, with the measured propagation time;
#   2. a delete on B invalidating A;
#   3. a stale write (an old version injected by hand onto the topic) losing to a newer one;
#   4. the metrics of every part.
# Everything it started is stopped on exit, Ctrl-C included.
#
#   scripts/demo.sh            on Apache Kafka
#   scripts/demo.sh --tansu    on tansu (a light Kafka-protocol broker; README "Brokers")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

# shellcheck source=scripts/progress.sh
source scripts/progress.sh
DEMO_STEP=0
DEMO_STEPS=9
say() {
	DEMO_STEP=$((DEMO_STEP + 1))
	printf '\n\033[1m== [%d/%d] %s\033[0m  (%s in)\n' "$DEMO_STEP" "$DEMO_STEPS" "$*" "$(elapsed)"
}
note() { printf '   %s\n' "$*"; }

# shellcheck source=scripts/lib/stack.sh
source scripts/lib/stack.sh
# The core nodes' command fifos (fds 5 and 6) close first: a core node whose input ends stops by itself.
stack_before_stop() { exec 5>&- 6>&- 2>/dev/null; }
stack_init demo 50

BROKER=apache
BROKER_NAME="Apache Kafka"
case ${1:-} in
"") ;;
--tansu) BROKER=tansu BROKER_NAME=tansu ;;
-h | --help)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "demo.sh: unknown argument $1 (try --help)" >&2
	exit 2
	;;
esac

say "Installing what is missing (redis-server, a JDK, Apache Kafka, tansu, kafka-python)"
ticking "installing" scripts/services.sh install
tools=${DISTCACHE_TOOLS:-$HOME/.cache/distcache}
[[ -d $tools/python ]] && export PYTHONPATH="$tools/python${PYTHONPATH:+:$PYTHONPATH}"

say "Building the state node and the example core node (release; the first build compiles librdkafka)"
ticking "building (release)" cargo build --release --quiet --bin distcache-state-node --example core_node
BIN=$REPO/target/release

say "Starting redis-server and the broker ($BROKER_NAME) on free loopback ports"
stack_services "$BROKER"
note "redis:  $REDIS"
note "broker: $BROKERS ($BROKER_NAME)"

say "Starting the state node"
stack_state_node "$BIN" info --final-metrics-file "$WORK/state-node-final.json"

# A core node reads commands from a fifo and writes one reply line per command to a file.
start_core() {
	local name=$1 id=$2
	mkfifo "$WORK/$name.in"
	"$BIN/examples/core_node" --brokers "$BROKERS" --redis "$REDIS" --namespace demo --node-id "$id" \
		<"$WORK/$name.in" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	PIDS+=($!)
}
start_core A 1
exec 5>"$WORK/A.in"
start_core B 2
exec 6>"$WORK/B.in"
declare -A FD=([A]=5 [B]=6) SEEN=([A]=0 [B]=0)

# ask NODE COMMAND: sends one command and puts the node's reply line in $REPLY. (Not run in a $(…)
# subshell: it advances the count of replies read.)
ask() {
	local node=$1 cmd=$2 want=$((SEEN[$1] + 1)) lines
	printf '%s\n' "$cmd" >&"${FD[$node]}"
	for _ in $(seq 3000); do
		lines=$(wc -l <"$WORK/$node.out")
		if ((lines >= want)); then
			SEEN[$node]=$want
			REPLY=$(sed -n "${want}p" "$WORK/$node.out")
			return 0
		fi
		sleep 0.005
	done
	echo "node $node did not answer '$cmd'; its log:" >&2
	tail -n 20 "$WORK/$node.err" >&2
	exit 1
}

wait_ready() {
	local node=$1
	for _ in $(seq 600); do
		if [[ $(head -n 1 "$WORK/$node.out" 2>/dev/null) == READY ]]; then
			SEEN[$node]=1
			return 0
		fi
		sleep 0.05
	done
	echo "core node $node did not start:" >&2
	tail -n 20 "$WORK/$node.err" >&2
	exit 1
}
wait_ready A
wait_ready B
note "core nodes A (node id 1) and B (node id 2) are listening on the done topic"

for _ in $(seq 300); do grep -q "assigned" "$WORK/state-node.log" && break; sleep 0.05; done
note "state node joined its consumer group: $(grep -m1 -o 'assigned [0-9]* partitions' "$WORK/state-node.log")"

now_us() { echo $(($(date +%s%N) / 1000)); }

# poll NODE KEY EXPECTED: asks NODE for KEY (local tier only) until the reply is EXPECTED.
poll() {
	local node=$1 key=$2 expected=$3
	for _ in $(seq 2000); do
		ask "$node" "get $key"
		[[ $REPLY == "$expected" ]] && return 0
	done
	echo "node $node never saw '$expected' for $key (last: $REPLY)" >&2
	exit 1
}

say "1. A write on A becomes visible on B"
t0=$(now_us)
ask A 'set-sync greeting hello'
note "A> set-sync greeting hello      -> $REPLY   (acknowledged by the broker)"
ask A 'get greeting'
note "A> get greeting                 -> $REPLY   (read-your-writes, local tier)"
poll B greeting "VALUE hello"
t1=$(now_us)
note "B> get greeting                 -> VALUE hello   (B's local tier, filled by the done event)"
note "propagation A -> broker -> state node -> Redis -> broker -> B: $(((t1 - t0) / 1000)) ms (includes this script's polling;"
note "  measured without it by scripts/bench.sh pipeline on a 2-core machine: about 5 ms p50 on Apache Kafka, 30 ms on tansu)"
note "Redis holds: $(redis-cli -u "$REDIS" --no-auth-warning hgetall distcache:demo:greeting 2>/dev/null | paste -sd' ' || echo '(redis-cli not found)')"

say "2. A delete on B invalidates A"
t0=$(now_us)
ask B 'del-sync greeting'
note "B> del-sync greeting            -> $REPLY"
poll A greeting "NIL"
t1=$(now_us)
note "A> get greeting                 -> NIL   after $(((t1 - t0) / 1000)) ms"
ask A 'get-sync greeting'
note "A> get-sync greeting            -> $REPLY   (Redis holds a tombstone, not the value)"

say "3. A stale write loses to a newer one"
ask A 'set-sync-wait color blue'
note "A> set-sync-wait color blue     -> $REPLY   (returns once the state node applied it)"
note "injecting a set of color=red with a version from 1970 straight onto the topic, with kafka-python:"
python3 - "$BROKERS" <<'PY'
import json, struct, sys, time
from kafka import KafkaProducer
ns, key, value = b"demo", b"color", json.dumps("red").encode()
# The envelope documented in the README: magic, format 1, op 1 (set), flags (value + write-redis),
# version (hlc, node), origin, produced_at_us, remote ttl, local ttl, then namespace, key and value.
env = b"DC" + struct.pack(">BBBQQQQQQ", 1, 1, 0b1100, 1 << 16, 99, 99, int(time.time() * 1e6), 0, 0)
env += struct.pack(">H", len(ns)) + ns + struct.pack(">I", len(key)) + key + struct.pack(">I", len(value)) + value
p = KafkaProducer(bootstrap_servers=sys.argv[1], api_version=(2, 5))
p.send("core-distributed-cache-set-del", key=ns + b"\x1f" + key, value=env).get(timeout=10)
p.flush()
PY
sleep 1
ask A 'get color'
note "A> get color                    -> $REPLY"
ask B 'get-sync color'
note "B> get-sync color               -> $REPLY   (the old version was dropped by the state node)"

say "4. Metrics"
ask A 'metrics'
A_METRICS=$REPLY
ask B 'metrics'
B_METRICS=$REPLY
note "core nodes A and B (each node's one-line \`metrics\` reply, side by side; latencies in ms):"
python3 - "$A_METRICS" "$B_METRICS" <<'PY'
import sys
nodes = [dict(p.split("=", 1) for p in line.split() if "=" in p) for line in sys.argv[1:]]
def cell(v, name):
    if name.endswith("_us") and v.isdigit():
        return f"{int(v) / 1000:.3f}"
    return v
print(f"   {'metric':<24} {'A':>12} {'B':>12}")
print(f"   {'-' * 24} {'-' * 12} {'-' * 12}")
for name in nodes[0]:
    label = name[:-3].replace("_", " ") + " (ms)" if name.endswith("_us") else name.replace("_", " ")
    print(f"   {label:<24} " + " ".join(f"{cell(n.get(name, '-'), name):>12}" for n in nodes))
PY
kill -TERM "$STATE_NODE"
for _ in $(seq 100); do kill -0 "$STATE_NODE" 2>/dev/null || break; sleep 0.1; done
note "state node (stopped with SIGTERM: drained, committed, exited; latencies in ms):"
python3 - "$WORK/state-node-final.json" <<'PY'
import json, sys
# The file of --final-metrics-file: one JSON object, counters as numbers, summaries as objects.
try:
    with open(sys.argv[1]) as f:
        metrics = json.load(f)
except (OSError, ValueError) as e:
    print(f"   no final metrics file: {e}")
    sys.exit(0)
print(f"   {'metric':<24} {'value':>12}")
print(f"   {'-' * 24} {'-' * 12}")
for name, value in metrics.items():
    if isinstance(value, dict):
        if value["count"] == 0:
            value = "-"
        elif name.endswith("_us"):
            ms = {k: v / 1000 for k, v in value.items()}
            value = f"n={value['count']} p50 {ms['p50']:.3f} p99 {ms['p99']:.3f} max {ms['max']:.3f}"
        else:
            value = f"n={value['count']} p50 {value['p50']} p99 {value['p99']} max {value['max']}"
        name = name[:-3] + " (ms)" if name.endswith("_us") else name
    print(f"   {name.replace('_', ' '):<24} {value:>12}")
PY
say "Done in $(elapsed); stopping everything"
