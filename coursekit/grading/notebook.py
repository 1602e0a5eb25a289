"""Read a submitted notebook defensively and rebuild it on the instructor's cells.

Nothing a student submits is trusted except the source of their exercise cells: outputs,
metadata, test cells and set-up cells all come from the master. A submission that cannot
be read is a :class:`SubmissionError` with a message for the student, never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import nbformat

from coursekit.cells import grade_id, is_graded, is_solution, is_written_answer, points
from coursekit.grading import written
from coursekit.release import release_notebook

MAX_NOTEBOOK_BYTES = 100 << 20


class SubmissionError(ValueError):
    """The submitted file is not a usable notebook for this lab; the message says why."""


def read_submission(raw: bytes, *, name: str = "the notebook"):
    """Parse, upgrade (to nbformat 4) and sanity-check a submitted notebook."""
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise SubmissionError(f"{name} is {len(raw) >> 20} MiB, over the {MAX_NOTEBOOK_BYTES >> 20} MiB limit: "
                              "clear all outputs (Edit → Clear Outputs of All Cells), save and submit again")
    if not raw.strip():
        raise SubmissionError(f"{name} is empty: save the notebook in JupyterLab and submit it again")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SubmissionError(f"{name} is not UTF-8 text: is it really a .ipynb notebook?") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SubmissionError(f"{name} is not valid notebook JSON (line {err.lineno}, column {err.colno}): "
                              "the file is damaged; open it in JupyterLab, save it, and submit again") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", data.get("worksheets")), list):
        raise SubmissionError(f"{name} is JSON but not a notebook (no list of cells)")
    major = data.get("nbformat")
    if not isinstance(major, int) or not 3 <= major <= 4:
        raise SubmissionError(f"{name} has nbformat version {major!r}; only versions 3 and 4 are supported")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as err:  # nbformat's upgrade raises several kinds
        raise SubmissionError(f"{name} could not be read as a notebook ({type(err).__name__})") from None
    for cell in nb.cells:
        if not isinstance(cell.get("source"), str) or not isinstance(cell.get("metadata"), dict):
            raise SubmissionError(f"{name} has a malformed cell (source or metadata missing)")
    return nb


@dataclass
class Program:
    """What the sandbox runs (set-up and exercise cells) and what the grader tests."""

    cells: list[dict]  # {"index", "source", "grade_id"} in notebook order, for the worker
    tests: list[dict]  # {"index", "grade_id", "points", "source"} graded cells of the master
    exercises: dict[int, str]  # cell index -> grade_id of each exercise cell
    written: list[dict] = field(default_factory=list)  # {"index", "grade_id", "points", "answer"}: prose to review
    notes: list[str] = field(default_factory=list)  # what was restored or ignored, for feedback


def _ignored_cells(master, released, submission, exercise_ids: list[str]) -> list[str]:
    """Notes on the student's code outside the exercises: cells added or changed, which are not run."""
    instructor: dict[str, set[str]] = {}  # grade_id -> its source, released and master (with hidden tests)
    plain = set()  # code cells without a grade_id (a parameters cell)
    for cell in [*released.cells, *master.cells]:
        if cell.cell_type == "code" and grade_id(cell):
            instructor.setdefault(grade_id(cell), set()).add(cell.source.strip())
        elif cell.cell_type == "code":
            plain.add(cell.source.strip())
    outside, changed = [], []
    for number, cell in enumerate(submission.cells, start=1):
        gid = grade_id(cell)
        if cell.get("cell_type") != "code" or gid in exercise_ids or not cell["source"].strip():
            continue
        if gid in instructor:
            if cell["source"].strip() not in instructor[gid]:
                changed.append(gid)
        elif cell["source"].strip() not in plain:
            outside.append(str(number))
    notes = []
    if outside:
        many = len(outside) > 1
        notes.append(f"{len(outside)} code cell{'s' if many else ''} outside the exercises (cell{'s' if many else ''} "
                     f"{', '.join(outside)} of your notebook) {'were' if many else 'was'} not run: only the exercise "
                     "cells are graded, so put any code your answers need inside them")
    if changed:
        notes.append(f"your changes to {', '.join(sorted(set(changed)))} were not used: the instructor's cells run "
                     "as given")
    return notes


def build_program(master, submission) -> Program:
    """Rebuild the submission on the master: the student's exercise cells, the instructor's rest.

    Exercise cells are matched by ``grade_id`` (the first one wins when a student duplicated
    a cell); a missing exercise becomes the released stub, so it grades as "not attempted".
    Code the student added or changed outside the exercises is not run; the notes say which.
    Test cells never go to the sandbox: their sources (hidden tests included) stay here.
    Written answers are taken as text (the first cell with their ``grade_id``, whatever its type).
    """
    written_ids = {grade_id(c) for c in master.cells if is_written_answer(c)}
    student: dict[str, str] = {}
    duplicates = set()
    for cell in submission.cells:
        gid = grade_id(cell)
        if gid is None or (cell.get("cell_type") != "code" and gid not in written_ids):
            continue
        if gid in student:
            duplicates.add(gid)
        else:
            student[gid] = cell["source"]
    released = release_notebook(master)
    exercise_ids = [grade_id(c) for c in master.cells if is_solution(c) and c.cell_type == "code"]
    if exercise_ids and not any(gid in student for gid in exercise_ids):
        raise SubmissionError(
            f"this is not the expected lab: none of its exercise cells ({', '.join(exercise_ids)}) are in the "
            "notebook. Submit the lab notebook you were given, with its cells kept (you may add code inside them)."
        )
    program = Program(cells=[], tests=[], exercises={})
    program.notes += [f"{'written answer' if gid in written_ids else 'exercise cell'} {gid} appears more than "
                      "once; the first copy was graded" for gid in sorted(duplicates)]
    program.notes += _ignored_cells(master, released, submission, exercise_ids)
    for index, (cell, public) in enumerate(zip(master.cells, released.cells)):
        if is_written_answer(cell):
            gid = grade_id(cell)
            answer, notes = written.answer_text(student.get(gid, ""), gid)
            program.written.append({"index": index, "grade_id": gid, "answer": answer,
                                    "points": points(cell)})
            program.notes += notes
            continue
        if cell.cell_type != "code":
            continue
        gid = grade_id(cell)
        if is_graded(cell):
            program.tests.append({"index": index, "grade_id": gid, "points": points(cell), "source": cell.source})
            continue
        source = public.source
        if is_solution(cell):
            program.exercises[index] = gid
            if gid in student:
                source = student[gid]
            else:
                program.notes.append(f"exercise cell {gid} is missing from the submission; graded as not attempted")
        program.cells.append({"index": index, "source": source, "grade_id": gid})
    return program
