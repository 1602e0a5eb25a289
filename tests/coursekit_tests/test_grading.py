"""Grading, end to end, against honest and adversarial submissions.

One batch grades a class of ~30 "students" of a small lab (two exercises: ``double`` worth
2 points, ``mean_sq`` worth 3), each submission built from the released student notebook
the way a student would change it. Every test below then checks one student's score and
message in the gradebook and feedback, that nothing leaked, and that the batch went on.
"""

from __future__ import annotations

import copy
import csv
import http.server
import json
import os
import sqlite3
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from conftest import ROOT, results_by_student
from coursekit.grading import collect
from coursekit.grading.grade import grade_lab, grade_one
from coursekit.grading.result import Status, SubmissionResult, TestStatus
from coursekit.grading.sandbox import Limits, isolation_prefix
from coursekit.release import release_notebook

LAB = "lab90_toy"
HIDDEN_MARK = "HIDDEN-CANARY-7f3a"  # appears only in the hidden tests
SOLUTION_MARK = "SOLUTION-CANARY-91c2"  # appears only in the solutions
RUBRIC_MARK = "RUBRIC-CANARY-40d8"  # appears only in the rubric
BG_MARK = "dlwb-bg-marker-5521"
AUTO_POINTS, WRITTEN_POINTS = 5.0, 2.0

# One worker runs this whole module (--dist loadgroup), so its module fixtures, which grade real
# submissions in the sandbox, are built once per run rather than once per worker.
pytestmark = [pytest.mark.skipif(isolation_prefix() is None, reason="needs Linux namespaces (unshare)"),
              pytest.mark.xdist_group("grading")]


def nbg(**meta):
    return {"nbgrader": {"schema_version": 3, "solution": False, "grade": False, "locked": True, **meta}}


def solutions_folder(root: Path) -> Path:
    """``root/solutions`` holding the toy lab's master, as ``grade --solutions`` reads it."""
    solutions = root / "solutions"
    solutions.mkdir()
    nbformat.write(master_notebook(), solutions / f"{LAB}.ipynb")
    return solutions


def master_notebook():
    return new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                        cells=[
        new_markdown_cell("# Toy lab", metadata=nbg(grade_id="intro")),
        new_code_cell("import numpy as np\nfrom dlwb import checks", metadata=nbg(grade_id="setup")),
        new_code_cell(f"def double(x):\n    ### BEGIN SOLUTION\n    # {SOLUTION_MARK}\n    return 2 * np.asarray(x)\n"
                      "    ### END SOLUTION", metadata=nbg(solution=True, locked=False, grade_id="ex_double")),
        new_code_cell('checks.check_close("double", checks.attempt("double", double, [1.0, 2.0]), [2.0, 4.0])',
                      metadata=nbg(grade_id="check_double")),
        new_code_cell("assert np.allclose(double([1.0]), [2.0]), 'double([1.0]) should be [2.0]'\n"
                      f"### BEGIN HIDDEN TESTS\n# {HIDDEN_MARK}\nx = np.arange(7.0) - 3\n"
                      "assert np.allclose(double(x), 2 * x)\n### END HIDDEN TESTS",
                      metadata=nbg(grade=True, points=2, grade_id="test_double")),
        new_code_cell("def mean_sq(x):\n    ### BEGIN SOLUTION\n    x = np.asarray(x, dtype=float)\n"
                      "    return float((x ** 2).mean())\n    ### END SOLUTION",
                      metadata=nbg(solution=True, locked=False, grade_id="ex_mean")),
        new_code_cell(f"### BEGIN HIDDEN TESTS\n# {HIDDEN_MARK}\nv = np.array([1.0, -2.0, 3.0])\n"
                      "assert abs(mean_sq(v) - 14.0 / 3) < 1e-9\n### END HIDDEN TESTS",
                      metadata=nbg(grade=True, points=3, grade_id="test_mean")),
        new_markdown_cell("Why is the mean of squares never negative?", metadata=nbg(grade_id="written_sign_md")),
        new_markdown_cell(f"### BEGIN SOLUTION\nEvery square is at least zero ({SOLUTION_MARK}).\n### END SOLUTION",
                          metadata={**nbg(solution=True, grade=True, locked=False, points=2, grade_id="written_sign"),
                                    "dlwb": {"rubric": f"2 points: squares are non-negative ({RUBRIC_MARK})."}}),
    ])


