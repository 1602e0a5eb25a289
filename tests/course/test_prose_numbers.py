"""Every measured figure in a chapter's prose comes from a cell of the same run.

A figure in Markdown source is typed by hand, so it goes stale the moment a student's run differs.
Chapters render their results from the run's own variables instead; what is left in the Markdown
must be listed in the notebook's ``dlwb.prose_numbers`` with its kind (see ``prose_numbers.py``).
No chapter describes the machine it was once run on.
"""

from __future__ import annotations

import nbformat
import pytest

from conftest import ROOT
from prose_numbers import KINDS, listing_keys, machine_remarks, measured_figures

CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def markdown_cells(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("PyTorch reached 97.5% and Keras 97.9 %.", ["97.5%", "97.9 %"]),
        ("The validation loss fell to 1.893, nanoGPT's to 1.8857.", ["1.893", "1.8857"]),
        ("One epoch takes 13.5 s, which is 1.88× slower; the run took 3 minutes.", ["13.5 s", "1.88×", "3 minutes"]),
        ("A 28×28 image, 60,000 of them, 10 classes, batch 128, lr 0.1, step 3.", []),
        ("Math is not prose: $-\\ln 0.3 = 1.204$ and $$\\beta_2 = 0.999$$, nor is `lr=0.001`.", []),
        ("A [link](https://example.org/v1.2.34/) and <!-- 12.5% --> stay quiet.", []),
    ],
)
def test_the_detector_finds_measured_looking_figures(text, expected):
    assert measured_figures(text) == expected


def test_the_detector_finds_remarks_about_a_machine():
    assert machine_remarks("On this machine (2-core, shared cores) it took long.") == [
        "On this machine", "2-core", "shared cores"]
    assert machine_remarks("A GPU runs it faster than a CPU.") == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_figure_in_the_prose_is_rendered_or_labelled(path):
    listed = nbformat.read(path, as_version=4).metadata.get("dlwb", {}).get("prose_numbers", {})
    bad_labels = {k: v for k, v in listed.items() if not (isinstance(v, str) and v.startswith(KINDS)
                                                          and len(v.split(":", 1)[1].strip()) >= 3)}
    assert not bad_labels, (f"{path.name}: each dlwb.prose_numbers label starts with one of {KINDS} and says "
                            f"what the figure is: {bad_labels}")
    found = [f for source in markdown_cells(path) for f in measured_figures(source)]
    unlisted = sorted({f for f in found if not set(listing_keys(f)) & set(listed)})
    assert not unlisted, (
        f"{path.name} states figures in Markdown that no cell of the run computed: {unlisted}. Render a "
        f"measured figure from the run's variables (e.g. display(Markdown(f'...{{acc:.1%}}...'))); list a "
        f"figure from elsewhere, a setting or a worked example in metadata dlwb.prose_numbers with its kind.")
    used = {key for f in found for key in listing_keys(f)}
    stale = sorted(set(listed) - used)
    assert not stale, f"{path.name}: dlwb.prose_numbers lists figures the prose no longer states: {stale}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_describes_the_machine_it_once_ran_on(path):
    remarks = [r for source in markdown_cells(path) for r in machine_remarks(source)]
    assert not remarks, (f"{path.name} describes a machine the reader does not have: {remarks}. "
                         f"Say what the reader's run measures, from the run's own values.")
