"""The sandbox's file system is an allow-list: a submission reads only what grading needs and writes only its folder.

A probe submission reports what it can see and write; files planted on the host in places
no deny-list would think of (a folder beside the course, as another clone of the course
would be; the host-shared temporary folders) must stay out of its reach.
"""

from __future__ import annotations

import ast
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from coursekit.grading.grade import grade_lab
from coursekit.grading.sandbox import Limits, isolation_prefix
from test_grading import GOOD_MEAN, LAB, solutions_folder, student_copy

pytestmark = pytest.mark.skipif(isolation_prefix() is None, reason="needs Linux namespaces (unshare)")

# The grader's own code, which a submission must not be able to read (it sees coursekit/sandboxed only).
GRADER_SOURCE = [ROOT / "coursekit" / "grading" / name for name in ("grade.py", "runner.py", "sandbox.py")] + [
    ROOT / "coursekit" / "release.py", ROOT / "coursekit" / "__main__.py"]

PROBE = """\
    import os
    seen = {"root": sorted(set(os.listdir("/")) & {"home", "srv", "opt", "mnt", "media", "boot", "old_root"}),
            "course": sorted(os.listdir(COURSE)), "labs": sorted(os.listdir(os.path.join(COURSE, "labs"))),
            "coursekit": sorted(os.listdir(os.path.join(COURSE, "coursekit"))),
            "sandboxed": sorted(os.listdir(os.path.join(COURSE, "coursekit", "sandboxed")))}
    seen["grader"] = []
    for path in GRADER:
        try:
            seen["grader"].append(len(open(path).read()))
        except OSError as err:
            seen["grader"].append(type(err).__name__)
    for i, path in enumerate(PLANTED):
        try:
            seen[f"planted {i}"] = open(path).read()
        except OSError as err:
            seen[f"planted {i}"] = type(err).__name__
    for folder in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", os.path.dirname(COURSE), "/"):
        target = os.path.join(folder, MARK)
        try:
            with open(target, "w") as f:
                f.write("written from the sandbox")
            seen[folder] = True
        except OSError as err:
            seen[folder] = type(err).__name__
    raise ValueError(repr(seen))"""


def test_a_submission_reads_nothing_outside_the_allow_list_and_writes_nowhere_shared(tmp_path):
    assert all(p.is_file() for p in GRADER_SOURCE), "the probe's list of grader files is out of date"
    mark = f"dlwb-planted-{os.getpid()}"
    planted_dirs = [Path(tempfile.mkdtemp(prefix=".dlwb-clone-", dir=ROOT.parent)),  # beside the course
                    Path(tempfile.mkdtemp(prefix="dlwb-clone-", dir="/var/tmp"))]  # a host-shared folder
    planted = [d / "hidden_tests.ipynb" for d in planted_dirs]
    for path in planted:
        path.parent.chmod(0o755)  # readable by everyone, as a clone of the course would be
        path.write_text("SECRET-MASTER-NOTEBOOK")
        path.chmod(0o644)
    written = [Path(folder) / mark for folder in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", ROOT.parent, "/")]
    try:
        solutions, subs, out = solutions_folder(tmp_path), tmp_path / "submissions", tmp_path / "out"
        prefix = (f"COURSE = {str(ROOT)!r}\nPLANTED = {[str(p) for p in planted]!r}\nMARK = {mark!r}\n"
                  f"GRADER = {[str(p) for p in GRADER_SOURCE]!r}\n")
        (subs / "probe").mkdir(parents=True)
        nbformat.write(student_copy(PROBE, GOOD_MEAN, prefix=prefix), subs / "probe" / f"{LAB}.ipynb")
        grade_lab(subs, LAB, solutions=solutions, out=out, limits=Limits(cell_timeout_s=30), jobs=1, progress=False)
        db = sqlite3.connect(out / "gradebook.sqlite")
        (message,) = db.execute("SELECT message FROM test_results WHERE grade_id = 'test_double'").fetchone()
        db.close()
        assert message.startswith("your code raised ValueError: "), message
        seen = ast.literal_eval(message.removeprefix("your code raised ValueError: "))
        leftovers = [str(p) for p in written if p.exists()]
    finally:
        for folder in planted_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        for path in written:
            if path.exists():
                path.unlink()
    for i, path in enumerate(planted):
        assert seen[f"planted {i}"] == "FileNotFoundError", f"the sandbox could read {path}: {seen}"
    assert set(seen["course"]) <= {".venv", "labs", "data", "coursekit"}, seen["course"]  # no solutions, tests, .git
    assert seen["labs"] == ["dlwb"], seen["labs"]
    # Of the instructor's package, only the worker's own code: not the grader, its tests, release or lecture.
    assert seen["coursekit"] == ["__init__.py", "sandboxed"], seen["coursekit"]
    assert set(seen["sandboxed"]) <= {"__init__.py", "wire.py", "worker.py", "__pycache__"}, seen["sandboxed"]
    assert seen["grader"] == ["FileNotFoundError"] * len(GRADER_SOURCE), \
        f"the sandbox could read the grader's code ({GRADER_SOURCE}): {seen['grader']}"
    assert seen["root"] == [], seen["root"]
    assert leftovers == [], f"the sandbox wrote on the host: {leftovers}"
    private = {"/tmp", "/var/tmp", "/dev/shm"}  # a fresh tmpfs each in the sandbox: writable, never the host's
    for folder in ("/run/lock", str(ROOT.parent), "/"):
        if folder not in private:  # a course cloned into /tmp has the private /tmp as its parent
            assert seen[folder] is not True, f"the sandbox could write in {folder}"
