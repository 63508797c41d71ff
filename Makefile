# One command to run the service, one to test it. `make run` needs nothing but
# Go: the service keeps its data in a SQLite file and runs its own Redis.
# `make run-postgres` and `make test` make sure PostgreSQL and Redis are up
# first (scripts/services.sh starts them, installing on Debian).

GO        ?= go
BIN       := bin/allocation
PKGS      := ./...
TESTFLAGS ?= -race -count=1
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run run-postgres build services test test-unit test-integration test-e2e lint deploycheck fmt clean fuzz bench-go

FUZZTIME ?= 60s

# What `allocation version` prints: the nearest tag (or the commit) and the
# full commit, from git; "dev" and "unknown" outside a git work tree.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# exec: the service replaces the recipe's shell, so that a SIGTERM to make
# reaches it (and it shuts down) instead of leaving it running as an orphan.
run: build ## build and serve on HTTP_ADDR (default :8080) in the embedded mode: SQLite in DATA_DIR (./data), Redis on EMBEDDED_REDIS_ADDR (127.0.0.1:6380)
	exec ./$(BIN) serve

# The local PostgreSQL and Redis that `make services` starts, unless
# DATABASE_URL and REDIS_URL say otherwise.
LOCAL_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/allocation?sslmode=disable
LOCAL_REDIS_URL    ?= redis://127.0.0.1:6379/0

run-postgres: services build ## start PostgreSQL and Redis, build, and serve against them
	DATABASE_URL="$${DATABASE_URL:-$(LOCAL_DATABASE_URL)}" REDIS_URL="$${REDIS_URL:-$(LOCAL_REDIS_URL)}" exec ./$(BIN) serve

build: ## bin/allocation, stamped with VERSION and COMMIT
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/allocation

services: ## make sure PostgreSQL and Redis are running
	@bash scripts/services.sh

# The unit tests: tests/unit, and the packages that keep their own (the
# domain, the store's machinery under adapters/sqlstore/internal).
UNIT_PKGS = ./tests/unit/... ./domain/... ./adapters/... ./entrypoints/...

test: services lint ## everything: static checks, unit, integration and e2e, with the race detector
	$(GO) test $(TESTFLAGS) $(UNIT_PKGS)
	$(GO) test $(TESTFLAGS) -p 1 ./tests/integration/...
	$(GO) test $(TESTFLAGS) -p 1 ./tests/e2e/...

test-unit:
	$(GO) test $(TESTFLAGS) $(UNIT_PKGS)

test-integration: services
	$(GO) test $(TESTFLAGS) ./tests/integration/...

test-e2e: services
	$(GO) test $(TESTFLAGS) ./tests/e2e/...

lint: deploycheck ## gofmt, go vet and staticcheck must be clean, the deployment files valid, and asyncapi.json valid with schemas that compile and agree with the code
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	$(GO) test -count=1 -run '^TestAsyncAPI' ./tests/unit/

# deploy/kubernetes decoded strictly into the Kubernetes API types, and
# docker-compose.yml and the Dockerfile checked, offline: no cluster, no
# Docker. tools/deploycheck is a module of its own, so that the Kubernetes
# packages never reach the service's binary.
deploycheck:
	cd tools/deploycheck && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./... && $(GO) test -count=1 ./... && $(GO) run . -root ../..

fuzz: ## each fuzz target for FUZZTIME (default 60s), starting from the committed corpus
	$(GO) test -run='^$$' -fuzz='^FuzzConsumerDecode$$' -fuzztime=$(FUZZTIME) ./tests/unit/
	$(GO) test -run='^$$' -fuzz='^FuzzConsumerDecodeEntry$$' -fuzztime=$(FUZZTIME) ./tests/unit/
	$(GO) test -run='^$$' -fuzz='^FuzzHTTPRequestBodies$$' -fuzztime=$(FUZZTIME) ./tests/unit/

bench-go: services ## Go benchmarks: the domain's hot path, and the store against the real PostgreSQL
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=2s ./tests/unit/ ./tests/integration/

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin

.PHONY: bench
BENCHFLAGS ?=
bench: services ## measure the service against issue 5's targets (BENCHFLAGS=-quick for a smoke run, BENCHFLAGS=-embedded-soak=10m for the embedded mode's real soak)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/allocation
	$(GO) run ./cmd/loadgen -bin $(BIN) $(BENCHFLAGS)
	# What tracing costs a request when no OTLP endpoint is set, against no
	# tracing middleware at all (loadgen cannot: both services are this build).
	$(GO) test -run='^$$' -bench='^BenchmarkAllocateRequestTracing$$' -benchmem -benchtime=2s ./tests/unit/
