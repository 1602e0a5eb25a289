"""The one reader of the course's notebook metadata: nbgrader's cell markings and the course's own.

A cell's ``metadata.nbgrader`` says what the grader does with it (nbgrader's format: ``solution``,
``grade``, ``grade_id``, ``points``, ``locked``); a written answer's ``metadata.dlwb.rubric`` is its
marking rubric; a notebook's ``metadata.dlwb`` holds its smoke settings and budget. Cells may be
``nbformat`` nodes or plain dicts (a submission read from JSON); missing or malformed parts read
as absent, never as an error here (:func:`coursekit.release.validate_master` is where a master
is rejected).
"""

from __future__ import annotations

from collections.abc import Mapping

COURSE_KEY = "dlwb"  # the course's own metadata key, in cells and notebooks


def _mapping(value) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _section(node, key: str) -> Mapping:
    """``node.metadata[key]`` of a cell or notebook, empty where either is missing or not a mapping."""
    return _mapping(_mapping(node.get("metadata")).get(key))


def nbgrader(cell) -> Mapping:
    """The cell's nbgrader metadata (empty if it has none)."""
    return _section(cell, "nbgrader")


def grade_id(cell) -> str | None:
    value = nbgrader(cell).get("grade_id")
    return value if isinstance(value, str) else None


def is_solution(cell) -> bool:
    """A cell the student writes: an exercise (code) or a written answer (Markdown)."""
    return bool(nbgrader(cell).get("solution"))


def is_graded(cell) -> bool:
    """A cell that scores points: an automatic test, or a written answer that an instructor marks."""
    return bool(nbgrader(cell).get("grade"))


def is_locked(cell) -> bool:
    return bool(nbgrader(cell).get("locked"))


def points(cell) -> float:
    """The cell's maximum score (0 where it has none)."""
    value = nbgrader(cell).get("points", 0)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def is_written_answer(cell) -> bool:
    """A cell the student answers in prose and an instructor marks (nbgrader: solution and grade)."""
    return is_solution(cell) and is_graded(cell)


def rubric(cell) -> str | None:
    """The marking rubric of a written answer (Markdown), kept in ``metadata.dlwb.rubric`` of the master."""
    value = _section(cell, COURSE_KEY).get("rubric")
    return value if isinstance(value, str) else None


def drop_rubric(cell) -> None:
    """Remove the cell's rubric; an emptied ``metadata.dlwb`` goes too."""
    extra = _mapping(cell.get("metadata")).get(COURSE_KEY)
    if isinstance(extra, dict) and "rubric" in extra:
        del extra["rubric"]
        if not extra:
            del cell["metadata"][COURSE_KEY]


def course_settings(nb) -> Mapping:
    """A notebook's ``metadata.dlwb``: its smoke settings (``smoke``), budget (``budget_s``), prose sources."""
    return _section(nb, COURSE_KEY)