def student_copy(double_body=None, mean_body=None, extra_cells=(), transform=None, prefix="", answer=None):
    """The released lab with the stubs replaced the way a student would.

    ``prefix`` goes at the top of the first exercise cell (code outside exercise cells is not run);
    ``answer`` replaces the written answer's ``YOUR ANSWER HERE``.
    """
    nb = release_notebook(master_notebook())
    if answer is not None:
        nb.cells[8].source = answer
    nb.cells[2].source = prefix + nb.cells[2].source
    stubs = "    # YOUR CODE HERE\n    raise NotImplementedError()"
    if double_body is not None:
        nb.cells[2].source = nb.cells[2].source.replace(stubs, double_body)
    if mean_body is not None:
        nb.cells[5].source = nb.cells[5].source.replace(stubs, mean_body)
    for position, cell in extra_cells:
        nb.cells.insert(position, cell)
    if transform is not None:
        transform(nb)
    return nb


GOOD_DOUBLE = "    return 2 * np.asarray(x)"
GOOD_MEAN = "    return float((np.asarray(x, dtype=float) ** 2).mean())"


def hits_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            Handler.hits += 1
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"2")

        def log_message(self, *args):
            pass

    Handler.hits = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, Handler


def set_doubles(nb, first, second):
    nb.cells[2].source = nb.cells[2].source.replace("    # YOUR CODE HERE\n    raise NotImplementedError()", first)
    dup = copy.deepcopy(nb.cells[2])
    dup.id = "duplicate"
    dup.source = dup.source.replace(first, second)
    nb.cells.insert(3, dup)


def forge(nb):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.metadata["nbgrader"]["points"] = 100
            cell.outputs = [new_output("stream", name="stdout", text="All tests passed! 100/100")]
            cell.execution_count = 1
    nb.metadata["dlwb_score"] = 100


def huge_images(nb):
    nb.cells[2].outputs = [new_output("display_data", data={"image/png": "iVBORw0KGgo" + "A" * (30 << 20)})]


def edit_tests(nb):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.source = "pass"


def delete_tests(nb):
    nb.cells = [c for c in nb.cells if not c.metadata.get("nbgrader", {}).get("grade")]


