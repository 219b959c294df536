"""Sensitivity (issue item 2): every deliberate fault of tests/faults.py makes a check fail.

For each fault, the checks listed for it in ``faults.FAULTS`` (unit tests, the short training
regression against tests/golden/trusttest, the batch-size independence test) run in a subprocess
with ``SURFBENCH_FAULT=<fault>`` and the ``faults`` pytest plugin; the run must fail (exit 1,
test failures, not errors).  A control run of the same checks without a fault must pass, so a
failure is the fault's doing.  Which checks failed is printed (``pytest -s``).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import faults

ROOT = Path(__file__).resolve().parents[1]


def _pytest(targets, fault=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("SURFBENCH_FAULT", None)
    if fault:
        env["SURFBENCH_FAULT"] = fault
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "faults", "-o", "addopts=",
           "-rf", *targets]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    failed = sorted(set(re.findall(r"^FAILED (\S+)", p.stdout, flags=re.M)))
    return p.returncode, failed, p.stdout + p.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_checks_pass_without_a_fault():
    targets = sorted({t for _, _, ts in faults.FAULTS.values() for t in ts})
    code, failed, out = _pytest(targets)
    assert code == 0, f"the checks fail without any fault:\n{out[-3000:]}"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", sorted(faults.FAULTS))
def test_fault_is_caught(fault):
    what, _, targets = faults.FAULTS[fault]
    code, failed, out = _pytest(targets, fault)
    print(f"\n{fault} ({what}): caught by {len(failed)} check(s): {', '.join(failed) or '-'}")
    assert f"SURFBENCH_FAULT={fault}" in out, "the fault plugin was not active"
    assert code == 1 and failed, f"fault {fault!r} ({what}) was not caught by {targets}:\n{out[-3000:]}"


def test_unknown_fault_name_is_refused():
    with pytest.raises(ValueError, match="not a known fault"):
        faults.apply("no_such_fault")
