# heart-pipeline: `make run` trains on the bundled data, `make test` runs the test suite.
# Both create .venv and install the pinned stack first if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# No network: every library's telemetry stays off.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false

.PHONY: install run test test-fast lint typecheck format clean up down status serve reference-profile bench lab

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# uv installs exactly what pip would (constraints.txt pins every package) but downloads in parallel: on a
	@# machine with no cache, seconds instead of about three minutes. pip installs uv itself, pinned too.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints.txt -e '.[dev]'
	@# Migrate the background Prefect server's database now, not during the first `train` (about 15 s).
	$(BIN)/python -m heart_pipeline.operations.local_server
	@touch $(STAMP)

run: install
	$(BIN)/heart-pipeline train

# Both tiers spread over every core (pytest-xdist). A file's tests stay on one worker (loadfile), so a
# module's real store or served app is built once; each worker has its own Prefect test server.
test: install lint typecheck  ## the full gate CI runs: lint, types, every test tier (real servers included)
	$(BIN)/python -m pytest -n auto --dist loadfile --durations=15

test-fast: install  ## pure functions only, no server: the inner loop (under a minute)
	$(BIN)/python -m pytest -m "not e2e and not stack and not slow" -q -n auto

typecheck: install
	$(BIN)/mypy

up: install  ## Prefect server :4200, MLflow server :5000, work pool, deployments, worker
	$(BIN)/heart-pipeline stack up

down:  ## stop exactly the processes `make up` started
	@test -x $(BIN)/heart-pipeline && $(BIN)/heart-pipeline stack down || true

status: install
	$(BIN)/heart-pipeline stack status

PORT ?= 8000
serve: install  ## the prediction API on 127.0.0.1:$(PORT) (needs a champion: `make run` first)
	$(BIN)/heart-pipeline serve --port $(PORT)

LAB_PORT ?= 6200
lab: install  ## JupyterLab on 127.0.0.1:$(LAB_PORT) over notebooks/, the venv as its kernel (the `lab` extra, only here)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e '.[dev,lab]'
	@# No network: JupyterLab would otherwise fetch a news feed, check for a newer release and offer extensions
	@# from PyPI (its packages are the pinned ones). The settings override answers its "Jupyter news?" question
	@# with "never" in this venv's JupyterLab. --allow-root only where make runs as root (a container), which
	@# Jupyter otherwise refuses. No port retries: a busy $(LAB_PORT) is an error, not a lab on another port.
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp config/jupyterlab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(BIN)/jupyter lab --ip 127.0.0.1 --port $(LAB_PORT) --no-browser --notebook-dir notebooks \
		--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
		--LabApp.extension_manager=readonly --ServerApp.port_retries=0 $(if $(filter 0,$(shell id -u)),--allow-root)

reference-profile: install  ## regenerate great_expectations/reference_profile.json from the bundled data
	$(BIN)/python -m heart_pipeline.data_contract.reference_profile

BENCH_SIZES ?= 303,10k,100k,1M
BENCH_REPEATS ?= 2
bench: install  ## pipeline vs bare scikit-learn, ABAB: make bench BENCH_SIZES=303,10k BENCH_REPEATS=1
	$(BIN)/python -m heart_pipeline.bench.run --sizes $(BENCH_SIZES) --repeats $(BENCH_REPEATS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:  ## also stops the background Prefect server, whose state lives in .prefect/
	@test -x $(BIN)/heart-pipeline && $(BIN)/heart-pipeline stack down > /dev/null || true
	rm -rf runs mlruns/* .prefect .pytest_cache bench
