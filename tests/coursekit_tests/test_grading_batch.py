"""A class graded through the command line: one student's trouble never costs another's result.

The toy lab of ``test_grading`` (``double`` worth 2 points, ``mean_sq`` worth 3). One batch,
graded once with ``python -m coursekit grade`` run in this process, holds students whose
submissions broke whole batches before: text the grader could not write, containers that
are not exactly ``tuple`` or ``dict``, endless loops in a cell and in a call, malformed
messages from the sandbox, and cells added outside the exercises. The class arrives as an
instructor's Mac makes it: one zip from Finder's "Compress", with its ``__MACOSX/`` folder,
``._`` files and ``.DS_Store``, a linked file, and a student folder named in Chinese.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sqlite3
import zipfile

import nbformat
import pytest

from conftest import results_by_student
from coursekit.__main__ import main
from coursekit.grading.sandbox import isolation_prefix
from test_grading import GOOD_DOUBLE, GOOD_MEAN, LAB, master_notebook, solutions_folder, student_copy

# One worker runs this whole module (--dist loadgroup), so its module fixtures, which grade real
# submissions in the sandbox, are built once per run rather than once per worker.
pytestmark = [pytest.mark.skipif(isolation_prefix() is None, reason="needs Linux namespaces (unshare)"),
              pytest.mark.xdist_group("grading_batch")]

SURROGATE_TEXT = "b'caf\\xe9'.decode('utf-8', 'surrogateescape')"  # 'caf\udce9': not encodable as UTF-8
LONE_SURROGATE = "@lone-surrogate@"  # written into the notebook's JSON as the escape \\udce9

STUDENTS = {
    # Sorted first, so a batch that stops at this student leaves everyone else without feedback.
    "a_surrogate": student_copy(f"    raise ValueError({SURROGATE_TEXT})",
                                GOOD_MEAN + f"\nraise RuntimeError({SURROGATE_TEXT})"),
    "correct": student_copy(GOOD_DOUBLE, GOOD_MEAN),
    # A correct answer in a container that is not exactly a tuple, or a float that is a subclass.
    "containers": student_copy(
        "    import collections\n    x = 2 * np.asarray(x, dtype=float)\n"
        "    return collections.namedtuple('Doubled', [f'v{i}' for i in range(len(x))])(*x)",
        "    class Mean(float):\n        pass\n    return Mean((np.asarray(x, dtype=float) ** 2).mean())"),
    # An endless loop in one exercise cell, and one in a function that a test calls.
    "loop_in_cell": student_copy(GOOD_DOUBLE + "\nprint('about to loop', flush=True)\nwhile True:\n    pass", GOOD_MEAN),
    "loop_in_call": student_copy("    while True:\n        pass", GOOD_MEAN),
    # Writes a message nested too deeply for the grader's JSON parser straight to the pipe the worker answers on.
    "malformed_message": student_copy(GOOD_DOUBLE, GOOD_MEAN, prefix=(
        "import os, sys\nos.write(int(sys.argv[2]), b'[' * 100_000 + b'\\n')\n")),
    # Code in a cell of its own is not run: only exercise cells are taken from a submission.
    "extra_cells": student_copy(GOOD_DOUBLE, GOOD_MEAN, extra_cells=[
        (3, nbformat.v4.new_code_cell("import numpy as np\nhelper = 2")),
        (5, nbformat.v4.new_code_cell("   \n"))]),
    # A written answer holding a lone surrogate: valid JSON (an escape), but no UTF-8 can encode it.
    "written_surrogate": student_copy(GOOD_DOUBLE, GOOD_MEAN, answer=f"Squares are never negative, caf{LONE_SURROGATE}."),
    "张伟": student_copy(GOOD_DOUBLE, GOOD_MEAN, answer="平方总是非负的。"),
}
# The rest of a class of 50: quick students, each a variant of one above or with a written answer.
CLASS_VARIANTS = (
    lambda i: student_copy(GOOD_DOUBLE, GOOD_MEAN, answer=f"Every square is at least zero (student {i})."),
    lambda i: student_copy(GOOD_DOUBLE, None, answer=f"<b>{i}</b>: squares are non-negative ~~~"),
    lambda i: student_copy(None, GOOD_MEAN, answer="   "),
    lambda i: STUDENTS["containers"],
    lambda i: STUDENTS["extra_cells"],
)
STUDENTS |= {f"class_{i:02d}": CLASS_VARIANTS[i % len(CLASS_VARIANTS)](i) for i in range(50 - len(STUDENTS))}


def finder_zip(path, notebooks):
    """``path`` as Finder's "Compress" makes it of a folder ``class/``, with one linked notebook."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("class/", "")
        for name, nb in notebooks.items():
            text = nbformat.writes(nb).replace(LONE_SURROGATE, "\\udce9")
            zf.writestr(f"class/{name}/{LAB}.ipynb", text.encode("utf-8"))
            zf.writestr(f"__MACOSX/class/{name}/._{LAB}.ipynb", b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
        zf.writestr("class/.DS_Store", b"\x00\x00\x00\x01Bud1")
        link = zipfile.ZipInfo(f"class/linked/{LAB}.ipynb")
        link.create_system, link.external_attr = 3, 0o120777 << 16  # a Unix symbolic link
        zf.writestr(link, f"../correct/{LAB}.ipynb")
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    solutions, out = solutions_folder(root), root / "out"
    archive = finder_zip(root / "class.zip", STUDENTS)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["grade", str(archive), "--lab", LAB, "--solutions", str(solutions), "--out", str(out),
                     "--jobs", "2", "--quiet", "--cell-timeout", "4", "--call-timeout", "4"])
    db = sqlite3.connect(out / "gradebook.sqlite")
    rows = {r[0]: r[1:] for r in db.execute("SELECT student_id, score, status, message FROM latest")}
    tests = results_by_student(db)
    db.close()
    return {"code": code, "printed": printed.getvalue(), "rows": rows, "tests": tests, "out": out}


