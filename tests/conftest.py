"""Shared fixtures: an isolated data cache, an offline switch and a loopback HTTP server."""

from __future__ import annotations

import http.server
import threading
from collections import Counter

import pytest

from coursekit.layout import COURSE_ROOT as ROOT
from xdist_groups import pytest_collection_modifyitems  # noqa: F401 (a hook: keeps --dist loadgroup's groups)

SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty download cache and no pre-provided data directories."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("DLWB_CACHE_DIR", str(directory))
    monkeypatch.setenv("DLWB_DATA_DIR", "")
    monkeypatch.delenv("DLWB_OFFLINE", raising=False)
    return directory


@pytest.fixture
def offline(cache, monkeypatch):
    """No cache, no data directories, no network: what a student's laptop on a train sees."""
    monkeypatch.setenv("DLWB_OFFLINE", "1")
    return cache


class LoopbackServer:
    """Serves ``routes`` on 127.0.0.1: path -> (mode, body).

    Modes: ``ok``; ``truncated`` (announces the full length, sends half, closes);
    ``404``; ``oversize`` (sends the body twice without a length).
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.hits[self.path] += 1
                mode, body = server.routes.get(self.path, ("404", b""))
                if mode == "404":
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                if mode == "oversize":
                    self.end_headers()
                    self.wfile.write(body + body)
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mode == "ok" else body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    srv = LoopbackServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def results_by_student(db) -> dict[str, dict[str, tuple]]:
    """``{student: {grade_id: (points, status, message)}}`` of every test result in an open gradebook."""
    tests: dict[str, dict[str, tuple]] = {}
    for student, grade_id, points, status, message in db.execute(
            "SELECT s.student_id, t.grade_id, t.points, t.status, t.message FROM test_results t "
            "JOIN submissions s ON s.id = t.submission_id"):
        tests.setdefault(student, {})[grade_id] = (points, status, message)
    return tests


def pytest_sessionstart(session):
    """Forget the notebook timings of earlier runs (on the controller only, not xdist workers)."""
    if not hasattr(session.config, "workerinput"):
        import shutil

        from notebook_harness import TIMINGS

        shutil.rmtree(TIMINGS, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    from notebook_harness import timing_table

    table = timing_table()
    if table:
        terminalreporter.write_sep("=", "notebook timings (smoke settings)")
        terminalreporter.write_line(table)
