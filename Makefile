# Two entry points: `make run` (the node, embedded broker, web UI) and `make test` (the whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test lint schemas bench deps clean

deps:
	@scripts/system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: deps $(STAMP)
	$(BIN)/milo run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: deps $(STAMP) lint
	$(BIN)/milo schemas --check
	@# Home Assistant's own discovery schemas check ours: its venv, built once (about 5 min) and cached.
	@scripts/ha-venv.sh >/dev/null
	@# The Node-RED the example flows are tested in: npm ci from examples/node-red's lock, cached.
	@scripts/node-red.sh >/dev/null
	$(BIN)/pytest

schemas: $(STAMP)
	$(BIN)/milo schemas

bench: deps $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.volume
	$(BIN)/python -m bench.knob
	$(BIN)/python -m bench.radio_search
	$(BIN)/python -m bench.ui
	$(BIN)/python -m bench.auth
	$(BIN)/python -m bench.source_switch
	$(BIN)/python -m bench.multiroom
	$(BIN)/python -m bench.flood
	$(BIN)/python -m bench.flood --languages fr
	$(BIN)/python -m bench.crash

clean:
	rm -rf $(VENV) .venv-ha .cache/node-red .mypy_cache .ruff_cache .pytest_cache
