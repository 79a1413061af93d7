# Progress lines for the long-running scripts (demo.sh, bench.sh, chaos.sh), sourced by them: which
# step of how many is running, how long the run has taken, and a "still running" line every
# PROGRESS_TICK seconds (default 30) while one long command works silently. Everything goes to
# stderr, so a script's stdout (bench.sh's tables) stays clean.

PROGRESS_STARTED=$SECONDS

# elapsed: time since the script started, as 3m07s.
elapsed() {
	local s=$((SECONDS - PROGRESS_STARTED))
	printf '%dm%02ds' $((s / 60)) $((s % 60))
}

# step I N TEXT...: "[I/N] TEXT  (3m07s in)".
step() {
	local i=$1 n=$2
	shift 2
	printf '\033[1m[%s/%s] %s\033[0m  (%s in)\n' "$i" "$n" "$*" "$(elapsed)" >&2
}

# ticking LABEL COMMAND...: runs COMMAND; while it runs, prints "… LABEL: still running (75 s)" every
# PROGRESS_TICK seconds. Returns COMMAND's status. The ticker stops with the command, or with the script.
ticking() {
	local label=$1 status=0 ticker script=$$
	shift
	(
		start=$SECONDS
		while sleep "${PROGRESS_TICK:-30}" && kill -0 "$script" 2>/dev/null; do
			printf '   … %s: still running (%d s)\n' "$label" $((SECONDS - start)) >&2
		done
	) &
	ticker=$!
	"$@" || status=$?
	kill "$ticker" 2>/dev/null || true
	wait "$ticker" 2>/dev/null || true
	return "$status"
}
