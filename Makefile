# aiodicom developer targets. `make test` works on a bare machine (creates .venv, installs
# everything, installs Debian's dcmtk for the interop tests when we are root).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
FUZZ_SECONDS ?= 10
PYTEST_ARGS ?= -n 2

.PHONY: venv peers test test-cluster lint typecheck pytest coverage fuzz-smoke serve bench clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The reference peers and services the tests start themselves: DCMTK (echoscu/storescu/storescp)
# and tshark for interop; HAProxy, PostgreSQL and Debian's chromium (driven by Playwright, which
# never downloads a browser) for the cluster and console tests; Azurite (npm) in .tools/.
PEER_BINS := /usr/bin/storescp /usr/bin/tshark /usr/sbin/haproxy /usr/bin/chromium \
	/usr/lib/postgresql/15/bin/initdb
PEER_PKGS := dcmtk tshark haproxy postgresql chromium
AZURITE := .tools/node_modules/.bin/azurite-blob

peers: $(AZURITE)
	@missing=""; for b in $(PEER_BINS); do [ -x $$b ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PEER_PKGS) >/dev/null; \
	  else echo "warning: install Debian's $(PEER_PKGS) (sudo apt-get install ...); the tests that need them will fail"; fi; \
	fi

$(AZURITE):
	npm install --silent --no-audit --no-fund --prefix .tools azurite@3.35 >/dev/null

lint: venv
	$(BIN)/ruff check src tests fuzz bench

typecheck: venv
	$(BIN)/mypy --strict src

pytest: venv peers
	$(BIN)/pytest $(PYTEST_ARGS)

# The sans-I/O core is held at 100% branch coverage by its own (pure, timing-free) tests.
coverage: venv
	$(BIN)/pytest -q -n 2 --cov --cov-report=term tests/core tests/test_layering.py

test: lint typecheck pytest coverage

# The cluster suite: HAProxy (mode tcp, send-proxy-v2) in front of 3 `aiodicom serve` nodes over
# mutual TLS, a PostgreSQL index, Azurite and moto S3 as object storage; every process started
# and stopped by the tests themselves (tests/services/), nothing mocked. A few minutes.
test-cluster: venv peers
	$(BIN)/pytest -q -m cluster -p no:xdist tests/cluster

fuzz-smoke: venv
	$(BIN)/python fuzz/run_all.py --seconds $(FUZZ_SECONDS)

serve: venv
	$(BIN)/python -m aiodicom.app.server.devserver

# The issue 18 table, BENCH_REPS repetitions (default 5, ~10 min); `make bench BENCH_REPS=1`.
bench: venv peers
	$(BIN)/python bench/run.py $(if $(BENCH_REPS),--reps $(BENCH_REPS))

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .hypothesis
