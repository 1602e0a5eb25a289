"""Generating student labs from masters: each pass alone, leaks, drift of the committed labs/."""

from __future__ import annotations

import ast
import copy

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from conftest import ROOT
from coursekit import release
from coursekit.__main__ import main
from coursekit.release import ReleaseError

MASTERS = sorted((ROOT / "solutions").glob("*.ipynb"))


def nbg(**meta):
    return {"nbgrader": {"schema_version": 3, "solution": False, "grade": False, "locked": False, **meta}}


EXERCISE = '''def softmax(z):
    """Softmax over the last axis."""
    ### BEGIN SOLUTION
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
    ### END SOLUTION'''

TEST = '''assert softmax(np.zeros(3)).shape == (3,)
### BEGIN HIDDEN TESTS
assert np.allclose(softmax(np.array([1000.0, 1000.0])), 0.5)
### END HIDDEN TESTS'''


MODEL_ANSWER = "Subtracting the maximum keeps `exp` from overflowing;\nthe result is unchanged."
RUBRIC = "1 point: overflow of exp named.\n1 point: says the softmax does not change."


def written_answer(model_answer=MODEL_ANSWER, rubric=RUBRIC, points=2, grade_id="written_stability"):
    """nbgrader's manually graded answer: a Markdown solution cell that is also graded."""
    meta = nbg(solution=True, grade=True, points=points, grade_id=grade_id)
    meta["dlwb"] = {"rubric": rubric}
    return new_markdown_cell(f"{release.BEGIN_SOLUTION}\n{model_answer}\n{release.END_SOLUTION}", metadata=meta)


def master():
    return new_notebook(cells=[
        new_markdown_cell("# Lab\nIntro", metadata=nbg(locked=True, grade_id="intro")),
        new_code_cell("import numpy as np"),
        new_code_cell(EXERCISE, metadata=nbg(solution=True, grade_id="ex_softmax")),
        new_code_cell(TEST, metadata=nbg(grade=True, locked=True, points=2, grade_id="test_softmax"),
                      outputs=[new_output("stream", name="stdout", text="forged\n")], execution_count=7),
        new_markdown_cell("Why subtract the maximum?", metadata=nbg(locked=True, grade_id="written_stability_md")),
        written_answer(),
    ])


def test_solution_block_becomes_an_indented_stub_that_raises():
    nb = release.clear_solutions(master())
    source = nb.cells[2].source
    assert "np.exp" not in source and "### BEGIN" not in source
    assert "    # YOUR CODE HERE\n    raise NotImplementedError()" in source
    assert '"""Softmax over the last axis."""' in source  # the signature and docstring stay
    namespace = {}
    exec(compile(source, "stub", "exec"), namespace)
    with pytest.raises(NotImplementedError):
        namespace["softmax"](None)


def test_markdown_solution_block():
    nb = new_notebook(cells=[new_markdown_cell(f"Why?\n{release.BEGIN_SOLUTION}\nBecause.\n{release.END_SOLUTION}",
                                               metadata=nbg(solution=True, grade_id="why"))])
    assert release.clear_solutions(nb).cells[0].source == "Why?\nYOUR ANSWER HERE"


def test_written_answer_is_released_as_an_editable_stub_without_its_rubric():
    nb = release.release_notebook(master())
    answer = nb.cells[5]
    assert answer.source == release.MARKDOWN_STUB and answer.cell_type == "markdown"
    assert "dlwb" not in answer.metadata and answer.metadata["nbgrader"]["points"] == 2
    assert "editable" not in answer.metadata and answer.metadata["deletable"] is False


def test_rubric_pass_keeps_other_cell_metadata():
    nb = master()
    nb.cells[5].metadata["dlwb"]["note"] = "kept"
    nb = release.clear_rubrics(nb)
    assert nb.cells[5].metadata["dlwb"] == {"note": "kept"}
    assert "dlwb" not in release.clear_rubrics(master()).cells[5].metadata


def test_hidden_tests_are_removed_and_visible_ones_kept():
    source = release.clear_hidden_tests(master()).cells[3].source
    assert source == "assert softmax(np.zeros(3)).shape == (3,)"


def test_outputs_and_run_metadata_are_cleared():
    nb = master()
    nb.cells[1].metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    nb.metadata["papermill"] = {"parameters": {}}
    nb = release.clear_outputs(nb)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    assert "execution" not in nb.cells[1].metadata and "papermill" not in nb.metadata


def test_read_only_cells_are_locked_for_jupyterlab():
    nb = release.lock_cells(master())
    locked = [c.metadata.get("editable") is False and c.metadata.get("deletable") is False for c in nb.cells]
    assert locked == [True, False, False, True, True, False]  # the written answer (solution + grade) stays editable


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda nb: setattr(nb.cells[2], "source", nb.cells[2].source.replace(release.END_SOLUTION, "")),
     "never closed"),
    (lambda nb: setattr(nb.cells[3], "source", nb.cells[3].source.replace(release.BEGIN_HIDDEN, "")),
     "without a matching"),
    (lambda nb: setattr(nb.cells[3], "source", "x = 1  " + release.BEGIN_HIDDEN), "stand alone"),
    (lambda nb: nb.cells[3].metadata["nbgrader"].update(grade_id="ex_softmax"), "already used"),
    (lambda nb: nb.cells[3].metadata["nbgrader"].pop("points"), "needs numeric 'points'"),
    (lambda nb: nb.cells[2].metadata["nbgrader"].update(solution=False), "not nbgrader metadata 'solution'"),
    (lambda nb: setattr(nb.cells[2], "source", "def f():\n    return 1"), "without '### BEGIN SOLUTION'"),
    (lambda nb: nb.cells.__setitem__(5, new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION",
                                                      metadata=nb.cells[5].metadata)), "must be a Markdown cell"),
    (lambda nb: setattr(nb.cells[5], "source", "Because."), "model answer between"),
    (lambda nb: nb.cells[5].metadata["nbgrader"].pop("points"), "needs numeric 'points'"),
    (lambda nb: nb.cells[5].metadata.pop("dlwb"), "needs a marking rubric"),
    (lambda nb: nb.cells[5].metadata["dlwb"].update(rubric="  "), "needs a marking rubric"),
])
def test_malformed_masters_are_rejected_with_the_cell_named(mutate, message):
    nb = master()
    mutate(nb)
    with pytest.raises(ReleaseError, match=message) as err:
        release.release_notebook(nb)
    assert "cell " in str(err.value)


