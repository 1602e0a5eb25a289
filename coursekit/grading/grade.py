"""Grade one submission, or a whole lab's worth of them in parallel.

Each submission is graded by its own grader process (``python -m coursekit.grading.grade SPEC``),
which starts its own sandbox: a crash, a hang or a resource blow-up costs one student's
result (reported as such), never the batch. The batch runs ``jobs`` of them at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from tqdm.auto import tqdm

from coursekit import cells
from coursekit.grading import feedback, runner, written
from coursekit.grading.collect import Submission, collect
from coursekit.grading.gradebook import Gradebook
from coursekit.grading.notebook import Program, SubmissionError, build_program, read_submission
from coursekit.grading.result import MalformedResult, Status, SubmissionResult, TestResult, TestStatus
from coursekit.grading.runner import defined_names, student_code_cells, undefined_names
from coursekit.grading.sandbox import Limits, RunReport, Sandbox
from coursekit.grading.session import Session
from dlwb.download import MANIFEST_PATH, cache_dir, data_dirs

GRADER_GRACE_S = 60.0  # on top of the sandbox's own limits, before a grader process is killed


def ungraded(master, status: Status, message: str) -> SubmissionResult:
    """A submission none of whose parts could be graded: each part gets ``status`` and ``message``, 0 points."""
    tests = [TestResult(cells.grade_id(c), 0.0, cells.points(c), TestStatus(status), message, 0.0)
             for c in master.cells if cells.is_graded(c)]
    return SubmissionResult(status, message, tests)


def _student_caused(error: dict, exercises: dict[int, str]) -> bool:
    """A self-check's error is the student's when a check failed or the student's code is in its traceback."""
    in_student_code = any(int(i) in exercises for i in re.findall(r'File "<cell (\d+)>"', error.get("traceback", "")))
    return in_student_code or error["ename"] in ("AssertionError", "CheckFailed")


@dataclass
class ProgramRun:
    """What running the student's program showed, before any test (from :func:`run_program`)."""

    died: str | None  # how the program died, when it did
    cell_errors: dict[str, tuple[TestStatus, str]]  # a name an exercise defines -> a test's (status, message)
    notes: list[str]  # for the student
    events: list[str]  # what the result's message says happened
    lab_problems: list[str]  # for the instructor: cells of the lab that failed in grading


def _cell_outcomes(master, program: Program, report: RunReport, skipped: dict[int, float]) -> ProgramRun:
    """The cells' errors and the cells that timed out, sorted into the student's and the lab's.

    ``cell_errors`` gives the status and message of a test that finds an exercise's name
    missing. A set-up cell that fails, and a self-check that fails without the student's
    code in its traceback, are the lab's problems in grading (a file it needs, the network):
    they go to the instructor in ``lab_problems``, never to the student.
    """
    runs_student_code = student_code_cells(master)  # self-checks and demos (and the exercises)
    cell_errors: dict[str, tuple[TestStatus, str]] = {}
    notes, events, lab_problems = [], [], []

    def label(index: int) -> str:
        gid = cells.grade_id(master.cells[index]) or str(index)
        return f"exercise cell {gid}" if index in program.exercises else f"cell {gid}"

    for cell in report.cells:
        if not cell.error or cell.index not in program.exercises and cell.error["ename"] == "NotImplementedError":
            continue  # an untouched exercise stops its self-check: the tests say "not attempted"
        what = f"{label(cell.index)} raised {cell.error['ename']}: {cell.error['evalue']}"[:600]
        if cell.index in program.exercises:
            for name in defined_names(master.cells[cell.index].source):
                cell_errors[name] = ((TestStatus.NOT_ATTEMPTED, f"{label(cell.index)} still raises NotImplementedError")
                                     if cell.error["ename"] == "NotImplementedError" else
                                     (TestStatus.ERROR, f"{name} is not defined because {what}"))
            notes.append(what)
        elif cell.index in runs_student_code and _student_caused(cell.error, program.exercises):
            notes.append(what)
        else:
            lab_problems.append(what)
    for index, limit in sorted(skipped.items()):
        timed_out = f"{label(index)} timed out (limit {limit:g} s)"
        if index in program.exercises:
            for name in defined_names(master.cells[index].source):
                cell_errors[name] = (TestStatus.TIMED_OUT, f"{timed_out}; it was skipped")
            events.append(f"{timed_out}, an endless loop or far too slow; it was skipped and the other "
                          "exercises were graded in a fresh run of your program")
        elif index in runs_student_code:
            notes.append(f"{timed_out}; it was skipped")
        else:
            lab_problems.append(timed_out)
    return ProgramRun(report.died, cell_errors, notes, events, lab_problems)


