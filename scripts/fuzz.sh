#!/usr/bin/env bash
# Run every Go fuzz target of the module briefly, one after the other.
#   scripts/fuzz.sh [FUZZTIME]     (default 500000x per target; also read from $FUZZTIME)
# FUZZTIME is anything `go test -fuzztime` takes: an execution count ("500000x",
# the default; .ci/run passes 300000x) or a duration ("30s", for a longer local
# run).
#
# Why counts by default: Go 1.26's fuzz coordinator races its own -fuzztime
# deadline (golang/go#75804, fixed in Go 1.27). When the duration ends while a
# worker is mid-call, `go test` fails with a bare "context deadline exceeded",
# writes no failing input and found nothing. A count has no deadline to race.
# With a duration, such a run is reported here as that toolchain race and not
# counted as a failure; any other failure, and every run that writes a failing
# input, still fails.
#
# Targets are found with `go test -list '^Fuzz'`, package by package. A failing
# input is saved by Go under <package>/testdata/fuzz/<Target>/ (commit it: it then
# runs as a regression case in every `go test`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FUZZTIME="${1:-${FUZZTIME:-500000x}}"
if [[ ! "$FUZZTIME" =~ ^([0-9]+x|[0-9.]+(ns|us|ms|s|m|h))+$ ]]; then
	echo "fuzz: FUZZTIME must be an execution count like 500000x or a duration like 30s, not '$FUZZTIME'" >&2
	exit 2
fi

# deadline_race LOG: true when LOG is the Go 1.26 -fuzztime race and nothing else:
# a "context deadline exceeded" failure, no failing input written, no panic and
# no failure message from the target itself.
deadline_race() {
	local log="$1"
	grep -q '^    context deadline exceeded$' "$log" &&
		! grep -qE 'Failing input written to|^panic:|fuzzing process hung|_test\.go:[0-9]+:' "$log"
}

found=0
failed=()
races=()
start=$SECONDS
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for pkg in $(go list ./...); do
	# -list prints the matching names, then an "ok <pkg>" line (or "?" when the
	# package has no test files)
	if ! listing="$(go test -list '^Fuzz' "$pkg" 2>&1)"; then
		printf '%s\n' "$listing" >&2
		echo "fuzz: go test -list failed for $pkg" >&2
		exit 1
	fi
	targets="$(grep -E '^Fuzz[A-Za-z0-9_]*$' <<<"$listing" || true)"
	for target in $targets; do
		found=$((found + 1))
		echo "==> $pkg $target (fuzztime $FUZZTIME)"
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tee "$log"; then
			continue
		fi
		if [[ "$FUZZTIME" != *x ]] && deadline_race "$log"; then
			echo "fuzz: $target: bare 'context deadline exceeded' at the -fuzztime deadline, no failing input: the Go 1.26 coordinator race (golang/go#75804), not a finding"
			races+=("$pkg.$target")
		else
			failed+=("$pkg.$target")
		fi
	done
done

if [[ $found -eq 0 ]]; then
	echo "fuzz: no fuzz targets (func FuzzXxx(*testing.F)) in this module"
	exit 0
fi
echo "fuzz: $found targets in $((SECONDS - start))s, ${#failed[@]} failed, ${#races[@]} stopped by the toolchain's deadline race"
if [[ ${#failed[@]} -gt 0 ]]; then
	printf 'fuzz: FAILED %s\n' "${failed[@]}"
	exit 1
fi
