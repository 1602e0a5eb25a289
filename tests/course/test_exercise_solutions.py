"""Instructor solutions to the chapters' exercises, in solutions/exercises/, never released.

``solutions/exercises/<chapter>.md`` answers the numbered list of the chapter's ``## Exercises``
section with one ``## Exercise K`` section per item, in order; its Python blocks must compile.
The release reads only ``solutions/*.ipynb``, so these files never reach ``labs/``.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from conftest import ROOT
from coursekit.release import release_all

EXERCISES = ROOT / "solutions" / "exercises"
SOLVED = sorted(EXERCISES.glob("*.md"))


def chapter_exercises(path) -> list[str]:
    """The numbered items of the chapter's ``## Exercises`` section (their first lines)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        parts = re.split(r"^## Exercises[ \t]*$", cell.source, flags=re.M)
        if len(parts) == 2:
            section = re.split(r"^#{1,2} ", parts[1], flags=re.M)[0]
            return re.findall(r"^\d+\.\s+(.*)$", section, flags=re.M)
    raise AssertionError(f"{path.name} has no '## Exercises' section")


def solution_sections(text: str) -> list[int]:
    return [int(k) for k in re.findall(r"^## Exercise (\d+)\b", text, flags=re.M)]


def test_every_chapter_has_instructor_solutions():
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [stem for stem in chapters if not (EXERCISES / f"{stem}.md").is_file()]
    assert chapters and not missing, (
        f"no instructor solutions for the exercises of {missing}: write solutions/exercises/<chapter>.md "
        f"(one '## Exercise K' section per numbered exercise)")


def test_the_section_parsers_count_what_they_should():
    text = "# Solutions\n\n## Exercise 1\nx\n\n## Exercise 2\n```python\ny = 1\n```\n## Exercises\n"
    assert solution_sections(text) == [1, 2]


@pytest.mark.parametrize("path", SOLVED, ids=[p.stem for p in SOLVED])
def test_every_exercise_of_the_chapter_has_a_solution(path):
    chapter = ROOT / "notebooks" / f"{path.stem}.ipynb"
    assert chapter.is_file(), f"{path.name} answers no chapter: name it after a notebook in notebooks/"
    text = path.read_text(encoding="utf-8")
    number = int(chapter.stem[:2])
    assert text.startswith(f"# Solutions to the exercises of chapter {number:02d}"), \
        f"{path.name}: the first line should be '# Solutions to the exercises of chapter {number:02d}'"
    exercises = chapter_exercises(chapter)
    assert exercises, f"{chapter.name}: its Exercises section has no numbered items"
    assert solution_sections(text) == list(range(1, len(exercises) + 1)), (
        f"{path.name} must have '## Exercise 1' … '## Exercise {len(exercises)}' in order, one per exercise of "
        f"{chapter.name}; found {solution_sections(text)}")
    for k, body in enumerate(re.split(r"^## Exercise \d+.*$", text, flags=re.M)[1:], start=1):
        assert len(body.strip()) > 40, f"{path.name}: the answer to exercise {k} is empty"
        for block in re.findall(r"```python\n(.*?)```", body, flags=re.S):
            compile(block, f"{path.name}, exercise {k}", "exec")


def test_exercise_solutions_are_never_released(tmp_path):
    release_all(ROOT / "solutions", tmp_path)
    released = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert released == {m.name for m in (ROOT / "solutions").glob("*.ipynb")}