# The stages of grading one submission, in order (grade_one runs them; each can be called alone).

def read(submission_path: Path):
    """Stage 1: the submitted file as a notebook; :class:`SubmissionError` when it is not a usable one."""
    return read_submission(submission_path.read_bytes(), name=submission_path.name)


def rebuild(master, submission) -> Program:
    """Stage 2: the student's exercise cells on the instructor's; :class:`SubmissionError` when not this lab."""
    return build_program(master, submission)


@contextlib.contextmanager
def sandbox_session(master, program: Program, submission_path: Path, file_name: str, workspace: Path,
                    limits: Limits, readable: list[Path], allow_unisolated: bool) -> Iterator[Session]:
    """Where stages 3 and 4 run: a :class:`Session` in a fresh folder holding the student's file, nothing else."""
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=workspace))

    def make_sandbox(deadline: float) -> Sandbox:
        return Sandbox(workdir, limits=limits, readable=readable, allow_unisolated=allow_unisolated,
                       deadline=deadline)

    try:
        (workdir / file_name).write_bytes(submission_path.read_bytes())
        with Session(master, program, make_sandbox, limits.submission_timeout_s) as session:
            yield session
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_program(master, program: Program, session: Session) -> ProgramRun:
    """Stage 3: run the student's program in the sandbox, each cell once (skipping those that time out)."""
    report = session.start()
    run = _cell_outcomes(master, program, report, session.skipped)
    run.notes = [*program.notes, *run.notes]
    if not session.isolated:
        run.notes.append("graded without isolation (--allow-unisolated)")
    return run


def grade_tests(master, program: Program, session: Session, run: ProgramRun,
                budget_s: float) -> tuple[list[TestResult], list[str]]:
    """Stage 4: the graded cells, run here on the student's names; and what cut the tests short (events)."""
    tests = runner.run_tests(master, program, session, run.cell_errors, run.died)
    events = []
    if session.budget_spent and not run.died:
        events.append(f"your program used up the grading time budget ({budget_s:g} s for the whole submission, "
                      "tests included); the tests after that were not run")
    if run.died:
        events.append(f"your program {run.died}; tests that needed it could not run")
    return tests, events


def assemble(program: Program, run: ProgramRun, tests: list[TestResult], events: list[str],
             output: str) -> SubmissionResult:
    """Stage 5: the submission's result, the written answers (0 points until reviewed) after the tests."""
    return SubmissionResult(Status.GRADED, "; ".join([*run.events, *events]),
                            [*tests, *written.results(program.written)], run.notes,
                            answers={w["grade_id"]: w["answer"] for w in program.written},
                            lab_problems=run.lab_problems, output=output)


def grade_one(master_path: Path, submission_path: Path, workspace: Path, limits: Limits,
              readable: list[Path] = (), allow_unisolated: bool = False) -> SubmissionResult:
    """Score one submitted notebook against its master, stage by stage.

    The stages, in order: :func:`read` the file, :func:`rebuild` it on the master, then in a
    :func:`sandbox_session` :func:`run_program` and :func:`grade_tests`, and :func:`assemble`
    the result. ``readable``: what the student's program may read besides Python and ``dlwb`` (the lab's data).
    A file that is not a usable notebook of this lab is ``invalid``. Any other exception
    escapes: the batch records it for this student as ``error`` (see :func:`_grader_result`).
    """
    master = nbformat.read(master_path, as_version=4)
    try:
        program = rebuild(master, read(submission_path))
    except SubmissionError as err:
        return ungraded(master, Status.INVALID, str(err))
    with sandbox_session(master, program, submission_path, master_path.name, workspace, limits, readable,
                         allow_unisolated) as session:
        run = run_program(master, program, session)
        tests, events = grade_tests(master, program, session, run, limits.submission_timeout_s)
        output = session.output()
    return assemble(program, run, tests, events, output)


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
    summary: Path  # the instructor's summary (the text of :func:`summary`)
    problems: list[str]  # files skipped or merged, grader errors, results that could not be stored
    lab_problems: dict[str, list[str]]  # a cell of the lab failing in grading -> the students it failed for
    awaiting_review: int = 0  # written answers of the latest submissions that no instructor has marked yet
    awaiting_points: float = 0.0  # the points they are worth
    outputs: dict[str, Path] = field(default_factory=dict)  # a student whose program crashed -> what it printed


CRASHED = (TestStatus.ERROR, TestStatus.TIMED_OUT, TestStatus.DIED)  # a part whose program raised, hung or died


