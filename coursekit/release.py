"""Generate student labs from the master notebooks in ``solutions/``.

A pipeline of small passes, each a function from notebook to notebook that can be tested
alone (as nbgrader's converters are lists of preprocessors):

1. :func:`validate_master`   markers balanced, ``grade_id`` unique, graded cells have points;
2. :func:`clear_solutions`   ``### BEGIN SOLUTION`` … ``### END SOLUTION`` → stub that raises;
3. :func:`clear_hidden_tests` ``### BEGIN HIDDEN TESTS`` … ``### END HIDDEN TESTS`` → removed;
4. :func:`clear_rubrics`     the marking rubric of each written answer (``metadata.dlwb.rubric``) removed;
5. :func:`clear_outputs`     outputs, execution counts and run metadata dropped;
6. :func:`lock_cells`        read-only cells marked non-editable, non-deletable for JupyterLab.

A written answer is nbgrader's "manually graded answer": a Markdown cell that is both a
solution and a graded cell (see :func:`coursekit.cells.is_written_answer`); the student gets it as
``YOUR ANSWER HERE``, editable, and an instructor marks it against its rubric.
:func:`find_leaks` then checks that no solution, hidden-test or rubric line survived. The
command line is ``python -m coursekit release [--check]``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import nbformat

from coursekit import cells

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"
RUN_METADATA = ("execution", "papermill", "collapsed", "scrolled", "ExecuteTime")


class ReleaseError(ValueError):
    """A master notebook is malformed; the message names the notebook cell and the fix."""


def _cell_name(index: int, cell) -> str:
    grade_id = cells.grade_id(cell)
    return f"cell {index}" + (f" ({grade_id})" if grade_id else "")


def _blocks(source: str, begin: str, end: str, where: str) -> list[tuple[int, int]]:
    """Line index pairs ``(begin, end)`` of each marked block; raises on unbalanced markers."""
    blocks, start = [], None
    for i, line in enumerate(source.splitlines()):
        stripped = line.strip()
        if stripped == begin:
            if start is not None:
                raise ReleaseError(f"{where}: '{begin}' on line {i + 1} before the previous block was closed")
            start = i
        elif stripped == end:
            if start is None:
                raise ReleaseError(f"{where}: '{end}' on line {i + 1} without a matching '{begin}'")
            blocks.append((start, i))
            start = None
        elif begin in line or end in line:
            raise ReleaseError(f"{where}: marker on line {i + 1} must stand alone on its line: {line.strip()!r}")
    if start is not None:
        raise ReleaseError(f"{where}: '{begin}' on line {start + 1} is never closed with '{end}'")
    return blocks


def validate_master(nb):
    """Check markers and nbgrader metadata; returns ``nb`` unchanged."""
    seen: dict[str, int] = {}
    for i, cell in enumerate(nb.cells):
        where = _cell_name(i, cell)
        meta = cells.nbgrader(cell)
        solution_blocks = _blocks(cell.source, BEGIN_SOLUTION, END_SOLUTION, where)
        _blocks(cell.source, BEGIN_HIDDEN, END_HIDDEN, where)
        if solution_blocks and not cells.is_solution(cell):
            raise ReleaseError(f"{where}: has solution markers but not nbgrader metadata 'solution': true")
        if cells.is_solution(cell) and cell.cell_type == "code" and not solution_blocks:
            raise ReleaseError(f"{where}: is a solution cell without '{BEGIN_SOLUTION}' markers")
        points = meta.get("points")
        if cells.is_graded(cell) and (not isinstance(points, (int, float)) or isinstance(points, bool)):
            raise ReleaseError(f"{where}: a graded cell needs numeric 'points' in its nbgrader metadata")
        if cells.is_written_answer(cell):
            _validate_written_answer(cell, where, solution_blocks)
        grade_id = meta.get("grade_id")
        if grade_id is not None:
            if grade_id in seen:
                raise ReleaseError(f"{where}: grade_id {grade_id!r} is already used by cell {seen[grade_id]}")
            seen[grade_id] = i
    return nb


def _validate_written_answer(cell, where: str, solution_blocks: list[tuple[int, int]]) -> None:
    if cell.cell_type != "markdown":
        raise ReleaseError(f"{where}: a cell with both 'solution' and 'grade' is a written answer and must be a "
                           "Markdown cell; for code the student writes, use an exercise cell and a graded test cell")
    if not solution_blocks:
        raise ReleaseError(f"{where}: a written answer needs its model answer between '{BEGIN_SOLUTION}' and "
                           f"'{END_SOLUTION}' lines")
    if not (cells.rubric(cell) or "").strip():
        raise ReleaseError(f"{where}: a written answer needs a marking rubric: metadata.dlwb.rubric, Markdown "
                           "saying what earns each point")


def _replace_blocks(source: str, blocks: list[tuple[int, int]], stub: Callable[[str], list[str]]) -> str:
    lines = source.splitlines()
    out, last = [], 0
    for begin, end in blocks:
        out.extend(lines[last:begin])
        indent = re.match(r"\s*", lines[begin]).group(0)
        out.extend(stub(indent))
        last = end + 1
    out.extend(lines[last:])
    return "\n".join(out)


def clear_solutions(nb):
    """Replace each solution block with ``# YOUR CODE HERE`` / ``raise NotImplementedError()``.

    The stub keeps the block's indentation, so it stays valid Python inside a function.
    """
    for i, cell in enumerate(nb.cells):
        blocks = _blocks(cell.source, BEGIN_SOLUTION, END_SOLUTION, _cell_name(i, cell))
        if cell.cell_type == "markdown" and blocks:
            cell.source = _replace_blocks(cell.source, blocks, lambda indent: [MARKDOWN_STUB])
        elif blocks:
            cell.source = _replace_blocks(cell.source, blocks, lambda indent: [indent + s for s in CODE_STUB])
    return nb


def clear_hidden_tests(nb):
    """Remove hidden-test blocks, markers included."""
    for i, cell in enumerate(nb.cells):
        blocks = _blocks(cell.source, BEGIN_HIDDEN, END_HIDDEN, _cell_name(i, cell))
        if blocks:
            cell.source = _replace_blocks(cell.source, blocks, lambda indent: []).rstrip("\n")
    return nb


def clear_rubrics(nb):
    """Remove each written answer's rubric (``metadata.dlwb.rubric``); an emptied ``dlwb`` goes too."""
    for cell in nb.cells:
        cells.drop_rubric(cell)
    return nb