def feedback_md(batch, student):
    from coursekit.grading.grade import _slug  # ASCII file names: a name in any script is kept inside, hashed outside

    return (batch["out"] / "feedback" / LAB / f"{_slug(student)}.md").read_text(encoding="utf-8")


def test_unencodable_text_from_a_submission_is_sanitised_and_the_batch_finishes(batch):
    assert batch["code"] == 0, batch["printed"]
    assert len(STUDENTS) >= 50 and set(batch["rows"]) == set(STUDENTS)  # one result per student of the class
    with open(batch["out"] / f"{LAB}.csv", newline="", encoding="utf-8") as f:
        assert {r["student"] for r in csv.DictReader(f)} == set(STUDENTS)
    for path in (batch["out"] / "feedback" / LAB).iterdir():
        assert path.stat().st_size > 0, f"{path.name} is empty"
    assert batch["rows"]["correct"][0] == 5
    assert batch["rows"]["a_surrogate"][0] == 3
    assert batch["tests"]["a_surrogate"]["test_double"][2] == "your code raised ValueError: caf\ufffd"
    assert "RuntimeError: caf\ufffd" in feedback_md(batch, "a_surrogate")


def test_a_student_whose_results_cannot_be_written_is_an_error_of_that_student_only(tmp_path, monkeypatch):
    from coursekit.grading import feedback, grade
    from coursekit.grading.sandbox import Limits

    solutions, subs, out = solutions_folder(tmp_path), tmp_path / "submissions", tmp_path / "out"
    for name in ("ann", "bob"):
        (subs / name).mkdir(parents=True)
        nbformat.write(student_copy(GOOD_DOUBLE, GOOD_MEAN), subs / name / f"{LAB}.ipynb")
    write = feedback.write

    def failing_for_ann(folder, slug, recorded):
        if recorded.student == "ann":
            raise OSError("disk full")
        return write(folder, slug, recorded)

    monkeypatch.setattr(grade.feedback, "write", failing_for_ann)
    run = grade.grade_lab(subs, LAB, solutions=solutions, out=out, limits=Limits(cell_timeout_s=20),
                          jobs=2, progress=False)
    assert run.errors == 1 and run.graded == 1
    assert any("ann" in p and "disk full" in p for p in run.problems)
    db = sqlite3.connect(out / "gradebook.sqlite")
    rows = dict(db.execute("SELECT student_id, score FROM latest").fetchall())
    db.close()
    assert rows == {"ann": 5.0, "bob": 5.0}  # ann's grade is recorded; only her feedback failed
    assert list((out / "feedback" / LAB).glob("bob-*.md")) and (out / f"{LAB}.csv").exists()
    assert not list((out / "feedback" / LAB).glob("ann-*"))


