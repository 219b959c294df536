# Two commands for a fresh clone:  `make tables`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 8
PROFILE ?= tiny
# extras of surfbench to install (`slurm`: Snakemake's SLURM executor plugin, for clusters)
EXTRAS ?= test
# every dependency at an exact version, so a clone installed next year computes today's numbers
# (`make lock` refreshes it on purpose; see the README)
LOCK   := requirements.lock
# installed without their dependencies (pinned in the lock all the same): tinysoundfont renders the FUSS
# stand-in's SoundFont sounds; its one dependency, pyaudio, is for live playback (unused here) and builds
# only against PortAudio's system headers, so it stays out of pyproject.toml's dependencies
NO_DEPS := tinysoundfont

.PHONY: setup tables test lock ci-pipeline clean-results

# The environment is (re)built when pyproject.toml changes. It is large: the torch 2.11 trio is
# pinned to PyPI's CUDA builds (the GPU machines' stack; there is no CPU build of torchvision 0.26),
# and with their NVIDIA libraries .venv takes about 5.6 GB. Below SETUP_FREE_GB free on its file
# system, say so before pip starts (pip then fails half-way with "No space left on device").
SETUP_FREE_GB ?= 7

$(VENV)/.installed: pyproject.toml $(LOCK)
	@free_kb=$$(df -Pk "$(dir $(abspath $(VENV)))" | awk 'NR == 2 {print $$4}'); \
	if [ -n "$$free_kb" ] && [ "$$free_kb" -lt $$(( $(SETUP_FREE_GB) * 1048576 )) ]; then \
	  echo "make setup: WARNING: $$(( free_kb / 1048576 )) GB free on the file system of $(abspath $(VENV));" \
	       "the environment needs about 6 GB (the CUDA builds of torch 2.11 pinned in pyproject.toml)." \
	       "Free some space, or put the environment elsewhere: make VENV=/larger/disk/venv ..." >&2; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install --quiet --no-deps --constraint $(LOCK) $(NO_DEPS)
	touch $@

setup: $(VENV)/.installed
	@scripts/sound-packages.sh

tables: setup
	. $(BIN)/activate && snakemake --cores $(CORES) tables --configfile config/$(PROFILE).yaml

# --durations: the 25 slowest tests at the end, so a CI log says where its time went
test: setup
	. $(BIN)/activate && python -m pytest -q --durations=25

# Only the SLURM tests (tests/test_slurm.py, also part of `make test`): a one-node cluster of this machine
# (scripts/slurm-local.sh; root) runs config/ci-slurm.yaml, a scancelled job, a failing job and a dry
# submission of the paper profile; stops what it started.  `SURFBENCH_SLURM=0 make test` leaves them out.
.PHONY: test-slurm
test-slurm: setup
	. $(BIN)/activate && python -m pytest -q -s tests/test_slurm.py

# Refresh the lock: install surfbench with every extra into a scratch environment, newest versions
# pyproject.toml allows, and write what got installed.  Do it on purpose (a new dependency, a fix you
# need), then run `make test` and review the golden diff: new versions can move the numbers.
LOCK_VENV ?= .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[test,slurm]'
	$(LOCK_VENV)/bin/python -m pip install --quiet --no-deps $(NO_DEPS)
	{ echo "# Exact versions of every dependency of surfbench[test,slurm], written by \`make lock\` on $$(date -u +%F)"; \
	  echo "# with Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())') on $$(uname -sm). \`make setup\` installs with --constraint $(LOCK)."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

clean-results:
	rm -rf results/$(PROFILE) report/$(PROFILE) work/$(PROFILE)
