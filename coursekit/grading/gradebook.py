"""The gradebook: one SQLite file with students, labs, submissions, test results and reviews.

Re-grading is idempotent: grading the same submission (same student, lab and file SHA-256)
against the same master replaces its earlier results instead of adding rows; a new file
from the student is a new submission, and the latest one is the one that counts.

A written answer is recorded with status ``needs review`` and 0 points; an instructor's
review (``reviews``: points, comment, reviewer, time, revision) is kept apart from the
results, keyed by student, lab, ``grade_id`` and the SHA-256 of the answer's text. So
re-grading never loses a review, a new submission with the same answer keeps it, and a
changed answer needs a new one. The ``parts`` view shows every graded part with its review
applied; ``latest`` adds the reviewed points to each student's latest score.
"""

from __future__ import annotations

import csv
import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from coursekit.grading.result import RecordedResult, SubmissionResult, TestResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS students (
    id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS labs (
    name TEXT PRIMARY KEY,
    max_points REAL NOT NULL,
    master_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY,
    student_id TEXT NOT NULL REFERENCES students(id),
    lab TEXT NOT NULL REFERENCES labs(name),
    origin TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    file_time REAL NOT NULL,
    collected_at REAL NOT NULL,
    UNIQUE (student_id, lab, sha256)
);
CREATE TABLE IF NOT EXISTS grades (
    submission_id INTEGER PRIMARY KEY REFERENCES submissions(id),
    master_sha256 TEXT NOT NULL,
    score REAL NOT NULL,
    max_score REAL NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    graded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS test_results (
    submission_id INTEGER NOT NULL REFERENCES submissions(id),
    grade_id TEXT NOT NULL,
    points REAL NOT NULL,
    max_points REAL NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (submission_id, grade_id)
);
CREATE TABLE IF NOT EXISTS answers (
    submission_id INTEGER NOT NULL REFERENCES submissions(id),
    grade_id TEXT NOT NULL,
    text TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (submission_id, grade_id)
);
CREATE TABLE IF NOT EXISTS notes (
    submission_id INTEGER NOT NULL REFERENCES submissions(id),
    position INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (submission_id, position)
);
CREATE TABLE IF NOT EXISTS reviews (
    student_id TEXT NOT NULL REFERENCES students(id),
    lab TEXT NOT NULL REFERENCES labs(name),
    grade_id TEXT NOT NULL,
    answer_sha256 TEXT NOT NULL,
    points REAL NOT NULL,
    comment TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    updated_at REAL NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (student_id, lab, grade_id, answer_sha256)
);
DROP VIEW IF EXISTS latest;
DROP VIEW IF EXISTS parts;
CREATE VIEW parts AS
    SELECT t.submission_id, t.rowid AS position, s.student_id, s.lab, t.grade_id, t.max_points, t.message, t.seconds,
           a.text AS answer, a.sha256 AS answer_sha256, r.comment, r.reviewer, r.updated_at,
           COALESCE(r.revision, 0) AS revision,
           CASE WHEN r.revision IS NULL THEN t.points ELSE MIN(r.points, t.max_points) END AS points,
           CASE WHEN r.revision IS NULL THEN t.status ELSE 'reviewed' END AS status
    FROM test_results t JOIN submissions s ON s.id = t.submission_id
    LEFT JOIN answers a ON a.submission_id = t.submission_id AND a.grade_id = t.grade_id
    LEFT JOIN reviews r ON r.student_id = s.student_id AND r.lab = s.lab AND r.grade_id = t.grade_id
                       AND r.answer_sha256 = a.sha256 AND t.status = 'needs review';
CREATE VIEW latest AS
    SELECT s.student_id, s.lab, s.id AS submission_id, s.file_time, g.score AS auto_score,
           COALESCE(p.reviewed, 0.0) AS review_score, g.score + COALESCE(p.reviewed, 0.0) AS score, g.max_score,
           COALESCE(p.awaiting, 0) AS awaiting_review, COALESCE(p.awaiting_points, 0.0) AS awaiting_points,
           g.status, g.message
    FROM submissions s JOIN grades g ON g.submission_id = s.id
    LEFT JOIN (SELECT submission_id, SUM(CASE WHEN status = 'reviewed' THEN points END) AS reviewed,
                      SUM(status = 'needs review') AS awaiting,
                      SUM(CASE WHEN status = 'needs review' THEN max_points END) AS awaiting_points
               FROM parts GROUP BY submission_id) p ON p.submission_id = s.id
    WHERE s.id = (SELECT s2.id FROM submissions s2 WHERE s2.student_id = s.student_id AND s2.lab = s.lab
                  ORDER BY s2.file_time DESC, s2.origin DESC LIMIT 1);
"""


@dataclass
class Review:
    points: float
    comment: str
    reviewer: str
    updated_at: float
    revision: int  # 1 for the first save, one more for each save after it


class ReviewConflict(RuntimeError):
    """Someone saved a review of this answer after the form was loaded; ``current`` is what they saved."""

    def __init__(self, current: Review | None) -> None:
        super().__init__(f"this answer was reviewed again (revision {current.revision}, by {current.reviewer}) "
                         "after the form was loaded; nothing was saved: reload it, then save" if current else
                         "the review this form was loaded with is no longer stored for this answer; nothing was "
                         "saved: reload it, then save")
        self.current = current


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Gradebook:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def record(self, *, lab: str, max_points: float, master_sha256: str, submission,
               result: SubmissionResult) -> int:
        """Store one graded submission (from :func:`coursekit.grading.grade.grade_one`); returns its id.

        Reviews of its written answers are kept (they are not the result's to replace). The
        result's ``lab_problems`` and ``output`` are not stored.
        """
        now = time.time()
        with self.db:
            self.db.execute("INSERT INTO labs VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                            "max_points = excluded.max_points, master_sha256 = excluded.master_sha256",
                            (lab, max_points, master_sha256))
            self.db.execute("INSERT OR IGNORE INTO students VALUES (?)", (submission.student,))
            self.db.execute(
                "INSERT INTO submissions (student_id, lab, origin, sha256, size, file_time, collected_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(student_id, lab, sha256) DO UPDATE SET "
                "origin = excluded.origin, file_time = excluded.file_time",
                (submission.student, lab, submission.origin, submission.sha256, submission.size,
                 submission.file_time, now))
            (sid,) = self.db.execute("SELECT id FROM submissions WHERE student_id = ? AND lab = ? AND sha256 = ?",
                                     (submission.student, lab, submission.sha256)).fetchone()
            for table in ("test_results", "answers", "notes"):
                self.db.execute(f"DELETE FROM {table} WHERE submission_id = ?", (sid,))
            self.db.execute("INSERT OR REPLACE INTO grades VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (sid, master_sha256, result.score, result.max_score, result.status, result.message, now))
            self.db.executemany("INSERT INTO test_results VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [(sid, t.grade_id, t.points, t.max_points, t.status, t.message, t.seconds)
                                 for t in result.tests])
            self.db.executemany("INSERT INTO answers VALUES (?, ?, ?, ?)", [
                (sid, gid, text, text_sha256(text)) for gid, text in result.answers.items()])
            self.db.executemany("INSERT INTO notes VALUES (?, ?, ?)",
                                [(sid, i, note) for i, note in enumerate(result.notes)])
        return sid

    def latest(self, lab: str) -> list[tuple]:
        return self.db.execute("SELECT student_id, score, max_score, status, message FROM latest "
                               "WHERE lab = ? ORDER BY student_id", (lab,)).fetchall()

    def result(self, submission_id: int) -> RecordedResult:
        """A recorded submission as feedback shows it, with the reviews of its written answers applied."""
        rows = self.db.execute("SELECT grade_id, points, max_points, status, message, seconds, answer, comment "
                               "FROM parts WHERE submission_id = ? ORDER BY position", (submission_id,)).fetchall()
        student, lab, status, message = self.db.execute(
            "SELECT s.student_id, s.lab, g.status, g.message FROM submissions s "
            "JOIN grades g ON g.submission_id = s.id WHERE s.id = ?", (submission_id,)).fetchone()
        notes = [n for (n,) in self.db.execute("SELECT text FROM notes WHERE submission_id = ? ORDER BY position",
                                               (submission_id,))]
        result = SubmissionResult(status, message, [TestResult(*row[:6]) for row in rows], notes,
                                  answers={row[0]: row[6] for row in rows if row[6] is not None})
        return RecordedResult(student, lab, result, comments={row[0]: row[7] for row in rows if row[7] is not None})

    def review(self, submission_id: int, grade_id: str) -> Review | None:
        row = self.db.execute("SELECT r.points, r.comment, r.reviewer, r.updated_at, r.revision FROM parts p "
                              "JOIN reviews r USING (student_id, lab, grade_id, answer_sha256) "
                              "WHERE p.submission_id = ? AND p.grade_id = ?", (submission_id, grade_id)).fetchone()
        return Review(*row) if row else None

    def save_review(self, submission_id: int, grade_id: str, *, points: float, comment: str, reviewer: str,
                    revision: int) -> Review:
        """Store a review of one written answer, made from a form loaded at ``revision`` (0: none yet).

        Raises :class:`ReviewConflict` when the stored review is no longer that revision (someone
        else saved in between): nothing is overwritten. ``points`` must be within the part's maximum.
        """
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # the check and the write, one at a time across processes
            row = self.db.execute("SELECT student_id, lab, answer_sha256, max_points, status FROM parts "
                                  "WHERE submission_id = ? AND grade_id = ?", (submission_id, grade_id)).fetchone()
            if row is None or row[2] is None or row[4] not in ("needs review", "reviewed"):
                raise KeyError(f"submission {submission_id} has no written answer {grade_id!r} to review")
            student, lab, answer_sha, max_points, _ = row
            if not 0 <= points <= max_points:
                raise ValueError(f"points must be between 0 and {max_points:g}, not {points:g}")
            current = self.review(submission_id, grade_id)
            if (current.revision if current else 0) != revision:
                raise ReviewConflict(current)
            saved = Review(points, comment, reviewer, time.time(), revision + 1)
            self.db.execute("INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
                            "(student_id, lab, grade_id, answer_sha256) DO UPDATE SET points = excluded.points, "
                            "comment = excluded.comment, reviewer = excluded.reviewer, "
                            "updated_at = excluded.updated_at, revision = excluded.revision",
                            (student, lab, grade_id, answer_sha, saved.points, saved.comment, saved.reviewer,
                             saved.updated_at, saved.revision))
        return saved

    def export_csv(self, lab: str, path: Path) -> None:
        """One row per student's latest submission: each graded part's points (blank while a written answer
        awaits review), the automatic, reviewed and total points, the maximum and how many answers await review.
        """
        parts = self.db.execute(
            "SELECT t.grade_id, MAX(t.max_points) FROM test_results t JOIN submissions s ON s.id = t.submission_id "
            "WHERE s.lab = ? GROUP BY t.grade_id ORDER BY MIN(t.rowid)", (lab,)).fetchall()
        rows = self.db.execute("SELECT student_id, submission_id, status, auto_score, review_score, score, max_score, "
                               "awaiting_review FROM latest WHERE lab = ? ORDER BY student_id", (lab,)).fetchall()
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["student", "lab", "status", *(f"{gid} (max {top:g})" for gid, top in parts),
                          "auto_total", "review_total", "total", "max", "needs_review"])
            for student, sid, status, auto, reviewed, total, max_score, awaiting in rows:
                points = {gid: ("" if state == "needs review" else p) for gid, p, state in self.db.execute(
                    "SELECT grade_id, points, status FROM parts WHERE submission_id = ?", (sid,))}
                out.writerow([student, lab, status, *(points.get(gid, 0.0) for gid, _ in parts),
                              auto, reviewed, total, max_score, awaiting])