def move_cells(nb):
    nb.cells.reverse()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade one class of adversarial students; returns what the tests inspect."""
    root = tmp_path_factory.mktemp("grading")
    solutions, subs, out = solutions_folder(root), root / "submissions", root / "out"
    server, handler = hits_server()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    gradebook_path = out / "gradebook.sqlite"
    master_path = solutions / f"{LAB}.ipynb"
    students = {
        "correct": student_copy(GOOD_DOUBLE, GOOD_MEAN),
        "partial": student_copy(GOOD_DOUBLE, "    return float(np.asarray(x).mean())"),
        "untouched": student_copy(),
        "syntax_error": student_copy("    return 2 * (x", GOOD_MEAN),
        "runtime_error": student_copy("    return 1 / 0", GOOD_MEAN),
        "infinite_loop": student_copy("    return 2 * np.asarray(x)\nwhile True:\n    pass", GOOD_MEAN),
        "ignores_sigint": student_copy("    return 2 * np.asarray(x)\nimport signal, time\n"
                                       "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                       "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(10_000)", GOOD_MEAN),
        "memory_bomb": student_copy("    return 2 * np.asarray(x)\nhog = bytearray(64 << 30)", GOOD_MEAN),
        "memory_in_call": student_copy("    return np.ones((1 << 40,))", GOOD_MEAN),
        "sys_exit": student_copy("    return 2 * np.asarray(x)\nimport sys\nsys.exit(0)", GOOD_MEAN),
        "os_exit": student_copy("    return 2 * np.asarray(x)\nimport os\nos._exit(0)", GOOD_MEAN),
        "self_kill": student_copy("    return 2 * np.asarray(x)\nimport os, signal\n"
                                  "os.kill(os.getpid(), signal.SIGKILL)", GOOD_MEAN),
        "huge_output": student_copy("    return 2 * np.asarray(x)\nprint('x' * (50 << 20))", GOOD_MEAN),
        "stderr_warnings": student_copy(GOOD_DOUBLE, GOOD_MEAN, prefix=(
            "import sys, warnings\nwarnings.warn('a harmless deprecation', DeprecationWarning)\n"
            "warnings.warn('a harmless user warning')\nprint('W0000 some torch warning', file=sys.stderr)\n")),
        "huge_images": student_copy(GOOD_DOUBLE, GOOD_MEAN, transform=huge_images),
        "forged": student_copy(None, None, transform=forge),
        "edited_tests": student_copy("    return x", "    return 0.0", transform=edit_tests),
        "deleted_tests": student_copy(GOOD_DOUBLE, GOOD_MEAN, transform=delete_tests),
        "moved_cells": student_copy(GOOD_DOUBLE, GOOD_MEAN, transform=move_cells),
        "duplicated_cell": student_copy(None, GOOD_MEAN, transform=lambda nb: set_doubles(
            nb, GOOD_DOUBLE, "    return 3 * np.asarray(x)")),
        "renamed": student_copy(None, GOOD_MEAN, transform=lambda nb: setattr(
            nb.cells[2], "source", "def dbl(x):\n    return 2 * np.asarray(x)")),
        "patched_numpy": student_copy("    return x", "    return 0.0", prefix=(
            "import numpy as np\nnp.allclose = lambda *a, **k: True\nnp.isclose = lambda *a, **k: True\n"
            "abs = lambda v: 0.0\nimport builtins\nbuiltins.abs = lambda v: 0.0\n")),
        "patched_checker": student_copy("    return x", "    return 0.0", prefix=(
            "import dlwb.checks, coursekit.grading.runner as r\ndlwb.checks.check_close = lambda *a, **k: None\n"
            "r.run_tests = lambda *a, **k: []\nimport traceback\ntraceback.print_exc = lambda *a, **k: None\n"
            "AssertionError.__init__ = lambda *a, **k: None\n")),
        "always_equal": student_copy("    class Yes:\n        def __eq__(self, other): return True\n"
                                     "        def __array__(self, *a, **k): return np.array(True)\n    return Yes()",
                                     "    class F(float):\n        def __sub__(self, o): return 0.0\n"
                                     "        def __rsub__(self, o): return 0.0\n    return F(0.0)"),
        "reads_secrets": student_copy(
            "    import glob, os\n    found = []\n"
            f"    for p in [{str(master_path)!r}, {str(gradebook_path)!r}, {str(ROOT / 'solutions')!r}, "
            f"{str(ROOT / '.git')!r}]:\n"
            "        found.append(os.path.exists(p))\n"
            "    found += glob.glob('/tmp/**/*.ipynb', recursive=True)\n"
            "    found += glob.glob(os.path.dirname(os.getcwd()) + '/*')\n"
            "    raise ValueError(str(found))", GOOD_MEAN),
        "writes_gradebook": student_copy(GOOD_DOUBLE, GOOD_MEAN, prefix=(
            f"import os\ntry:\n    os.makedirs({str(out)!r}, exist_ok=True)\n"
            f"    open({str(gradebook_path)!r}, 'w').write('corrupted')\nexcept OSError as err:\n"
            "    print('could not write:', err)\n")),
        "background": student_copy(GOOD_DOUBLE, GOOD_MEAN, prefix=(
            f"import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep 300', '{BG_MARK}'], start_new_session=True)\n"
            f"subprocess.Popen(['sh', '-c', 'trap \"\" TERM HUP INT; while :; do sleep 1; done # {BG_MARK}'])\n")),
        "network": student_copy(
            f"    import urllib.request\n    return 2 * np.asarray(x) * int(urllib.request.urlopen({url!r}, "
            "timeout=3).read())", GOOD_MEAN),
        "wrong_lab": new_notebook(cells=[new_code_cell("x = 1", metadata=nbg(solution=True, grade_id="ex_other"))]),
    }
    for name, nb in students.items():
        (subs / name).mkdir(parents=True)
        nbformat.write(nb, subs / name / f"{LAB}.ipynb")
    # Not in `students`: 5 malformed files, the shadow module, the odd name and the double submitter.
    # A shadow numpy beside an otherwise correct notebook: it must never be imported.
    (subs / "shadow").mkdir()
    nbformat.write(student_copy(GOOD_DOUBLE, GOOD_MEAN), subs / "shadow" / f"{LAB}.ipynb")
    (subs / "shadow" / "numpy.py").write_text("raise SystemExit('shadow numpy imported')\n")
    # Malformed files.
    for name, raw in {"empty": b"", "not_json": b"{\"cells\": [", "binary": os.urandom(2000),
                      "json_list": b"[1, 2]", "future_format": json.dumps({"nbformat": 9, "cells": []}).encode()}.items():
        (subs / name).mkdir()
        (subs / name / f"{LAB}.ipynb").write_bytes(raw)
    # A student folder whose name is not valid UTF-8.
    odd = os.fsdecode(bytes(subs) + b"/caf\xe9-\xff")
    os.makedirs(odd)
    nbformat.write(student_copy(GOOD_DOUBLE, GOOD_MEAN), os.path.join(odd, f"{LAB}.ipynb"))
    # Two submissions from one student: the later file time wins, whatever the notebooks claim.
    for folder, body, stamp in (("try1", GOOD_DOUBLE, 1_700_000_000), ("try2", "    return x", 1_700_000_500)):
        path = subs / "twice" / folder / f"{LAB}.ipynb"
        path.parent.mkdir(parents=True)
        nb = student_copy(body, GOOD_MEAN)
        nb.metadata["submitted_at"] = "2099-01-01"  # ignored: only the file time counts
        nbformat.write(nb, path)
        os.utime(path, (stamp, stamp))

    limits = Limits(cell_timeout_s=4, total_timeout_s=30, call_timeout_s=10, memory_bytes=2 << 30)
    run = grade_lab(subs, LAB, solutions=solutions, out=out, limits=limits, jobs=2, progress=False)
    server.shutdown()
    db = sqlite3.connect(gradebook_path)
    rows = {r[0]: r[1:] for r in db.execute("SELECT student_id, score, max_score, status, message FROM latest")}
    tests = results_by_student(db)
    db.close()
    return {"run": run, "rows": rows, "tests": tests, "out": out, "subs": subs,
            "solutions": solutions, "hits": handler.hits, "class_size": len(students) + 5 + 3, "limits": limits, "odd": os.path.basename(odd)}


def score(graded, student):
    return graded["rows"][student][0]


def message(graded, student, test):
    return graded["tests"][student][test][2]


def test_every_student_has_a_result_and_the_batch_finished(graded):
    expected = graded["class_size"]
    assert all(row[1] == AUTO_POINTS + WRITTEN_POINTS for row in graded["rows"].values())  # the master's maximum
    assert graded["run"].errors == 0, "no submission may break the grader itself"
    assert len(graded["rows"]) == expected


def test_correct_partial_untouched(graded):
    assert score(graded, "correct") == 5
    assert score(graded, "partial") == 2
    assert graded["tests"]["partial"]["test_mean"][1:] == ("failed", "a hidden test failed")
    assert score(graded, "untouched") == 0
    assert graded["tests"]["untouched"]["test_double"][1] == "not attempted"


def test_errors_in_cells_are_named_and_other_exercises_still_count(graded):
    assert score(graded, "syntax_error") == 3
    assert "exercise cell ex_double raised SyntaxError" in message(graded, "syntax_error", "test_double")
    assert score(graded, "runtime_error") == 3
    assert message(graded, "runtime_error", "test_double") == "your code raised ZeroDivisionError: division by zero"


@pytest.mark.parametrize("student", ["infinite_loop", "ignores_sigint"])
def test_hung_cells_time_out_and_are_killed(graded, student):
    assert score(graded, student) == 3  # the other exercise is graded in a fresh run without the hung cell
    assert graded["tests"][student]["test_double"][1] == "timed out"
    assert "exercise cell ex_double timed out (limit 4 s)" in graded["rows"][student][3]


def feedback_text(graded, student):
    return next((graded["out"] / "feedback" / LAB).glob(f"{student}-*.md")).read_text()


def test_memory_bombs(graded):
    # Allocation in a cell: a MemoryError in that cell; the function it defined still works.
    assert score(graded, "memory_bomb") == 5
    assert "MemoryError" in feedback_text(graded, "memory_bomb")
    assert score(graded, "memory_in_call") == 3
    assert "MemoryError" in message(graded, "memory_in_call", "test_double")


@pytest.mark.parametrize(("student", "reason"), [
    ("sys_exit", "SystemExit"), ("os_exit", "exited (status 0"), ("self_kill", "killed")])
def test_exits_and_self_kills(graded, student, reason):
    assert reason in feedback_text(graded, student)
    if student == "sys_exit":
        assert score(graded, student) == 5  # SystemExit ends the cell, not the program
    else:
        assert score(graded, student) == 0


def test_output_and_image_floods_and_warnings_cost_nothing(graded):
    assert score(graded, "stderr_warnings") == 5
    assert score(graded, "huge_output") == 5
    assert score(graded, "huge_images") == 5


def test_forged_edited_deleted_moved_and_duplicated_cells(graded):
    assert score(graded, "forged") == 0  # outputs and points claimed in the file are ignored
    assert score(graded, "edited_tests") == 0  # the instructor's tests run, not the student's copy
    assert score(graded, "deleted_tests") == 5  # deleted tests come back from the master
    assert score(graded, "moved_cells") == 5  # matched by grade_id, not position
    assert score(graded, "duplicated_cell") == 5  # the first copy is graded, and the feedback says so
    assert "appears more than once" in feedback_text(graded, "duplicated_cell")


def test_renamed_function(graded):
    assert score(graded, "renamed") == 3
    assert "double is not defined" in message(graded, "renamed", "test_double")


def test_patching_the_student_process_changes_nothing(graded):
    assert score(graded, "patched_numpy") == 0
    assert score(graded, "patched_checker") == 0
    assert score(graded, "always_equal") == 0
    assert "could not use your result" in message(graded, "always_equal", "test_double")


def test_secrets_are_out_of_reach(graded):
    assert score(graded, "reads_secrets") == 3
    seen = message(graded, "reads_secrets", "test_double")
    assert "[False, False, False, False" in seen  # master, gradebook, solutions and git history are invisible
    assert seen.count(".ipynb") == 1 and f"{LAB}.ipynb" in seen  # … and of the notebooks only its own
    assert "sandbox-" in seen and "job-" not in seen  # no other sandbox, no grading workspace files


def test_the_gradebook_cannot_be_written_from_the_sandbox(graded):
    assert score(graded, "writes_gradebook") == 5
    assert (graded["out"] / "gradebook.sqlite").read_bytes().startswith(b"SQLite format 3")


def test_background_processes_do_not_survive(graded):
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", BG_MARK], capture_output=True, text=True).stdout.split()
    assert left == [], f"processes started by a submission survived grading: {left}"
    assert score(graded, "background") == 5


def test_no_network(graded):
    assert graded["hits"] == 0
    assert score(graded, "network") == 3
    assert "URLError" in message(graded, "network", "test_double")


def test_shadow_module_beside_the_notebook_is_ignored(graded):
    assert score(graded, "shadow") == 5


@pytest.mark.parametrize(("student", "text"), [
    ("empty", "is empty"), ("not_json", "not valid notebook JSON"), ("binary", "not UTF-8"),
    ("json_list", "not a notebook"), ("future_format", "nbformat version 9"),
    ("wrong_lab", "not the expected lab"),
])
def test_malformed_and_wrong_files_are_invalid_with_a_reason(graded, student, text):
    points, _, status, msg = graded["rows"][student]
    assert points == 0 and status == "invalid" and text in msg


def test_non_utf8_student_name(graded):
    assert graded["odd"] == "caf\udce9-\udcff"
    assert score(graded, "caf\\xe9-\\xff") == 5


def test_latest_submission_by_file_time_wins(graded):
    assert score(graded, "twice") == 3  # try2 (later file time, wrong double) counts, not try1


def test_nothing_secret_reaches_feedback_or_gradebook(graded):
    texts = [p.read_text(errors="replace") for p in (graded["out"] / "feedback" / LAB).iterdir()]
    texts.append((graded["out"] / f"{LAB}.csv").read_text())
    db = sqlite3.connect(graded["out"] / "gradebook.sqlite")
    texts += [str(r) for r in db.execute("SELECT * FROM test_results")]
    texts += [str(r) for r in db.execute("SELECT * FROM grades")]
    db.close()
    for text in texts:
        assert HIDDEN_MARK not in text and SOLUTION_MARK not in text and RUBRIC_MARK not in text
        assert "14.0 / 3" not in text and "np.arange(7.0)" not in text


def test_grade_one_returns_a_typed_result_whose_json_holds_no_secret(tmp_path):
    """What a grader process hands the batch: the stages' result as JSON, round-tripped, with nothing hidden in it."""
    master_path = tmp_path / f"{LAB}.ipynb"
    nbformat.write(master_notebook(), master_path)
    submitted = tmp_path / "submitted.ipynb"
    nbformat.write(student_copy(GOOD_DOUBLE, "    return float(np.asarray(x).mean())", answer="Squares."), submitted)
    result = grade_one(master_path, submitted, tmp_path, Limits(cell_timeout_s=20))
    text = result.to_json()
    assert SubmissionResult.from_json(text) == result and result.status is Status.GRADED
    assert [(t.grade_id, t.status, t.points) for t in result.tests] == [
        ("test_double", TestStatus.PASSED, 2.0), ("test_mean", TestStatus.FAILED, 0.0),
        ("written_sign", TestStatus.NEEDS_REVIEW, 0.0)]
    assert result.answers == {"written_sign": "Squares."} and result.awaiting_points == 2.0
    for secret in (HIDDEN_MARK, SOLUTION_MARK, RUBRIC_MARK, "14.0 / 3", "np.arange(7.0)"):
        assert secret not in text


