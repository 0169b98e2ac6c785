# `make test` and `make demo` work on a fresh machine: they create .venv and install into it.
# The venv is reused while pyproject.toml is unchanged (the stamp file records the install).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test demo bench clean-store

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

# The synthetic data set is generated on first use; exp2 in the demo profile, then the ranking.
demo: install
	$(VENV)/bin/arflare run exp2_basic_aug --profile demo
	$(VENV)/bin/arflare compare --metric tss

bench: install
	$(PY) scripts/bench_data.py --root data/synthetic/magnetograms --flow-root data/synthetic/flow
	$(PY) scripts/bench_trainer.py
