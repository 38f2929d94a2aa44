# retrostitch: `make run` shows the whole job locally; `make test` sets up and runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# the Quix Streams peer of `make bench` runs in a virtualenv of its own: it pins an older
# confluent-kafka than the project's, which must not be downgraded for the rest
QUIX_VENV   := .venv-quix
QUIX_STAMP  := $(QUIX_VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup run run-snowplow test unit integration lint format bench chaos clean

setup: $(STAMP)  ## virtualenv with retrostitch and its dev tools (idempotent)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: setup  ## local broker + stitcher + the sample stream, printed before and after
	$(BIN)/retrostitch demo

run-snowplow: setup  ## the same in Snowplow's flavour: enriched TSV, its user identifier, latest user id wins
	$(BIN)/retrostitch demo --snowplow

test: lint  ## lint, then every test (unit and integration, against the real broker)
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: setup
	$(BIN)/python -m pytest -q tests/unit

integration: setup
	$(BIN)/python -m pytest -q tests/integration

lint: setup  ## ruff, mypy --strict, and the dependency rule between packages (import-linter)
	$(BIN)/ruff check streams connectors tests
	$(BIN)/ruff format --check streams connectors tests
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format streams connectors tests
	$(BIN)/ruff check --fix streams connectors tests

$(QUIX_STAMP): pyproject.toml
	test -x $(QUIX_VENV)/bin/python || $(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	rm -f $(QUIX_VENV)/.installed-* && touch $@

RUNS ?= 3
bench: $(STAMP) $(QUIX_STAMP)  ## throughput (with the Quix Streams peer and the limit), latency, connectors, state in one table (~25 min; RUNS=1: ~10)
	$(BIN)/python -m tests.bench --runs $(RUNS)

clean:
	rm -rf $(VENV) $(QUIX_VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis state

EVENTS ?= 20000
KILLS ?= 12
OUTAGE ?= 20
SEED ?= 1
chaos: setup  ## random SIGKILLs of 2 workers and a connector, a Postgres crash; the warehouse vs an oracle
	$(BIN)/python -m tests.chaos --events $(EVENTS) --kills $(KILLS) --outage $(OUTAGE) --seed $(SEED)
