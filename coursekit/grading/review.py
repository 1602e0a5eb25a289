"""The instructors' review page: mark written answers in a browser, on this machine only.

``python -m coursekit review --out GRADEBOOK`` serves, on 127.0.0.1 and with a random token (as
JupyterLab does), the latest submissions' written answers: each with its question and rubric
(from the master in ``solutions/``), the student's text and that submission's automatic
results, and a form for points and a comment. Saving writes the review into the gradebook
and rewrites that student's feedback. A request without the token, or with a ``Host`` other
than ``127.0.0.1:PORT`` / ``localhost:PORT``, is refused (403). The form carries the review's
revision: when someone else saved in between, the save is refused and shows their review.
"""

from __future__ import annotations

import html
import http.server
import math
import secrets
import urllib.parse
from pathlib import Path

import nbformat

from coursekit.grading.gradebook import Gradebook, ReviewConflict
from coursekit import cells

MAX_FORM_BYTES = 64 << 10
MAX_COMMENT_CHARS = 10_000
STYLE = ("<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{white-space:pre-wrap;"
         "background:#f6f6f6;padding:.5em}td,th{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left}"
         ".error{color:#a00}</style>")


class ReviewApp:
    """What the page shows and saves; one gradebook connection per request."""

    def __init__(self, out: Path, solutions: Path, lab: str | None, reviewer: str) -> None:
        self.out, self.solutions, self.lab, self.reviewer = out, solutions, lab, reviewer
        self.token = secrets.token_urlsafe(24)
        if not (out / "gradebook.sqlite").is_file():
            raise FileNotFoundError(f"no gradebook in {out}: grade a lab first (python -m coursekit grade … --out {out})")

    def book(self) -> Gradebook:
        return Gradebook(self.out / "gradebook.sqlite")

    def link(self, path: str, **query) -> str:
        return html.escape(f"{path}?{urllib.parse.urlencode({**query, 'token': self.token})}")

    def question_and_rubric(self, lab: str, grade_id: str) -> tuple[str, str]:
        """The Markdown cell before the written answer in the master, and its rubric."""
        master = nbformat.read(self.solutions / f"{lab}.ipynb", as_version=4)
        for i, cell in enumerate(master.cells):
            if cells.is_written_answer(cell) and cells.grade_id(cell) == grade_id:
                return (master.cells[i - 1].source if i else ""), cells.rubric(cell) or ""
        return f"(no written answer {grade_id} in {self.solutions / f'{lab}.ipynb'})", ""

    def index(self) -> str:
        book = self.book()
        try:
            rows = book.db.execute(
                "SELECT l.student_id, l.lab, p.submission_id, p.grade_id, p.status, p.points, p.max_points, p.reviewer "
                "FROM latest l JOIN parts p ON p.submission_id = l.submission_id "
                "WHERE p.status IN ('needs review', 'reviewed') AND (? IS NULL OR l.lab = ?) "
                "ORDER BY p.status = 'reviewed', l.lab, l.student_id, p.position", (self.lab, self.lab)).fetchall()
        finally:
            book.close()
        e = html.escape
        body = "".join(
            f"<tr class='{e(status.replace(' ', '-'))}'><td>{e(lab)}</td><td>{e(student)}</td>"
            f"<td><a href='{self.link('/answer', submission=sid, part=gid)}'>{e(gid)}</a></td><td>{e(status)}</td>"
            f"<td>{points:g} / {top:g}</td><td>{e(who or '')}</td></tr>"
            for student, lab, sid, gid, status, points, top, who in rows)
        waiting = sum(r[4] == "needs review" for r in rows)
        return (f"<!doctype html><meta charset='utf-8'><title>Written answers</title>{STYLE}"
                f"<h1>Written answers</h1><p>{waiting} await review, {len(rows) - waiting} reviewed.</p>"
                "<table><tr><th>lab</th><th>student</th><th>answer</th><th>status</th><th>points</th>"
                f"<th>reviewer</th></tr>{body}</table>")

    def answer(self, submission_id: int, grade_id: str, error: str = "", form: dict | None = None) -> str:
        book = self.book()
        try:
            recorded = book.result(submission_id)
            review = book.review(submission_id, grade_id)
        finally:
            book.close()
        result, lab, student = recorded.result, recorded.lab, recorded.student
        part = next((t for t in result.tests if t.grade_id == grade_id and grade_id in result.answers), None)
        if part is None:
            raise KeyError(f"submission {submission_id} has no written answer {grade_id!r}")
        question, marking = self.question_and_rubric(lab, grade_id)
        e = html.escape
        auto = "".join(f"<tr><td>{e(t.grade_id)}</td><td>{t.points:g} / {t.max_points:g}</td>"
                       f"<td>{e(t.status)}</td><td>{e(t.message)}</td></tr>"
                       for t in result.tests if t.grade_id not in result.answers)
        form = form or {"points": f"{review.points:g}" if review else "", "comment": review.comment if review else "",
                        "reviewer": review.reviewer if review else self.reviewer,
                        "revision": str(review.revision if review else 0)}
        saved = (f"<p class='saved'>Reviewed: {review.points:g} / {part.max_points:g} by {e(review.reviewer)} "
                 f"(revision {review.revision})</p>" if review else "<p>Not reviewed yet.</p>")
        return (f"<!doctype html><meta charset='utf-8'><title>{e(student)}: {e(grade_id)}</title>{STYLE}"
                f"<p><a href='{self.link('/')}'>all answers</a></p>"
                f"<h1>{e(lab)} · {e(student)} · {e(grade_id)}</h1>"
                + (f"<p class='error'>{e(error)}</p>" if error else "")
                + f"<h2>Question</h2><pre class='question'>{e(question)}</pre>"
                f"<h2>Answer</h2><pre class='answer'>{e(result.answers[grade_id])}</pre>"
                f"<h2>Rubric</h2><pre class='rubric'>{e(marking)}</pre>{saved}"
                f"<form method='post' action='/answer'>"
                f"<input type='hidden' name='token' value='{e(self.token)}'>"
                f"<input type='hidden' name='submission' value='{submission_id}'>"
                f"<input type='hidden' name='part' value='{e(grade_id)}'>"
                f"<input type='hidden' name='revision' value='{e(form['revision'])}'>"
                f"<label>Points (0 to {part.max_points:g}) <input name='points' value='{e(form['points'])}'>"
                f"</label><br><label>Comment<br><textarea name='comment' rows='5' cols='70'>{e(form['comment'])}"
                f"</textarea></label><br><label>Reviewer <input name='reviewer' value='{e(form['reviewer'])}'></label>"
                "<br><button type='submit'>Save</button></form>"
                f"<h2>Automatic tests of this submission</h2><table>{auto}</table>")

    def save(self, form: dict) -> tuple[int, str]:
        """``(HTTP status, page)`` for a submitted form; bad input or a conflict changes nothing."""
        from coursekit.grading.grade import write_feedback

        try:
            submission_id, grade_id = int(form.get("submission", "")), form.get("part", "")
            revision = int(form.get("revision", ""))
        except ValueError:
            return 400, self.page("The form is incomplete: open the answer from the list and save again.")
        try:
            points = float(form.get("points", "").strip())
            if not math.isfinite(points):
                raise ValueError
        except ValueError:
            return 400, self.answer(submission_id, grade_id, "Points must be a number, such as 1 or 1.5; "
                                    "nothing was saved.", form)
        comment, reviewer = form.get("comment", ""), form.get("reviewer", "").strip()
        if len(comment) > MAX_COMMENT_CHARS or not reviewer:
            return 400, self.answer(submission_id, grade_id, f"Give a reviewer name and a comment of at most "
                                    f"{MAX_COMMENT_CHARS:,} characters; nothing was saved.", form)
        book = self.book()
        try:
            book.save_review(submission_id, grade_id, points=points, comment=comment, reviewer=reviewer,
                             revision=revision)
            write_feedback(self.out, book, submission_id)
        except ValueError as err:
            return 400, self.answer(submission_id, grade_id, f"{err}; nothing was saved.", form)
        except ReviewConflict as err:
            return 409, self.answer(submission_id, grade_id, f"Not saved: {err}. Your points were "
                                    f"{points:g} and your comment was: {comment}")
        finally:
            book.close()
        return 200, self.answer(submission_id, grade_id)

    @staticmethod
    def page(text: str) -> str:
        return f"<!doctype html><meta charset='utf-8'><title>Review</title>{STYLE}<p class='error'>{html.escape(text)}</p>"


