# KAITO Portal: `make run` starts the portal on its embedded defaults, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help venv run test lint format check migrate clean

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
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py runserver $(HOST):$(PORT)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache test_db*.sqlite3