def crashed(result: SubmissionResult) -> bool:
    """Whether the student's program failed while it was graded: the grader failed, or a part raised, hung or died."""
    return result.status is Status.ERROR or any(t.status in CRASHED for t in result.tests)


def write_output(folder: Path, student: str, result: SubmissionResult) -> Path:
    """What a crashed program printed, for the instructor (never in feedback): ``folder/<student slug>.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_slug(student)}.txt"
    path.write_text(f"# {student}: what the program printed while it was graded\n\n{result.output}",
                    encoding="utf-8", errors="backslashreplace")
    return path


def _slug(student: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", student).strip("._") or "student"
    return f"{slug}-{hashlib.sha256(student.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def write_feedback(out: Path, book: Gradebook, submission_id: int) -> Path:
    """(Re)write a student's feedback from the gradebook, reviews of written answers included."""
    recorded = book.result(submission_id)
    return feedback.write(out / "feedback" / recorded.lab, _slug(recorded.student), recorded)


def lab_data() -> list[Path]:
    """What a lab may read in grading: the data manifest, the data cache and ``$DLWB_DATA_DIR`` folders."""
    return [p for p in (MANIFEST_PATH, cache_dir(), *data_dirs()) if p.exists()]


def summary(run: LabRun) -> str:
    """What the instructor needs to know about a batch, in Markdown (printed and written beside the gradebook)."""
    lines = [f"# {run.lab}: grading summary", "",
             f"{run.graded} graded, {run.invalid} invalid, {run.errors} grader errors in {run.seconds:.1f} s", "",
             f"- gradebook {run.gradebook}", f"- feedback  {run.feedback}/", f"- grades    {run.csv}", ""]
    if run.awaiting_review:
        lines += [f"{run.awaiting_review} written answer(s) ({run.awaiting_points:g} points) await review; the "
                  "scores above do not count them yet. Mark them with "
                  f"`python -m coursekit review --out {run.gradebook.parent} --lab {run.lab}`.", ""]
    if run.lab_problems:
        lines += ["## Cells of the lab that failed in grading (not shown to students)", "",
                  "The sandbox has no network and reads only Python, dlwb and the lab's data; a cell that "
                  "fails there needs fixing in the lab, or what it needs made available.", ""]
        for problem, students in sorted(run.lab_problems.items(), key=lambda kv: -len(kv[1])):
            names = ", ".join(students[:10]) + (", …" if len(students) > 10 else "")
            lines.append(f"- {problem} — in {len(students)} of {run.graded} graded submissions ({names})")
        lines.append("")
    if run.outputs:
        lines += ["## What crashed programs printed (not shown to students)", "",
                  "Each file holds the output of a submission that raised, hung or died while it was graded.", "",
                  *[f"- {student}: {path}" for student, path in sorted(run.outputs.items())], ""]
    if run.problems:
        lines += ["## Files skipped, students merged, grader errors", "", *[f"- {p}" for p in run.problems], ""]
    return "\n".join(lines)


