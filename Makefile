# KAITO Portal: `make run` starts the portal on its embedded defaults, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help venv run sandbox-down test test-only lint format migrate tools chromium clean

help:
	@echo "make run    - install, migrate, sync the catalog, create a local admin, serve http://$(HOST):$(PORT)"
	@echo "make test   - ruff, then the whole pytest suite (builds the local control plane once)"
	@echo "make lint   - ruff only"

# The virtual environment is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

migrate: venv
	$(PY) manage.py migrate --no-input -v0
	$(PY) manage.py sync_catalog

run: migrate
	$(PY) manage.py ensure_admin
	@echo "Serving KAITO Portal on http://$(HOST):$(PORT)/ (SQLite, in-memory channel layer)"
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py serve $(HOST):$(PORT)

# Stop and remove the local sandbox cluster that `make run` starts when KUBECONFIG is not set.
sandbox-down: venv
	$(PY) -m devcluster down

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Go-built test dependencies, cached outside the repository and rebuilt only when missing:
# kube-apiserver + etcd (the local control plane), the distribution OCI registry and helm.
tools: venv
	$(PY) -m devcluster build
	$(PY) -m devcluster.registry build
	$(PY) -m deploy.helmbin build

# Browser tests drive Debian's Chromium (no Playwright browser download exists offline).
chromium:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's chromium for the browser tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; \
	else \
		echo "The browser tests need Debian's Chromium at /usr/bin/chromium: run 'sudo apt-get install chromium'"; exit 1; \
	fi

test: lint tools chromium test-only

# The suite alone (CI runs it a second time on PostgreSQL + Redis through DATABASE_URL and REDIS_URL).
test-only: venv
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache test_db*.sqlite3
