# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv and install the project (pinned by constraints.txt) first.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): setup.py constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lake demo

system-deps:
	@scripts/system-deps

# Static checks, before any test runs: lint and format (whole tree), types (lake_schemas, lake_core,
# beam_pipelines; pyproject.toml), the layer contract and the environment table (tests/test_layers.py).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_settings.py

# Three workers on two cores, a test file per worker at a time (--dist loadfile: a file's module fixtures
# are built once): most tests wait on subprocesses, brokers and sleeps, not on the CPU. About 11 minutes
# on the 2-core machine (one worker: about 21). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 3
test: $(STAMP) system-deps lint
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# The edit-test loop: everything but the slow lanes (Airflow runs, browser, compose, long Kafka runs), under 2 minutes.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not (airflow or browser or compose or kafka_long or slow)" tests

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks.ingest --events 1000000
	$(VENV)/bin/python -m benchmarks.silver --events 1000000
	$(VENV)/bin/python -m benchmarks.gold --events 1000000
	$(VENV)/bin/python -m benchmarks.merge_growth

# Silver and Gold at 1M, 5M and 20M events per hour, against DuckDB SQL and PySpark local[2] (Java 17+):
# events/s, ratios and the peak memory of every process of each run (benchmarks/scale.py; about an hour).
bench-scale: $(STAMP)
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[bench]'
	$(VENV)/bin/python -m benchmarks.scale --sizes 1M,5M,20M

.PHONY: install system-deps demo lint test test-fast bench bench-scale
