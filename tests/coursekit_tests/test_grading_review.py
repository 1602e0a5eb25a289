"""Written answers reviewed by instructors: the gradebook's reviews, the review page over HTTP and in a browser.

One toy class (``test_grading``'s lab: 5 automatic points and a written answer worth 2) is
graded once; each test grades nothing more unless it says so.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest

from chromium import CHROMIUM, CHROMIUM_FLAGS, sync_playwright
from coursekit.grading.grade import grade_lab
from coursekit.grading.gradebook import Gradebook, ReviewConflict
from coursekit.grading.review import ReviewApp, make_server
from coursekit.grading.sandbox import Limits, isolation_prefix
from test_grading import GOOD_DOUBLE, GOOD_MEAN, LAB, RUBRIC_MARK, solutions_folder, student_copy

# One worker runs this whole module (--dist loadgroup), so its module fixtures, which grade real
# submissions in the sandbox, are built once per run rather than once per worker.
pytestmark = [pytest.mark.skipif(isolation_prefix() is None, reason="needs Linux namespaces (unshare)"),
              pytest.mark.xdist_group("grading_review")]

ANSWER = "Squares are never negative, <script>alert(1)</script> so neither is their mean."


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    solutions, subs = solutions_folder(root), root / "submissions"
    for name, nb in {"ann": student_copy(GOOD_DOUBLE, GOOD_MEAN, answer=ANSWER), "bob": student_copy(),
                     "cy": student_copy(GOOD_DOUBLE, None, answer="   ")}.items():
        (subs / name).mkdir(parents=True)
        nbformat.write(nb, subs / name / f"{LAB}.ipynb")
    out = root / "graded"
    grade_lab(subs, LAB, solutions=solutions, out=out, limits=Limits(cell_timeout_s=20), jobs=2, progress=False)
    return {"root": root, "solutions": solutions, "subs": subs, "out": out}


@pytest.fixture
def gradebook(graded_class, tmp_path):
    """A copy of the graded class's gradebook folder, for a test to change."""
    out = tmp_path / "out"
    shutil.copytree(graded_class["out"], out)
    return out


def submission_id(out: Path, student: str) -> int:
    db = sqlite3.connect(out / "gradebook.sqlite")
    (sid,) = db.execute("SELECT submission_id FROM latest WHERE student_id = ?", (student,)).fetchone()
    db.close()
    return sid


def test_written_answers_await_review_and_blank_ones_are_not_attempted(graded_class):
    db = sqlite3.connect(graded_class["out"] / "gradebook.sqlite")
    parts = {s: (p, st) for s, p, st in db.execute("SELECT student_id, points, status FROM parts "
                                                   "WHERE grade_id = 'written_sign'")}
    latest = {r[0]: r[1:] for r in db.execute("SELECT student_id, score, awaiting_review, awaiting_points FROM latest")}
    db.close()
    assert parts == {"ann": (0.0, "needs review"), "bob": (0.0, "not attempted"), "cy": (0.0, "not attempted")}
    assert latest["ann"] == (5.0, 1, 2.0) and latest["bob"] == (0.0, 0, 0.0)
    summary = (graded_class["out"] / f"{LAB}-summary.md").read_text()
    assert "1 written answer(s) (2 points) await review" in summary
    feedback = next((graded_class["out"] / "feedback" / LAB).glob("ann-*.html")).read_text()
    assert "awaiting review" in feedback and "<script>alert" not in feedback and "&lt;script&gt;" in feedback
    assert RUBRIC_MARK not in feedback


def test_a_review_counts_survives_regrading_and_a_stale_form_is_refused(graded_class, gradebook):
    sid = submission_id(gradebook, "ann")
    book = Gradebook(gradebook / "gradebook.sqlite")
    saved = book.save_review(sid, "written_sign", points=1.5, comment="Right idea.", reviewer="ta", revision=0)
    assert saved.revision == 1
    with pytest.raises(ReviewConflict, match="revision 1, by ta"):
        book.save_review(sid, "written_sign", points=2, comment="", reviewer="prof", revision=0)
    with pytest.raises(ValueError, match="between 0 and 2"):
        book.save_review(sid, "written_sign", points=3, comment="", reviewer="prof", revision=1)
    with pytest.raises(KeyError):
        book.save_review(submission_id(gradebook, "bob"), "written_sign", points=0, comment="", reviewer="ta",
                         revision=0)
    book.close()
    grade_lab(graded_class["subs"], LAB, solutions=graded_class["solutions"], out=gradebook,
              limits=Limits(cell_timeout_s=20), jobs=2, progress=False)
    db = sqlite3.connect(gradebook / "gradebook.sqlite")
    row = db.execute("SELECT auto_score, review_score, score, awaiting_review FROM latest "
                     "WHERE student_id = 'ann'").fetchone()
    db.close()
    assert row == (5.0, 1.5, 6.5, 0)
    text = next((gradebook / "feedback" / LAB).glob("ann-*.md")).read_text()
    assert "Score: 6.5 / 7" in text and "reviewed: 1.5 / 2" in text and "Right idea." in text
    csv_text = (gradebook / f"{LAB}.csv").read_text()
    assert "written_sign (max 2)" in csv_text.splitlines()[0] and "ann,lab90_toy,graded,2.0,3.0,1.5,5.0,1.5,6.5,7.0,0" in csv_text


