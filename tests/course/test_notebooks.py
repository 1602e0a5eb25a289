"""Every notebook under notebooks/, solutions/ and labs/: conventions, execution, determinism.

Each notebook runs with papermill and the small settings in its ``metadata.dlwb.smoke``;
the notebook is then re-executed by nbval, up to its last cell tagged ``nbval-check-output``,
and those cells must print the same.
Student labs must stop at the ``NotImplementedError`` of their first exercise, before the second.
A chapter's smoke run also writes its HTML page and reveal.js slides (lecture mode), checked here.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from coursekit import lecture
from coursekit.cells import is_solution
from notebook_harness import (
    CHECK_TAG,
    discover,
    execute,
    has_checked_cells,
    is_chapter,
    nbval_rerun,
    parameter_defaults,
    relative,
    smoke_parameters,
    timing_file,
)

NOTEBOOKS = discover()
IDS = [relative(p) for p in NOTEBOOKS]
HEADER_SECTIONS = ("What you'll learn", "Prerequisites", "Time")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_conventions(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    header = nb.cells[0]
    assert header.cell_type == "markdown" and header.source.startswith("# "), "first cell: '# Title' header"
    for section in HEADER_SECTIONS:
        assert re.search(rf"^#+ .*{re.escape(section)}", header.source, re.M | re.I), \
            f"the header cell lacks a '{section}' section"
    defaults = parameter_defaults(nb)
    smoke = smoke_parameters(nb)
    unknown = set(smoke) - set(defaults)
    assert not unknown, f"smoke settings {sorted(unknown)} are not in the parameters cell"
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("#")]
    if path.parent.name == "notebooks":
        assert any(re.match(r"#+ Summary", h) for h in headings[-4:]), "a 'Summary' section near the end"
        assert any(re.match(r"#+ Exercises", h) for h in headings[-4:]), "an 'Exercises' section near the end"
    with_output = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
    assert not with_output, f"commit notebooks without outputs (cells {with_output})"
    assert not any(re.search(r"[!%]pip install", c.source) for c in nb.cells), "no installs inside cells"
    if is_chapter(path):
        untagged = lecture.untagged_cells(nb)
        assert not untagged, (f"cells {untagged} lack metadata.slideshow.slide_type: run "
                              f"`python -m coursekit lecture --tag-slides {relative(path)}`")


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_executes_and_repeats(path):
    run = execute(path)
    if path.parent.name == "labs":
        assert run.error is not None and run.error.startswith("NotImplementedError"), \
            f"{relative(path)} must stop at its first exercise's stub, but ended with {run.error}; see {run.output}"
        executed = nbformat.read(run.output, as_version=4)
        exercises = [i for i, c in enumerate(executed.cells) if c.cell_type == "code" and is_solution(c)]
        stop = next(i for i, c in enumerate(executed.cells)
                    if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs))
        second = exercises[1] if len(exercises) > 1 else len(executed.cells)
        assert exercises and exercises[0] <= stop < second, (
            f"{relative(path)} stopped in cell {stop}, not between its first exercise (cell {exercises[:1]}) and "
            f"the next (cell {second}): is the first exercise's stub missing from the release? See {run.output}")
    else:
        assert run.error is None, f"{relative(path)} failed: {run.error}; executed copy: {run.output}"
    if is_chapter(path):
        html, slides = (p.read_text(encoding="utf-8") for p in run.pages)
        assert "data:image/png;base64," in html, f"{run.pages[0]} embeds no figure (inline backend?)"
        sections = slides.count("<section")
        assert sections > 1, f"{run.pages[1]} has {sections} <section>: is the slide metadata there?"
        assert "data:image/png;base64," in slides, f"{run.pages[1]} embeds no figure"
    if run.error is None and has_checked_cells(path):
        result = nbval_rerun(run.output, record=timing_file(path), inline=is_chapter(path))
        assert result.returncode == 0, (
            f"cells tagged {CHECK_TAG!r} printed different values on a second run:\n{result.stdout[-4000:]}"
        )
