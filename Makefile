# Two commands for a fresh clone:  `make tables`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 8
PROFILE ?= tiny

.PHONY: setup tables test ci-pipeline clean-results

# The environment is (re)built when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

tables: setup
	. $(BIN)/activate && snakemake --cores $(CORES) tables --configfile config/$(PROFILE).yaml

test: setup
	. $(BIN)/activate && python -m pytest -q

clean-results:
	rm -rf results/$(PROFILE) report/$(PROFILE) work/$(PROFILE)
