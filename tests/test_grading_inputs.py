"""What reaches the grader from outside: submission folders and zips, and the sandbox's messages.

No sandbox is started here: these are the grader's own passes on tiny inputs.
"""

from __future__ import annotations

import json
import zipfile

import pytest

from coursekit.grading import collect, feedback, notebook
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
    result = {"score": 0, "max_score": 1, "status": "graded", "message": "", "notes": ["<script>x</script>"],
              "tests": [{"grade_id": "t", "points": 0, "max_points": 1, "status": "error",
                         "message": "your code raised ValueError: <img src=x onerror=alert(1)>"}]}
    page = feedback.html_page("<b>eve</b>", LAB, result)
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