def test_csv_export(graded):
    with open(graded["out"] / f"{LAB}.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert rows["correct"]["total"] == "5.0" and rows["partial"]["test_double (max 2)"] == "2.0"
    assert rows["partial"]["test_mean (max 3)"] == "0.0" and rows["correct"]["max"] == "7.0"
    assert rows["correct"]["written_sign (max 2)"] == "0.0" and rows["correct"]["needs_review"] == "0"


def test_regrading_is_idempotent(graded):
    db_path = graded["out"] / "gradebook.sqlite"
    count = lambda: sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM test_results").fetchone()[0]  # noqa: E731
    before = count()
    subs = graded["subs"]
    keep = {"correct", "partial"}
    trimmed = graded["out"].parent / "trimmed"
    for name in keep:
        (trimmed / name).mkdir(parents=True)
        (trimmed / name / f"{LAB}.ipynb").write_bytes((subs / name / f"{LAB}.ipynb").read_bytes())
    grade_lab(trimmed, LAB, solutions=graded["solutions"], out=graded["out"], limits=graded["limits"], jobs=2,
              progress=False)
    assert count() == before
    rows = dict(sqlite3.connect(db_path).execute("SELECT student_id, score FROM latest").fetchall())
    assert rows["correct"] == 5 and rows["partial"] == 2


def test_zip_input(tmp_path, graded):
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("correct", "partial"):
            zf.write(graded["subs"] / name / f"{LAB}.ipynb", f"class/{name}/{LAB}.ipynb")
        zf.writestr("class/../../evil/lab90_toy.ipynb", "{}")
    latest, found, problems = collect.collect(archive, LAB, tmp_path / "ws")
    assert sorted(latest) == ["correct", "partial"]
    assert any("unsafe path" in p for p in problems)
    assert all(Path(s.path).is_relative_to(tmp_path / "ws") for s in found)





def test_killing_the_grader_leaves_no_sandbox_behind(tmp_path):
    """A grader process that dies (killed by the batch, a crash) takes its sandbox with it."""
    marker = "dlwb-orphan-marker-8812"
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    master_path = solutions / f"{LAB}.ipynb"
    nbformat.write(master_notebook(), master_path)
    submission = tmp_path / "sub.ipynb"
    nbformat.write(student_copy(GOOD_DOUBLE, GOOD_MEAN, prefix=(
        f"import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep 300', '{marker}'])\nwhile True:\n    pass\n")), submission)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"master": str(master_path), "submission": str(submission), "workspace": str(workspace),
                                "limits": {"cell_timeout_s": 600, "total_timeout_s": 600}, "readable": [],
                                "allow_unisolated": False, "result": str(tmp_path / "result.json")}))
    grader = subprocess.Popen([os.sys.executable, "-m", "coursekit.grading.process", str(spec)])

    def alive():
        return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + 60
    while not alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive(), "the submission never started"
    grader.kill()
    grader.wait()
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive() == [], "the sandbox outlived its grader"


