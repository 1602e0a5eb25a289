"""What reaches the grader from outside: submission folders and zips, and the sandbox's messages.

No sandbox is started here: these are the grader's own passes on tiny inputs.
"""

from __future__ import annotations

import dataclasses
import json
import types
import zipfile

import nbformat
import pytest

from coursekit.grading import collect, feedback, grade, notebook
from coursekit.grading.collect import Submission
from coursekit.grading.gradebook import Gradebook
from coursekit.grading.result import MalformedResult, RecordedResult, Status, SubmissionResult, TestResult, TestStatus
from coursekit.grading.sandbox import CellResult, Limits, RunReport
from coursekit.sandboxed import wire

LAB = "lab90_toy"
NOTEBOOK = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


def test_text_from_the_sandbox_comes_out_encodable():
    message = wire.loads(b'{"evalue": "caf\\udce9", "k\\ud800": ["x\\udfff", {"y": "\\ud83d\\ude00 ok"}]}')
    assert message == {"evalue": "caf\ufffd", "k\ufffd": ["x\ufffd", {"y": "\U0001f600 ok"}]}
    assert wire.loads(wire.dumps({"s": "plain", "n": [1, 2.5, None]})) == {"s": "plain", "n": [1, 2.5, None]}


def make_zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name in entries:
            if name.endswith("/"):
                zf.writestr(name, "")
            else:
                zf.writestr(name, NOTEBOOK if name.endswith(".ipynb") else "\x00\x05\x16\x07")
    return path


def test_a_zip_made_by_macos_finder_keeps_every_student(tmp_path):
    """Finder's "Compress" adds __MACOSX/ with a ._ file for each file; they are not submissions."""
    archive = make_zip(tmp_path / "class.zip", [
        "class/", "class/alice/", f"class/alice/{LAB}.ipynb", "class/bob/", f"class/bob/{LAB}.ipynb",
        "class/.DS_Store", "__MACOSX/", "__MACOSX/class/", "__MACOSX/class/alice/",
        f"__MACOSX/class/alice/._{LAB}.ipynb", f"__MACOSX/class/bob/._{LAB}.ipynb", "__MACOSX/class/._.DS_Store"])
    latest, found, problems = collect.collect(archive, LAB, tmp_path / "ws")
    assert sorted(latest) == ["alice", "bob"]
    assert sorted(s.origin for s in found) == [f"alice/{LAB}.ipynb", f"bob/{LAB}.ipynb"]


def test_one_bad_entry_does_not_turn_off_stripping_the_zip_folder(tmp_path):
    archive = make_zip(tmp_path / "class.zip", [
        f"class/alice/{LAB}.ipynb", f"class/bob/{LAB}.ipynb", f"/abs/{LAB}.ipynb", f"._{LAB}.ipynb"])
    latest, _, problems = collect.collect(archive, LAB, tmp_path / "ws")
    assert sorted(latest) == ["alice", "bob"]
    assert any(p.startswith(f"/abs/{LAB}.ipynb") and "unsafe path" in p for p in problems)


def test_two_paths_that_become_one_student_are_reported(tmp_path):
    """A zip with an unexpected top folder merges its students into one: never silently."""
    archive = make_zip(tmp_path / "download (3).zip", [f"class/alice/{LAB}.ipynb", f"class/bob/{LAB}.ipynb"])
    latest, _, problems = collect.collect(archive, LAB, tmp_path / "ws")
    assert list(latest) == ["class"]
    (loud,) = [p for p in problems if "class" in p and "2 files" in p]
    assert f"class/alice/{LAB}.ipynb" in loud and f"class/bob/{LAB}.ipynb" in loud


def test_plain_value_subclasses_cross_as_their_plain_values():
    import collections
    import enum

    import numpy as np

    class Label(str):
        pass

    class Loss(float):
        def __sub__(self, other):  # what the value does in the student's program never crosses
            return 0.0

    class Count(enum.IntEnum):
        TWO = 2

    Pair = collections.namedtuple("Pair", ["out", "weights"])
    value = {"pair": Pair(np.arange(2), 1.5), "ordered": collections.OrderedDict(b=1, a=2),
             "default": collections.defaultdict(list, {"k": [Label("x")]}), "loss": Loss(0.25), "count": Count.TWO,
             "items": collections.UserList([1]).data}
    back = wire.decode(wire.loads(wire.dumps({"v": wire.encode(value, make_ref=lambda obj: 0)}))["v"])
    assert type(back["pair"]) is tuple and back["pair"][0].tolist() == [0, 1] and back["pair"][1] == 1.5
    assert back["ordered"] == {"b": 1, "a": 2} and list(back["ordered"]) == ["b", "a"]
    assert back["default"] == {"k": ["x"]} and type(back["default"]["k"][0]) is str
    assert type(back["loss"]) is float and back["loss"] - 0.25 == 0.0
    assert type(back["count"]) is int and back["count"] == 2
    refs = []
    wire.encode(object(), make_ref=lambda obj: refs.append(obj) or 0)
    assert len(refs) == 1  # any other object stays in the worker, as a reference