def test_a_crashed_programs_output_that_cannot_be_written_costs_only_that_file(tmp_path, monkeypatch):
    from coursekit.grading import grade
    from coursekit.grading.sandbox import Limits

    solutions, subs, out = solutions_folder(tmp_path), tmp_path / "submissions", tmp_path / "out"
    (subs / "ann").mkdir(parents=True)
    nbformat.write(student_copy("    print('about to fail', flush=True)\n    raise RuntimeError('boom')", GOOD_MEAN),
                   subs / "ann" / f"{LAB}.ipynb")

    def disk_full(folder, student, result):
        assert "about to fail" in result.output  # there was output to keep
        raise OSError("disk full")

    monkeypatch.setattr(grade, "write_output", disk_full)
    run = grade.grade_lab(subs, LAB, solutions=solutions, out=out, limits=Limits(cell_timeout_s=20),
                          jobs=1, progress=False)
    assert run.graded == 1 and run.errors == 0 and run.outputs == {}
    assert any(p == "ann: could not keep what the program printed (disk full)" for p in run.problems)
    assert (out / f"{LAB}.csv").exists() and run.summary.exists()


def test_written_answers_of_a_class_await_review_or_are_not_attempted(batch):
    statuses = {s: t["written_sign"][1] for s, t in batch["tests"].items()}
    assert statuses["class_00"] == statuses["class_01"] == "needs review"
    assert statuses["class_02"] == statuses["correct"] == "not attempted"
    assert batch["rows"]["class_00"][0] == 5 and batch["rows"]["class_01"][0] == 2
    assert "~~~~\n<b>1</b>: squares are non-negative ~~~\n~~~~" in feedback_md(batch, "class_01")


def test_a_namedtuple_or_a_float_subclass_is_graded_as_its_value(batch):
    assert batch["tests"]["containers"]["test_double"][:2] == (2.0, "passed")
    assert batch["tests"]["containers"]["test_mean"][:2] == (3.0, "passed")


def test_an_endless_loop_in_a_cell_costs_only_its_exercise(batch):
    points, status, message = batch["tests"]["loop_in_cell"]["test_double"]
    assert (points, status) == (0.0, "timed out") and "exercise cell ex_double timed out" in message
    assert batch["tests"]["loop_in_cell"]["test_mean"][:2] == (3.0, "passed")
    assert "ex_double timed out (limit 4 s)" in batch["rows"]["loop_in_cell"][2]
    assert "ex_double timed out" in feedback_md(batch, "loop_in_cell")


def test_what_a_crashed_program_printed_goes_to_the_instructor_only(batch):
    from coursekit.grading.grade import _slug

    summary = (batch["out"] / f"{LAB}-summary.md").read_text(encoding="utf-8")
    output = batch["out"] / "output" / LAB / f"{_slug('loop_in_cell')}.txt"
    assert f"- loop_in_cell: {output}" in summary
    assert "about to loop" in output.read_text(encoding="utf-8")
    assert "about to loop" not in feedback_md(batch, "loop_in_cell")
    assert not (batch["out"] / "output" / LAB / f"{_slug('correct')}.txt").exists()  # it did not crash
    assert "- correct:" not in summary