def test_a_changed_answer_needs_a_new_review(graded_class, gradebook, tmp_path):
    book = Gradebook(gradebook / "gradebook.sqlite")
    book.save_review(submission_id(gradebook, "ann"), "written_sign", points=2, comment="", reviewer="ta", revision=0)
    book.close()
    subs = tmp_path / "again"
    (subs / "ann").mkdir(parents=True)
    nbformat.write(student_copy(GOOD_DOUBLE, GOOD_MEAN, answer=ANSWER + " Also 0 only for 0."), subs / "ann" / f"{LAB}.ipynb")
    grade_lab(subs, LAB, solutions=graded_class["solutions"], out=gradebook, limits=Limits(cell_timeout_s=20),
              jobs=1, progress=False)
    db = sqlite3.connect(gradebook / "gradebook.sqlite")
    assert db.execute("SELECT score, awaiting_review FROM latest WHERE student_id = 'ann'").fetchone() == (5.0, 1)
    db.close()


@pytest.fixture
def server(graded_class, gradebook):
    app = ReviewApp(gradebook, graded_class["solutions"], LAB, "tester")
    httpd = make_server(app)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield app, f"http://127.0.0.1:{httpd.server_address[1]}", gradebook
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str, data: dict | None = None, host: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode() if data is not None else None)
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_review_page_needs_the_token_and_the_loopback_host(server):
    app, base, _ = server
    assert fetch(f"{base}/")[0] == 403
    assert fetch(f"{base}/?token=wrong")[0] == 403
    status, page = fetch(f"{base}/?token={app.token}")
    assert status == 200 and "1 await review" in page and "ann" in page and "bob" not in page
    assert fetch(f"{base}/?token={app.token}", host="evil.example:80")[0] == 403  # DNS rebinding
    port = base.rsplit(":", 1)[1]
    assert fetch(f"{base}/?token={app.token}", host=f"localhost:{port}")[0] == 200
    assert fetch(f"{base}/answer", {"submission": "1", "part": "written_sign", "revision": "0", "points": "1"})[0] == 403


def test_bad_points_are_a_clear_error_and_change_nothing(server):
    app, base, out = server
    sid = submission_id(out, "ann")
    status, page = fetch(f"{base}/answer?token={app.token}&submission={sid}&part=written_sign")
    assert status == 200 and RUBRIC_MARK in page and "&lt;script&gt;" in page and "<script>alert" not in page
    assert "Why is the mean of squares never negative?" in page and "test_double" in page
    form = {"token": app.token, "submission": str(sid), "part": "written_sign", "revision": "0",
            "comment": "x", "reviewer": "ta"}
    for points, message in (("3", "between 0 and 2"), ("-1", "between 0 and 2"), ("two", "must be a number"),
                            ("nan", "must be a number")):
        status, page = fetch(f"{base}/answer", {**form, "points": points})
        assert status == 400 and message in page and "nothing was saved" in page
    book = Gradebook(out / "gradebook.sqlite")
    assert book.review(sid, "written_sign") is None
    book.close()
    assert fetch(f"{base}/answer", {**form, "points": "2"})[0] == 200




@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -r requirements.txt)")
def test_reviewing_in_the_browser_and_two_instructors_at_once(server, tmp_path):
    app, base, out = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            first, second = browser.new_context().new_page(), browser.new_context().new_page()
            first.goto(f"{base}/?token={app.token}")
            first.click("text=written_sign")
            second.goto(first.url)  # both instructors have the same answer open
            first.fill("input[name=points]", "1.5")
            first.fill("textarea[name=comment]", "Name why a square is non-negative.")
            first.click("button[type=submit]")
            first.reload()
            assert first.input_value("input[name=points]") == "1.5"
            assert "Reviewed: 1.5 / 2 by tester (revision 1)" in first.inner_text("body")
            second.fill("input[name=points]", "2")
            second.click("button[type=submit]")
            text = second.inner_text("body")
            assert "Not saved" in text and "revision 1, by tester" in text
            assert second.input_value("input[name=points]") == "1.5"  # the other instructor's value is shown
        finally:
            browser.close()
    feedback = next((out / "feedback" / LAB).glob("ann-*.md")).read_text()
    assert "reviewed: 1.5 / 2" in feedback and "Name why a square is non-negative." in feedback
    assert "Score: 6.5 / 7" in feedback
