# outboxrelay: the two commands a newcomer needs are `make demo` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The same flags as the Dockerfile: a static, reproducible binary.
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build test vet demo bench fuzz soak clean prereqs

all: build

build: ## the relay binary, bin/outboxrelay
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/outboxrelay .

bin/nats-server: go.mod go.sum ## nats-server, pinned in go.mod as a tool
	$(GO) build -o $@ github.com/nats-io/nats-server/v2

prereqs: bin/nats-server ## fail early, with the fix, when Postgres is missing
	@test -x "$${PG_BINDIR:-/nonexistent}/initdb" || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { echo "PostgreSQL server binaries not found: apt-get install postgresql (or set PG_BINDIR)"; exit 1; }

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

test: prereqs vet ## go vet + every test, integration tests included, under -race
	NATS_SERVER_BIN=$(CURDIR)/bin/nats-server $(GO) test -race -count=1 -timeout 25m ./...

soak: prereqs ## the fault tests with 5x the events and faults (not in CI)
	OUTBOXRELAY_SOAK=$${SOAK:-5} NATS_SERVER_BIN=$(CURDIR)/bin/nats-server $(GO) test -race -count=1 -timeout 90m -v \
	  -run 'TestRelayKill9|TestNATSKill9AndFreeze|TestPostgresRestart|TestClusterFailover|TestStandbyTakeover' ./e2e/

demo: build bin/nats-server ## Postgres + nats-server + relay under ./.demo, sample events printed
	$(GO) build -o bin/demo ./demo
	@# exec: Ctrl-C reaches the demo itself, which cleans up and exits 0
	exec bin/demo

bench: build bin/nats-server ## throughput figures (never a pass/fail on timing)
	NATS_SERVER_BIN=$(CURDIR)/bin/nats-server $(GO) run ./bench

fuzz: ## each fuzz target for FUZZTIME (default 5m)
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $${FUZZTIME:-5m} ./decode/
	$(GO) test -run '^$$' -fuzz FuzzParseConfig -fuzztime $${FUZZTIME:-5m} ./config/
	$(GO) test -run '^$$' -fuzz FuzzEscape -fuzztime $${FUZZTIME:-5m} ./subject/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-5m} ./subject/

clean:
	rm -rf bin .demo
