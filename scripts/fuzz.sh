#!/usr/bin/env bash
# Randomized decoder tests at depth: tests/decoder_fuzz.rs (the wire envelope, stored versions and
# stored values; random bytes, random valid envelopes, mutated valid envelopes) with a million cases
# per property instead of the 4096 that scripts/test.sh runs. Prints the time each property took.
#
#   scripts/fuzz.sh                      # 1,000,000 cases per property, debug build (the one tests use)
#   scripts/fuzz.sh --release 5000000    # an optimized build: much faster per case, but the first
#                                        # run builds every dependency (librdkafka too) in release
#
# A failure prints the shrunk input and proptest's seed. Needs no servers. Not part of CI (hours in
# a debug build on a small machine; see the README's "Bad input" notes for measured times).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile=()
if [[ ${1:-} == --release ]]; then
	profile=(--release)
	shift
fi
cases=${1:-1000000}
export PROPTEST_CASES=$cases
cargo test "${profile[@]}" --test decoder_fuzz --no-run
started=$SECONDS
# One property at a time, each with its own timing line.
mapfile -t tests < <(cargo test "${profile[@]}" --test decoder_fuzz -- --list --format terse 2>/dev/null |
	sed -n 's/: test$//p')
for test in "${tests[@]}"; do
	t0=$SECONDS
	cargo test "${profile[@]}" --quiet --test decoder_fuzz -- --exact "$test" >/dev/null
	printf '%-66s %9d cases %6ds\n' "$test" "$cases" $((SECONDS - t0))
done
echo "fuzz.sh: ${#tests[@]} properties held for $cases cases each in $((SECONDS - started))s"
