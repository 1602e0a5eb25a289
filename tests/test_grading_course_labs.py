"""Every lab in solutions/ grades end to end: the master scores full marks, the untouched lab zero.

No lab-specific code: a new lab in solutions/ is covered as soon as it exists.
"""

from __future__ import annotations

import sqlite3

import nbformat
import pytest

from conftest import ROOT
from dlwb.grading.grade import check_master, grade_lab
from dlwb.grading.sandbox import Limits, isolation_prefix
from dlwb.release import release_notebook

MASTERS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("master", MASTERS, ids=[m.stem for m in MASTERS])
def test_master_tests_are_gradable(master):
    check_master(nbformat.read(master, as_version=4), master)


@pytest.mark.skipif(isolation_prefix() is None, reason="needs Linux namespaces (unshare)")
@pytest.mark.parametrize("master", MASTERS, ids=[m.stem for m in MASTERS])
def test_master_scores_full_and_untouched_lab_scores_zero(master, tmp_path):
    nb = nbformat.read(master, as_version=4)
    subs = tmp_path / "submissions"
    for student, notebook in (("solution", nb), ("untouched", release_notebook(nb))):
        (subs / student).mkdir(parents=True)
        nbformat.write(notebook, subs / student / master.name)
    run = grade_lab(subs, master.stem, solutions=master.parent, out=tmp_path / "out",
                    limits=Limits(total_timeout_s=300), jobs=2, progress=False)
    assert run.errors == 0 and run.invalid == 0
    db = sqlite3.connect(tmp_path / "out" / "gradebook.sqlite")
    scores = {s: (score, top) for s, score, top in db.execute("SELECT student_id, score, max_score FROM latest")}
    failing = db.execute("SELECT t.grade_id, t.status, t.message FROM test_results t JOIN submissions s "
                         "ON s.id = t.submission_id WHERE s.student_id = 'solution' AND t.status != 'passed'").fetchall()
    statuses = {r[0] for r in db.execute("SELECT t.status FROM test_results t JOIN submissions s "
                                         "ON s.id = t.submission_id WHERE s.student_id = 'untouched'")}
    db.close()
    assert scores["solution"][0] == scores["solution"][1] > 0, f"the master's own solution fails: {failing}"
    assert scores["untouched"][0] == 0
    assert statuses == {"not attempted"}
