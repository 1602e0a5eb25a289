"""One submission's program across worker restarts, so that a time-out costs only what timed out.

A cell that times out is skipped and the program is started again; a call that times out
kills the worker, and the next request starts it again. A restarted program runs what the
graded tests need, the set-up and exercise cells, without the self-check cells (they ran
once; the grader runs its tests itself) and without any cell that timed out. At most
``MAX_RESTARTS`` restarts per submission, and all of it within the submission's time budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from coursekit.grading.notebook import Program
from coursekit.grading.runner import student_code_cells
from coursekit.grading.sandbox import BudgetSpent, CallTimedOut, CellResult, RunReport, Sandbox, SandboxDied

MAX_RESTARTS = 4


class Session:
    """Talks to the current worker; restarts it after a time-out. Use as a context manager."""

    def __init__(self, master, program: Program, make_sandbox: Callable[[float], Sandbox], budget_s: float) -> None:
        """``make_sandbox(deadline)`` starts nothing yet; ``budget_s`` bounds the whole session from now."""
        self.program, self.make_sandbox, self.budget_s = program, make_sandbox, budget_s
        self.deadline = time.monotonic() + budget_s
        self.budget_spent = False
        self_checks = student_code_cells(master)
        self.needed = [c for c in program.cells if c["index"] in program.exercises or c["index"] not in self_checks]
        self.sandbox: Sandbox | None = None
        self.isolated = False
        self.restarts = 0
        self.skipped: dict[int, float] = {}  # cell index -> the limit (s) it ran into
        self._outputs: list[str] = []
        self._broken = False  # a call timed out: the next request starts a fresh worker

    def _stop(self) -> None:
        if self.sandbox is not None:
            self.sandbox.kill()
            self._outputs.append(self.sandbox.output())
            self.sandbox.close()
            self.sandbox = None

    def _run(self, cells: list[dict]) -> RunReport:
        """Start a worker on ``cells``; on a cell time-out skip that cell and start again."""
        results: dict[int, CellResult] = {}
        while True:
            self._stop()
            self.sandbox = self.make_sandbox(self.deadline)
            self.isolated = self.sandbox.isolated
            report = self.sandbox.start([c for c in cells if c["index"] not in self.skipped])
            results.update((cell.index, cell) for cell in report.cells)
            self.budget_spent = time.monotonic() >= self.deadline
            if report.timed_out is None or self.restarts >= MAX_RESTARTS:
                return RunReport(cells=[results[i] for i in sorted(results)], died=report.died)
            self.skipped[report.timed_out] = report.limit_s
            self.restarts += 1
            cells = self.needed

    def start(self) -> RunReport:
        """Run the student's program: every cell once, then without each cell that timed out."""
        return self._run(self.program.cells)

    def request(self, message: dict) -> dict:
        if time.monotonic() >= self.deadline:
            self._stop()
            self.budget_spent = True
            raise BudgetSpent(self.budget_s)
        if self._broken:
            self._broken = False
            if self.restarts >= MAX_RESTARTS:
                raise SandboxDied(f"was not started again after {MAX_RESTARTS} time-outs")
            self.restarts += 1
            report = self._run(self.needed)
            if report.died:
                raise SandboxDied(report.died)
        if self.sandbox is None:
            raise SandboxDied("the program is not running")
        try:
            return self.sandbox.request(message)
        except CallTimedOut:
            self._broken = True
            raise
        except BudgetSpent:
            self.budget_spent = True
            raise

    def output(self) -> str:
        """What every run of the program printed (capped per run)."""
        self._stop()
        return "\n[the program was started again]\n".join(o for o in self._outputs if o)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self._stop()
