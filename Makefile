# streamtune: every target installs what it needs into ./.venv on first use (see ops/venv.sh).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
ST    := $(VENV)/bin/streamtune
PYTEST_ARGS ?=

.PHONY: help venv browser test test-unit test-faults lint format demo bench kafka-start kafka-stop kafka-status lock clean

help:
	@echo "make demo        the whole loop on a local Kafka: replay, serve, drift, train, hot swap"
	@echo "make test        lint, start the local Kafka if needed, run unit + integration tests"
	@echo "make test-unit   only the tests that need no broker"
	@echo "make test-faults broker kills under load, fuzzing, the CLI's error lines (part of make test)"
	@echo "make bench       run every benchmark: one JSON line each, bench/results.json, the table in docs/benchmarks.md"
	@echo "make lint        ruff check + format check;  make format  fixes them"
	@echo "make kafka-start | kafka-stop | kafka-status"

venv:
	@bash ops/venv.sh

test: venv lint browser
	@$(ST) kafka start
	$(PY) -m pytest $(PYTEST_ARGS)

# Headless Chromium for the dashboard's browser test (Debian packages; skipped when present).
# Under CI (CI set) a failed install fails: the browser test would fail anyway.
browser:
	@command -v chromium >/dev/null && [ -x /usr/bin/chromedriver ] || bash ops/browser.sh \
		|| if [ -n "$$CI" ]; then echo "make: CI: could not install chromium" >&2; exit 1; \
		else echo "make: could not install chromium; the browser test will skip" >&2; fi

test-unit: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

test-faults: venv
	@$(ST) kafka start
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

demo: venv
	$(ST) demo

bench: venv
	@$(ST) kafka start >/dev/null
	$(PY) -m streamtune.bench.results run

kafka-start: venv
	$(ST) kafka start

kafka-stop: venv
	$(ST) kafka stop

kafka-status: venv
	$(ST) kafka status

# Re-pin requirements.lock after changing dependencies in pyproject.toml.
lock:
	rm -rf /tmp/streamtune-lock && python3 -m venv /tmp/streamtune-lock
	/tmp/streamtune-lock/bin/pip install -q -e '.[all,dev]' setuptools wheel
	( echo "# Exact versions for make/CI installs (Linux, Python 3.11). pyproject.toml holds the ranges."; \
	  echo "# Regenerate after changing dependencies: make lock"; \
	  /tmp/streamtune-lock/bin/pip freeze --all | grep -v -e '^-e' -e '^streamtune' -e '^pip==' ) > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
