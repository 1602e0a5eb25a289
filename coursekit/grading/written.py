"""Written answers: the student's prose, taken from the submission for an instructor to mark.

The answer is the source of the submission's cell with the written answer's ``grade_id``
(a Markdown cell in the released lab). It is text, never executed, read on the trusted side
like the rest of the notebook: lone surrogates become U+FFFD (as :func:`coursekit.sandboxed.wire.clean_text`
does for every string from the sandbox) and it is cut at :data:`MAX_ANSWER_CHARS`. It scores
0 until reviewed (``needs review``); an answer left as the released stub, or blank, is
``not attempted``.
"""

from __future__ import annotations

from coursekit.grading.result import TestResult, TestStatus
from coursekit.sandboxed.wire import clean_text
from coursekit.release import MARKDOWN_STUB

MAX_ANSWER_CHARS = 20_000


def answer_text(source: str, grade_id: str) -> tuple[str, list[str]]:
    """``(text, notes)``: the sanitised, size-capped answer and what was done to it."""
    text = clean_text(source).strip()
    if len(text) <= MAX_ANSWER_CHARS:
        return text, []
    return text[:MAX_ANSWER_CHARS], [f"your written answer {grade_id} is {len(text):,} characters long; only the "
                                     f"first {MAX_ANSWER_CHARS:,} were kept for marking"]


def attempted(text: str) -> bool:
    return bool(text.strip()) and text.strip() != MARKDOWN_STUB


def results(written: list[dict]) -> list[TestResult]:
    """One result per written answer of a program (see :class:`coursekit.grading.notebook.Program`)."""
    parts = []
    for w in written:
        status, message = ((TestStatus.NEEDS_REVIEW, "") if attempted(w["answer"]) else
                           (TestStatus.NOT_ATTEMPTED, "no answer was written"))
        parts.append(TestResult(w["grade_id"], 0.0, w["points"], status, message, 0.0))
    return parts
