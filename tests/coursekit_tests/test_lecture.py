"""Lecture mode: the slide rule, the tagging, one idea per slide, the offline assets, the run-time table and the CLI end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import ROOT
from coursekit import lecture, lecture_assets


def notebook():
    return new_notebook(cells=[
        new_markdown_cell("# 99 · Title\n\nWhat you'll learn"),
        new_code_cell("SEED = 0", metadata={"tags": ["parameters"]}),
        new_markdown_cell("## An idea"),
        new_markdown_cell("Some text."),
        new_code_cell("x = 1 + 1"),
        new_code_cell("plt.plot([1, 2]);"),
        new_code_cell("def plot_curve(x):\n    plt.plot(x)"),
        new_code_cell("trainer = Trainer(net, opt, loss, callbacks=[plots.LivePlot()])"),
        new_code_cell("ipywidgets.interact(show, z=ipywidgets.FloatSlider());"),
        new_markdown_cell("### A detail"),
    ])


def test_slide_rule():
    nb = notebook()
    assert [lecture.slide_type(c, i) for i, c in enumerate(nb.cells)] == [
        "slide", "skip", "slide", "-", "-", "subslide", "-", "-", "subslide", "subslide"]


def test_tag_slides_writes_every_cell_once(tmp_path):
    path = tmp_path / "99_demo.ipynb"
    nbformat.write(notebook(), path)
    assert lecture.untagged_cells(nbformat.read(path, as_version=4)) == list(range(10))
    assert lecture.tag_slides_file(path) == 10
    assert lecture.untagged_cells(nbformat.read(path, as_version=4)) == []
    before = path.read_bytes()
    assert lecture.tag_slides_file(path) == 0 and path.read_bytes() == before  # idempotent: nothing rewritten


HEADER = """# 99 · A chapter

An opening paragraph of the chapter, short enough for the title slide.

## What you'll learn
- Item one of the list, with $x^2$ in it.
- Item two of the list.
- Item three, which is long enough to push the list past the limit of the slide: one two three four five.

## Prerequisites
Chapter 98.

