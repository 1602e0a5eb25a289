"""Every lab in solutions/ grades end to end: the master scores every automatic point and its
written answers await review; the untouched lab scores zero, every part not attempted.

No lab-specific code: a new lab in solutions/ is covered as soon as it exists.
"""

from __future__ import annotations

import sqlite3

import nbformat
import pytest

from conftest import ROOT
from coursekit.grading.grade import check_master, grade_lab
from coursekit.grading.sandbox import Limits, isolation_prefix
from coursekit.cells import is_written_answer
from coursekit.release import release_notebook

MASTERS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("master", MASTERS, ids=[m.stem for m in MASTERS])
def test_master_tests_are_gradable(master):
    check_master(nbformat.read(master, as_version=4), master)


@pytest.mark.skipif(isolation_prefix() is None, reason="needs Linux namespaces (unshare)")
@pytest.mark.parametrize("master", MASTERS, ids=[m.stem for m in MASTERS])
def test_master_scores_full_and_untouched_lab_scores_zero(master, tmp_path):
    nb = nbformat.read(master, as_version=4)
    graded = [c.metadata["nbgrader"] for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    written = {c.metadata["nbgrader"]["grade_id"] for c in nb.cells if is_written_answer(c)}
    auto_points = sum(m["points"] for m in graded if m["grade_id"] not in written)
    subs = tmp_path / "submissions"
    for student, notebook in (("solution", nb), ("untouched", release_notebook(nb))):
        (subs / student).mkdir(parents=True)
        nbformat.write(notebook, subs / student / master.name)
    run = grade_lab(subs, master.stem, solutions=master.parent, out=tmp_path / "out",
                    limits=Limits(total_timeout_s=300), jobs=2, progress=False)
    assert run.errors == 0 and run.invalid == 0
    db = sqlite3.connect(tmp_path / "out" / "gradebook.sqlite")
    scores = {s: row for s, *row in db.execute("SELECT student_id, score, max_score, awaiting_review FROM latest")}
    statuses = {(s, g): (status, message) for s, g, status, message in db.execute(
        "SELECT student_id, grade_id, status, message FROM parts")}
    db.close()
    expected = {gid: "needs review" if gid in written else "passed" for gid in (m["grade_id"] for m in graded)}
    failing = {g: sm for (s, g), sm in statuses.items() if s == "solution" and sm[0] != expected[g]}
    assert not failing, f"the master's own solution fails: {failing}"
    assert scores["solution"] == [auto_points, sum(m["points"] for m in graded), len(written)] and auto_points > 0
    assert scores["untouched"][0] == 0
    assert {sm[0] for (s, _), sm in statuses.items() if s == "untouched"} == {"not attempted"}


def test_a_demo_that_uses_what_a_self_check_returned_is_not_run_by_the_grader():
    """A demo cell that plots the model a self-check trained uses no exercise name, yet needs student code."""
    from coursekit.grading.runner import student_code_cells, trusted_setup
    from test_grading import master_notebook

    nb = master_notebook()
    check = nb.cells.index(next(c for c in nb.cells if c.metadata["nbgrader"]["grade_id"] == "check_double"))
    nb.cells.insert(check + 1, nbformat.v4.new_code_cell("doubled = double([1.0, 2.0])  # runs the student's code"))
    nb.cells.insert(check + 2, nbformat.v4.new_code_cell("print(doubled.sum())  # uses only its result"))
    nb.cells.insert(check + 3, nbformat.v4.new_code_cell("doubled = [0.0]\nprint(sum(doubled))  # set up again"))
    cells = student_code_cells(nb)
    assert {check + 1, check + 2} <= cells and check + 3 not in cells
    assert "print(doubled.sum())" not in trusted_setup(nb) and "print(sum(doubled))" in trusted_setup(nb)
    check_master(nb, ROOT / "solutions" / "lab90_toy.ipynb")