def test_an_endless_loop_in_a_call_costs_only_that_test(batch):
    points, status, message = batch["tests"]["loop_in_call"]["test_double"]
    assert (points, status) == (0.0, "timed out") and "double(…) did not return within 4 s" in message
    assert batch["tests"]["loop_in_call"]["test_mean"][:2] == (3.0, "passed")
    assert "cell check_double timed out" in feedback_md(batch, "loop_in_call")  # its self-check called double


def test_the_whole_submission_has_a_time_budget_tests_included(tmp_path):
    """Calls that each stay just under --call-timeout cannot hold a job slot for long."""
    solutions, subs, out = solutions_folder(tmp_path), tmp_path / "submissions", tmp_path / "out"
    (subs / "slow").mkdir(parents=True)
    slow = student_copy("    import time\n    time.sleep(5)\n    return 2 * np.asarray(x)", GOOD_MEAN)
    nbformat.write(slow, subs / "slow" / f"{LAB}.ipynb")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["grade", str(subs), "--lab", LAB, "--solutions", str(solutions), "--out", str(out), "--quiet",
                     "--call-timeout", "6", "--submission-timeout", "8"])
    assert code == 0, printed.getvalue()
    db = sqlite3.connect(out / "gradebook.sqlite")
    tests = {g: (s, m) for g, s, m in db.execute("SELECT grade_id, status, message FROM test_results")}
    (message,) = db.execute("SELECT message FROM grades").fetchone()
    db.close()
    assert tests["test_double"][0] == tests["test_mean"][0] == "timed out"
    assert "time budget" in tests["test_mean"][1] and "8 s" in tests["test_mean"][1]
    assert "time budget" in message


def data_master():
    """The toy lab with a set-up cell that reads the course's data, and a demo that fails in grading."""
    nb = master_notebook()
    nb.cells[1].source += ("\nfrom dlwb import download\nDATASETS = sorted(download.load_manifest())\n"
                           "CACHED = sorted(p.name for p in download.cache_dir().iterdir())")
    nb.cells.append(nbformat.v4.new_code_cell(
        "demo = double(np.arange(3.0))  # uses the student's code, so the grader does not run it itself\n"
        "import urllib.request\nurllib.request.urlopen('http://192.0.2.1/', timeout=2)  # no network in grading",
        metadata={"nbgrader": {"schema_version": 3, "solution": False, "grade": False, "locked": True,
                               "grade_id": "demo"}}))
    return nb


PROBE = (
    "    import os\n    from dlwb import download\n    seen = {}\n"
    "    for where in (download.cache_dir(), *download.data_dirs()):\n"
    "        seen[where.name] = sorted(os.listdir(where))\n"
    "        try:\n            (where / 'student-was-here').write_text('x')\n"
    "            seen[where.name + ' written'] = True\n"
    "        except OSError as err:\n            seen[where.name + ' written'] = type(err).__name__\n"
    "    raise ValueError(repr(seen))"
)


