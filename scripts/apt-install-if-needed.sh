#!/usr/bin/env bash
# Install the Debian packages the tests need, if any is missing.
#
#   scripts/apt-install-if-needed.sh      (make test runs it first)
#
# The integration tests run real Socket.IO servers of several implementations
# and a real browser:
#   python3-socketio python3-engineio python3-aiohttp  the python-socketio server
#     (Debian bookworm: python-socketio 5.7.2, python-engineio 4.3.4, aiohttp
#     3.8.4), run by /usr/bin/python3
#   chromium  the headless browser of TestBrowserH2
#   redis-server  the shared store's tests start their own (Debian bookworm:
#     Redis 7.0), on a free loopback port without persistence
# Nothing happens when all are installed. Installing needs root (or sudo).
set -euo pipefail

PACKAGES=(python3-socketio python3-engineio python3-aiohttp chromium redis-server)

log() { printf 'apt-install: %s\n' "$*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
	log "Debian packages present: ${PACKAGES[*]}"
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	if ! command -v sudo >/dev/null 2>&1; then
		log "error: missing ${missing[*]}; run as root: apt-get update && apt-get install -y ${missing[*]}"
		exit 1
	fi
	sudo=(sudo)
fi
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
