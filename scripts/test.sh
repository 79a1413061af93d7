#!/usr/bin/env bash
# The one test command (README and CI call it): installs what the tests need (scripts/services.sh install and
# cargo-nextest, idempotent and cached), then runs formatting, clippy, every test target (with the C ABI: the
# C and Python examples against the real services) against Apache Kafka,
# the broker-facing subset again against tansu, the doctests and rustdoc (warnings are errors). Tests start
# their own redis-server and broker on free loopback ports through tests/support; whatever a killed or
# timed-out test leaves running is killed at the end, found by the DISTCACHE_TEST_RUN marker every child
# inherits.
#
# Every step runs even when an earlier one failed; the exit status is non-zero if any failed.
# Environment: DISTCACHE_TOOLS (tool cache), DISTCACHE_TEST_TIMEOUT (seconds for each test step, default 2700),
# DISTCACHE_TEST_BROKER (kafka, the default, or tansu: the broker of the main test step),
# DISTCACHE_TANSU_SUITE (`subset`, the default: the pipeline tests again on tansu; `all`; `none`),
# NEXTEST_PROFILE (default `ci` when CI=true), RUST_TEST_THREADS (default 2; brokers are heavy on 2 cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
failed=()
passed=()

section() { printf '\n==== %s ====\n' "$*"; }

