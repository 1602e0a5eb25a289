"""The notebook harness itself, on tiny notebooks: it must catch what it claims to catch."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from notebook_harness import CHECK_TAG, execute, nbval_rerun, parameter_defaults


def write(tmp_path, cells, smoke=None, name="nb.ipynb"):
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"},
                                             "dlwb": {"smoke": smoke or {}}})
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    return path


def params(source):
    return new_code_cell(source, metadata={"tags": ["parameters"]})


def checked(source):
    return new_code_cell(source, metadata={"tags": [CHECK_TAG]})


def test_smoke_parameters_are_injected(tmp_path):
    path = write(tmp_path, [params("N = 1000"), new_code_cell("print('N is', N)")], smoke={"N": 3})
    run = execute(path, out_dir=tmp_path / "out", timings_dir=tmp_path / "t")
    assert run.error is None
    out = nbformat.read(run.output, as_version=4)
    assert "N is 3" in out.cells[-1].outputs[0]["text"]
    assert len(list((tmp_path / "t").glob("*.json"))) == 1


def test_errors_are_reported_with_their_type(tmp_path):
    path = write(tmp_path, [params("N = 1"), new_code_cell("raise NotImplementedError('exercise 1')")])
    run = execute(path, out_dir=tmp_path / "out", timings_dir=tmp_path / "t")
    assert run.error.startswith("NotImplementedError") and "exercise 1" in run.error


def test_nbval_catches_a_cell_that_changes_between_runs(tmp_path):
    stable = write(tmp_path, [params("SEED = 0"), checked("import random; random.seed(SEED); print(random.random())")],
                   name="stable.ipynb")
    unstable = write(tmp_path, [params("SEED = 0"), checked("import os; print(os.urandom(8).hex())")],
                     name="unstable.ipynb")
    for path, ok in ((stable, True), (unstable, False)):
        run = execute(path, out_dir=tmp_path / "out", timings_dir=tmp_path / "t")
        assert run.error is None
        assert (nbval_rerun(run.output).returncode == 0) is ok


def test_parameters_cell_must_be_plain_assignments(tmp_path):
    good = nbformat.read(write(tmp_path, [params("A = 1\nB: float = 0.5\nC = None")]), as_version=4)
    assert parameter_defaults(good) == {"A": 1, "B": 0.5, "C": None}
    bad = nbformat.read(write(tmp_path, [params("import os\nA = 1")], name="bad.ipynb"), as_version=4)
    with pytest.raises(AssertionError, match="only assignments"):
        parameter_defaults(bad)


def test_the_recheck_stops_after_the_last_checked_cell(tmp_path):
    log = tmp_path / "runs.txt"
    path = write(tmp_path, [params("SEED = 0"),
                            new_code_cell(f"open({str(log)!r}, 'a').write('before\\n')"),
                            checked("print(SEED + 1)"),
                            new_code_cell(f"open({str(log)!r}, 'a').write('after\\n')")])
    run = execute(path, out_dir=tmp_path / "out", timings_dir=tmp_path / "t")
    assert run.error is None
    assert nbval_rerun(run.output).returncode == 0
    assert log.read_text().splitlines() == ["before", "after", "before"]  # the re-run ended at the checked cell