def test_numpy_scalars_keep_their_shape():
    import numpy as np

    back = wire.decode(wire.encode((np.float64(-6.0), np.int32(3), np.float32(0.5))))
    assert [(type(v), np.shape(v)) for v in back] == [(np.float64, ()), (np.int32, ()), (np.float32, ())]


def test_a_malformed_message_is_a_wire_error_never_a_crash():
    import pytest

    for line in (b"[" * 100_000 + b"]" * 100_000, b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, b"[" * 100_000):
        with pytest.raises(wire.WireError, match="nested too deeply|malformed"):
            wire.loads(line)


def test_every_file_looked_at_and_skipped_is_listed_with_its_reason(tmp_path):
    import os

    subs = tmp_path / "subs"
    for student in ("alice", "dave", "frank/.ipynb_checkpoints"):
        (subs / student).mkdir(parents=True)
    (subs / "alice" / f"{LAB}.ipynb").write_text(NOTEBOOK)
    (subs / "bob").mkdir()
    os.symlink(subs / "alice" / f"{LAB}.ipynb", subs / "bob" / f"{LAB}.ipynb")  # a link to someone else's file
    os.symlink(subs / "alice", subs / "carol")  # a linked folder
    (subs / "dave" / f"{LAB} (1).ipynb").write_text(NOTEBOOK)  # the browser's name for a second download
    (subs / f"{LAB}.ipynb").write_text(NOTEBOOK)  # outside any student's folder
    (subs / "frank" / ".ipynb_checkpoints" / f"{LAB}.ipynb").write_text(NOTEBOOK)
    latest, _, problems = collect.collect(subs, LAB, tmp_path / "ws")
    assert list(latest) == ["alice"]
    reasons = {p.split(":")[0]: p for p in problems}
    assert "symbolic link" in reasons[f"bob/{LAB}.ipynb"]
    assert "symbolic link" in reasons["carol"]
    assert f"not named {LAB}.ipynb" in reasons[f"dave/{LAB} (1).ipynb"]
    assert "student's folder" in reasons[f"{LAB}.ipynb"]
    assert "checkpoint" in reasons[f"frank/.ipynb_checkpoints/{LAB}.ipynb"]


def test_feedback_html_escapes_student_text():
    attack = "your code raised ValueError: <img src=x onerror=alert(1)>"
    result = SubmissionResult(Status.GRADED, "", [TestResult("t", 0.0, 1.0, TestStatus.ERROR, attack, 0.0)],
                              ["<script>x</script>"])
    page = feedback.html_page(RecordedResult("<b>eve</b>", LAB, result))
    assert "<script>" not in page and "<img" not in page and "&lt;b&gt;eve" in page


def test_wire_rejects_pickles_and_objects():
    import numpy as np

    with pytest.raises(wire.WireError):
        wire.encode(np.array([object()], dtype=object))
    with pytest.raises(wire.WireError):
        wire.decode({"__ndarray__": "not base64!"})
    nested = 1
    for _ in range(40):
        nested = [nested]
    with pytest.raises(wire.WireError, match="deeply"):
        wire.decode(wire.encode([1]) and nested)
    value = {"a": (1, 2.5, float("nan")), "b": [np.arange(3), True, None, "s"]}
    back = wire.decode(wire.encode(value))
    assert back["a"][:2] == (1, 2.5) and np.isnan(back["a"][2]) and back["b"][0].tolist() == [0, 1, 2]


def test_reading_submissions_defensively():
    with pytest.raises(notebook.SubmissionError, match="over the"):
        notebook.read_submission(b" " * (notebook.MAX_NOTEBOOK_BYTES + 1))
    v3 = json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {},
                     "worksheets": [{"cells": [{"cell_type": "code", "input": "x = 1", "outputs": [],
                                                "language": "python", "metadata": {}}]}]}).encode()
    assert notebook.read_submission(v3).cells[0].source == "x = 1"  # upgraded to nbformat 4