# Kill every process that inherited this run's marker (redis-server, tansu, test binaries, examples) — by pid,
# never by name. Reads /proc with bash builtins only, so the scan itself spawns nothing that carries the marker.
export DISTCACHE_TEST_RUN="distcache-test-$$-${EPOCHSECONDS:-$RANDOM}"
kill_leftovers() {
	local entry pid var left=()
	for entry in /proc/[0-9]*; do
		pid=${entry#/proc/}
		[[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
		while IFS= read -r -d '' var; do
			if [[ $var == "DISTCACHE_TEST_RUN=$DISTCACHE_TEST_RUN" ]]; then
				kill -KILL "$pid" 2>/dev/null && left+=("$pid")
				break
			fi
		done 2>/dev/null <"$entry/environ" || true
	done
	if ((${#left[@]})); then
		printf 'test.sh: killed %d leftover process(es): %s\n' "${#left[@]}" "${left[*]}" >&2
	fi
}
trap kill_leftovers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() {
	local name=$1
	shift
	section "$name: $*"
	local t0=$SECONDS
	if "$@"; then
		passed+=("$name")
		printf -- '---- %s: ok (%ds)\n' "$name" $((SECONDS - t0))
	else
		local rc=$?
		failed+=("$name")
		printf -- '---- %s: FAILED (exit %d, %ds)\n' "$name" "$rc" $((SECONDS - t0))
	fi
}

section "services: scripts/services.sh install"
scripts/services.sh install
tools=${DISTCACHE_TOOLS:-$HOME/.cache/distcache}
export TANSU_BIN=${TANSU_BIN:-$tools/bin/tansu}
if [[ -d $tools/python ]]; then
	export PYTHONPATH="$tools/python${PYTHONPATH:+:$PYTHONPATH}"
fi
export DISTCACHE_KAFKA_HOME=${DISTCACHE_KAFKA_HOME:-$tools/kafka}
echo "TANSU_BIN=$TANSU_BIN DISTCACHE_KAFKA_HOME=$DISTCACHE_KAFKA_HOME"

section "toolchain"
if ! command -v cargo >/dev/null; then
	echo "test.sh: cargo not found: install Rust with rustup (rust-version in Cargo.toml)" >&2
	exit 1
fi
for component in fmt:rustfmt clippy:clippy; do
	if ! cargo "${component%%:*}" --version >/dev/null 2>&1; then
		if ! command -v rustup >/dev/null; then
			echo "test.sh: cargo ${component%%:*} is missing and there is no rustup to add ${component##*:}:" \
				"install Rust with rustup (rust-version in Cargo.toml)" >&2
			exit 1
		fi
		echo "installing ${component##*:}"
		rustup component add "${component##*:}"
	fi
done
# nextest runs every test in its own process with a per-test time-out; built once into the tool cache (a few
# minutes on 2 cores from the crates registry), then found there.
export PATH="$tools/bin:$PATH"
if ! cargo nextest --version >/dev/null 2>&1; then
	echo "installing cargo-nextest into $tools (cargo install, once)"
	if ! cargo install cargo-nextest --locked --root "$tools"; then
		echo "test.sh: cargo-nextest did not install; falling back to cargo test (no per-test time-outs)" >&2
	fi
fi
cargo --version
cargo fmt --version
cargo clippy --version
cargo nextest --version 2>/dev/null | head -n 1 || true

export RUST_TEST_THREADS=${RUST_TEST_THREADS:-2}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
if [[ ${CI:-} == true ]]; then
	export NEXTEST_PROFILE=${NEXTEST_PROFILE:-ci}
fi
test_timeout=${DISTCACHE_TEST_TIMEOUT:-2700}
# Every cargo step builds with the C ABI (`ffi`, additive: the default build is the same minus src/ffi), so the
# library is compiled once for all of them and tests/ffi runs with the rest. tests/ffi builds the C libraries
# (`cargo rustc --lib --features ffi --crate-type cdylib,staticlib`: one more compile of the library, ~1 min
# on 2 cores), compiles examples/c with cc -Werror and runs it and examples/python against the real services.
features=(--features ffi)

step fmt cargo fmt --all -- --check
step clippy cargo clippy --all-targets "${features[@]}" -- -D warnings
# The library alone, without the binary's dependencies (the `cli` feature): what an embedding application builds.
step "lib without cli" cargo check --lib --no-default-features
# nextest runs each test in its own process with a per-test time-out (.config/nextest.toml); it skips
# doctests, which a later step runs either way.
# Together the tests and benches steps are `cargo test --all-targets`: benches run once each in test mode
# (a smoke run; the measurements are scripts/bench.sh's job).
run_tests() {
	if cargo nextest --version >/dev/null 2>&1; then
		timeout --foreground --signal=TERM --kill-after=30 "$test_timeout" \
			cargo nextest run --no-tests=warn "$@"
	else
		timeout --foreground --signal=TERM --kill-after=30 "$test_timeout" cargo test "$@"
	fi
}
# `on_broker NAME cmd…`: runs cmd with tests/support starting that broker.
on_broker() {
	local broker=$1
	shift
	DISTCACHE_TEST_BROKER=$broker "$@"
}
main_broker=${DISTCACHE_TEST_BROKER:-kafka}
step "tests ($main_broker)" on_broker "$main_broker" run_tests "${features[@]}" --lib --bins --tests --examples
# tansu keeps the code defensive (it hides records from tailing consumers, answers ListOffsets wrongly, keeps
# its log in memory): the tests of the distributed path run against it too.
tansu_targets=(--test pipeline_convergence --test pipeline_order --test pipeline_faults --test state_node_group --test support_selftest --test chaos)
case ${DISTCACHE_TANSU_SUITE:-subset} in
subset) [[ $main_broker == tansu ]] || step "tests (tansu subset)" on_broker tansu run_tests "${features[@]}" "${tansu_targets[@]}" ;;
all) [[ $main_broker == tansu ]] || step "tests (tansu, all)" on_broker tansu run_tests "${features[@]}" --tests ;;
none) ;;
*) echo "test.sh: DISTCACHE_TANSU_SUITE must be subset, all or none" >&2 && failed+=(tansu-suite) ;;
esac
step benches cargo test "${features[@]}" --benches
step doctests cargo test "${features[@]}" --doc
step docs env RUSTDOCFLAGS="-D warnings" cargo doc "${features[@]}" --no-deps

section "summary"
elapsed=$((SECONDS - started))
if ((${#failed[@]})); then
	echo "test.sh: FAILED: ${failed[*]} (passed: ${passed[*]:-none}) in ${elapsed}s"
	exit 1
fi
echo "test.sh: all steps passed (${passed[*]}) in ${elapsed}s"
