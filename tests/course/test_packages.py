"""The split between dlwb (what notebooks and student labs import) and the instructor's coursekit and benchmarks."""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import coursekit
import dlwb
from conftest import ROOT

INSTRUCTOR_MODULES = {"grading", "release", "lecture", "sandboxed", "layout"}


def imported_modules(package_dir: Path) -> dict[Path, set[str]]:
    """Every module each file of a package imports (absolute names; relative imports as written)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module if node.level == 0 else "." * node.level + node.module)
        found[path] = names
    return found


def test_the_student_package_holds_no_instructor_tool():
    modules = {m.name for m in pkgutil.iter_modules(dlwb.__path__)}
    assert not modules & INSTRUCTOR_MODULES, f"instructor tools inside dlwb: {sorted(modules & INSTRUCTOR_MODULES)}"
    assert {"train", "data", "runtime", "checks"} <= modules, sorted(modules)  # the listing itself works
    assert Path(dlwb.__file__).resolve().parent == ROOT / "labs" / "dlwb"
    assert Path(coursekit.__file__).resolve().parent == ROOT / "coursekit"


@pytest.mark.parametrize("tools", ["coursekit", "benchmarks"])
def test_dlwb_never_imports_the_instructor_tools_and_they_build_on_dlwb(tools):
    dlwb_imports = imported_modules(ROOT / "labs" / "dlwb")
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in names if n.split(".")[0] == tools)
                 for p, names in dlwb_imports.items()}
    assert not any(offenders.values()), f"dlwb imports {tools}: {offenders}"
    tool_imports = set().union(*imported_modules(ROOT / tools).values())
    assert any(n.split(".")[0] == "dlwb" for n in tool_imports), f"{tools} is expected to build on dlwb"
    # At run time too: importing every dlwb module loads nothing of the tools.
    names = sorted(m.name for m in pkgutil.iter_modules(dlwb.__path__) if m.name != "__main__")
    script = ("import importlib, sys\n"
              f"for name in {names!r}:\n    importlib.import_module('dlwb.' + name)\n"
              f"print(sorted(m for m in sys.modules if m.split('.')[0] == {tools!r}))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout
    assert out.strip().splitlines()[-1] == "[]", out


def test_the_benchmarks_are_installed_beside_dlwb_and_the_sandbox_sees_none_of_them(tmp_path):
    import benchmarks
    import benchmarks.reference
    from coursekit.grading.sandbox import Limits, Sandbox

    assert Path(benchmarks.__file__).resolve().parent == ROOT / "benchmarks"
    assert Path(benchmarks.reference.__file__).resolve().parent == ROOT / "benchmarks" / "reference"
    # The sandbox's file system is an allow-list: nothing bound holds the benchmarks' folder.
    binds = Sandbox(tmp_path, limits=Limits(), allow_unisolated=True)._binds()
    seen = [str(path) for path, _ in binds if (ROOT / "benchmarks").is_relative_to(path)]
    assert not seen, f"the sandbox binds {seen}, which holds benchmarks/"
    assert any(path == Path(dlwb.__file__).resolve().parent for path, _ in binds)  # the check itself works


def test_the_sandboxed_worker_imports_nothing_of_coursekit_outside_its_folder():
    # The sandbox sees Python, the installed packages, dlwb and coursekit/sandboxed: no other part of coursekit.
    for path, names in imported_modules(ROOT / "coursekit" / "sandboxed").items():
        outside = sorted(n for n in names if n.split(".")[0] == "coursekit" and n != "coursekit.sandboxed"
                         and not n.startswith("coursekit.sandboxed."))
        assert not outside, f"{path.name} imports {outside}: the sandbox binds only coursekit/sandboxed"


@pytest.mark.parametrize("command", ["release --check", "grade subs --lab lab01_cross_entropy", "lecture --smoke"])
def test_the_old_dlwb_commands_name_the_new_ones(command):
    result = subprocess.run([sys.executable, "-m", "dlwb", *command.split()], capture_output=True, text=True)
    assert result.returncode != 0
    assert f"python -m coursekit {command}" in result.stderr, result.stderr


def test_the_coursekit_command_line_lists_its_commands():
    result = subprocess.run([sys.executable, "-m", "coursekit", "--help"], capture_output=True, text=True, check=True)
    for command in ("release", "grade", "review", "lecture"):
        assert command in result.stdout, result.stdout


TEST_FOLDERS = {"dlwb_tests": "dlwb", "coursekit_tests": "coursekit", "benchmarks_tests": "benchmarks", "course": None}


def test_the_tests_mirror_the_packages():
    """One test folder per package (named ``<package>_tests``: a folder named like the package, on
    pytest's path, would shadow it) and ``course/`` for the notebooks, the browser and the
    environment; the student package's tests import none of the instructor's tools."""
    tests = ROOT / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    assert folders == set(TEST_FOLDERS), sorted(folders)
    assert not sorted(tests.glob("test_*.py")), "test modules belong in a package's folder"
    for folder, package in TEST_FOLDERS.items():
        assert sorted((tests / folder).glob("test_*.py")), f"tests/{folder} holds no tests"
        assert package is None or (ROOT / package).is_dir() or (ROOT / "labs" / package).is_dir(), package
    student = imported_modules(tests / "dlwb_tests")
    offenders = {p.name: sorted(n for n in names if n.split(".")[0] in ("coursekit", "benchmarks"))
                 for p, names in student.items()}
    assert not any(offenders.values()), offenders
