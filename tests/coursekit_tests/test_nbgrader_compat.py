"""Our lab format is nbgrader's: its own preprocessors make the same student copy as ours.

nbgrader's ClearSolutions + ClearHiddenTests (the reference implementation of the markers)
must produce, cell for cell, the sources that `python -m coursekit release` produces (written
answers, Markdown solution cells, included), its LockCells must leave the same cells
editable, and nbgrader must accept our cell metadata.
"""

from __future__ import annotations

import copy

import nbformat
import pytest
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions, LockCells
from nbgrader.utils import is_grade, is_solution

from conftest import ROOT
from coursekit.release import release_notebook
from test_release import master as toy_master

MASTERS = sorted((ROOT / "solutions").glob("*.ipynb"))


def by_nbgrader(nb):
    nb = copy.deepcopy(nb)
    nb, resources = ClearSolutions().preprocess(nb, {})
    nb, resources = ClearHiddenTests().preprocess(nb, resources)
    nb, _ = LockCells().preprocess(nb, resources)
    return nb


def assert_same_release(nb):
    theirs, ours = by_nbgrader(nb), release_notebook(nb)
    assert len(theirs.cells) == len(ours.cells)
    for i, (a, b) in enumerate(zip(theirs.cells, ours.cells)):
        assert a.source == b.source, f"cell {i} differs from nbgrader's release"
        assert a.metadata.get("editable", True) == b.metadata.get("editable", True), f"cell {i}: editable differs"
    assert [is_solution(c) for c in nb.cells] == [bool(c.metadata.get("nbgrader", {}).get("solution")) for c in nb.cells]
    assert [is_grade(c) for c in nb.cells] == [bool(c.metadata.get("nbgrader", {}).get("grade")) for c in nb.cells]


def test_toy_lab_matches_nbgrader():
    assert_same_release(toy_master())


@pytest.mark.parametrize("path", MASTERS, ids=[p.stem for p in MASTERS])
def test_course_lab_matches_nbgrader(path):
    assert_same_release(nbformat.read(path, as_version=4))
