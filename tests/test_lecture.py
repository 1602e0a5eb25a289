"""Lecture mode: the slide rule, the tagging, the run-time table and the CLI end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import ROOT
from coursekit import lecture


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
        "00_setup.html", "00_setup.ipynb", "00_setup.slides.html", "run_times.md"]
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
