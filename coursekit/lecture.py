"""Lecture mode: run the chapters, write executed HTML, reveal.js slides and a run-time table.

    python -m coursekit lecture                       every chapter with its lecture settings (GPU if present)
    python -m coursekit lecture --smoke --only 00_setup   the small settings of ``metadata.dlwb.smoke``
    python -m coursekit lecture --tag-slides notebooks/*.ipynb   (re)write the slide metadata of chapters

For each chapter ``NAME`` the output folder (``build/lecture/`` by default) gets the executed
notebook ``NAME.ipynb``, the page ``NAME.html`` and the slides ``NAME.slides.html``, and
``run_times.md`` gets a table of the chapters' run times.

Slides come from ``metadata.slideshow.slide_type`` of every cell, written by :func:`tag_slides`
with one rule (:func:`slide_type`): a ``## `` heading starts a slide, a ``### `` heading a
subslide (reveal.js: below the slide), a code cell that draws a figure or a widget gets a
subslide of its own so the figure is large, the first (title) cell is a slide, the
``parameters`` cell is skipped, and every other cell continues the slide before it.

The slides then show one idea at a time (:func:`slide_deck`, at export; the chapters are not
changed): a Markdown cell is cut at each of its headings, and prose longer than
``MAX_SLIDE_WORDS`` continues on sub-slides, cut between paragraphs and list items.

Pages and slides work offline, from ``file://``: MathJax and reveal.js are copied from installed
packages into the output folder's ``_static/`` (:mod:`coursekit.lecture_assets`) and loaded by
relative URL, so the folder can be copied to a USB stick as it is. To present live, running
cells on the slides, open a chapter in JupyterLab and start RISE (``Alt+R``, or the toolbar's
slideshow button): it uses the same slide metadata.

Chapters run in the notebook's own folder with the inline matplotlib backend, so that figures
are embedded in the pages (``make test`` sets ``MPLBACKEND=Agg`` for everything else).
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from coursekit import lecture_assets
from coursekit.cells import course_settings
from coursekit.layout import CHAPTERS, LECTURE_OUT

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
SLIDE_TYPES = ("slide", "subslide", "fragment", "skip", "notes", "-")
# A code cell that draws: matplotlib, the course's plots, or an ipywidgets explorer.
DRAWS = re.compile(r"\bplt\.|\bplots\.(?!LivePlot|keras_live_plot)\w+\(|\bplot_\w*\(|\binteract\(|\.imshow\(|\bdisplay\(")
TEMPLATES = Path(__file__).parent / "templates"  # lecture_page/, lecture_slides/: nbconvert templates that work offline
MAX_SLIDE_WORDS = 120  # prose on one slide; the rest continues on sub-slides below it
WIDGET_NOTE = "An interactive widget: it runs with its kernel, in JupyterLab (make lab) or live on the slides with RISE."
HEADING = re.compile(r"(#{1,6}) ")
LIST_ITEM = re.compile(r"(?:[-*+]|\d+[.)]) ")
PAGE_LINK = re.compile(r"\]\(([\w.-]+\.md)(?:#[^)]*)?\)")  # a Markdown link to a page beside the chapter: [glossary](glossary.md)
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
# Slides: figures fill the slide; code and text stay readable.
SLIDES_CSS = """<style>
.reveal .jp-OutputArea-output img { max-height: 70vh; width: auto; max-width: 100%; }
.reveal .jp-InputArea pre, .reveal .jp-OutputArea pre { font-size: 0.55em; line-height: 1.25; }
</style>
"""


def chapters(only: Sequence[str] = (), folder: Path = CHAPTERS) -> list[Path]:
    """The chapter notebooks in ``folder``; ``only`` picks by name (``00_setup``) or number (``00``)."""
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return paths
    picked = [p for p in paths if any(p.stem == name or p.stem.startswith(f"{name}_") for name in only)]
    unknown = [name for name in only if not any(p.stem == name or p.stem.startswith(f"{name}_") for p in paths)]
    if unknown:
        raise ValueError(f"no chapter named {unknown} in {folder}; chapters: {[p.stem for p in paths]}")
    return picked


def slide_type(cell, index: int) -> str:
    """The reveal.js slide type the rule gives a cell (see the module docstring)."""
    first_line = cell.source.lstrip().split("\n", 1)[0]
    if index == 0:
        return "slide"
    if cell.cell_type == "markdown":
        if first_line.startswith("## ") or first_line.startswith("# "):
            return "slide"
        return "subslide" if first_line.startswith("### ") else "-"
    if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
        return "skip"
    if cell.cell_type == "code" and DRAWS.search(cell.source) and not _only_definitions(cell.source):
        return "subslide"
    return "-"


def _only_definitions(source: str) -> bool:
    """True for a cell that only defines functions/classes or imports (it draws nothing when run)."""
    try:
        body = ast.parse(source).body
    except SyntaxError:  # IPython syntax (magics): treat as drawing code
        return False
    return all(isinstance(node, DEFINITIONS) for node in body)


def tag_slides(nb) -> int:
    """Write ``metadata.slideshow.slide_type`` into every cell by :func:`slide_type`; returns how many changed."""
    changed = 0
    for i, cell in enumerate(nb.cells):
        kind = slide_type(cell, i)
        if cell.metadata.get("slideshow", {}).get("slide_type") != kind:
            cell.metadata.setdefault("slideshow", {})["slide_type"] = kind
            changed += 1
    return changed


def tag_slides_file(path: Path) -> int:
    """:func:`tag_slides` on a notebook file, rewritten only when something changed."""
    nb = nbformat.read(path, as_version=4)
    changed = tag_slides(nb)
    if changed:
        nbformat.write(nb, path)
    return changed


def untagged_cells(nb) -> list[int]:
    """Indices of cells without a valid ``metadata.slideshow.slide_type``."""
    return [i for i, c in enumerate(nb.cells) if c.metadata.get("slideshow", {}).get("slide_type") not in SLIDE_TYPES]


@contextlib.contextmanager
def _environment(**values: str):
    """Set environment variables for the kernels started inside the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# Longest single wait on a kernel socket; see _kernel_manager_class.
