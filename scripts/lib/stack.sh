# The stack scripts/demo.sh and scripts/soak.sh run, sourced by them from the repository root: a private
# work dir, redis-server and a broker on free loopback ports (scripts/services.sh), one distcache-state-node,
# and the processes they start, all stopped on exit, Ctrl-C included. One copy, so both scripts start and
# stop the same way.

# stack_init NAME WAIT: WORK (a fresh distcache-NAME.XXXXXX temp dir, removed on exit), PIDS (append every
# process started; on exit each gets SIGTERM, then SIGKILL after WAIT tenths of a second), and the traps.
# A script that defines `stack_before_stop` has it run first on exit.
stack_init() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/distcache-$1.XXXXXX")
	STACK_STOP_WAIT=$2
	PIDS=()
	trap stack_stop EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

stack_stop() {
	set +e
	if declare -F stack_before_stop >/dev/null; then
		stack_before_stop
	fi
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq "$STACK_STOP_WAIT"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null
	done
	scripts/services.sh stop all "$WORK/services" >/dev/null 2>&1
	rm -rf "$WORK"
}

# stack_services BROKER: starts redis-server and the broker (apache or tansu) under $WORK/services; their
# addresses in REDIS and BROKERS.
stack_services() {
	REDIS=$(scripts/services.sh start redis "$WORK/services/redis")
	BROKERS=$(DISTCACHE_BROKER=$1 scripts/services.sh start kafka "$WORK/services/kafka")
}

# stack_state_node BIN LOG_LEVEL [ARG...]: starts BIN/distcache-state-node against REDIS and BROKERS with
# the ARGs in the background, its log in $WORK/state-node.log; its pid in STATE_NODE.
stack_state_node() {
	local bin=$1 level=$2
	shift 2
	"$bin/distcache-state-node" --brokers "$BROKERS" --redis "$REDIS" --log-level "$level" "$@" \
		>"$WORK/state-node.log" 2>&1 &
	PIDS+=($!)
	STATE_NODE=$!
}
