"""Per-student feedback, in Markdown and HTML, that never shows hidden tests or expected values.

Everything shown comes from the result record: test names (``grade_id``), points, status and
the message the runner wrote (which, for hidden tests, says only that a hidden test failed).
Student-controlled text (their error messages, printed output) is escaped in HTML.
"""

from __future__ import annotations

import html
import os
from pathlib import Path


def markdown(student: str, lab: str, result: dict) -> str:
    lines = [f"# {lab}: feedback for {student}", "",
             f"**Score: {result['score']:g} / {result['max_score']:g}** ({result['status']})", ""]
    if result["message"]:
        lines += [result["message"], ""]
    if result["tests"]:
        lines += ["| test | points | result |", "|---|---|---|"]
        for t in result["tests"]:
            message = t["message"].replace("|", "\\|").replace("\n", " ")
            outcome = t["status"] + (f": {message}" if message else "")
            lines.append(f"| {t['grade_id']} | {t['points']:g} / {t['max_points']:g} | {outcome} |")
        lines.append("")
    if result["notes"]:
        lines += ["Notes:", *[f"- {n}" for n in result["notes"]], ""]
    return "\n".join(lines)


def html_page(student: str, lab: str, result: dict) -> str:
    e = html.escape
    rows = "".join(
        f"<tr class='{e(t['status'].replace(' ', '-'))}'><td>{e(t['grade_id'])}</td>"
        f"<td>{t['points']:g} / {t['max_points']:g}</td><td>{e(t['status'])}</td><td>{e(t['message'])}</td></tr>"
        for t in result["tests"])
    notes = "".join(f"<li>{e(n)}</li>" for n in result["notes"])
    return (f"<!doctype html><meta charset='utf-8'><title>{e(lab)}: {e(student)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.3em .6em;"
            "border-bottom:1px solid #ddd;text-align:left}.passed td:nth-child(3){color:#070}"
            "tr:not(.passed) td:nth-child(3){color:#a00}</style>"
            f"<h1>{e(lab)}: feedback for {e(student)}</h1>"
            f"<p><b>Score: {result['score']:g} / {result['max_score']:g}</b> ({e(result['status'])})</p>"
            + (f"<p>{e(result['message'])}</p>" if result["message"] else "")
            + (f"<table><tr><th>test</th><th>points</th><th>result</th><th>details</th></tr>{rows}</table>"
               if rows else "")
            + (f"<p>Notes:</p><ul>{notes}</ul>" if notes else ""))


def write(folder: Path, student_slug: str, student: str, lab: str, result: dict) -> Path:
    """Write ``<slug>.md`` and ``<slug>.html``; each file appears whole or not at all."""
    pages = {folder / f"{student_slug}.md": markdown(student, lab, result).encode("utf-8"),
             folder / f"{student_slug}.html": html_page(student, lab, result).encode("utf-8")}
    folder.mkdir(parents=True, exist_ok=True)
    for target, data in pages.items():
        partial = target.with_name(f".{target.name}.partial")
        try:
            partial.write_bytes(data)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target
