"""The gradebook: one SQLite file with students, labs, submissions and test results.

Re-grading is idempotent: grading the same submission (same student, lab and file SHA-256)
against the same master replaces its earlier results instead of adding rows; a new file
from the student is a new submission, and the latest one is the one that counts.
"""

from __future__ import annotations

import csv
import sqlite3
import time
from pathlib import Path

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
CREATE VIEW IF NOT EXISTS latest AS
    SELECT s.student_id, s.lab, s.id AS submission_id, s.file_time, g.score, g.max_score, g.status, g.message
    FROM submissions s JOIN grades g ON g.submission_id = s.id
    WHERE s.id = (SELECT s2.id FROM submissions s2 WHERE s2.student_id = s.student_id AND s2.lab = s.lab
                  ORDER BY s2.file_time DESC, s2.origin DESC LIMIT 1);
"""


class Gradebook:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def record(self, *, lab: str, max_points: float, master_sha256: str, submission, result: dict) -> None:
        """Store one graded submission (``result`` from :func:`dlwb.grading.grade.grade_one`)."""
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
            self.db.execute("DELETE FROM test_results WHERE submission_id = ?", (sid,))
            self.db.execute("INSERT OR REPLACE INTO grades VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (sid, master_sha256, result["score"], result["max_score"], result["status"],
                             result["message"], now))
            self.db.executemany("INSERT INTO test_results VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [(sid, t["grade_id"], t["points"], t["max_points"], t["status"], t["message"],
                                  t["seconds"]) for t in result["tests"]])

    def latest(self, lab: str) -> list[tuple]:
        return self.db.execute("SELECT student_id, score, max_score, status, message FROM latest "
                               "WHERE lab = ? ORDER BY student_id", (lab,)).fetchall()

    def export_csv(self, lab: str, path: Path) -> None:
        """One row per student: the latest submission's score, and each test's points."""
        tests = [r[0] for r in self.db.execute(
            "SELECT DISTINCT grade_id FROM test_results t JOIN submissions s ON s.id = t.submission_id "
            "WHERE s.lab = ? ORDER BY grade_id", (lab,))]
        rows = self.db.execute("SELECT student_id, submission_id, score, max_score, status FROM latest "
                               "WHERE lab = ? ORDER BY student_id", (lab,)).fetchall()
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["student", "lab", "score", "max_score", "status", *tests])
            for student, sid, score, max_score, status in rows:
                points = dict(self.db.execute("SELECT grade_id, points FROM test_results WHERE submission_id = ?",
                                              (sid,)).fetchall())
                out.writerow([student, lab, score, max_score, status, *(points.get(t, 0.0) for t in tests)])
