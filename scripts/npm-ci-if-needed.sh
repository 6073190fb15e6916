#!/usr/bin/env bash
# Install the Node.js packages pinned in package-lock.json (socket.io, used by the
# integration-test fixtures and examples/cluster) with `npm ci`, unless
# node_modules/ is already in step with package.json and package-lock.json.
#   FORCE=1 scripts/npm-ci-if-needed.sh   always run npm ci
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'npm-ci: %s\n' "$*" >&2; }

for tool in node npm; do
	command -v "$tool" >/dev/null 2>&1 || { log "error: $tool is not on PATH (Node.js 18+ and npm are needed)"; exit 1; }
done

# npm writes node_modules/.package-lock.json on every install: if it is older than
# package.json or package-lock.json, node_modules is stale.
marker=node_modules/.package-lock.json
if [[ "${FORCE:-0}" != 1 && -f "$marker" && ! package-lock.json -nt "$marker" && ! package.json -nt "$marker" ]] &&
	node -e 'for (const p of Object.keys(require("./package.json").dependencies)) require.resolve(p + "/package.json")' 2>/dev/null; then
	log "node_modules is up to date"
	exit 0
fi

log "running npm ci in $ROOT"
start=$SECONDS
npm ci --no-audit --no-fund --loglevel=error
log "npm ci done in $((SECONDS - start))s"
