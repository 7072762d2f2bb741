# Quartet - the two commands a newcomer needs:
#   make run    set everything up, then run the pipeline end to end under Dagster, offline
#   make test   set everything up, then run the whole test suite (what CI runs)
# Everything else is a building block of those two.

SHELL := /bin/bash
PYTHON ?= python3
ORCHESTRATORS := dagster airflow prefect temporal
UV := .venvs/tools/bin/uv
UV_VERSION := 0.13.9
export UV_PYTHON_DOWNLOADS := never
export UV_COMPILE_BYTECODE := 1

.PHONY: run test envs env-base lint fmt bench clean browser postgres test-core test-parity FORCE
# (pattern targets env-% and test-% cannot be .PHONY: make skips pattern rules for phony targets;
#  FORCE makes them run every time instead)

# the default orchestrator's end-to-end run (Dagster); `quartet run bare|airflow|prefect|temporal|all` for the others
run: env-base env-dagster
	.venvs/base/bin/quartet run dagster

test: envs postgres lint test-core $(addprefix test-,$(ORCHESTRATORS)) test-parity

# uv itself, in a private tools venv (a fresh machine has nothing but Python).
$(UV):
	$(PYTHON) -m venv .venvs/tools
	.venvs/tools/bin/python -m pip install -q "uv==$(UV_VERSION)"

# One environment per orchestrator (ADR 0002): base + its dependency group + dev tools.
env-base: $(UV)
	UV_PROJECT_ENVIRONMENT=.venvs/base $(UV) sync --frozen --quiet --group dev --group browser

env-%: $(UV) FORCE
	UV_PROJECT_ENVIRONMENT=.venvs/$* $(UV) sync --frozen --quiet --group dev --group $*

envs: env-base $(addprefix env-,$(ORCHESTRATORS))

lint: env-base
	.venvs/base/bin/ruff check .
	.venvs/base/bin/ruff format --check .

fmt: env-base
	.venvs/base/bin/ruff check --fix .
	.venvs/base/bin/ruff format .

test-core: env-base
	.venvs/base/bin/pytest tests/core

# Each orchestrator's tests run in its own environment; a folder without tests yet is skipped.
test-%: env-% FORCE
	@if ls tests/orchestrators/$*/test_*.py >/dev/null 2>&1; then \
		.venvs/$*/bin/pytest tests/orchestrators/$*; \
	else echo "no tests for $* yet"; fi

# The real-browser UI tests drive Debian's chromium (headless); installed here when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# PostgreSQL (core/postgres.py's local server when no Docker engine answers): Debian's package,
# installed here when its binaries are missing.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || { apt-get update -qq && { apt-get install -y -qq postgresql-15 >/dev/null || apt-get install -y -qq postgresql >/dev/null; }; }

test-parity: envs browser
	@if ls tests/parity/test_*.py >/dev/null 2>&1; then .venvs/base/bin/pytest tests/parity; \
	else echo "no parity tests yet"; fi

bench: env-base
	.venvs/base/bin/quartet bench bare

clean:
	rm -rf warehouse .quartet

FORCE:
