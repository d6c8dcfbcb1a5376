# metrics-etl: set-up, demo, tests, lint, benchmarks.
PYTHON ?= python3
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
RUN := $(UV) run --frozen --no-sync
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv

.PHONY: setup demo test lint format bench clean

setup: .venv/.synced

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==0.13.9"

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as here) nothing is ever cached, and
# every command would compile the whole stack from source (a no-op run 12-13 s instead of 7 s)
.venv/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --quiet --compile-bytecode
	touch $@

demo: setup
	$(RUN) python -m metrics_etl.demo

# two workers, a test file each (module fixtures are built once): much of the suite waits on
# subprocesses and servers (413 tests: 8 min 50 s on two workers, quiet machine)
test: setup
	$(RUN) pytest -q -n 2 --dist loadfile

# sqlfluff: the SQL models' style (.sqlfluff), ~8 s of CPU over two processes (its process pool
# leaves a harmless "leaked semaphore" warning at exit, silenced here)
lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	PYTHONWARNINGS="ignore:resource_tracker:UserWarning" $(RUN) sqlfluff lint src/metrics_etl/models/sql --processes 2

format: setup
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench: setup
	$(RUN) python benchmarks/overhead.py
	$(RUN) python benchmarks/run.py
	$(RUN) python benchmarks/freshness.py
	$(RUN) python benchmarks/floors.py --sizes 1000000,10000000
	$(RUN) python benchmarks/dask_build.py --events 1000000

clean:
	rm -rf data/raw data/warehouse
