"""Written answers: the student's prose, taken from the submission for an instructor to mark.

The answer is the source of the submission's cell with the written answer's ``grade_id``
(a Markdown cell in the released lab). It is text, never executed, read on the trusted side
like the rest of the notebook: lone surrogates become U+FFFD (as :func:`coursekit.sandboxed.wire.clean_text`
does for every string from the sandbox) and it is cut at :data:`MAX_ANSWER_CHARS`. It scores
0 until reviewed (``needs review``); an answer left as the released stub, or blank, is
``not attempted``.
"""

from __future__ import annotations

from coursekit.sandboxed.wire import clean_text
from coursekit.release import MARKDOWN_STUB

MAX_ANSWER_CHARS = 20_000
NEEDS_REVIEW = "needs review"
NOT_ATTEMPTED = "not attempted"
REVIEWED = "reviewed"  # the status once an instructor has marked it (see coursekit.grading.gradebook)


def answer_text(source: str, grade_id: str) -> tuple[str, list[str]]:
    """``(text, notes)``: the sanitised, size-capped answer and what was done to it."""
    text = clean_text(source).strip()
    if len(text) <= MAX_ANSWER_CHARS:
        return text, []
    return text[:MAX_ANSWER_CHARS], [f"your written answer {grade_id} is {len(text):,} characters long; only the "
                                     f"first {MAX_ANSWER_CHARS:,} were kept for marking"]


def attempted(text: str) -> bool:
    return bool(text.strip()) and text.strip() != MARKDOWN_STUB


def results(written: list[dict]) -> list[dict]:
    """One test-result record per written answer of a program (see :class:`coursekit.grading.notebook.Program`)."""
    return [{"grade_id": w["grade_id"], "points": 0.0, "max_points": w["points"],
             "status": NEEDS_REVIEW if attempted(w["answer"]) else NOT_ATTEMPTED,
             "message": "" if attempted(w["answer"]) else "no answer was written", "seconds": 0.0}
            for w in written]
