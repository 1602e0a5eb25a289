"""``--dist loadgroup`` keeps each ``xdist_group`` on one worker (``tests/xdist_groups.py``).

The browser tests share one JupyterLab server and each grading module grades its submissions
once in a module fixture; both rely on their group running on a single worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

from conftest import ROOT

GROUPED, FREE = 6, 6

PROBE = f'''
import os, time
import pytest

def record(tmp_dir, kind, i):
    with open(os.path.join(tmp_dir, f"{{kind}}-{{i}}"), "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.xdist_group("together")
@pytest.mark.parametrize("i", range({GROUPED}))
def test_grouped(i):
    time.sleep(0.1)
    record(os.environ["PROBE_OUT"], "grouped", i)

@pytest.mark.parametrize("i", range({FREE}))
def test_free(i):
    time.sleep(0.1)
    record(os.environ["PROBE_OUT"], "free", i)
'''


def test_a_group_runs_on_one_worker_and_the_rest_spreads(tmp_path):
    (tmp_path / "test_probe.py").write_text(PROBE)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PROBE_OUT": str(out), "PYTHONPATH": str(ROOT / "tests")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "xdist_groups",
         "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    workers = defaultdict(set)
    for f in out.iterdir():
        workers[f.name.split("-")[0]].add(f.read_text())
    assert len(list(out.iterdir())) == GROUPED + FREE, sorted(p.name for p in out.iterdir())
    assert len(workers["grouped"]) == 1, f"the group ran on workers {sorted(workers['grouped'])}"
    assert len(workers["free"] | workers["grouped"]) == 2, "the ungrouped tests should use both workers"