POLL_SLICE_S = 1.0


def _kernel_manager_class():
    """An ``AsyncKernelManager`` whose clients wait on the kernel's sockets in slices of ``POLL_SLICE_S``.

    The asyncio poller that nbclient waits with is edge-triggered: now and then (most often
    in a cell that opens widgets) the wake-up for a reply that has already arrived is lost,
    and the wait lasts the whole cell timeout before the final zero-timeout poll finds the
    reply (seen here: a 0.2 s widget cell "took" exactly the 900 s timeout, then went on).
    Waiting in short slices, each ending with that zero-timeout poll, bounds the cost of a
    lost wake-up at one slice; the cell timeout still applies to the sum.
    """
    from queue import Empty
    from time import monotonic

    from jupyter_client import AsyncKernelClient, AsyncKernelManager
    from jupyter_client.channels import AsyncZMQSocketChannel
    from traitlets import Type

    class SlicedChannel(AsyncZMQSocketChannel):
        async def get_msg(self, timeout: float | None = None) -> dict:
            deadline = None if timeout is None else monotonic() + timeout
            while True:
                left = POLL_SLICE_S if deadline is None else max(0.0, deadline - monotonic())
                try:
                    return await super().get_msg(timeout=min(POLL_SLICE_S, left))
                except Empty:
                    if deadline is not None and monotonic() >= deadline:
                        raise

    class SlicedClient(AsyncKernelClient):
        shell_channel_class = Type(SlicedChannel)
        iopub_channel_class = Type(SlicedChannel)
        control_channel_class = Type(SlicedChannel)

    class SlicedKernelManager(AsyncKernelManager):
        def client(self, **kwargs):  # nbclient sets client_class to the stock one: this wins
            self.client_factory = SlicedClient
            return super().client(**kwargs)

    return SlicedKernelManager