def clear_outputs(nb):
    """Drop outputs, execution counts and the metadata that execution leaves behind."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
    nb.metadata.pop("papermill", None)
    return nb


def lock_cells(nb):
    """Mark cells that are not the student's to edit as read-only in JupyterLab.

    As nbgrader's ``LockCells``: a graded cell is locked unless it is also a solution cell
    (a written answer), which stays editable and only cannot be deleted.
    """
    for cell in nb.cells:
        if cells.is_written_answer(cell):
            cell.metadata["deletable"] = False
        elif cells.is_locked(cell) or cells.is_graded(cell):
            cell.metadata["editable"] = False
            cell.metadata["deletable"] = False
    return nb


PASSES = (validate_master, clear_solutions, clear_hidden_tests, clear_rubrics, clear_outputs, lock_cells)


def _meaningful(line: str, cell_type: str) -> bool:
    """Whether a line is specific enough to count as a leak (in code, not a comment or a lone ``return``)."""
    stripped = line.strip()
    if cell_type == "markdown":
        return bool(stripped) and stripped not in (BEGIN_SOLUTION, END_SOLUTION)
    return bool(stripped) and not stripped.startswith("#") and stripped not in {"pass", "return", ")", "]", "}"}


def _texts(value):
    """Every string inside a cell's metadata (rubrics are the secret that lives there)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def find_leaks(master, release) -> list[str]:
    """Lines of solution blocks, hidden-test blocks or rubrics that appear in the release.

    A line counts only if the master does not also have it outside the marked blocks
    (a ``return`` that is part of the given code is not a leak). The release's sources and
    every string of its cell metadata are searched.
    """
    secret, unmarked = set(), set()
    for i, cell in enumerate(master.cells):
        lines = cell.source.splitlines()
        inside = [False] * len(lines)
        for begin, end in (_blocks(cell.source, BEGIN_SOLUTION, END_SOLUTION, _cell_name(i, cell))
                           + _blocks(cell.source, BEGIN_HIDDEN, END_HIDDEN, _cell_name(i, cell))):
            for j in range(begin, end + 1):
                inside[j] = True
        for line, is_inside in zip(lines, inside):
            if not is_inside:
                unmarked.add(line.strip())
            elif _meaningful(line, cell.cell_type):
                secret.add(line.strip())
        secret |= {line.strip() for line in (cells.rubric(cell) or "").splitlines() if _meaningful(line, "markdown")}
    released = {line.strip() for cell in release.cells
                for text in (cell.source, *_texts(dict(cell.metadata))) for line in text.splitlines()}
    return sorted(released & (secret - unmarked))


def release_notebook(master):
    """The student copy of one master notebook (the master is not modified)."""
    nb = copy.deepcopy(master)
    for step in PASSES:
        nb = step(nb)
    leaks = find_leaks(master, nb)
    if leaks:
        raise ReleaseError(f"the release would reveal {len(leaks)} line(s) of solutions, hidden tests or rubrics: "
                           f"{leaks[:3]}")
    return nb


def release_text(master_path: Path) -> str:
    """The released notebook as the exact text written to ``labs/``."""
    try:
        master = nbformat.read(master_path, as_version=4)
    except Exception as err:  # nbformat raises several JSON and validation errors
        raise ReleaseError(f"{master_path}: not a readable notebook ({err})") from err
    try:
        nb = release_notebook(master)
    except ReleaseError as err:
        raise ReleaseError(f"{master_path}: {err}") from None
    return nbformat.writes(nb) + "\n"


def release_all(solutions: Path, labs: Path, *, check: bool = False) -> list[str]:
    """Generate ``labs/NAME.ipynb`` for every ``solutions/NAME.ipynb``.

    Returns the labs that were (with ``check``: would be) written because they were missing
    or stale, and any lab without a master (reported, never deleted). ``check`` writes nothing.
    """
    masters = sorted(solutions.glob("*.ipynb"))
    if not masters:
        raise ReleaseError(f"no master notebooks (*.ipynb) in {solutions}")
    changed = []
    for master in masters:
        target = labs / master.name
        text = release_text(master)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            changed.append(f"{target} ({'stale' if target.exists() else 'missing'})")
            if not check:
                labs.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
    names = {m.name for m in masters}
    changed += [f"{extra} (no master in {solutions}; remove it by hand if it is obsolete)"
                for extra in sorted(labs.glob("*.ipynb")) if extra.name not in names]
    return changed
