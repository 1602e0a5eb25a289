"""Run the graded test cells in the grader's process, with the student's names as proxies.

A test cell (visible asserts and hidden tests) is executed here, never in the sandbox. The
names it uses resolve as follows:

- names the master's exercise cells define → :class:`Remote` proxies: calling one sends the
  arguments to the sandbox and returns the student's result as plain values;
- names the instructor's set-up cells define (data, reference functions, parameters, imports)
  → those cells are run again here, in the grader, from the master: every set-up cell that
  does not use a student's name, plus every import statement (so a student's monkeypatched
  ``numpy`` lives only in the sandbox);
- names the test cell assigns itself → its own.

Anything else is an authoring error of the lab (:func:`undefined_names` finds it before
grading). So every comparison, and every reference value, is computed here.
"""

from __future__ import annotations

import ast
import builtins
import time
import traceback
from coursekit.sandboxed import wire
from coursekit import cells
from coursekit.grading.notebook import Program
from coursekit.grading.result import TestResult, TestStatus
from coursekit.grading.sandbox import BudgetSpent, CallTimedOut, SandboxDied
from coursekit.release import BEGIN_HIDDEN, END_HIDDEN


class StudentError(Exception):
    """The student's code raised while a test called it."""

    def __init__(self, ename: str, evalue: str):
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue = ename, evalue


class Remote:
    """An object that lives in the sandbox: call it, or read an attribute; nothing else."""

    __slots__ = ("_sandbox", "_ref", "_label")

    def __init__(self, sandbox, ref: int, label: str):
        object.__setattr__(self, "_sandbox", sandbox)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_label", label)

    def __call__(self, *args, **kwargs):
        try:
            reply = self._sandbox.request({"op": "call", "ref": self._ref, "args": encode_args(list(args)),
                                           "kwargs": encode_args(kwargs)})
        except CallTimedOut as err:
            raise CallTimedOut(f"{self._label}(…) {err}") from None
        return unpack(self._sandbox, reply, f"{self._label}(…)")

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        reply = self._sandbox.request({"op": "getattr", "ref": self._ref, "name": name})
        return unpack(self._sandbox, reply, f"{self._label}.{name}")

    def __setattr__(self, name, value):
        raise TypeError(f"the test cannot set attributes on {self._label}, which lives in the student's program")

    def __bool__(self):
        raise TypeError(f"{self._label} is an object of the student's program, not a value that can be tested")

    def __repr__(self) -> str:
        return f"<student object {self._label}>"


def encode_args(value):
    def ref(obj):
        if isinstance(obj, Remote):
            return object.__getattribute__(obj, "_ref")
        raise wire.WireError(f"a test passed a {type(obj).__name__}, which cannot be sent to the student's program")

    return wire.encode(value, make_ref=ref)


def _tensor(array):
    import torch

    return torch.from_numpy(array.copy())


def unpack(sandbox, reply: dict, label: str):
    if not reply.get("ok"):
        ename, evalue = str(reply.get("ename", "Error"))[:100], str(reply.get("evalue", ""))[:500]
        raise StudentError(ename, evalue)
    if "module" in reply:
        raise TypeError(f"{label} is a module in the student's program")
    return wire.decode(reply.get("value"), resolve_ref=lambda r: Remote(sandbox, r, label), make_tensor=_tensor)


def defined_names(source: str) -> set[str]:
    """Top-level names a cell binds (assignments, defs, classes, imports, loop targets)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def used_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _is_instructor_cell(cell) -> bool:
    return cell.cell_type == "code" and not cells.is_solution(cell) and not cells.is_graded(cell)


def _top_level(source: str, ctx) -> set[str]:
    """Names the cell's own statements load or store (``ctx``), not those inside the functions it defines."""
    names, todo = set(), list(ast.parse(source).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            if ctx is ast.Store and not isinstance(node, ast.Lambda):
                names.add(node.name)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ctx):
            names.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return names


def student_code_cells(master) -> set[int]:
    """Indices of the master's code cells that use a name an exercise defines, or a result of such a cell.

    Among the instructor's cells these are the self-checks and demos: they run the student's code,
    or use what it returned (a demo that plots the model a self-check trained). The others are
    set-up, which the grader may run itself.
    """
    students = student_names(master)
    results: set[str] = set()  # names bound, so far in notebook order, by instructor cells that use student code
    cells = set()
    for i, cell in enumerate(master.cells):
        if cell.cell_type != "code":
            continue
        binds = _top_level(cell.source, ast.Store)
        if used_names(cell.source) & students or (_top_level(cell.source, ast.Load) - binds) & results:
            cells.add(i)
            if _is_instructor_cell(cell):
                results |= binds
        else:
            results -= binds  # set up again by the instructor's own code
    return cells


