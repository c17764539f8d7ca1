# The two commands the README promises: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test test-costs test-dates bench clean

$(BIN)/carepath: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/carepath

install: $(BIN)/carepath

# Seed the demo registry (patients + demo users, SQLite under var/), show it, then serve the API
# on http://127.0.0.1:8000 (HOST / PORT to change; Ctrl-C to stop).
HOST ?= 127.0.0.1
PORT ?= 8000
run: install
	$(BIN)/carepath demo
	$(BIN)/carepath serve --host $(HOST) --port $(PORT)

# Two workers, a module on one (module fixtures are set up once), the costliest modules first and the Spark
# modules together (tests/xdist_schedule.py). Bytecode is written even where the environment says not to
# (PYTHONDONTWRITEBYTECODE): otherwise each worker compiles every module and re-does pytest's assertion rewriting
# of ~280 plugin modules (~20 s a process).
test: install
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n 2 --dist loadfile

# Re-measure the seconds per module that order `make test` (after adding slow tests).
test-costs: install
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n 2 --dist loadfile --module-seconds-out tests/module_seconds.json

# The suites that read the clock, run as if today were a date where calendar arithmetic has edges: a month end
# ("6 months ago" = 30 Sep), midnight into 1 March, midnight into a new year (the clock keeps running, so each
# run crosses it). libfaketime fakes the clock for the whole process tree: the service, the embedded PostgreSQL,
# Chromium. Needs Debian's faketime (apt-get install faketime). Not part of `make test` (~25 min); run it after
# changing a test that names a date. FAKETIME_DONT_FAKE_MONOTONIC must stay unset: with it Python's sleep fails.
DATES ?= @2027-03-31T10:00:00 @2027-02-28T23:57:30 @2027-12-31T23:57:00
DATE_TESTS ?= tests/browser tests/api tests/unit tests/protocols tests/conformance
test-dates: install
	@command -v faketime >/dev/null || { echo "test-dates needs faketime: sudo apt-get install faketime"; exit 1; }
	for d in $(DATES); do \
	  echo "== as if it were $$d"; \
	  PYTHONDONTWRITEBYTECODE= faketime -f "$$(echo $$d | tr T ' ')" $(BIN)/python -m pytest -q -p no:cacheprovider \
	    -n 2 --dist loadfile $(DATE_TESTS) || exit 1; \
	done

# Every benchmark of issue 8 (not part of the test run; ~1 h at 750,000 patients on 2 cores; results in
# benchmarks/results/). PATIENTS=100000 for a quicker look.
PATIENTS ?= 750000
bench: install
	$(BIN)/carepath bench all --patients $(PATIENTS)

clean:
	rm -rf $(VENV) var .pytest_cache