def execute(path: Path, output: Path, *, parameters: dict | None = None, timeout_s: int | None = 3600,
            inline: bool = True) -> str | None:
    """Run a notebook with papermill in its own folder, writing the executed copy to ``output``.

    ``parameters`` replace those of the ``parameters`` cell; ``inline`` runs the kernel with the
    inline matplotlib backend (figures embedded in the outputs). Returns ``"ename: evalue"`` of
    the first failing cell, or None; the executed copy is written either way, once, when the run
    ends (papermill would otherwise rewrite the whole notebook, figures and all, before and after
    every cell).
    """
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    backend = {"MPLBACKEND": INLINE_BACKEND} if inline else {}
    try:
        with _environment(**backend):
            papermill.execute_notebook(
                str(path), str(output), parameters=parameters or {}, kernel_name="python3",
                cwd=str(path.parent), progress_bar=False, execution_timeout=timeout_s,
                request_save_on_cell_execute=False, kernel_manager_class=_kernel_manager_class(),
            )
    except papermill.PapermillExecutionError as err:
        return f"{err.ename}: {err.evalue}"
    return None


def _units(markdown: str) -> list[str]:
    """Cut Markdown into the pieces a slide may end between: headings, paragraphs and top-level list items.

    Fenced code and ``$$`` display math are never cut. The pieces, joined, give back the text.
    """
    units, current, fence, math = [], [], False, False
    for line in markdown.splitlines(keepends=True):
        prose = not fence and not math
        heading = prose and HEADING.match(line) is not None
        starts = heading or (prose and (LIST_ITEM.match(line) or (current and not current[-1].strip())))
        if starts and current and line.strip():
            units.append("".join(current))
            current = []
        current.append(line)
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        elif not fence and line.count("$$") % 2:
            math = not math
        if heading:  # a heading is a piece of its own
            units.append("".join(current))
            current = []
    if current:
        units.append("".join(current))
    return units


def _words(text: str) -> int:
    return len(text.split())


def _chunks(markdown: str, max_words: int = MAX_SLIDE_WORDS) -> list[str]:
    """Markdown cut into slides: a new one at every heading, and wherever prose passes ``max_words``.

    A heading stays with what follows it; a single paragraph longer than ``max_words`` stays whole.
    """
    chunks: list[list[str]] = []
    for unit in _units(markdown):
        if not chunks:  # the first piece
            chunks.append([unit])
            continue
        last = chunks[-1]
        after_heading = HEADING.match(last[-1]) is not None  # a heading stays with what follows it
        heading_after_content = HEADING.match(unit) is not None and not after_heading and any(u.strip() for u in last)
        too_long = unit.strip() and not after_heading and _words("".join(last)) + _words(unit) > max_words
        if heading_after_content or too_long:
            chunks.append([unit])
        else:
            last.append(unit)
    return ["".join(chunk).strip("\n") for chunk in chunks]


def _chunk_slide_type(chunk: str, first_type: str, index: int) -> str:
    """The first chunk keeps its cell's slide type; a later one starts a slide at ``#``/``##``, else a sub-slide."""
    if index == 0:
        return first_type
    heading = HEADING.match(chunk)
    return "slide" if heading and len(heading.group(1)) <= 2 else "subslide"


def slide_deck(nb, max_words: int = MAX_SLIDE_WORDS):
    """A copy of ``nb`` for the slides, one idea per slide (see the module docstring).

    Every Markdown cell becomes one cell per chunk of :func:`_chunks`; code cells are kept as
    they are. Skipped and notes cells are not cut.
    """
    deck = nbformat.from_dict(nb)
    cells = []
    for cell in deck.cells:
        kind = cell.metadata.get("slideshow", {}).get("slide_type", "-")
        if cell.cell_type != "markdown" or kind in ("skip", "notes"):
            cells.append(cell)
            continue
        for k, chunk in enumerate(_chunks(cell.source, max_words)):
            part = nbformat.from_dict(cell)
            part.source = chunk
            part.metadata["slideshow"] = {"slide_type": _chunk_slide_type(chunk, kind, k)}
            if k and "id" in part:
                part.id = f"{cell.id}-{k}"
            cells.append(part)
    deck.cells = cells
    return deck


def linked_pages(nb, folder: Path = CHAPTERS) -> list[Path]:
    """The Markdown pages in ``folder`` that the notebook's Markdown links to (``[glossary](glossary.md)``)."""
    names = {name for cell in nb.cells if cell.cell_type == "markdown" for name in PAGE_LINK.findall(cell.source)}
    return sorted(folder / name for name in names if (folder / name).is_file())


