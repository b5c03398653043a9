# claude-queue: the commands the README names. Everything installs itself.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLI_DIR := devtools/claude-cli
CLAUDE := $(CLI_DIR)/node_modules/.bin/claude
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist). With workers and commands forked from a zygote (see
# tests/zygote.py) the suite waits more than it computes: on this 2-core machine, later
# on 2026-12-07, 6 took 192-210 s (4 runs), 4 took 199-248 s (5 runs) and 8 259 s.
TEST_PROCS ?= 6

.PHONY: bytecode install demo test test-fast test-e2e bench lint typecheck fixtures redis postgres chromium promtool clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(CLAUDE): $(CLI_DIR)/package.json $(CLI_DIR)/package-lock.json
	cd $(CLI_DIR) && npm ci --no-fund --no-audit --loglevel=error
	touch $(CLAUDE)

install: $(STAMP) $(CLAUDE)  ## Python deps in .venv, the pinned claude CLI in devtools/claude-cli

# Every test starts hundreds of Python processes (workers, the CLI, servers). Where
# PYTHONDONTWRITEBYTECODE is set (as in this CI's environment) none of them would cache
# the project's bytecode, and each would compile every module it imports again: 0.87 s of
# CPU for `claude-queue --help` instead of 0.64 s. Compiled once here; read even so.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 -x node_modules shared producer worker gateway console devtools bench tests

redis:  ## make sure a Redis answers (starts a local one if not)
	@bash .ci/ensure-redis

postgres:  ## make sure a PostgreSQL answers at 127.0.0.1:5432 with a database test (the archive's tests)
	@bash .ci/ensure-postgres

chromium:  ## make sure Debian's chromium is installed (the web console's browser tests)
	@bash .ci/ensure-chromium

promtool: $(STAMP)  ## make sure promtool is at hand (the ops tier's alert-rule check), in .venv/bin
	@bash .ci/ensure-promtool

demo: install bytecode redis  ## start a worker, submit a prompt, stream its events
	$(BIN)/python -m devtools.demo

test: install bytecode redis postgres chromium promtool  ## the whole suite: unit, integration (real RQ workers), e2e (real claude CLI), slow
	$(BIN)/pytest -q -n $(TEST_PROCS) $(PYTEST_ARGS)

test-fast: install bytecode redis  ## skip slow and e2e tests
	$(BIN)/pytest -q -n $(TEST_PROCS) -m "not slow and not e2e" $(PYTEST_ARGS)

test-e2e: install bytecode redis  ## only the real-CLI conformance tier
	$(BIN)/pytest -q -m e2e $(PYTEST_ARGS)

bench: install bytecode redis  ## benchmarks against same-run baselines; QUICK=1 for a smoke run
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict shared producer worker gateway console devtools bench tests

fixtures: install  ## re-record real CLI output into tests/fixtures/cli
	$(BIN)/python -m devtools.capture --out tests/fixtures/cli

clean:
	rm -rf $(VENV) $(CLI_DIR)/node_modules .mypy_cache .ruff_cache .pytest_cache
