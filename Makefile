# Caretouch: `make demo` and `make test` work on a fresh clone (they create .venv/ themselves).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format typecheck bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/care demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check plugins dags tests bench
	$(BIN)/ruff format --check plugins dags tests bench

format: $(STAMP)
	$(BIN)/ruff format plugins dags tests bench
	$(BIN)/ruff check --fix plugins dags tests bench

typecheck: $(STAMP)
	$(BIN)/mypy plugins/caretouch

bench: $(STAMP)
	$(BIN)/python bench/plan_scale.py

clean:
	rm -rf $(VENV) .demo .airflow outbox care.db