def trusted_setup(master) -> str:
    """The instructor code the grader runs itself: imports, and set-up cells free of student names."""
    calls_student_code = student_code_cells(master)
    parts = []
    for index, cell in enumerate(master.cells):
        if not _is_instructor_cell(cell):
            continue
        if index in calls_student_code:  # a self-check: it calls the student's code; keep its imports
            parts += [ast.unparse(n) for n in ast.parse(cell.source).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        else:
            parts.append(cell.source)
    return "\n".join(parts)


def student_names(master) -> set[str]:
    names = set()
    for cell in master.cells:
        if cell.cell_type == "code" and cells.is_solution(cell):
            body = ast.parse(cell.source).body
            names |= {n.name for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            targets = [t for n in body if isinstance(n, (ast.Assign, ast.AnnAssign))
                       for t in (n.targets if isinstance(n, ast.Assign) else [n.target])]
            names |= {e.id for t in targets for e in ast.walk(t) if isinstance(e, ast.Name)}  # a, (b, c) = …
    return names


def undefined_names(master, program: Program) -> dict[str, set[str]]:
    """Per test cell, names that are neither set up by the instructor, the student's, nor its own."""
    known = defined_names(trusted_setup(master)) | student_names(master) | set(dir(builtins))
    problems = {}
    for test in program.tests:
        missing = used_names(test["source"]) - defined_names(test["source"]) - known
        if missing:
            problems[test["grade_id"]] = missing
    return problems


def hidden_line_numbers(source: str) -> set[int]:
    hidden, inside = set(), False
    for number, line in enumerate(source.splitlines(), start=1):
        if line.strip() == BEGIN_HIDDEN:
            inside = True
        if inside:
            hidden.add(number)
        if line.strip() == END_HIDDEN:
            inside = False
    return hidden


def _failing_line(err: BaseException, filename: str) -> int | None:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == filename]
    return frames[-1].lineno if frames else None


def _explain(err: BaseException, test: dict, cell_errors: dict[str, tuple[TestStatus, str]],
             died: str | None) -> tuple[TestStatus, str]:
    """Status and a message for the student that reveals nothing of the hidden tests."""
    filename = f"<test {test['grade_id']}>"
    line = _failing_line(err, filename)
    hidden = line in hidden_line_numbers(test["source"]) if line else False
    visible_code = test["source"].splitlines()[line - 1].strip() if line and not hidden else None
    if isinstance(err, StudentError):
        if err.ename == "NotImplementedError":
            return TestStatus.NOT_ATTEMPTED, "the exercise still raises NotImplementedError"
        return TestStatus.ERROR, f"your code raised {err.ename}: {err.evalue}"
    if isinstance(err, BudgetSpent):
        return TestStatus.TIMED_OUT, f"not finished: your program {err}"
    if isinstance(err, CallTimedOut):
        return TestStatus.TIMED_OUT, f"{err} (an endless loop, or far too slow?)"
    if isinstance(err, SandboxDied):
        reason = died or str(err)
        timed_out = "timed out" in reason or "within" in reason
        return (TestStatus.TIMED_OUT if timed_out else TestStatus.DIED), f"your program {reason}"
    if isinstance(err, NameError) and getattr(err, "name", None) in cell_errors:
        return cell_errors[err.name]
    if isinstance(err, NameError):
        return TestStatus.ERROR, f"{getattr(err, 'name', err)} is not defined: keep the names the exercise asks for"
    if isinstance(err, wire.WireError):
        return TestStatus.ERROR, f"your code returned a value that cannot be graded ({err})"
    if isinstance(err, AssertionError):
        if hidden:
            return TestStatus.FAILED, "a hidden test failed"
        detail = f": {err}" if str(err) else ""
        return TestStatus.FAILED, (f"check `{visible_code}` failed{detail}" if visible_code else
                                   f"a check failed{detail}")
    where = f"`{visible_code}`" if visible_code else "a hidden test"
    return TestStatus.FAILED, f"{where} could not use your result ({type(err).__name__})"


def run_tests(master, program: Program, sandbox, cell_errors: dict[str, tuple[TestStatus, str]],
              died: str | None) -> list[TestResult]:
    """Execute each graded cell here; the student's names are fetched from the sandbox on use.

    ``sandbox`` is anything with the ``request`` of :class:`coursekit.grading.sandbox.Sandbox`
    (a :class:`coursekit.grading.session.Session`, which restarts the worker after a time-out).
    """
    trusted: dict = {"__name__": "__grader__"}
    try:
        exec(compile(trusted_setup(master), "<instructor set-up>", "exec"), trusted)
    except Exception as err:
        raise RuntimeError(f"the lab's set-up cells fail when the grader runs them: {type(err).__name__}: {err}") from err
    students = student_names(master)
    results = []
    for test in program.tests:
        start = time.perf_counter()
        namespace = dict(trusted)
        try:
            for name in sorted((used_names(test["source"]) & students) - defined_names(test["source"])):
                reply = sandbox.request({"op": "get", "name": name})
                if not reply.get("ok") and reply.get("ename") == "NameError":
                    continue  # left undefined: the NameError below explains it
                namespace[name] = unpack(sandbox, reply, name)
            exec(compile(test["source"], f"<test {test['grade_id']}>", "exec"), namespace)
            status, message = TestStatus.PASSED, ""
        except Exception as err:  # noqa: BLE001 — every failure becomes a result, never a crash
            status, message = _explain(err, test, cell_errors, died)
        points = test["points"] if status is TestStatus.PASSED else 0.0
        results.append(TestResult(test["grade_id"], points, test["points"], status, message,
                                  time.perf_counter() - start))
    return results
