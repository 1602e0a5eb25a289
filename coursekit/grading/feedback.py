"""Per-student feedback, in Markdown and HTML, that never shows hidden tests or expected values.

Everything shown comes from the recorded result (:meth:`coursekit.grading.gradebook.Gradebook.result`):
test names (``grade_id``), points, status and the message the runner wrote (which, for
hidden tests, says only that a hidden test failed); for each written answer, the student's
own text and either "awaiting review" or the instructor's points and comment. Never a
rubric or a model answer. Student-controlled text (their error messages, printed output,
written answers) is escaped in HTML and fenced in Markdown.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from coursekit.grading.result import RecordedResult, SubmissionResult, TestResult, TestStatus


def _score_line(result: SubmissionResult) -> tuple[str, str]:
    awaiting = result.awaiting_points
    pending = f"; {awaiting:g} more points await review of your written answers" if awaiting else ""
    return f"Score: {result.score:g} / {result.max_score:g}", f"({result.status}{pending})"


def _written(result: SubmissionResult) -> list[TestResult]:
    """The written answers a student wrote (one left as the stub shows only in the table)."""
    return [t for t in result.tests if t.grade_id in result.answers and t.status is not TestStatus.NOT_ATTEMPTED]


def _verdict(part: TestResult) -> str:
    if part.status is TestStatus.REVIEWED:
        return f"reviewed: {part.points:g} / {part.max_points:g}"
    return "awaiting review"


def _fenced(text: str) -> list[str]:
    """``text`` as a Markdown code block that nothing inside it can close."""
    fence = "~" * max(3, 1 + max((len(run) for run in re.findall("~+", text)), default=0))
    return [fence, *text.splitlines(), fence]


def markdown(recorded: RecordedResult) -> str:
    result, comments = recorded.result, recorded.comments
    score, detail = _score_line(result)
    lines = [f"# {recorded.lab}: feedback for {recorded.student}", "", f"**{score}** {detail}", ""]
    if result.message:
        lines += [result.message, ""]
    if result.tests:
        lines += ["| test | points | result |", "|---|---|---|"]
        for t in result.tests:
            message = t.message.replace("|", "\\|").replace("\n", " ")
            outcome = t.status + (f": {message}" if message else "")
            lines.append(f"| {t.grade_id} | {t.points:g} / {t.max_points:g} | {outcome} |")
        lines.append("")
    for part in _written(result):
        lines += [f"## Written answer {part.grade_id}: {_verdict(part)}", "", *_fenced(result.answers[part.grade_id]),
                  ""]
        if comments.get(part.grade_id):
            lines += ["Comment:", "", *_fenced(comments[part.grade_id]), ""]
    if result.notes:
        lines += ["Notes:", *[f"- {n}" for n in result.notes], ""]
    return "\n".join(lines)


def html_page(recorded: RecordedResult) -> str:
    e = html.escape
    result, comments, lab, student = recorded.result, recorded.comments, recorded.lab, recorded.student
    score, detail = _score_line(result)
    rows = "".join(
        f"<tr class='{e(t.status.replace(' ', '-'))}'><td>{e(t.grade_id)}</td>"
        f"<td>{t.points:g} / {t.max_points:g}</td><td>{e(t.status)}</td><td>{e(t.message)}</td></tr>"
        for t in result.tests)
    answers = "".join(
        f"<section class='written'><h2>Written answer {e(part.grade_id)}: {e(_verdict(part))}</h2>"
        f"<pre>{e(result.answers[part.grade_id])}</pre>"
        + (f"<p>Comment:</p><pre>{e(comments[part.grade_id])}</pre>" if comments.get(part.grade_id) else "")
        + "</section>"
        for part in _written(result))
    notes = "".join(f"<li>{e(n)}</li>" for n in result.notes)
    return (f"<!doctype html><meta charset='utf-8'><title>{e(lab)}: {e(student)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.3em .6em;"
            "border-bottom:1px solid #ddd;text-align:left}.passed td:nth-child(3),.reviewed td:nth-child(3)"
            "{color:#070}tr:not(.passed):not(.reviewed) td:nth-child(3){color:#a00}"
            "pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}</style>"
            f"<h1>{e(lab)}: feedback for {e(student)}</h1>"
            f"<p><b>{e(score)}</b> {e(detail)}</p>"
            + (f"<p>{e(result.message)}</p>" if result.message else "")
            + (f"<table><tr><th>test</th><th>points</th><th>result</th><th>details</th></tr>{rows}</table>"
               if rows else "")
            + answers
            + (f"<p>Notes:</p><ul>{notes}</ul>" if notes else ""))


def write(folder: Path, student_slug: str, recorded: RecordedResult) -> Path:
    """Write ``<slug>.md`` and ``<slug>.html``; each file appears whole or not at all."""
    pages = {folder / f"{student_slug}.md": markdown(recorded).encode("utf-8"),
             folder / f"{student_slug}.html": html_page(recorded).encode("utf-8")}
    folder.mkdir(parents=True, exist_ok=True)
    for target, data in pages.items():
        partial = target.with_name(f".{target.name}.partial")
        try:
            partial.write_bytes(data)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target
