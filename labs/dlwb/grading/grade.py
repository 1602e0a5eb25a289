"""Grade one submission, or a whole lab's worth of them in parallel.

Each submission is graded by its own grader process (``python -m dlwb.grading.grade SPEC``),
which starts its own sandbox: a crash, a hang or a resource blow-up costs one student's
result (reported as such), never the batch. The batch runs ``jobs`` of them at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
from tqdm.auto import tqdm

from dlwb.grading import feedback
from dlwb.grading.collect import Submission, collect
from dlwb.grading.gradebook import Gradebook
from dlwb.grading.notebook import SubmissionError, build_program, read_submission
from dlwb.grading.runner import defined_names, run_tests, undefined_names
from dlwb.grading.sandbox import Limits, Sandbox

GRADER_GRACE_S = 60.0  # on top of the sandbox's own limits, before a grader process is killed


def _result(status: str, message: str, tests: list[dict], notes: list[str], output: str = "") -> dict:
    return {"status": status, "message": message, "tests": tests, "notes": notes, "output": output,
            "score": sum(t["points"] for t in tests), "max_score": sum(t["max_points"] for t in tests)}


def _ungraded(master, status: str, message: str) -> dict:
    tests = [{"grade_id": c.metadata["nbgrader"]["grade_id"], "points": 0.0,
              "max_points": float(c.metadata["nbgrader"].get("points", 0)), "status": status, "message": message,
              "seconds": 0.0}
             for c in master.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]
    return _result(status, message, tests, [])


def grade_one(master_path: Path, submission_path: Path, workspace: Path, limits: Limits,
              hide: list[Path], allow_unisolated: bool = False) -> dict:
    """Score one submitted notebook against its master; returns a plain dict (see ``_result``)."""
    master = nbformat.read(master_path, as_version=4)
    try:
        submission = read_submission(submission_path.read_bytes(), name=submission_path.name)
        program = build_program(master, submission)
    except SubmissionError as err:
        return _ungraded(master, "invalid", str(err))
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=workspace))
    try:
        (workdir / master_path.name).write_bytes(submission_path.read_bytes())  # the student's file, nothing else
        with Sandbox(workdir, limits=limits, hide=hide, allow_unisolated=allow_unisolated) as sandbox:
            report = sandbox.start(program.cells)
            notes = list(program.notes)
            if not sandbox.isolated:
                notes.append("graded without isolation (--allow-unisolated)")
            cell_errors: dict[str, tuple[str, str]] = {}  # name -> (status, message)
            for cell in report.cells:
                if not cell.error:
                    continue
                label = program.exercises.get(cell.index)
                what = f"{cell.error['ename']}: {cell.error['evalue']}"
                if label is not None:
                    for name in defined_names(master.cells[cell.index].source):
                        if cell.error["ename"] == "NotImplementedError":
                            cell_errors[name] = ("not attempted", f"exercise cell {label} still raises NotImplementedError")
                        else:
                            cell_errors[name] = ("error", f"{name} is not defined because exercise cell {label} raised {what}")
                if label is not None or cell.error["ename"] != "NotImplementedError":
                    notes.append(f"cell {cell.index}{f' ({label})' if label else ''} raised {what}"[:600])
            tests = run_tests(master, program, sandbox, cell_errors, report.died)
            sandbox.kill()
            output = sandbox.output()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    message = f"your program {report.died}; tests that needed it could not run" if report.died else ""
    return _result("graded", message, [asdict(t) for t in tests], notes, output)


def check_master(master, path: Path) -> None:
    """Refuse a master whose test cells could not run in grading (an authoring error of the lab)."""
    broken = undefined_names(master, build_program(master, master))
    if broken:
        raise RuntimeError(
            f"{path}: graded test cells may use only names from set-up cells that do not call student code, "
            f"the exercise's names and their own variables; these use other names: {broken}. "
            "Define them in a set-up cell or inside the test cell."
        )


@dataclass
class LabRun:
    lab: str
    graded: int
    invalid: int
    errors: int
    seconds: float
    gradebook: Path
    feedback: Path
    csv: Path
    problems: list[str]


def _slug(student: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", student).strip("._") or "student"
    return f"{slug}-{hashlib.sha256(student.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def grade_lab(source: Path, lab: str, *, solutions: Path, out: Path, limits: Limits, jobs: int,
              allow_unisolated: bool = False, progress: bool = True) -> LabRun:
    """Collect, grade (``jobs`` at a time), record in the gradebook, write feedback and a CSV."""
    master_path = solutions / f"{lab}.ipynb"
    if not master_path.is_file():
        available = sorted(p.stem for p in solutions.glob("*.ipynb"))
        raise FileNotFoundError(f"no master notebook {master_path}; labs available: {available}")
    master = nbformat.read(master_path, as_version=4)
    check_master(master, master_path)
    master_sha = hashlib.sha256(master_path.read_bytes()).hexdigest()
    max_points = sum(float(c.metadata["nbgrader"].get("points", 0)) for c in master.cells
                     if c.metadata.get("nbgrader", {}).get("grade"))
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix="dlwb-grading-"))
    hide = [solutions.resolve(), source.resolve(), out.resolve(), workspace,
            Path(__file__).resolve().parents[3]]  # the course root: solutions, .git, executed copies
    book = Gradebook(out / "gradebook.sqlite")
    try:
        latest, _, problems = collect(source, lab, workspace)
        results = _run_parallel(master_path, latest, workspace, limits, hide, allow_unisolated, jobs, progress)
        counts = {"graded": 0, "invalid": 0, "error": 0}
        for student, sub in sorted(latest.items()):
            result = results[student]
            counts[result["status"] if result["status"] in counts else "error"] += 1
            book.record(lab=lab, max_points=max_points, master_sha256=master_sha, submission=sub, result=result)
            feedback.write(out / "feedback" / lab, _slug(student), student, lab, result)
        csv_path = out / f"{lab}.csv"
        book.export_csv(lab, csv_path)
    finally:
        book.close()
        shutil.rmtree(workspace, ignore_errors=True)
    return LabRun(lab, counts["graded"], counts["invalid"], counts["error"], time.perf_counter() - start,
                  out / "gradebook.sqlite", out / "feedback" / lab, csv_path, problems)


def _run_parallel(master_path, latest: dict[str, Submission], workspace, limits, hide, allow_unisolated, jobs,
                  progress) -> dict[str, dict]:
    """One grader process per submission, ``jobs`` at a time; every student gets a result."""
    pending = sorted(latest.items())
    running: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    results: dict[str, dict] = {}
    budget = limits.total_timeout_s + limits.call_timeout_s * 50 + GRADER_GRACE_S
    master = nbformat.read(master_path, as_version=4)
    with tqdm(total=len(pending), desc=f"grading {master_path.stem}", disable=not progress) as bar:
        while pending or running:
            while pending and len(running) < jobs:
                student, sub = pending.pop(0)
                spec = workspace / f"job-{len(results) + len(running):05d}.json"
                spec.write_text(json.dumps({"master": str(master_path), "submission": str(sub.path),
                                            "workspace": str(workspace), "limits": asdict(limits),
                                            "hide": [str(h) for h in hide], "allow_unisolated": allow_unisolated,
                                            "result": str(spec.with_suffix(".result.json"))}))
                with open(spec.with_suffix(".err"), "wb") as stderr:
                    proc = subprocess.Popen([sys.executable, "-m", "dlwb.grading.grade", str(spec)],
                                            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
                running[student] = (proc, spec, time.monotonic())
            time.sleep(0.05)
            for student, (proc, spec, started) in list(running.items()):
                if proc.poll() is None and time.monotonic() - started < budget:
                    continue
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
                    proc.wait()
                err = spec.with_suffix(".err").read_text(encoding="utf-8", errors="replace")[-2000:]
                result_file = spec.with_suffix(".result.json")
                if proc.returncode == 0 and result_file.exists():
                    results[student] = json.loads(result_file.read_text())
                else:
                    reason = err.strip().splitlines()[-1] if err.strip() else f"exit status {proc.returncode}"
                    results[student] = _ungraded(master, "error", f"the grader failed on this submission ({reason}); "
                                                                  "ask the instructor")
                del running[student]
                bar.update(1)
    return results


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = grade_one(Path(spec["master"]), Path(spec["submission"]), Path(spec["workspace"]),
                       Limits(**spec["limits"]), [Path(h) for h in spec["hide"]], spec["allow_unisolated"])
    Path(spec["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