```python
x = 1

y = 2  # a blank line inside code: never cut
```
"""


def test_markdown_is_cut_between_headings_paragraphs_and_items_and_loses_nothing():
    units = lecture._units(HEADER)
    assert "".join(units) == HEADER
    assert units[0] == "# 99 · A chapter\n" and units[3].startswith("## What")
    assert [u for u in units if u.startswith("- ")] == [
        "- Item one of the list, with $x^2$ in it.\n", "- Item two of the list.\n",
        "- Item three, which is long enough to push the list past the limit of the slide: one two three four five.\n\n"]
    assert any(u.startswith("```python") and u.rstrip().endswith("```") for u in units)  # the fence is one piece


def test_slide_chunks_start_at_headings_and_cap_the_words():
    chunks = lecture._chunks(HEADER, max_words=20)
    assert chunks[0].startswith("# 99 · A chapter") and "opening paragraph" in chunks[0]  # a heading keeps what follows
    assert chunks[1].startswith("## What you'll learn") and "Item two" in chunks[1] and "Item three" not in chunks[1]
    assert chunks[2].startswith("- Item three")  # past 20 words: the rest of the list continues below
    assert chunks[3].startswith("## Prerequisites") and chunks[3].rstrip().endswith("```")
    assert [len(c.split()) <= 20 for c in chunks[:3]] == [True, True, False]  # over only as one whole item
    assert [w for c in chunks for w in c.split()] == HEADER.split()  # every word, in order, once
    assert lecture._chunks("One paragraph of seven words, too long.", max_words=3) == [
        "One paragraph of seven words, too long."]  # one paragraph is never cut


def test_slide_deck_gives_each_chunk_its_slide_type_and_leaves_the_notebook_alone():
    nb = new_notebook(cells=[new_markdown_cell(HEADER, metadata={"slideshow": {"slide_type": "slide"}}),
                             new_code_cell("SEED = 0", metadata={"slideshow": {"slide_type": "skip"}}),
                             new_markdown_cell("### A detail", metadata={"slideshow": {"slide_type": "subslide"}})])
    before = nbformat.writes(nb)
    deck = lecture.slide_deck(nb, max_words=20)
    assert nbformat.writes(nb) == before
    assert [(c.cell_type, c.metadata.slideshow.slide_type) for c in deck.cells] == [
        ("markdown", "slide"), ("markdown", "slide"), ("markdown", "subslide"), ("markdown", "slide"),
        ("code", "skip"), ("markdown", "subslide")]
    assert len({c.id for c in deck.cells}) == len(deck.cells)  # unique cell ids
    nbformat.validate(deck)


def test_chapter_headers_become_several_slides():
    nb = nbformat.read(ROOT / "notebooks" / "03_backprop_mlp.ipynb", as_version=4)
    deck = lecture.slide_deck(nb)
    header = [c for c in deck.cells if c.id == nb.cells[0].id or c.id.startswith(f"{nb.cells[0].id}-")]
    assert len(header) >= 3 and header[0].source.startswith("# 03")
    assert any(c.source.startswith("## What you'll learn") for c in header)


def test_assets_are_copied_once_and_a_missing_package_is_named(tmp_path, monkeypatch):
    written = lecture_assets.install(tmp_path)
    assert written == [tmp_path / "_static" / "mathjax", tmp_path / "_static" / "reveal.js"]
    assert (tmp_path / "_static/mathjax/MathJax.js").is_file()
    assert (tmp_path / "_static/mathjax/config/TeX-AMS-MML_HTMLorMML-full.js").is_file()
    assert (tmp_path / "_static/reveal.js/dist/reveal.js").read_text()[:40].find("reveal.js 5") >= 0
    assert (tmp_path / "_static/reveal.js/plugin/notes/notes.js").is_file()
    assert lecture_assets.install(tmp_path) == []  # the same versions: nothing copied again
    (tmp_path / "_static/reveal.js/VERSION").write_text("sphinx-revealjs 0.0\n")
    assert lecture_assets.install(tmp_path) == [tmp_path / "_static" / "reveal.js"]
    missing = lecture_assets.Asset("x", "no-such-distribution-here", "x", "x.js", ())
    monkeypatch.setattr(lecture_assets, "ASSETS", (lecture_assets.MATHJAX, missing))
    with pytest.raises(FileNotFoundError, match="no-such-distribution-here, which is not installed: run `make env`"):
        lecture_assets.install(tmp_path)  # named, not importlib's PackageNotFoundError


def test_exported_page_and_slides_load_nothing_from_the_network(tmp_path):
    html_path, slides_path = lecture.export(ROOT / "notebooks" / "01_losses.ipynb", tmp_path)
    for path in (html_path, slides_path):
        text = path.read_text(encoding="utf-8")
        loaded = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"']([^\"']+)", text)
        assert loaded and not [u for u in loaded if re.match(r"(?:https?:)?//", u)], loaded
        assert not re.search(r"@import\s+url\((?:[\"'])?(?:https?:)?//", text)
        assert "_static/mathjax/MathJax.js?config=" in text
    slides = slides_path.read_text(encoding="utf-8")
    assert '<script src="_static/reveal.js/dist/reveal.js"></script>' in slides and "require(" not in slides
    assert "_static/reveal.js/dist/theme/white.css" in slides
    pages = set(re.findall(r"href=[\"']([\w.-]+\.md)[\"'#]", html_path.read_text(encoding="utf-8")))
    assert "glossary.md" in pages, "chapter 01's header links the glossary"
    assert all((tmp_path / page).is_file() for page in pages), f"linked pages missing from the folder: {pages}"


def test_chapters_by_name_or_number(tmp_path):
    for name in ("00_setup", "01_losses", "README"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in lecture.chapters(folder=tmp_path)] == ["00_setup", "01_losses"]
    assert [p.stem for p in lecture.chapters(["01"], tmp_path)] == ["01_losses"]
    assert [p.stem for p in lecture.chapters(["00_setup"], tmp_path)] == ["00_setup"]
    with pytest.raises(ValueError, match="no chapter named \\['02'\\]"):
        lecture.chapters(["02"], tmp_path)


def test_run_times_table(tmp_path):
    runs = [lecture.ChapterRun("00_setup", "smoke", 12.34, 60, None, tmp_path, tmp_path, tmp_path),
            lecture.ChapterRun("01_losses", "smoke", 3.0, None, "ValueError: bad | worse",
                               tmp_path, tmp_path, tmp_path)]
    assert lecture.run_times_table(runs).splitlines() == [
        "| chapter | settings | seconds | smoke budget (s) | status |",
        "|---|---|---:|---:|---|",
        "| 00_setup | smoke | 12.3 | 60 | ok |",
        "| 01_losses | smoke | 3.0 | - | ValueError: bad / worse |",
        "| total | | 15.3 | | |",
    ]


@pytest.mark.notebook
def test_cli_builds_pages_slides_and_run_times(tmp_path):
    out = tmp_path / "lecture"
    command = [sys.executable, "-m", "coursekit", "lecture", "--smoke", "--only", "00_setup", "--out", str(out)]
    # MPLBACKEND=Agg as under `make test`: lecture mode must still embed figures (inline backend).
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "00_setup.html", "00_setup.ipynb", "00_setup.slides.html", "_static", "glossary.md", "run_times.md"]
    html, slides = (out / "00_setup.html").read_text(), (out / "00_setup.slides.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # the MNIST samples and the live training plot, at least
    assert slides.count("<section") > 5 and "reveal.js" in slides and lecture.SLIDES_CSS in slides
    assert "celltag_injected-parameters" in html and "celltag_injected-parameters" not in slides
    assert "| 00_setup | smoke |" in (out / "run_times.md").read_text()


def test_kernel_waits_in_slices_and_keeps_the_deadline(monkeypatch):
    """A wait on a kernel socket is cut into POLL_SLICE_S pieces, yet times out at its own deadline."""
    import asyncio
    import time
    from queue import Empty

    import zmq
    import zmq.asyncio
    from jupyter_client.session import Session

    monkeypatch.setattr(lecture, "POLL_SLICE_S", 0.2)
    manager = lecture._kernel_manager_class()()
    client = manager.client()
    channel_class = type(client.shell_channel)
    assert channel_class is type(client.iopub_channel) and channel_class.__name__ == "SlicedChannel"

    async def scenario():
        ctx = zmq.asyncio.Context()
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        port = a.bind_to_random_port("tcp://127.0.0.1")
        b.connect(f"tcp://127.0.0.1:{port}")
        session = Session()
        channel = channel_class(a, session)
        start = time.perf_counter()
        with pytest.raises(Empty):
            await channel.get_msg(timeout=0.7)  # nothing comes: several slices, then Empty
        waited = time.perf_counter() - start
        asyncio.get_running_loop().call_later(0.5, lambda: session.send(b, "execute_reply", {"status": "ok"}))
        msg = await channel.get_msg(timeout=None)  # arrives after two slices
        a.close(linger=0), b.close(linger=0)
        ctx.term()
        return waited, msg

    waited, msg = asyncio.run(scenario())
    assert 0.7 <= waited < 0.7 + 0.5, f"Empty after {waited:.2f} s for a 0.7 s timeout (slice 0.2 s)"
    assert msg["header"]["msg_type"] == "execute_reply" and msg["content"] == {"status": "ok"}
