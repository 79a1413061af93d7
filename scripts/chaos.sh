#!/usr/bin/env bash
# The chaos harness (tests/chaos): real processes — a broker, redis-server with its append-only file on, the
# distcache-state-node binary and three examples/core_node writers — and one fault per round: a state node
# SIGKILLed mid-batch and restarted, SIGSTOPped past its session timeout, one of two killed; redis-server
# restarted (data kept) or wiped (data lost); the broker restarted; malformed and hostile records on both
# topics. After each round settles it checks that Redis records the newest acknowledged version of every key
# (with its value), that every writer's local cache agrees or lacks the key, and that every acknowledged
# write was reported on the done topic. One line per round, then `rounds=N lost=0 diverged=0 …`.
#
# Usage: scripts/chaos.sh [--rounds N] [--seed S] [--broker kafka|tansu|both] [--faults a,b,...]
#   --rounds N   rounds per broker (default 50; scripts/test.sh runs 3 in its test step)
#   --seed S     picks the faults' order, the writes and when each fault strikes (default: random, printed)
#   --broker     Apache Kafka (`kafka`, what users run), tansu, or `both` in turn (default)
#   --faults     only these faults, in turn: kill-state-node, pause-state-node, kill-one-of-two,
#                restart-redis, wipe-redis, restart-broker, hostile-records
# A round takes 3–20 s (a paused state node waits out its session timeout; Apache Kafka takes seconds to
# restart): 50 rounds are about 5–10 minutes per broker. Installs what is missing (scripts/services.sh
# install) and builds the binaries first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/progress.sh
source scripts/progress.sh

rounds=50
seed=$(( (RANDOM << 15) | RANDOM ))
brokers=(kafka tansu)
faults=
while (($#)); do
	case $1 in
	--rounds) rounds=$2 && shift 2 ;;
	--seed) seed=$2 && shift 2 ;;
	--broker)
		case $2 in
		kafka | tansu) brokers=("$2") ;;
		both) brokers=(kafka tansu) ;;
		*) echo "chaos.sh: --broker must be kafka, tansu or both" >&2 && exit 2 ;;
		esac
		shift 2
		;;
	--faults) faults=$2 && shift 2 ;;
	-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' && exit 0 ;;
	*) echo "chaos.sh: unknown argument $1 (see --help)" >&2 && exit 2 ;;
	esac
done
[[ $rounds =~ ^[0-9]+$ && $rounds -gt 0 ]] || { echo "chaos.sh: --rounds must be a positive number" >&2 && exit 2; }
[[ $seed =~ ^[0-9]+$ ]] || { echo "chaos.sh: --seed must be a number" >&2 && exit 2; }

steps=$((2 + ${#brokers[@]}))
step 1 "$steps" "chaos.sh: installing what is missing (scripts/services.sh install)"
ticking "installing" scripts/services.sh install >/dev/null
tools=${DISTCACHE_TOOLS:-$HOME/.cache/distcache}
export TANSU_BIN=${TANSU_BIN:-$tools/bin/tansu}
export DISTCACHE_KAFKA_HOME=${DISTCACHE_KAFKA_HOME:-$tools/kafka}
if [[ -d $tools/python ]]; then
	export PYTHONPATH="$tools/python${PYTHONPATH:+:$PYTHONPATH}"
fi

step 2 "$steps" "chaos.sh: building the state node, the core-node example and the harness"
ticking "building" cargo build --bin distcache-state-node --example core_node
ticking "building the harness" cargo test --no-run --test chaos

status=0
n=2
for broker in "${brokers[@]}"; do
	n=$((n + 1))
	step "$n" "$steps" "chaos.sh: $rounds rounds on $broker, seed $seed${faults:+, faults $faults}" \
		"(one line per round as it ends: round k/$rounds [time] …)"
	# --nocapture: each round's line shows as the round ends; the ticker covers a round that settles slowly.
	if ! DISTCACHE_TEST_BROKER=$broker DISTCACHE_CHAOS_ROUNDS=$rounds DISTCACHE_CHAOS_SEED=$seed \
		DISTCACHE_CHAOS_FAULTS=$faults ticking "chaos rounds on $broker" \
		cargo test --test chaos -- --nocapture --test-threads 1; then
		status=1
		echo "chaos.sh: FAILED on $broker (seed $seed): the lines above name each lost or diverged key" >&2
	fi
done
echo "chaos.sh: done in $(elapsed)" >&2
exit $status
