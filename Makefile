# Lector: `make run` and `make test` work on a fresh Debian 12 machine with Swift on the PATH.
SHELL := /bin/bash
.DEFAULT_GOAL := run

LECTOR_PG_PORT ?= 54329
export LECTOR_PG_PORT
export LECTOR_DATABASE_URL ?= postgres://lector@127.0.0.1:$(LECTOR_PG_PORT)/lector
# Debian's Tesseract is 2-10x slower on 2 cores without this (see BENCHMARKS.md).
export OMP_THREAD_LIMIT ?= 1
# glibc's default arenas let a long-running worker's memory creep up (see BENCHMARKS.md, P7).
export MALLOC_ARENA_MAX ?= 2
CONFIG ?= debug
BIN := .build/$(CONFIG)/lector

.PHONY: run test test-parallel chaos chaos-s3 cluster fuzz corpus web-test bench eval models openapi web deps db build migrate stop clean deploy-check

deps:
	@deploy/scripts/deps.sh

build: deps
	swift build -c $(CONFIG) --product lector

db: deps
	@deploy/scripts/pg.sh start >/dev/null
	@deploy/scripts/pg.sh createdb lector

migrate: db build
	$(BIN) migrate

run: build
	@LECTOR_BIN=$(BIN) deploy/scripts/run.sh

test: deps
	@deploy/scripts/test.sh

# The Swift tests in parallel, as they ran before make test ran them one at a time (see docs/design/decisions.md,
# known gaps: the parallel run can hang on a loaded machine).
test-parallel: deps
	@deploy/scripts/pg.sh start >/dev/null; \
	LECTOR_TEST_DATABASE_URL=postgres://lector@127.0.0.1:$${LECTOR_PG_PORT:-54329}/postgres OMP_THREAD_LIMIT=1 swift test

# Kills workers with SIGKILL and restarts PostgreSQL under 1,000 jobs; no job may be lost (see BENCHMARKS.md).
CHAOS_JOBS ?= 1000
chaos: build
	@deploy/scripts/pg.sh start >/dev/null
	python3 Tests/chaos/chaos.py --jobs $(CHAOS_JOBS)

# The same with LECTOR_STORAGE=s3://… on the private SeaweedFS (deploy/scripts/weed.sh), restarted once mid-run.
chaos-s3: build
	@deploy/scripts/deps.sh
	@deploy/scripts/pg.sh start >/dev/null
	@deploy/scripts/weed.sh start >/dev/null
	python3 Tests/chaos/chaos.py --storage s3 --jobs $(CHAOS_JOBS)

# No shared filesystem: the API and two workers as separate hosts (network namespaces on a veth bridge, each with
# its own empty folders), PostgreSQL and SeaweedFS on a fourth, LECTOR_STORAGE=s3://…; 200 jobs, one worker host
# torn down mid-run (needs root; docs/object-storage.md).
CLUSTER_JOBS ?= 200
cluster: build
	@deploy/scripts/deps.sh
	@LECTOR_BIN=$(BIN) CLUSTER_JOBS=$(CLUSTER_JOBS) deploy/scripts/cluster.sh

# schemathesis against the live API, from our OpenAPI document (see BENCHMARKS.md, Hostile input).
FUZZ_EXAMPLES ?= 100
fuzz: build
	Tests/fuzz/fuzz.sh $(FUZZ_EXAMPLES) 1000

# Hostile documents through a real API and worker: each refused or failed with a reason, the worker unharmed.
corpus: build
	python3 Tests/corpus/bad_documents.py

# The web page in a real browser (Debian's chromium, driven by selenium): upload, live list, boxes, hostile text.
web-test: build
	Tests/web/web.sh

# Every measure of BENCHMARKS.md at a small size, on a release build (full sizes: benchmarks/bench.py).
bench: deps
	deploy/scripts/deps.sh bench
	benchmarks/setup-bench-venv.sh
	swift build -c release --product lector
	swift build -c release --product lector-bench
	@deploy/scripts/pg.sh start >/dev/null
	LECTOR_BIN_DIR=.build/release python3 benchmarks/bench.py all --small

# OCR quality against the tesseract CLI on ../shared/data (receipts: bag of words; scenes: end-to-end words).
# EVAL_ARGS: e.g. --limit 5, --python-baseline (run benchmarks/setup-bench-venv.sh first), --detector east.
EVAL_ARGS ?=
eval: deps
	swift build -c release --product lector
	python3 benchmarks/eval.py --lector .build/release/lector $(EVAL_ARGS)

# Downloads the EAST text detector (~96 MB) and checks its published SHA-1 (needs the internet; see README).
models: build
	$(BIN) models fetch east

# Regenerates the typed client (Sources/LectorClient) from Sources/LectorAPI/openapi.json (run after editing it).
openapi:
	deploy/scripts/embed-openapi.sh

# The Dockerfile, compose file and Kubernetes manifests, checked offline (see docs/deploy.md).
deploy-check:
	deploy/scripts/check-deploy.sh

# Embeds the web page (Sources/LectorAPI/Web/) into the binary (run after editing it).
web:
	deploy/scripts/embed-web.sh

stop:
	@deploy/scripts/pg.sh stop

clean: stop
	@if [ -L .pgdata ]; then rm -rf "$$(readlink -f .pgdata)"; fi
	rm -rf .build .pgdata .run
