# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
CONFIG ?= configs/default.py

.PHONY: run test test-all lint venv clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) scripts/run_pipeline.py --config=$(CONFIG) --workdir=$(WORKDIR)

test: venv
	$(PY) -m pytest -q

test-all: venv
	$(PY) -m pytest -q -m ''

lint: venv
	$(PY) -m ruff check trait_rl scripts configs tests benchmarks
	$(PY) -m ruff format --check trait_rl scripts configs tests benchmarks

clean:
	rm -rf $(VENV) runs
