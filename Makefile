# `make test` and `make demo` work on a fresh machine: they create .venv and install into it.
# The venv is reused while pyproject.toml and constraints.txt are unchanged (the stamp records
# the install). constraints.txt holds the exact versions CI tests; users installing arflare
# into their own environment do not need it (pyproject.toml has ranges only).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test test-browser test-server test-wheel test-mindeps constraints demo bench clean-store

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

# Build the wheel, install it into a fresh venv outside the source tree (torch first, so the
# dry run shows the wheel leaves an in-range torch alone), then use it from a bare folder.
test-wheel:
	PYTHON=$(PYTHON) bash scripts/check_wheel.sh

# The oldest versions pyproject.toml allows (torch excepted: see README), tested.
test-mindeps:
	PYTHON=$(PYTHON) bash scripts/check_min_deps.sh

# Re-pin constraints.txt to what the dev venv holds now (after changing pyproject.toml).
constraints: install
	{ echo "# The exact versions CI tests with (make install uses them; users need not). Rewritten by: make constraints"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^arflare'; } > constraints.txt

# Tests marked `browser` (skipped by `make test`): the MLflow UI and `arflare report` rendered in
# headless Chromium (the Debian package, installed here when missing). Screenshots go to docs/.
test-browser: install
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	ARFLARE_SCREENSHOTS=$(CURDIR)/docs $(PY) -m pytest -q -m browser

# Tests marked `server` (skipped by `make test`): a throwaway PostgreSQL cluster and `mlflow server` on
# loopback, then arflare run / a multi-worker sweep on a PostgreSQL study / compare against them.
# PostgreSQL is Debian's package (installed here when neither pg_ctl nor /usr/lib/postgresql/*/bin
# has it); psycopg comes with the `server` extra. Prints each step's wall time.
test-server: install
	command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  (apt-get update && apt-get install -y postgresql)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,server]'
	$(PY) -m pytest -q -s -m server

# The synthetic data set is generated on first use; a small CNN and the physics trees in the demo
# profile, then the ranking with AR-bootstrap intervals and the paired difference on test.
demo: install
	$(VENV)/bin/arflare run exp7_physics_gbm exp2_basic_aug --profile demo
	$(VENV)/bin/arflare compare --metric tss --experiment exp2_basic_aug exp7_physics_gbm
	$(VENV)/bin/arflare compare --paired exp7_physics_gbm exp2_basic_aug

bench: install
	$(PY) scripts/bench_data.py --root data/synthetic/magnetograms --flow-root data/synthetic/flow
	$(PY) scripts/bench_trainer.py