def test_release_does_not_modify_the_master():
    nb = master()
    before = copy.deepcopy(nb)
    release.release_notebook(nb)
    assert nb == before


def test_a_pass_that_lets_a_solution_through_is_caught(monkeypatch):
    monkeypatch.setattr(release, "PASSES", (release.validate_master, release.clear_hidden_tests))
    nb = master()
    del nb.cells[4:]  # only the code exercise
    with pytest.raises(ReleaseError, match="would reveal") as err:
        release.release_notebook(nb)
    assert "np.exp" in str(err.value)


@pytest.mark.parametrize(("passes", "leaked"), [
    ((release.clear_solutions, release.clear_hidden_tests), "1 point: overflow of exp named."),
    ((release.clear_hidden_tests, release.clear_rubrics), "Subtracting the maximum keeps `exp` from overflowing;"),
])
def test_a_pass_that_lets_a_rubric_or_a_model_answer_through_is_caught(monkeypatch, passes, leaked):
    monkeypatch.setattr(release, "PASSES", passes)
    with pytest.raises(ReleaseError, match="would reveal"):
        release.release_notebook(master())
    nb = master()
    for step in passes:
        nb = step(nb)
    assert leaked in release.find_leaks(master(), nb)


def test_a_rubric_moved_to_other_metadata_or_into_a_cell_is_a_leak():
    nb = master()
    released = release.release_notebook(nb)
    released.cells[0].metadata["comment"] = {"text": ["1 point: overflow of exp named."]}
    released.cells[4].source += "\n1 point: says the softmax does not change."
    assert release.find_leaks(nb, released) == ["1 point: overflow of exp named.",
                                                "1 point: says the softmax does not change."]


def test_leak_check_ignores_lines_the_master_shows_anyway():
    nb = master()
    nb.cells.insert(1, new_markdown_cell("Return your result with `return e / e.sum(axis=-1, keepdims=True)`"))
    nb.cells.insert(1, new_code_cell("e = np.exp(z - z.max(axis=-1, keepdims=True))"))  # given code, not secret
    released = release.release_notebook(nb)
    assert release.find_leaks(nb, released) == []


def test_release_all_writes_checks_and_reports(tmp_path):
    solutions, labs = tmp_path / "solutions", tmp_path / "labs"
    solutions.mkdir()
    nbformat.write(master(), solutions / "lab01_x.ipynb")
    assert main(["release", "--solutions", str(solutions), "--labs", str(labs), "--check"]) == 1
    assert not labs.exists()  # --check writes nothing
    assert main(["release", "--solutions", str(solutions), "--labs", str(labs)]) == 0
    assert release.release_all(solutions, labs, check=True) == []
    student = nbformat.read(labs / "lab01_x.ipynb", as_version=4)
    assert "raise NotImplementedError()" in student.cells[2].source
    # A hand edit of the generated lab is drift; so is a lab without a master.
    (labs / "lab01_x.ipynb").write_text((labs / "lab01_x.ipynb").read_text().replace("Intro", "Edited"))
    nbformat.write(master(), labs / "lab99_orphan.ipynb")
    report = release.release_all(solutions, labs, check=True)
    assert any("lab01_x.ipynb (stale)" in r for r in report) and any("no master" in r for r in report)
    release.release_all(solutions, labs)
    assert (labs / "lab99_orphan.ipynb").exists()  # reported, never deleted


def test_unreadable_master_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "lab01_bad.ipynb").write_text("{not json")
    assert main(["release", "--solutions", str(tmp_path / "solutions"), "--labs", str(tmp_path / "labs")]) == 2
    assert "lab01_bad.ipynb: not a readable notebook" in capsys.readouterr().err


# --- the course's own labs -------------------------------------------------------------------

def test_committed_labs_match_their_masters():
    assert MASTERS, "solutions/ has no master notebooks"
    stale = release.release_all(ROOT / "solutions", ROOT / "labs", check=True)
    assert not stale, "labs/ differs from what solutions/ generates; run `python -m coursekit release`:\n" + "\n".join(stale)


@pytest.mark.parametrize("path", MASTERS, ids=[p.name for p in MASTERS])
def test_course_release_is_valid_python_without_secrets(path):
    nb = nbformat.read(path, as_version=4)
    student = release.release_notebook(nb)
    assert release.find_leaks(nb, student) == []
    for cell in student.cells:
        if cell.cell_type == "code":
            ast.parse(cell.source)  # every stub is valid Python
    text = nbformat.writes(student)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    exercises = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert exercises and graded, "a lab needs at least one exercise and one graded test"