# The typed result and the stages of grade_one, each on its own (no sandbox is started).

def every_status_result(status: Status) -> SubmissionResult:
    """A result with one part in each test status, text a student could write, and a written answer."""
    tests = [TestResult(f"part_{i}", 0.5 * i, 2.0, part, f"message for caf\ufffd {part}", 0.125 * i)
             for i, part in enumerate(TestStatus)]
    return SubmissionResult(status, "your program ran out of time; \U0001f600", tests, ["a note", "<b>two</b>"],
                            answers={"part_7": "Squares are never negative.\n\n~~~"},
                            lab_problems=["cell setup raised X"], output="printed\n")


@pytest.mark.parametrize("status", list(Status))
def test_a_result_round_trips_through_json_in_every_status(status):
    result = every_status_result(status)
    text = result.to_json()
    back = SubmissionResult.from_json(text)
    assert back == result and back.to_json() == text
    assert back.status is status and [t.status for t in back.tests] == list(TestStatus)
    assert json.loads(text)["tests"][2]["status"] == "not attempted"  # statuses are stored as their plain text


@pytest.mark.parametrize(("change", "error"), [
    (lambda d: "not json {", "must be JSON"),
    (lambda d: [d], "result must be a JSON object, not list"),
    (lambda d: {**d, "status": "passed"}, "result.status is 'passed', not one of: 'graded', 'invalid', 'error'"),
    (lambda d: {**d, "tests": [{**d["tests"][0], "status": "fine"}]},
     r"result.tests\[0\].status is 'fine', not one of"),
    (lambda d: {k: v for k, v in d.items() if k != "notes"}, "result has no field notes"),
    (lambda d: {**d, "tests": [{k: v for k, v in d["tests"][0].items() if k != "seconds"}]},
     r"result.tests\[0\] has no field seconds"),
    (lambda d: {**d, "score": 3.0}, "result has unknown field score"),
    (lambda d: {**d, "tests": [{**d["tests"][1], "points": "0.5"}]}, r"result.tests\[0\].points must be a number"),
    (lambda d: {**d, "tests": [{**d["tests"][1], "points": True}]}, r"result.tests\[0\].points must be a number"),
    (lambda d: {**d, "notes": "a note"}, "result.notes must be a JSON list, not str"),
    (lambda d: {**d, "answers": {"part_7": 7}}, r"result.answers\['part_7'\] must be a str, not int"),
    (lambda d: {**d, "tests": ["passed"]}, r"result.tests\[0\] must be a JSON object, not str"),
])
def test_a_malformed_result_is_rejected_saying_what_is_wrong(change, error):
    data = json.loads(every_status_result(Status.GRADED).to_json())
    changed = change(data)
    with pytest.raises(MalformedResult, match=error):
        SubmissionResult.from_json(changed if isinstance(changed, str) else json.dumps(changed))


def test_a_status_outside_the_closed_set_cannot_be_made():
    with pytest.raises(ValueError, match="'fine' is not a valid TestStatus"):
        TestResult("t", 0.0, 1.0, "fine", "", 0.0)
    with pytest.raises(ValueError, match="'done' is not a valid Status"):
        SubmissionResult("done", "", [])


@pytest.fixture
def toy_master(tmp_path):
    from test_grading import master_notebook

    path = tmp_path / "solutions" / f"{LAB}.ipynb"
    path.parent.mkdir()
    nbformat.write(master_notebook(), path)
    return path


def test_the_read_stage_rejects_a_malformed_notebook_and_grade_one_starts_no_sandbox(tmp_path, toy_master):
    broken = tmp_path / "submitted" / f"{LAB}.ipynb"
    broken.parent.mkdir()
    broken.write_text('{"cells": [', encoding="utf-8")
    with pytest.raises(notebook.SubmissionError, match="not valid notebook JSON"):
        grade.read(broken)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    result = grade.grade_one(toy_master, broken, workspace, Limits())
    assert result.status is Status.INVALID and "not valid notebook JSON" in result.message
    assert {t.status for t in result.tests} == {TestStatus.INVALID} and result.score == 0 and result.max_score == 7
    assert [t.grade_id for t in result.tests] == ["test_double", "test_mean", "written_sign"]
    assert not list(workspace.iterdir())  # no sandbox folder was made


def test_the_rebuild_stage_rejects_another_lab(toy_master):
    other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(notebook.SubmissionError, match="not the expected lab"):
        grade.rebuild(nbformat.read(toy_master, as_version=4), other)


