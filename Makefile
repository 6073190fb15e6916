# caddy-socketio: developer targets. GNU Make 4.3+.
#
#   make test      all tests: go vet, then go test -race (unit + integration;
#                  the integration tests spawn Node.js, Python and Go socket.io
#                  nodes, so this first runs npm ci when node_modules is missing
#                  or stale, and apt-get install when python3-socketio is missing)
#   make lint      gofmt, go vet, staticcheck
#   make fuzz      each Go fuzz target for FUZZTIME executions (default 500000x;
#                  a duration such as 30s works too, see scripts/fuzz.sh)
#   make build     Caddy with this plugin, built by xcaddy into bin/caddy
#   make example   the example cluster: 3 socket.io nodes behind Caddy, and clients
#                  (examples/cluster/run.sh)
#   make example-ha  several Caddy instances sharing pins through Redis: redis-server,
#                  3 instances behind a stock-Caddy round-robin front, 3 nodes, clients
#                  (examples/ha/run.sh)
#   make soak      bounded soak: SOAK_SESSIONS clients (default 500) for SOAK_SECONDS
#                  (default 120) through Caddy, with a reload and a node restart
#                  (bench/soak.sh; results in bench/out/)
#   make bench     Go benchmarks against Caddy's own policies, with benchstat
#                  (bench/go-bench.sh; results in bench/out/)
#   make e2e       end-to-end benchmark: stock Caddy vs Caddy + plugin vs nginx,
#                  3 rounds (bench/e2e.sh; results in bench/out/)
#   make scale     10,000 websocket + 2,000 polling sessions through one Caddy
#                  (bench/scale.sh; results in bench/out/)
#   make scale-h2  the same with the clients on HTTP/2 (SCALE_H2=1 bench/scale.sh:
#                  one open file per session in Caddy instead of two)
#   make clean     remove bin/

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO ?= go
FUZZTIME ?= 500000x
# staticcheck v0.7.0 and v0.8.2 both run on Go 1.26 here; pinned for repeatable lint
STATICCHECK_VERSION ?= v0.8.2

.PHONY: help test lint fuzz build example example-ha soak bench e2e scale scale-h2 clean node_modules test-deps

help:
	@sed -n 's/^#   make /  make /p' $(firstword $(MAKEFILE_LIST))

node_modules:
	@scripts/npm-ci-if-needed.sh

# Debian packages of the test servers (python-socketio); needs root or sudo
test-deps: node_modules
	@scripts/apt-install-if-needed.sh

test: test-deps
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

lint:
	@echo "gofmt -l"; \
	files="$$(find . \( -path ./node_modules -o -path ./bin -o -path ./.git \) -prune -o -name '*.go' -print)"; \
	unformatted="$$(gofmt -l $$files)"; \
	if [[ -n "$$unformatted" ]]; then echo "gofmt: these files need formatting (gofmt -w):"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	@echo "bash -n / node --check (scripts)"; \
	for f in scripts/*.sh examples/lib.sh examples/cluster/run.sh examples/ha/run.sh bench/*.sh .ci/run; do bash -n "$$f"; done; \
	for f in examples/cluster/*.js examples/ha/*.js caddytest/testdata/*.js bench/*.js; do node --check "$$f"; done

fuzz:
	@FUZZTIME='$(FUZZTIME)' scripts/fuzz.sh

build:
	@scripts/build-caddy.sh

example:
	@examples/cluster/run.sh

example-ha:
	@examples/ha/run.sh

SOAK_SECONDS ?= 120
SOAK_SESSIONS ?= 500
soak:
	@SOAK_SECONDS='$(SOAK_SECONDS)' SOAK_SESSIONS='$(SOAK_SESSIONS)' bench/soak.sh

bench:
	@bench/go-bench.sh

e2e:
	@bench/e2e.sh

scale:
	@bench/scale.sh

scale-h2:
	@SCALE_H2=1 bench/scale.sh

clean:
	rm -rf bin
