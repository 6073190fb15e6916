#!/usr/bin/env bash
# Run every Go fuzz target of the module briefly, one after the other.
#   scripts/fuzz.sh [FUZZTIME]     (default 10s per target; also read from $FUZZTIME)
# Targets are found with `go test -list '^Fuzz'`, package by package. A failing
# input is saved by Go under <package>/testdata/fuzz/<Target>/ (commit it: it then
# runs as a regression case in every `go test`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FUZZTIME="${1:-${FUZZTIME:-10s}}"
found=0
failed=()
start=$SECONDS
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
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"; then
			failed+=("$pkg.$target")
		fi
	done
done

if [[ $found -eq 0 ]]; then
	echo "fuzz: no fuzz targets (func FuzzXxx(*testing.F)) in this module"
	exit 0
fi
echo "fuzz: $found targets in $((SECONDS - start))s, ${#failed[@]} failed"
if [[ ${#failed[@]} -gt 0 ]]; then
	printf 'fuzz: FAILED %s\n' "${failed[@]}"
	exit 1
fi
