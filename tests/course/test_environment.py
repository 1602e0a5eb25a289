"""environment.yml, requirements.txt, constraints.txt and the installed packages agree."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT


def requirement_lines(path):
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            yield Requirement(line)


def pinned(path):
    pins = {}
    for req in requirement_lines(path):
        (spec,) = req.specifier  # exactly one specifier ...
        assert spec.operator == "==", f"{path}: {req} must be an exact pin (==)"  # ... and exact
        if req.marker is None or req.marker.evaluate():
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_requirements_are_exact_pins_matching_constraints():
    req, con = pinned("requirements.txt"), pinned("constraints.txt")
    for name, version in req.items():
        assert con.get(name) == version, f"requirements.txt pins {name}=={version}, constraints.txt {con.get(name)}"


def test_issue_pins():
    req = pinned("requirements.txt")
    assert req["torch"] == "2.13.0" and req["keras"] == "3.15.1"
    assert req["tensorflow-cpu" if "tensorflow-cpu" in req else "tensorflow"] == "2.21.0"
    assert req["jupyterlab"].startswith("4.6.") and req["ipywidgets"].startswith("8.1.")


def test_installed_versions_match_constraints():
    mismatched = []
    for name, version in pinned("constraints.txt").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            mismatched.append(f"{name}: not installed (constraints pin {version})")
            continue
        if installed.split("+")[0] != version:  # torch's local tag (+cpu, +cu128) is a build choice
            mismatched.append(f"{name}: installed {installed}, constraints pin {version}")
    assert not mismatched, "run `make env` to sync the environment:\n" + "\n".join(mismatched)


def test_environment_yml_uses_the_same_pins():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*-\s*python=3\.11\s*$", text, re.M)
    assert re.search(r"^\s*-\s*-r requirements\.txt\s*$", text, re.M)
    assert re.search(r"^\s*-\s*-c constraints\.txt\s*$", text, re.M)
    assert re.search(r"^\s*-\s*conda-forge\s*$", text, re.M)


@pytest.mark.parametrize("path", ["notebooks", "solutions", "labs"])
def test_no_pip_install_inside_notebooks(path):
    offenders = [p.name for p in (ROOT / path).glob("*.ipynb") if re.search(r"[!%]pip install", p.read_text())]
    assert not offenders, f"set-up belongs in requirements.txt, not in cells: {offenders}"


def test_nodeps_packages_are_pinned_installed_and_installed_by_both_setups():
    pins = pinned("requirements-nodeps.txt")
    assert pins, "requirements-nodeps.txt pins nothing"
    for name, version in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} is not installed: run `make env`")
        assert installed == version, f"{name}: installed {installed}, requirements-nodeps.txt pins {version}"
    assert "pip install --no-deps -r requirements-nodeps.txt" in (ROOT / "Makefile").read_text()
    assert "pip install --no-deps -r requirements-nodeps.txt" in (ROOT / "environment.yml").read_text()
    # Installed without dependencies, so nothing in the resolved set may be pulled in on its behalf.
    assert not set(pins) & set(pinned("constraints.txt")), "no-deps packages must stay out of constraints.txt"


@pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64"),
                    reason="mimalloc is installed and preloaded on Linux x86_64 only")
def test_the_course_kernel_runs_with_mimalloc_preloaded():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.argv[0]).resolve().parent == Path(sys.executable).resolve().parent, \
        "the python3 kernel is not this environment's: run `make env`"
    preload = spec.env.get("LD_PRELOAD", "")
    assert "libmimalloc" in preload and Path(preload).is_file(), \
        f"the course kernel's spec preloads {preload!r}, not mimalloc: run `make env`"

    def mapped_libraries(env):
        return subprocess.run([spec.argv[0], "-c", "print(open('/proc/self/maps').read())"], env=env,
                              capture_output=True, text=True, check=True).stdout

    assert "libmimalloc" in mapped_libraries({**os.environ, **spec.env})  # a process started as the kernel is
    bare = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    assert "libmimalloc" not in mapped_libraries(bare)  # and only there: nothing else in the environment loads it