def make_server(app: ReviewApp, port: int = 0) -> http.server.ThreadingHTTPServer:
    """A server for ``app`` on 127.0.0.1 (``port`` 0: any free port); call ``serve_forever``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def allowed(self, token: str) -> bool:
            hosts = {f"127.0.0.1:{self.server.server_address[1]}", f"localhost:{self.server.server_address[1]}"}
            return self.headers.get("Host") in hosts and secrets.compare_digest(token.encode(), app.token.encode())

        def reply(self, status: int, page: str) -> None:
            data = page.encode("utf-8", "replace")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Frame-Options", "DENY")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if not self.allowed(query.get("token", "")):
                return self.reply(403, app.page("Forbidden: open the address with ?token=… that "
                                                "`python -m coursekit review` printed."))
            try:
                if url.path == "/":
                    return self.reply(200, app.index())
                if url.path == "/answer":
                    return self.reply(200, app.answer(int(query.get("submission", "")), query.get("part", "")))
            except (KeyError, ValueError) as err:
                return self.reply(404, app.page(f"Not found: {err}"))
            return self.reply(404, app.page(f"Not found: {url.path}"))

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_FORM_BYTES:
                return self.reply(413, app.page("The form is too large."))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode("utf-8", "replace"),
                                               keep_blank_values=True))
            if not self.allowed(form.get("token", "")):
                return self.reply(403, app.page("Forbidden: the form has no valid token."))
            if urllib.parse.urlsplit(self.path).path != "/answer":
                return self.reply(404, app.page(f"Not found: {self.path}"))
            try:
                return self.reply(*app.save(form))
            except KeyError as err:
                return self.reply(404, app.page(f"Not found: {err}"))

        def log_message(self, *args):
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