def test_the_run_program_stage_sorts_the_cells_outcomes(toy_master):
    from test_grading import student_copy

    master = nbformat.read(toy_master, as_version=4)
    program = grade.rebuild(master, student_copy())
    failed = {"ename": "FileNotFoundError", "evalue": "data.npz", "traceback": ""}
    stub = {"ename": "NotImplementedError", "evalue": "", "traceback": ""}
    session = types.SimpleNamespace(start=lambda: RunReport(cells=[CellResult(1, failed), CellResult(2, stub)]),
                                    skipped={5: 10.0}, isolated=False)
    run = grade.run_program(master, program, session)
    assert run.cell_errors["double"] == (TestStatus.NOT_ATTEMPTED, "exercise cell ex_double still raises "
                                                                   "NotImplementedError")
    assert run.cell_errors["mean_sq"] == (TestStatus.TIMED_OUT, "exercise cell ex_mean timed out (limit 10 s); "
                                                                "it was skipped")
    assert run.lab_problems == ["cell setup raised FileNotFoundError: data.npz"]  # the instructor's, not the student's
    assert run.notes[-1] == "graded without isolation (--allow-unisolated)" and run.died is None
    assert len(run.events) == 1 and run.events[0].startswith("exercise cell ex_mean timed out")


def submission(path, student="ann") -> Submission:
    return Submission(student, path, f"{student}/{LAB}.ipynb", 1.0e9, "ab" * 32, 1)


def test_the_record_stage_stores_a_result_the_gradebook_reads_back_equal(tmp_path):
    result = every_status_result(Status.GRADED)
    result.tests = [t for t in result.tests if t.status is not TestStatus.REVIEWED]  # only a review makes that
    book = Gradebook(tmp_path / "gradebook.sqlite")
    try:
        sid = book.record(lab=LAB, max_points=result.max_score, master_sha256="0" * 64,
                          submission=submission(tmp_path / "ann.ipynb"), result=result)
        recorded = book.result(sid)
    finally:
        book.close()
    kept = dataclasses.replace(result, lab_problems=[], output="")  # for the instructor's summary, never stored
    assert recorded == RecordedResult("ann", LAB, kept)
    assert recorded.result.score == result.score and recorded.result.awaiting_points == 2.0


def test_a_grader_that_fails_still_leaves_its_student_a_recorded_error(tmp_path, toy_master):
    """A stage that raises, or a result file that is not a result, costs one student's result: never lose it."""
    (tmp_path / "ann").mkdir()  # a folder where the notebook should be: reading it raises IsADirectoryError
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    latest = {"ann": submission(tmp_path / "ann")}
    results = grade._run_parallel(toy_master, latest, workspace, Limits(), [], False, 1, False)
    result = results["ann"]
    assert result.status is Status.ERROR and "the grader failed on this submission (IsADirectoryError" in result.message
    assert {t.status for t in result.tests} == {TestStatus.ERROR} and len(result.tests) == 3
    book = Gradebook(tmp_path / "out" / "gradebook.sqlite")
    try:
        sid = book.record(lab=LAB, max_points=7.0, master_sha256="0" * 64, submission=latest["ann"], result=result)
        page = grade.write_feedback(tmp_path / "out", book, sid).with_suffix(".md").read_text(encoding="utf-8")
    finally:
        book.close()
    assert "IsADirectoryError" in page and "Score: 0 / 7" in page

    spec = workspace / "job-forged.json"
    spec.with_suffix(".result.json").write_text('{"status": "graded", "message": ""}')
    forged = grade._grader_result(nbformat.read(toy_master, as_version=4), 0, spec)
    assert forged.status is Status.ERROR and "result has no field" in forged.message


@pytest.mark.parametrize("status", list(TestStatus))
def test_a_crashed_programs_output_is_kept_for_the_instructor_only_when_a_part_raised_hung_or_died(tmp_path, status):
    part = TestResult("test_a", 0.0, 2.0, status, "", 0.1)
    result = SubmissionResult(Status.GRADED, "", [part], output="caf\udce9 printed before it failed")
    assert grade.crashed(result) is (status in (TestStatus.ERROR, TestStatus.TIMED_OUT, TestStatus.DIED))
    assert grade.crashed(dataclasses.replace(result, status=Status.ERROR, tests=[]))
    path = grade.write_output(tmp_path / "output" / LAB, "张伟", result)
    assert path.parent == tmp_path / "output" / LAB and path.name.isascii()
    assert path.read_text(encoding="utf-8") == ("# 张伟: what the program printed while it was graded\n\n"
                                                "caf\\udce9 printed before it failed")