def export(executed: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write ``NAME.html`` (the executed notebook) and ``NAME.slides.html`` (reveal.js) into ``out_dir``.

    Both load MathJax (and the slides reveal.js) from ``out_dir/_static/``, copied there from
    installed packages: the folder works offline, from ``file://``.
    """
    from nbconvert import HTMLExporter, SlidesExporter

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):  # papermill's: left out, like the parameters cell
            cell.metadata["slideshow"] = {"slide_type": "skip"}
    out_dir.mkdir(parents=True, exist_ok=True)
    lecture_assets.install(out_dir)
    for page in linked_pages(nb):  # the glossary the header links to, so the link works in the folder too
        shutil.copy2(page, out_dir / page.name)
    resources = {"lecture": {"mathjax": lecture_assets.url(lecture_assets.MATHJAX), "widget_note": WIDGET_NOTE}}
    templates = {"extra_template_basedirs": [str(TEMPLATES)], "extra_template_paths": [str(TEMPLATES)]}
    html_path, slides_path = out_dir / f"{executed.stem}.html", out_dir / f"{executed.stem}.slides.html"
    html, _ = HTMLExporter(template_name="lecture_page", **templates).from_notebook_node(nb, resources=resources)
    html_path.write_text(html, encoding="utf-8")
    slides, _ = SlidesExporter(template_name="lecture_slides", reveal_theme="white",  # white: its fonts are in the folder
                               reveal_url_prefix=lecture_assets.url(lecture_assets.REVEAL),
                               **templates).from_notebook_node(slide_deck(nb), resources=resources)
    slides_path.write_text(slides.replace("</head>", SLIDES_CSS + "</head>", 1), encoding="utf-8")
    return html_path, slides_path


@dataclass
class ChapterRun:
    """One chapter of a lecture build: where its files are, how long it ran, its first error."""

    name: str
    mode: str  # "lecture" or "smoke"
    seconds: float
    budget_s: float | None
    error: str | None
    executed: Path
    html: Path
    slides: Path


def run_chapter(path: Path, out_dir: Path = LECTURE_OUT, *, smoke: bool = False,
                timeout_s: int | None = 3600) -> ChapterRun:
    """Execute one chapter (lecture or smoke settings) and export its page and slides."""
    nb = nbformat.read(path, as_version=4)
    settings = course_settings(nb)
    executed = out_dir / f"{path.stem}.ipynb"
    start = time.perf_counter()
    error = execute(path, executed, parameters=settings.get("smoke", {}) if smoke else {}, timeout_s=timeout_s)
    seconds = time.perf_counter() - start
    html, slides = export(executed, out_dir)
    return ChapterRun(path.stem, "smoke" if smoke else "lecture", seconds, settings.get("budget_s") if smoke else None,
                      error, executed, html, slides)


def run_times_table(runs: Iterable[ChapterRun]) -> str:
    """The chapters' run times as a Markdown table, with a total row."""
    runs = list(runs)
    lines = ["| chapter | settings | seconds | smoke budget (s) | status |", "|---|---|---:|---:|---|"]
    for r in runs:
        budget = "-" if r.budget_s is None else f"{r.budget_s:g}"
        status = "ok" if r.error is None else r.error.replace("|", "/").replace("\n", " ")[:80]
        lines.append(f"| {r.name} | {r.mode} | {r.seconds:.1f} | {budget} | {status} |")
    lines.append(f"| total | | {sum(r.seconds for r in runs):.1f} | | |")
    return "\n".join(lines) + "\n"


def build(paths: Sequence[Path], out_dir: Path = LECTURE_OUT, *, smoke: bool = False,
          timeout_s: int | None = 3600, log=print) -> list[ChapterRun]:
    """Run every chapter in ``paths``, export each, and write ``out_dir/run_times.md``."""
    runs = []
    for path in paths:
        log(f"{path.stem}: running with {'smoke' if smoke else 'lecture'} settings ...")
        run = run_chapter(path, out_dir, smoke=smoke, timeout_s=timeout_s)
        log(f"{path.stem}: {run.seconds:.1f} s, {'ok' if run.error is None else run.error}")
        runs.append(run)
    (out_dir / "run_times.md").write_text(run_times_table(runs), encoding="utf-8")
    return runs
