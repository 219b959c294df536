import os
import sys
from pathlib import Path

import pytest

# Two cores on the project machines: tests run single-threaded and never touch the network.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The portable kernels (surfbench/reproducible.py) for every test and the processes it starts, set before
# torch loads: the in-process regressions (tests/golden/trusttest) hold on any processor, like the pipeline's.
from surfbench.reproducible import kernel_env  # noqa: E402  (imports no torch)

for _k, _v in kernel_env("avx2").items():
    os.environ.setdefault(_k, _v)

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def repo_root() -> Path:
    return ROOT
