"""Finding, checking and executing the course's notebooks (used by test_notebooks.py).

Conventions every notebook follows (see notebooks/README.md):
- the first cell is the Markdown header: a ``# `` title, "What you'll learn",
  "Prerequisites" and "Time" sections;
- one code cell is tagged ``parameters`` (papermill); its assignments are the lecture settings;
- ``metadata.dlwb.smoke`` holds the small settings the tests inject, and
  ``metadata.dlwb.budget_s`` the expected smoke run time (reported, not enforced);
- cells tagged ``nbval-check-output`` print values that must be identical when the
  notebook runs again (checked with ``nbval --nbval-lax``; the re-run stops after the last of them
  and skips cells tagged ``nbval-skip``: timings and launches that no checked cell depends on);
- lecture notebooks end with "Summary" and "Exercises" sections;
- notebooks are committed without outputs;
- chapters (notebooks/) carry ``metadata.slideshow.slide_type`` on every cell (``python -m coursekit
  lecture --tag-slides``); their smoke run goes through :mod:`coursekit.lecture` (inline figures) and
  also writes the chapter's page and slides to ``build/lecture-smoke/``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from coursekit.cells import course_settings
from coursekit.layout import BUILD, COURSE_ROOT as ROOT

EXECUTED = BUILD / "executed"
TIMINGS = BUILD / "timings"
LECTURE_SMOKE = BUILD / "lecture-smoke"
NOTEBOOK_DIRS = ("notebooks", "solutions", "labs")
CHECK_TAG = "nbval-check-output"
# pytest with nbval, started as the course's processes start (coursekit.startup): a second less per re-check.
NBVAL = ("import sys\nfrom coursekit.startup import skip_unused_format_grammars\nskip_unused_format_grammars()\n"
         "import pytest\nsys.exit(pytest.main(sys.argv[1:]))")


def discover() -> list[Path]:
    return sorted(p for d in NOTEBOOK_DIRS for p in (ROOT / d).glob("*.ipynb"))


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def parameters_cell(nb) -> nbformat.NotebookNode:
    tagged = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise AssertionError(f"expected exactly one code cell tagged 'parameters', found {len(tagged)}")
    return tagged[0]


def parameter_defaults(nb) -> dict[str, object]:
    """Names assigned in the parameters cell, with their literal default values."""
    tree = ast.parse(parameters_cell(nb).source)
    defaults = {}
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            raise AssertionError(f"the parameters cell may hold only assignments, found: {ast.unparse(node)}")
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            defaults[target.id] = ast.literal_eval(node.value)
    return defaults


def smoke_parameters(nb) -> dict[str, object]:
    return dict(course_settings(nb).get("smoke", {}))


@dataclass
class Run:
    path: Path
    output: Path
    seconds: float
    error: str | None  # "ename: evalue" of the first failing cell, or None
    pages: tuple[Path, Path] | None = None  # a chapter's HTML page and slides (build/lecture-smoke/)


def is_chapter(path: Path) -> bool:
    return path.parent == ROOT / "notebooks"


def execute(path: Path, *, out_dir: Path = EXECUTED, timings_dir: Path = TIMINGS, timeout_s: int = 900) -> Run:
    """Run a notebook with papermill and its smoke parameters, in the notebook's folder.

    The executed copy goes to ``out_dir/<folder>/<name>``; the timing to ``timings_dir``.
    A chapter runs as lecture mode runs it (:func:`coursekit.lecture.execute`, inline figures) and
    its page and slides are exported to ``build/lecture-smoke/`` (the export is not timed).
    """
    from coursekit import lecture

    nb = nbformat.read(path, as_version=4)
    output = out_dir / path.parent.name / path.name
    start = time.perf_counter()
    error = lecture.execute(path, output, parameters=smoke_parameters(nb), timeout_s=timeout_s,
                            inline=is_chapter(path))
    seconds = time.perf_counter() - start
    pages = lecture.export(output, LECTURE_SMOKE) if is_chapter(path) else None
    timings_dir.mkdir(parents=True, exist_ok=True)
    budget = course_settings(nb).get("budget_s")
    timing_file(path, timings_dir).write_text(
        json.dumps({"notebook": relative(path), "seconds": seconds, "budget_s": budget, "error": error})
    )
    return Run(path, output, seconds, error, pages)


def timing_file(path: Path, timings_dir: Path = TIMINGS) -> Path:
    return timings_dir / f"{path.parent.name}__{path.stem}.json"


def checked_cells(nb) -> list[int]:
    """Indices of the cells tagged ``nbval-check-output``."""
    return [i for i, c in enumerate(nb.cells) if CHECK_TAG in c.metadata.get("tags", [])]


def has_checked_cells(path: Path) -> bool:
    return bool(checked_cells(nbformat.read(path, as_version=4)))


def through_last_checked_cell(executed: Path) -> Path:
    """A copy of the executed notebook that ends at its last checked cell, next to it (``NAME.recheck.ipynb``).

    The cells after it cannot change what a checked cell prints, and the first run executed them
    already, so the re-run leaves them out.
    """
    nb = nbformat.read(executed, as_version=4)
    checked = checked_cells(nb)
    if not checked:
        raise ValueError(f"{executed} has no cell tagged {CHECK_TAG!r}: nothing to re-check")
    nb.cells = nb.cells[:checked[-1] + 1]
    copy = executed.with_name(f"{executed.stem}.recheck.ipynb")
    nbformat.write(nb, copy)
    return copy


def nbval_rerun(executed: Path, record: Path | None = None, *, inline: bool = False) -> subprocess.CompletedProcess:
    """Execute the executed copy again, up to its last checked cell, and compare the checked cells' outputs.

    With ``record`` (a timing file written by :func:`execute`), the re-run's time is added to it.
    ``inline``: re-run with the inline matplotlib backend, as a chapter's first run had it (a
    figure shown by a checked cell is then an output of both runs).
    """
    from coursekit.lecture import INLINE_BACKEND

    env = {**os.environ, "MPLBACKEND": INLINE_BACKEND} if inline else None
    recheck = through_last_checked_cell(executed)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", NBVAL, "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
         "-p", "no:xdist", "-c", os.devnull, "--rootdir", str(recheck.parent), "-q", str(recheck)],
        cwd=recheck.parent, capture_output=True, text=True, timeout=1800, env=env,
    )
    if record is not None and record.exists():
        data = json.loads(record.read_text())
        data["recheck_s"] = time.perf_counter() - start
        record.write_text(json.dumps(data))
    return result


def timing_table() -> str:
    rows = [json.loads(p.read_text()) for p in sorted(TIMINGS.glob("*.json"))] if TIMINGS.is_dir() else []
    if not rows:
        return ""
    lines = [f"{'notebook':<42} {'seconds':>8} {'budget':>7} {'recheck':>8}  status"]
    for r in sorted(rows, key=lambda r: r["notebook"]):
        budget = f"{r['budget_s']:>7}" if r["budget_s"] is not None else f"{'-':>7}"
        recheck = f"{r['recheck_s']:>8.1f}" if "recheck_s" in r else f"{'-':>8}"
        over = " (over budget)" if r["budget_s"] is not None and r["seconds"] > r["budget_s"] else ""
        status = (r["error"] or "ok")[:60] + over
        lines.append(f"{r['notebook']:<42} {r['seconds']:>8.1f} {budget} {recheck}  {status}")
    total = sum(r["seconds"] + r.get("recheck_s", 0.0) for r in rows)
    lines.append(f"{'total (runs + rechecks)':<42} {total:>8.1f}")
    return "\n".join(lines)