def grade_lab(source: Path, lab: str, *, solutions: Path, out: Path, limits: Limits, jobs: int,
              allow_unisolated: bool = False, progress: bool = True) -> LabRun:
    """Collect, grade (``jobs`` at a time), record in the gradebook, write feedback, a CSV and a summary."""
    master_path = solutions / f"{lab}.ipynb"
    if not master_path.is_file():
        available = sorted(p.stem for p in solutions.glob("*.ipynb"))
        raise FileNotFoundError(f"no master notebook {master_path}; labs available: {available}")
    master = nbformat.read(master_path, as_version=4)
    check_master(master, master_path)
    master_sha = hashlib.sha256(master_path.read_bytes()).hexdigest()
    max_points = sum(cells.points(c) for c in master.cells if cells.is_graded(c))
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix="dlwb-grading-"))
    book = Gradebook(out / "gradebook.sqlite")
    lab_problems: dict[str, list[str]] = {}
    outputs_folder, outputs = out / "output" / lab, {}
    shutil.rmtree(outputs_folder, ignore_errors=True)  # this batch's outputs only: none left from an earlier one
    try:
        latest, found, problems = collect(source, lab, workspace)
        results = _run_parallel(master_path, latest, workspace, limits, lab_data(), allow_unisolated, jobs, progress)
        counts = dict.fromkeys(Status, 0)
        for student, sub in sorted(latest.items()):
            result = results[student]
            others = sorted(s.origin for s in found if s.student == student and s is not sub)
            if others:
                result.notes.append(f"{len(others) + 1} files were found for you; the latest by file time, "
                                    f"{sub.origin}, was graded (not {', '.join(others)})")
            try:
                sid = book.record(lab=lab, max_points=max_points, master_sha256=master_sha, submission=sub,
                                  result=result)
                write_feedback(out, book, sid)
            except Exception as err:  # noqa: BLE001 — one student's output failing is that student's error
                problems.append(f"{student}: the grader could not store this student's results "
                                f"({type(err).__name__}: {err}); grade them again once that is fixed")
                counts[Status.ERROR] += 1
                continue
            counts[result.status] += 1
            if result.status is Status.ERROR:
                problems.append(f"{student}: {result.message}")
            for problem in result.lab_problems:
                lab_problems.setdefault(problem, []).append(student)
            if crashed(result) and result.output.strip():
                try:
                    outputs[student] = write_output(outputs_folder, student, result)
                except OSError as err:  # the grade is stored: only the instructor's copy of the output is lost
                    problems.append(f"{student}: could not keep what the program printed ({err})")
        csv_path = out / f"{lab}.csv"
        book.export_csv(lab, csv_path)
        awaiting = book.db.execute("SELECT COALESCE(SUM(awaiting_review), 0), COALESCE(SUM(awaiting_points), 0) "
                                   "FROM latest WHERE lab = ?", (lab,)).fetchone()
    finally:
        book.close()
        shutil.rmtree(workspace, ignore_errors=True)
    run = LabRun(lab, counts[Status.GRADED], counts[Status.INVALID], counts[Status.ERROR], time.perf_counter() - start,
                 out / "gradebook.sqlite", out / "feedback" / lab, csv_path, out / f"{lab}-summary.md", problems,
                 lab_problems, *awaiting, outputs=outputs)
    run.summary.write_text(summary(run), encoding="utf-8")
    return run


def _run_parallel(master_path, latest: dict[str, Submission], workspace, limits, readable, allow_unisolated, jobs,
                  progress) -> dict[str, SubmissionResult]:
    """One grader process per submission, ``jobs`` at a time; every student gets a result."""
    pending = sorted(latest.items())
    running: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    results: dict[str, SubmissionResult] = {}
    budget = limits.submission_timeout_s + GRADER_GRACE_S
    master = nbformat.read(master_path, as_version=4)
    with tqdm(total=len(pending), desc=f"grading {master_path.stem}", disable=not progress) as bar:
        while pending or running:
            while pending and len(running) < jobs:
                student, sub = pending.pop(0)
                spec = workspace / f"job-{len(results) + len(running):05d}.json"
                spec.write_text(json.dumps({"master": str(master_path), "submission": str(sub.path),
                                            "workspace": str(workspace), "limits": asdict(limits),
                                            "readable": [str(r) for r in readable],
                                            "allow_unisolated": allow_unisolated,
                                            "result": str(spec.with_suffix(".result.json"))}))
                with open(spec.with_suffix(".err"), "wb") as stderr:
                    proc = subprocess.Popen([sys.executable, "-m", "coursekit.grading.process", str(spec)],
                                            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
                running[student] = (proc, spec, time.monotonic())
            time.sleep(0.05)
            for student, (proc, spec, started) in list(running.items()):
                if proc.poll() is None and time.monotonic() - started < budget:
                    continue
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
                    proc.wait()
                results[student] = _grader_result(master, proc.returncode, spec)
                del running[student]
                bar.update(1)
    return results


def _grader_result(master, returncode: int, spec: Path) -> SubmissionResult:
    """What a finished (or killed) grader process leaves for its student: its result, or an ``error`` saying why not.

    So a stage that raises, a grader that is killed or one that writes no valid result still
    leaves this student a result to record.
    """
    result_file = spec.with_suffix(".result.json")
    if returncode == 0 and result_file.exists():
        try:
            return SubmissionResult.from_json(result_file.read_text())
        except MalformedResult as err:
            reason = str(err)
    else:
        stderr = spec.with_suffix(".err").read_text(encoding="utf-8", errors="replace")[-2000:].strip()
        reason = stderr.splitlines()[-1] if stderr else f"exit status {returncode}"
    return ungraded(master, Status.ERROR, f"the grader failed on this submission ({reason}); ask the instructor")


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = grade_one(Path(spec["master"]), Path(spec["submission"]), Path(spec["workspace"]),
                       Limits(**spec["limits"]), [Path(r) for r in spec["readable"]], spec["allow_unisolated"])
    Path(spec["result"]).write_text(result.to_json())
