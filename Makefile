# The two commands of the README. Both create .venv and install the package on first use.
PYTHON ?= python3
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install

$(BIN)/ledger: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/ledger

install: $(BIN)/ledger

## make run: the service on SQLite (./var) with the demo study, on http://127.0.0.1:8000 (PORT=...)
run: install
	$(BIN)/ledger init
	$(BIN)/ledger demo
	$(BIN)/ledger serve --host 127.0.0.1 --port $(PORT)

## make test: the whole test suite (PostgreSQL tests skip with a reason when no server answers)
test: install
	$(BIN)/python -m pytest
