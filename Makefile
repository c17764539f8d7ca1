# The two commands the README promises: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test clean

$(BIN)/carepath: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/carepath

install: $(BIN)/carepath

# Evaluate the demo diabetic patient against the shipped protocols (SQLite registry under var/).
run: install
	$(BIN)/carepath demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) var .pytest_cache
