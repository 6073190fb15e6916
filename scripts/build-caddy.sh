#!/usr/bin/env bash
# Build a custom Caddy with this plugin into bin/caddy (repo root), using xcaddy.
#
#   scripts/build-caddy.sh          build unless bin/caddy is up to date
#   FORCE=1 scripts/build-caddy.sh  always build
#   STOCK=1 scripts/build-caddy.sh  build stock Caddy (no plugin) into bin/caddy-stock,
#                                   the same way (the baseline of bench/e2e.sh)
#
# Environment:
#   CADDY_VERSION   Caddy to build against (default v2.11.9, the version in go.mod)
#   XCADDY_VERSION  xcaddy to run via `go run` (default v0.4.5; nothing is installed)
#   CADDY_BIN       output path (default <repo>/bin/caddy, or <repo>/bin/caddy-stock
#                   with STOCK=1)
#   STOCK           1 = no plugin: `xcaddy build` without --with
#   FORCE           1 = rebuild even if the binary looks up to date
#   VERBOSE         1 = show xcaddy's output (default: only on failure; it is
#                   kept in <bin dir>/xcaddy.log)
#
# Why the GOPROXY dance: this plugin's module path is not published. When xcaddy
# runs `go get` on it, the go command first asks the module proxy. A proxy that
# answers "not found" lets the local replacement (=./) win, but some proxies answer
# 403, and `direct` cannot be reached from every machine. Ending the proxy list with
# `|off` turns any such refusal into "not found", so the local source is used. The
# proxy itself is taken from `go env GOPROXY`; no host is written here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CADDY_VERSION="${CADDY_VERSION:-v2.11.9}"
XCADDY_VERSION="${XCADDY_VERSION:-v0.4.5}"
STOCK="${STOCK:-0}"
[[ "$STOCK" == 0 || "$STOCK" == 1 ]] || { printf 'build-caddy: STOCK must be 0 or 1\n' >&2; exit 2; }
if [[ "$STOCK" == 1 ]]; then
	CADDY_BIN="${CADDY_BIN:-$ROOT/bin/caddy-stock}"
else
	CADDY_BIN="${CADDY_BIN:-$ROOT/bin/caddy}"
fi
MODULE="github.com/caddy-socketio/caddy-socketio"
# the plugin (local source), or nothing for stock Caddy
WITH=(--with "$MODULE=./")
[[ "$STOCK" == 1 ]] && WITH=()

log() { printf 'build-caddy: %s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || { log "error: go is not on PATH"; exit 1; }

# --- up to date? -------------------------------------------------------------
# Rebuild when any Go source (tests aside), go.mod, go.sum or this script is newer than the
# binary, or when the binary was built for another Caddy version.
stamp="$CADDY_BIN.buildinfo"
want_stamp="caddy=$CADDY_VERSION xcaddy=$XCADDY_VERSION"
[[ "$STOCK" == 1 ]] && want_stamp="$want_stamp stock"
if [[ "${FORCE:-0}" != 1 && -x "$CADDY_BIN" && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
	if [[ "$STOCK" == 1 ]]; then
		# stock Caddy does not depend on this repository's sources
		newer="$(find ./scripts/build-caddy.sh -newer "$CADDY_BIN" -print -quit)"
	else
		newer="$(find . \( -path ./node_modules -o -path ./bin -o -path ./.git \) -prune -o \
			-type f \( \( -name '*.go' ! -name '*_test.go' \) -o -name go.mod -o -name go.sum -o -path ./scripts/build-caddy.sh \) \
			-newer "$CADDY_BIN" -print -quit)"
	fi
	if [[ -z "$newer" ]]; then
		log "$CADDY_BIN is up to date (set FORCE=1 to rebuild)"
		exit 0
	fi
	log "rebuilding: $newer is newer than $CADDY_BIN"
fi

# --- module proxy ------------------------------------------------------------
# From `go env GOPROXY`, drop trailing `direct`/`off` entries and append `|off`:
#   "P,direct" -> "P|off"        "P1,P2" -> "P1,P2|off"
# With no proxy at all ("direct", "off", ""), build offline from the local module
# cache, served as a file proxy: file://$GOMODCACHE/cache/download|off
# (`go run pkg@version` refuses to run under a bare GOPROXY=off).
proxy="$(go env GOPROXY)"
base="$proxy"
while :; do
	case "$base" in
	*,direct | *\|direct) base="${base%?direct}" ;;
	*,off | *\|off) base="${base%?off}" ;;
	*) break ;;
	esac
done
case "$base" in
"" | direct | off)
	goproxy="file://$(go env GOMODCACHE)/cache/download|off"
	log "warning: GOPROXY='$proxy' names no module proxy: building offline from the module cache."
	log "         This works only if xcaddy $XCADDY_VERSION, Caddy $CADDY_VERSION and their"
	log "         dependencies were downloaded before; otherwise set GOPROXY to a module proxy."
	;;
*) goproxy="$base|off" ;;
esac

mkdir -p "$(dirname "$CADDY_BIN")"
if [[ "$STOCK" == 1 ]]; then
	log "building stock Caddy $CADDY_VERSION (no plugin) with xcaddy $XCADDY_VERSION"
else
	log "building Caddy $CADDY_VERSION + $MODULE (local source) with xcaddy $XCADDY_VERSION"
fi
log "GOPROXY for this build: $goproxy"
log "(about 90 s on a cold Go build cache, 15 s otherwise)"
start=$SECONDS
rm -f "$stamp"
xlog="$(dirname "$CADDY_BIN")/xcaddy.log"
[[ "$STOCK" == 1 ]] && xlog="$(dirname "$CADDY_BIN")/xcaddy-stock.log"
# xcaddy builds in a temporary module; --with MODULE=./ adds a replace to this
# directory, so the plugin is compiled from the working tree (STOCK=1: no --with).
build() {
	GOPROXY="$goproxy" CADDY_VERSION="$CADDY_VERSION" \
		go run "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION" build \
		--output "$CADDY_BIN" \
		"${WITH[@]}"
}
rc=0
if [[ "${VERBOSE:-0}" == 1 ]]; then
	build 2>&1 | tee "$xlog" || rc=$?
else
	build >"$xlog" 2>&1 || rc=$?
fi
if [[ $rc -ne 0 ]]; then
	[[ "${VERBOSE:-0}" == 1 ]] || tail -n 40 "$xlog" >&2
	log "error: xcaddy build failed (exit $rc); full output in $xlog"
	exit "$rc"
fi
printf '%s\n' "$want_stamp" >"$stamp"
log "built $CADDY_BIN ($("$CADDY_BIN" version | cut -d' ' -f1)) in $((SECONDS - start))s"
