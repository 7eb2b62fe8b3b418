# outboxrelay: the two commands a newcomer needs are `make demo` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The same flags as the Dockerfile: a static, reproducible binary.
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build test test-pg pg-fetch vet demo bench pgo fuzz soak clean prereqs

all: build

build: ## the relay binary, bin/outboxrelay
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/outboxrelay .

bin/nats-server: go.mod go.sum ## nats-server, pinned in go.mod as a tool
	$(GO) build -o $@ github.com/nats-io/nats-server/v2

bin/helm: tools/helm/go.mod tools/helm/go.sum ## helm, for the chart's test; pinned in a module of its own (tools/helm)
	cd tools/helm && $(GO) build -o ../../bin/helm helm.sh/helm/v3/cmd/helm

prereqs: bin/nats-server ## fail early, with the fix, when Postgres or npm is missing
	@test -x "$${PG_BINDIR:-/nonexistent}/initdb" || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { echo "PostgreSQL server binaries not found: apt-get install postgresql (or set PG_BINDIR)"; exit 1; }
	@command -v npm >/dev/null || \
	  { echo "npm not found; make test-pg fetches Postgres 14, 16, 17 and 18 with it: apt-get install nodejs npm"; exit 1; }

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

test: prereqs vet pg-fetch bin/helm ## go vet + every test under -race on Debian's Postgres, then test-pg
	NATS_SERVER_BIN=$(CURDIR)/bin/nats-server HELM_BIN=$(CURDIR)/bin/helm $(GO) test -race -count=1 -timeout 45m ./...
	@NATS_SERVER_BIN=$(CURDIR)/bin/nats-server $(GO) test -count=1 -v -run '^TestPostgresVersion$$' ./e2e/ | grep 'PostgreSQL'
	$(MAKE) --no-print-directory test-pg

# The other supported Postgres versions, each fetched once by .ci/pgfetch,
# and the e2e tests of the core scenario that run on each, with TestMonitoring
# for the slot metrics read from pg_replication_slots.
PG_VERSIONS ?= 14 16 17 18
PG_CORE_TESTS = ^(TestPostgresVersion|TestDelivery|TestDeliveryMessages|TestAckAfterDurable|TestRestart|TestIdleSlotAdvances|TestRelayKill9|TestRelayKill9Messages|TestPostgresRestart|TestMonitoring)$$

pg-fetch: ## fetch, once, the Postgres versions besides Debian's (the failover tests need 16, 17 and 18)
	@for v in $(PG_VERSIONS); do .ci/pgfetch $$v >/dev/null || exit 1; done

test-pg: bin/nats-server ## the core e2e scenario on each of PG_VERSIONS; every version runs, failures are listed at the end
	@failed=; for v in $(PG_VERSIONS); do \
	  start=$$(date +%s); \
	  if bindir=$$(.ci/pgfetch $$v); then \
	    echo "== PostgreSQL $$v: $$bindir"; \
	    PG_VERSION=$$v PG_BINDIR=$$bindir NATS_SERVER_BIN=$(CURDIR)/bin/nats-server \
	      $(GO) test -race -count=1 -timeout 20m -v -run '$(PG_CORE_TESTS)' ./e2e/ || failed="$$failed $$v"; \
	  else failed="$$failed $$v"; fi; \
	  echo "== PostgreSQL $$v: done in $$(( $$(date +%s) - start ))s"; \
	done; \
	test -z "$$failed" || { echo "== failed on PostgreSQL$$failed"; exit 1; }

soak: prereqs ## the fault tests with 5x the events and faults (not in CI)
	OUTBOXRELAY_SOAK=$${SOAK:-5} NATS_SERVER_BIN=$(CURDIR)/bin/nats-server $(GO) test -race -count=1 -timeout 90m -v \
	  -run 'TestRelayKill9|TestNATSKill9AndFreeze|TestPostgresRestart|TestClusterFailover|TestStandbyTakeover|TestStandbyRoundTrip' ./e2e/

demo: build bin/nats-server ## Postgres + nats-server + relay under ./.demo, sample events printed (FORMAT=cloudevents: with ce- headers)
	$(GO) build -o bin/demo ./demo
	@# exec: Ctrl-C reaches the demo itself, which cleans up and exits 0
	exec bin/demo $(if $(FORMAT),-format=$(FORMAT))

bench: build bin/nats-server ## throughput figures (never a pass/fail on timing)
	NATS_SERVER_BIN=$(CURDIR)/bin/nats-server $(GO) run ./bench

# default.pgo is the CPU profile `go build` optimizes the relay for
# (profile-guided optimization): the relay's own profiles in two drains and
# a paced run of the bench, merged. Refresh it after a change to the hot
# path; docs/performance.md, "Profile-guided optimization", says how to
# check what it gains.
PGO_DIR ?= $(or $(TMPDIR),/tmp)/outboxrelay-pgo

pgo: build bin/nats-server ## refresh default.pgo from the relay's CPU profiles in bench runs (a minute or two)
	rm -rf $(PGO_DIR) && mkdir -p $(PGO_DIR)
	NATS_SERVER_BIN=$(CURDIR)/bin/nats-server $(GO) run ./bench -n 1000000 -tx 100 -rates 2500 -limits=false -baseline=false -runs 1 \
	  -cpuprofile $(PGO_DIR)/a -cpuprofile-seconds 10
	NATS_SERVER_BIN=$(CURDIR)/bin/nats-server $(GO) run ./bench -n 300000 -tx 1 -rates "" -limits=false -baseline=false -runs 1 \
	  -cpuprofile $(PGO_DIR)/b -cpuprofile-seconds 4
	$(GO) tool pprof -proto $$(ls $(PGO_DIR)/*.pprof | grep -v -- '-nats\.pprof$$') > default.pgo
	rm -rf $(PGO_DIR)

fuzz: ## each fuzz target for FUZZTIME (default 5m)
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $${FUZZTIME:-5m} ./decode/
	$(GO) test -run '^$$' -fuzz FuzzParseConfig -fuzztime $${FUZZTIME:-5m} ./config/
	$(GO) test -run '^$$' -fuzz FuzzEscape -fuzztime $${FUZZTIME:-5m} ./subject/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-5m} ./subject/

clean:
	rm -rf bin .demo
