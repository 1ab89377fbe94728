# The README's entry points. Each target installs what it needs and starts the
# services it uses, so `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo console test lint typecheck unit integration acceptance chaos bench deps services tls-node tools clean

$(STAMP): pyproject.toml deploy/local/bootstrap.sh
	bash deploy/local/bootstrap.sh $(VENV)
	touch $(STAMP)

deps: $(STAMP)

services: deps
	bash deploy/local/services.sh

tls-node: deps
	bash deploy/local/tls-node.sh start

# Debian's prometheus (promtool, the server) and docker-compose, for the deploy/ checks.
tools:
	bash deploy/local/tools.sh

demo: services
	$(VENV)/bin/scaleout demo

# The demo, then the web console on the catalog it leaves (demo-run/<newest>/ssisdb.sqlite3).
console: demo
	$(VENV)/bin/scaleout web --catalog "sqlite:///$$(ls -d $(CURDIR)/demo-run/*/ | sort | tail -1)ssisdb.sqlite3"

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: deps
	$(VENV)/bin/mypy

test: lint typecheck services tls-node tools
	$(VENV)/bin/pytest tests

unit: deps
	$(VENV)/bin/pytest tests/unit

chaos: services tls-node
	$(VENV)/bin/pytest -m chaos tests/chaos -s

# The peers (Celery, Dramatiq) and the profiler are only for the benchmark.
$(VENV)/.bench: $(STAMP) pyproject.toml
	$(VENV)/bin/pip install --quiet --group bench
	touch $@

bench: services $(VENV)/.bench
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
