"""JupyterLab in a real browser: the chapters' widgets, live training views and no errors.

One JupyterLab server (loopback, random token, ``--allow-root``) serves copies of chapters
whose parameters cell also holds the chapter's smoke settings; Debian's Chromium, headless,
is driven through Playwright (its own browser downloads are never used). Each test opens a
chapter, runs all its cells from the Run menu and checks what a student would see.
Every chapter is run this way: 00 by its own test (the training views), the others by
:func:`test_chapter_runs_and_its_explorer_reacts` (every widget explorer moved and redrawn). Screenshots go to
``build/screenshots/`` (git-ignored).

Browser console messages of type ``error`` fail a test, except those in
:data:`HARMLESS_CONSOLE_ERRORS`. The tests share one server, so they are kept on one
``pytest-xdist`` worker (``xdist_group``; ``--dist loadgroup`` in pyproject.toml).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from chromium import CHROMIUM, CHROMIUM_FLAGS, sync_playwright
from conftest import ROOT
from notebook_harness import BUILD, parameters_cell, smoke_parameters

SCREENSHOTS = BUILD / "screenshots"
CHAPTERS = tuple(sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
OWN_TESTS = ("00_setup",)  # chapters with a test of their own below
# Console errors that do not come from the course and do not affect it, each with its reason.
HARMLESS_CONSOLE_ERRORS = (
    # The browser asks for /favicon.ico before JupyterLab sets its own icon.
    re.compile(r"favicon"),
)
# JupyterLab settings for the test server: every cell kept in the page (so all outputs can be
# inspected) and no news or update checks (the machine may be offline).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}
RUN_ALL_TIMEOUT_S = 150
START_TIMEOUT_S = 20  # no cell started by then: choose Run All again (see run_all_cells)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -r requirements.txt)"),
]


def with_smoke_parameters(source: Path, target: Path) -> None:
    """Copy a chapter, appending its smoke settings to the parameters cell (as papermill would)."""
    nb = nbformat.read(source, as_version=4)
    cell = parameters_cell(nb)
    smoke = smoke_parameters(nb)
    cell.source += "\n# smoke settings (tests/course/test_browser.py)\n" + "".join(f"{k} = {v!r}\n" for k, v in smoke.items())
    nbformat.write(nb, target)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running ``jupyter lab`` server on the loopback interface."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.token, self.port = root, secrets.token_hex(16), free_port()
        settings = home / "settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the browser uses the inline backend
        env.update(JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"))
        self.log = (home / "lab.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.token={self.token}",
             f"--port={self.port}", "--ServerApp.ip=127.0.0.1", "--allow-root", f"--ServerApp.root_dir={root}",
             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
             "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.home = home

    def url(self, path: str, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}?{query}token={self.token}"

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url("/api/status"), timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer /api/status within {timeout_s} s:\n{self.output()}")

    def shutdown_kernels(self) -> None:
        """Shut down every kernel (one per opened chapter): chapters hold a GB or more each."""
        with urllib.request.urlopen(self.url("/api/kernels"), timeout=10) as response:
            kernels = json.load(response)
        for kernel in kernels:
            request = urllib.request.Request(self.url(f"/api/kernels/{kernel['id']}"), method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()

    def output(self) -> str:
        self.log.flush()
        return (self.home / "lab.log").read_text()[-4000:]

    def stop(self) -> None:
        """Stop the server and its kernels: the whole process group, by the server's PID."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab-root")
    for name in CHAPTERS:
        with_smoke_parameters(ROOT / "notebooks" / f"{name}.ipynb", root / f"{name}.ipynb")
    shutil.copytree(ROOT / "notebooks" / "scripts", root / "scripts")  # programs chapters launch (09)
    server = Lab(root, tmp_path_factory.mktemp("lab-home"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


class ConsoleErrors(list):
    """Console ``error`` messages and uncaught page errors, minus the harmless ones."""

    def __init__(self, page) -> None:
        super().__init__()
        page.on("console", lambda msg: msg.type == "error" and self.record(f"console: {msg.text}"))
        page.on("pageerror", lambda err: self.record(f"page error: {err}"))

    def record(self, text: str) -> None:
        if not any(pattern.search(text) for pattern in HARMLESS_CONSOLE_ERRORS):
            self.append(text)


@pytest.fixture
def page(browser_context, lab):
    page = browser_context.new_page()
    page.console_errors = ConsoleErrors(page)
    yield page
    page.close()
    lab.shutdown_kernels()


NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"  # the notebook in the visible tab


def open_notebook(page, lab: Lab, name: str) -> None:
    """Open a chapter alone in a fresh workspace (no tabs restored from another test)."""
    page.goto(lab.url(f"/lab/workspaces/{name}/tree/{name}.ipynb", query="reset&"))
    page.wait_for_selector(f"{NOTEBOOK} .jp-Cell", timeout=60_000)
    # The kernel is ready when the toolbar's indicator says "idle".
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
    page.locator(f"{NOTEBOOK} .jp-Cell").first.click()  # the notebook is the current widget for the Run menu


def run_all_cells(page) -> None:
    """Run → Run All Cells, then wait until every code cell has an execution count.

    On a busy machine the first requests on a fresh kernel connection are now and then left
    unread by the kernel (ipykernel 7: every cell stays ``[ ]`` and the kernel idle). If no
    cell has started after :data:`START_TIMEOUT_S`, Run All is chosen again: the new request
    wakes the kernel's socket.
    """
    def choose_run_all():
        page.click(".lm-MenuBar-item:has-text('Run')")
        page.locator(".lm-Menu-item .lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()

    choose_run_all()
    started = time.monotonic()
    deadline = started + RUN_ALL_TIMEOUT_S
    retries = 0
    while time.monotonic() < deadline:
        prompts = page.locator(f"{NOTEBOOK} .jp-CodeCell .jp-InputPrompt").all_inner_texts()
        if prompts and all(re.fullmatch(r"\s*\[\d+\]:\s*", p) for p in prompts):
            return
        if (all(re.fullmatch(r"\s*\[ \]:\s*", p) for p in prompts) and retries < 2
                and time.monotonic() - started > START_TIMEOUT_S * (retries + 1)):
            retries += 1
            choose_run_all()
        errors = error_outputs(page)
        if errors:
            screenshot(page, "run_all_failed")
            raise AssertionError(f"a cell failed:\n{errors[0][-3000:]}")
        time.sleep(0.5)
    screenshot(page, "run_all_failed")
    raise AssertionError(f"not every cell ran within {RUN_ALL_TIMEOUT_S} s; prompts: {prompts}")


def error_outputs(page) -> list[str]:
    """Texts of error outputs (tracebacks) in the open notebook."""
    return page.locator(f"{NOTEBOOK} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").filter(
        has_text=re.compile(r"Traceback|Error:")).all_inner_texts()


def screenshot(target, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    target.screenshot(path=str(path))
    return path


def test_training_chapter_shows_progress_and_live_plot(lab, page):
    """Chapter 00 with smoke settings: every cell runs, a tqdm bar and the live plot appear."""
    open_notebook(page, lab, "00_setup")
    # The Trainer's bars close after each epoch (leave=False): record any that ever appears.
    page.evaluate("""() => {
        window.sawProgressBar = false;
        new MutationObserver(() => {
            if (document.querySelector('.widget-hprogress')) window.sawProgressBar = true;
        }).observe(document.body, {childList: true, subtree: true});
    }""")
    run_all_cells(page)
    screenshot(page, "00_setup_after_run_all")
    assert not error_outputs(page), error_outputs(page)
    assert page.evaluate("window.sawProgressBar"), "no tqdm progress bar widget was shown while training"
    training = page.locator(f"{NOTEBOOK} .jp-CodeCell").filter(has_text="plots.LivePlot()").first
    live_plot = training.locator(".jp-OutputArea-output img")
    assert live_plot.count() == 1, "the training cell should show one live plot, updated in place"
    box = live_plot.bounding_box()
    assert box["width"] > 300 and box["height"] > 100, box
    screenshot(training, "00_setup_live_plot")
    assert not page.console_errors, page.console_errors


def explorer_figure_changes(page, explorer, name: str) -> None:
    """Move the explorer's first slider to one end (End, or Home where it is already there) and
    wait until its figure is redrawn."""
    figure = explorer.locator("img").first
    figure.wait_for(timeout=30_000)
    before = figure.get_attribute("src")
    screenshot(explorer, f"{name}_explorer_before")
    readout = explorer.locator(".widget-slider .widget-readout").first
    handle = explorer.locator(".widget-slider .noUi-handle").first
    value = readout.inner_text().strip()
    for key in ("End", "Home"):
        handle.focus()
        page.keyboard.press(key)
        try:
            page.wait_for_function("([el, v]) => el.innerText.trim() !== v", arg=[readout.element_handle(), value],
                                   timeout=3_000)
            break
        except Exception:  # already at that end: try the other
            continue
    assert readout.inner_text().strip() != value, f"{name}: the slider did not move from {value}"
    page.wait_for_function(
        "([el, before]) => el.querySelector('img') && el.querySelector('img').src !== before",
        arg=[explorer.element_handle(), before], timeout=60_000)
    screenshot(explorer, f"{name}_explorer_after")


@pytest.mark.parametrize("name", [c for c in CHAPTERS if c not in OWN_TESTS])
def test_chapter_runs_and_its_explorer_reacts(lab, page, name):
    """Every cell of the chapter runs without an error; its ipywidgets explorer, if it has one,
    renders and redraws when a slider moves; the browser logs no error."""
    open_notebook(page, lab, name)
    run_all_cells(page)
    screenshot(page, f"{name}_after_run_all")
    assert not error_outputs(page), error_outputs(page)
    explorers = page.locator(f"{NOTEBOOK} .jp-OutputArea-output .widget-interact").filter(
        has=page.locator(".widget-slider"))
    source = nbformat.read(lab.root / f"{name}.ipynb", as_version=4)
    expected = sum("ipywidgets.interact(" in c.source for c in source.cells if c.cell_type == "code")
    assert explorers.count() == expected, f"{name}: {explorers.count()} explorers rendered, {expected} in the code"
    for i in range(expected):
        explorer = explorers.nth(i)
        explorer.scroll_into_view_if_needed()
        explorer_figure_changes(page, explorer, f"{name}_{i}")
    assert not page.console_errors, page.console_errors


# Lecture output offline: a chapter's page and slides opened from file:// with every request that
# is not a file blocked (and recorded), as in a room without network.
OFFLINE_CHAPTER = "01_losses"  # the most mathematics per page
MATH_TYPESET = """() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0
    && document.querySelectorAll('script[type^="math/tex"]').length > 0"""


@pytest.fixture(scope="module")
def lecture_folder(tmp_path_factory):
    from coursekit import lecture

    out = tmp_path_factory.mktemp("lecture")
    lecture.export(ROOT / "notebooks" / f"{OFFLINE_CHAPTER}.ipynb", out)
    return out


@pytest.fixture
def offline_page(browser_context):
    """A page on which any request that is not for a file is aborted and recorded in ``page.outside``."""
    page = browser_context.new_page()
    page.outside = []

    def only_files(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    yield page
    page.close()


def math_is_typeset(page) -> None:
    """Every TeX expression became MathJax output, none is an error, and no ``$...$`` is left as text."""
    page.wait_for_function(MATH_TYPESET, timeout=60_000)
    sources = page.locator('script[type^="math/tex"]').count()
    rendered = page.locator(".MathJax, .MathJax_Display").count()
    assert rendered >= sources > 10, (rendered, sources)
    assert page.locator(".MathJax_Error, .noError").count() == 0
    text = "\n".join(page.locator(".jp-RenderedMarkdown").all_inner_texts())
    assert not re.findall(r"\$[^$\n]+\$", text), re.findall(r"\$[^$\n]+\$", text)[:5]


def test_lecture_page_typesets_math_offline(lecture_folder, offline_page):
    offline_page.goto((lecture_folder / f"{OFFLINE_CHAPTER}.html").as_uri())
    math_is_typeset(offline_page)
    screenshot(offline_page, "lecture_page_offline")
    assert offline_page.outside == [] and offline_page.errors == []


def test_lecture_slides_start_reveal_offline_and_move_on_arrow_keys(lecture_folder, offline_page):
    page = offline_page
    page.goto((lecture_folder / f"{OFFLINE_CHAPTER}.slides.html").as_uri())
    page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=30_000)
    assert page.locator(".reveal .slides section").count() > 20
    assert page.evaluate("Reveal.getIndices()")["h"] == 0
    assert page.locator("section.present h1").inner_text().startswith(OFFLINE_CHAPTER[:2])  # the title slide
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => Reveal.getIndices().h === 1", timeout=5_000)
    page.keyboard.press("ArrowDown")  # the header's continuation, below the title of its slide
    math_is_typeset(page)
    screenshot(page, "lecture_slides_offline")
    assert page.outside == [] and page.errors == []


def test_rise_slideshow_runs_a_cell_on_the_slide(lab, page):
    """RISE (jupyterlab-rise), started from the notebook's toolbar in JupyterLab, presents the
    chapter with its kernel: a code cell runs on its slide.

    The console errors of this page are not checked: RISE's own application loads the
    JupyterLab extensions of the environment, and those built for JupyterLab itself (the
    notebook, nbgrader and widget extensions) log that modules they share are missing.
    """
    open_notebook(page, lab, "00_setup")
    page.click(".jp-NotebookPanel:not(.lm-mod-hidden) [data-jp-item-name='RISE-button'] jp-button")
    slideshow = page.wait_for_selector("iframe[src*='/rise/00_setup.ipynb']", timeout=30_000).content_frame()
    slideshow.wait_for_selector(".reveal.ready .slides section", timeout=90_000)
    assert slideshow.locator(".reveal .slides section").count() > 5
    cell = slideshow.locator(".reveal .jp-CodeCell").filter(has_text="describe_environment()").first
    for _ in range(12):  # to the cell's slide
        if cell.evaluate("el => !!el.closest('section.present:not(.stack)')"):
            break
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(500)
    assert cell.evaluate("el => !!el.closest('section.present')"), "the cell's slide was not reached"
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    slideshow.wait_for_function("el => /\\[\\d+\\]/.test(el.innerText)",
                                arg=cell.locator(".jp-InputPrompt").element_handle(), timeout=120_000)
    screenshot(page, "rise_cell_ran")
    outputs = "\n".join(cell.locator(".jp-OutputArea-output").all_inner_texts())
    assert "torch" in outputs and "Traceback" not in outputs, outputs[-2000:]
