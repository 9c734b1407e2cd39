# Caretouch: `make demo` and `make test` work on a fresh clone (they create .venv/ themselves).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format typecheck bench clean venv browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/care demo

# Headless Chromium for tests/web/test_audit_browser.py (Debian's package; Playwright drives it).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

test: $(STAMP) browser
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
