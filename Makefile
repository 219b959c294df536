# Two commands for a fresh clone:  `make tables`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 8
PROFILE ?= tiny

.PHONY: setup tables test ci-pipeline clean-results

# The environment is (re)built when pyproject.toml changes. It is large: the torch 2.11 trio is
# pinned to PyPI's CUDA builds (the GPU machines' stack; there is no CPU build of torchvision 0.26),
# and with their NVIDIA libraries .venv takes about 5.6 GB. Below SETUP_FREE_GB free on its file
# system, say so before pip starts (pip then fails half-way with "No space left on device").
SETUP_FREE_GB ?= 7

$(VENV)/.installed: pyproject.toml
	@free_kb=$$(df -Pk "$(dir $(abspath $(VENV)))" | awk 'NR == 2 {print $$4}'); \
	if [ -n "$$free_kb" ] && [ "$$free_kb" -lt $$(( $(SETUP_FREE_GB) * 1048576 )) ]; then \
	  echo "make setup: WARNING: $$(( free_kb / 1048576 )) GB free on the file system of $(abspath $(VENV));" \
	       "the environment needs about 6 GB (the CUDA builds of torch 2.11 pinned in pyproject.toml)." \
	       "Free some space, or put the environment elsewhere: make VENV=/larger/disk/venv ..." >&2; \
	fi
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
