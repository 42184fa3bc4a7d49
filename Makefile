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

test: $(STAMP) system-deps
	$(VENV)/bin/python -m pytest -q tests

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks.ingest --events 1000000
	$(VENV)/bin/python -m benchmarks.silver --events 1000000
	$(VENV)/bin/python -m benchmarks.gold --events 1000000
	$(VENV)/bin/python -m benchmarks.merge_growth

.PHONY: install system-deps demo test bench