def test_the_sandbox_reaches_its_own_loopback_and_nothing_else(tmp_path):
    """Processes of one submission may talk over 127.0.0.1 (gloo, chapter 09); the machine's network stays out."""
    from coursekit.grading.sandbox import Sandbox

    server, handler = hits_server()
    port = server.server_address[1]
    probe = (
        "import socket, threading, urllib.request\n"
        "inside = socket.create_server(('127.0.0.1', 0))\n"
        "threading.Thread(target=lambda: inside.accept()[0].sendall(b'pong'), daemon=True).start()\n"
        "with socket.create_connection(inside.getsockname(), timeout=3) as c:\n"
        "    own_loopback = c.recv(4).decode()\n"
        "def refused(address):\n"
        "    try:\n"
        "        socket.create_connection(address, timeout=3).close()\n"
        "    except OSError as err:\n"
        "        return type(err).__name__\n"
        "    return 'connected'\n"
        f"host_loopback = refused(('127.0.0.1', {port}))\n"
        "outside = refused(('192.0.2.1', 80))  # TEST-NET-1: any address beyond the loopback\n"
    )
    with Sandbox(tmp_path, limits=Limits(cell_timeout_s=20, total_timeout_s=30)) as sandbox:
        report = sandbox.start([{"index": 0, "source": probe}])
        assert report.died is None and report.cells[0].error is None, (report, sandbox.output())
        values = {name: sandbox.request({"op": "get", "name": name})["value"]
                  for name in ("own_loopback", "host_loopback", "outside")}
    server.shutdown()
    assert values["own_loopback"] == "pong", "the sandbox's own loopback must be up (torch.distributed needs it)"
    assert values["host_loopback"] != "connected" and handler.hits == 0, "the machine's 127.0.0.1 must stay out of reach"
    assert values["outside"] != "connected", "no network beyond the loopback"