def test_the_sandbox_reads_the_labs_data_and_set_up_failures_go_to_the_instructor(tmp_path, monkeypatch):
    cache, data_dir = tmp_path / "cache", tmp_path / "datadir"
    cache.mkdir()
    data_dir.mkdir()
    (cache / "cached.npz").write_bytes(b"cache")
    (data_dir / "provided.gz").write_bytes(b"data")
    monkeypatch.setenv("DLWB_CACHE_DIR", str(cache))
    monkeypatch.setenv("DLWB_DATA_DIR", str(data_dir))
    solutions, subs, out = tmp_path / "solutions", tmp_path / "submissions", tmp_path / "out"
    solutions.mkdir()
    nbformat.write(data_master(), solutions / f"{LAB}.ipynb")
    for name, nb in {"correct": student_copy(GOOD_DOUBLE, GOOD_MEAN), "probe": student_copy(PROBE, GOOD_MEAN)}.items():
        (subs / name).mkdir(parents=True)
        nbformat.write(nb, subs / name / f"{LAB}.ipynb")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["grade", str(subs), "--lab", LAB, "--solutions", str(solutions), "--out", str(out), "--quiet"])
    assert code == 0, printed.getvalue()
    correct = next((out / "feedback" / LAB).glob("correct-*.md")).read_text(encoding="utf-8")
    assert "Score: 5 / 7" in correct and "raised" not in correct, correct
    db = sqlite3.connect(out / "gradebook.sqlite")
    (seen,) = db.execute("SELECT t.message FROM test_results t JOIN submissions s ON s.id = t.submission_id "
                         "WHERE s.student_id = 'probe' AND t.grade_id = 'test_double'").fetchone()
    db.close()
    assert "'cache': ['cached.npz']" in seen and "'datadir': ['provided.gz']" in seen, seen
    assert "'cache written': 'OSError'" in seen and "'datadir written': 'OSError'" in seen, seen
    assert sorted(os.listdir(cache)) == ["cached.npz"] and sorted(os.listdir(data_dir)) == ["provided.gz"]
    summary = (out / f"{LAB}-summary.md").read_text(encoding="utf-8")
    (line,) = [t for t in summary.splitlines() if "demo" in t]
    assert "URLError" in line and "1 of 2 graded submissions (correct)" in line, summary
    probe = next((out / "feedback" / LAB).glob("probe-*.md")).read_text(encoding="utf-8")
    assert "cell demo raised ValueError" in probe  # the probe's own error in the demo: its feedback says so
    assert "cell demo" in printed.getvalue() and "URLError" in printed.getvalue()


def test_a_malformed_message_from_the_sandbox_is_the_students_error(batch):
    assert batch["rows"]["malformed_message"][:2] == (0.0, "graded")
    assert "sent a malformed message (nested too deeply)" in batch["rows"]["malformed_message"][2]


def test_cells_a_student_added_are_named_as_not_run(batch):
    assert batch["rows"]["extra_cells"][0] == 5
    text = feedback_md(batch, "extra_cells")
    assert "1 code cell outside the exercises (cell 4 of your notebook) was not run" in text
    assert "not run" not in feedback_md(batch, "correct")


def test_files_skipped_are_in_the_summary(batch):
    summary = (batch["out"] / f"{LAB}-summary.md").read_text(encoding="utf-8")
    for line in (f"class/linked/{LAB}.ipynb: unsafe path or link in the zip; skipped",
                 f"class.zip: {len(STUDENTS)} macOS metadata entries (__MACOSX/, ._*) ignored"):
        assert line in summary and line in batch["printed"], summary


def test_a_finder_zip_keeps_every_student_and_their_names(batch):
    assert set(batch["rows"]) == set(STUDENTS)  # neither "class" nor "__MACOSX" became a student
    assert batch["rows"]["张伟"][0] == 5
    assert batch["tests"]["张伟"]["written_sign"][1] == "needs review"
    assert "平方总是非负的。" in feedback_md(batch, "张伟")


def test_a_written_answer_with_a_lone_surrogate_awaits_review_with_its_text_kept(batch):
    assert batch["rows"]["written_surrogate"][0] == 5
    assert batch["tests"]["written_surrogate"]["written_sign"][1] == "needs review"
    assert "Squares are never negative, caf\ufffd." in feedback_md(batch, "written_surrogate")


def test_a_forged_event_for_a_cell_it_was_not_given_is_the_students_error(tmp_path):
    from coursekit.grading.sandbox import Limits, Sandbox

    forge = ("import json, os, sys\nos.write(int(sys.argv[2]), json.dumps({'event': 'cell_end', 'index': 999, "
             "'error': {'ename': 7}}).encode() + b'\\n')")
    with Sandbox(tmp_path, limits=Limits(cell_timeout_s=20)) as sandbox:
        report = sandbox.start([{"index": 0, "source": forge}])
    assert report.died == "sent a malformed message (a cell it was not given) in cell 0"
