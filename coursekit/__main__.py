"""Command line of the course.

    python -m coursekit release [--check]                 generate labs/ from solutions/
    python -m coursekit grade SUBMISSIONS --lab NAME      grade a folder or zip of submissions
    python -m coursekit review [--out gradebook] [--lab NAME] [--port 0]
                                                     mark written answers in the browser (127.0.0.1 only)
    python -m coursekit lecture [--smoke] [--only NAME ...] [--out build/lecture]
                                                     run the chapters, write HTML, slides and run times
    python -m coursekit lecture --tag-slides NOTEBOOK ...  write the slide metadata of chapters
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from coursekit import layout
from coursekit.grading.sandbox import Limits
from coursekit.startup import skip_unused_format_grammars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    release = commands.add_parser("release", help="generate the student labs from the master notebooks")
    release.add_argument("--solutions", type=Path, default=layout.SOLUTIONS, help="master notebooks")
    release.add_argument("--labs", type=Path, default=layout.LABS, help="where the student labs go")
    release.add_argument("--check", action="store_true", help="write nothing; exit 1 if labs/ is out of date")
    grade = commands.add_parser("grade", help="grade submissions (a folder or a zip) of one lab")
    grade.add_argument("submissions", type=Path, help="folder or zip: <student>/…/<lab>.ipynb")
    grade.add_argument("--lab", required=True, help="lab name, e.g. lab01_cross_entropy")
    grade.add_argument("--solutions", type=Path, default=layout.SOLUTIONS, help="master notebooks")
    grade.add_argument("--out", type=Path, default=layout.GRADEBOOK,
                       help="gradebook.sqlite, feedback/ and the CSV go here")
    grade.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="submissions graded at once")
    grade.add_argument("--cell-timeout", type=float, default=Limits.cell_timeout_s, help="seconds per cell")
    grade.add_argument("--total-timeout", type=float, default=Limits.total_timeout_s, help="seconds for all cells")
    grade.add_argument("--call-timeout", type=float, default=Limits.call_timeout_s, help="seconds per test call")
    grade.add_argument("--submission-timeout", type=float, default=Limits.submission_timeout_s,
                       help="seconds for everything of one submission: its cells, restarts and tests")
    grade.add_argument("--memory-mb", type=int, default=Limits.memory_bytes >> 20, help="memory per submission")
    grade.add_argument("--allow-unisolated", action="store_true",
                       help="grade even where student code cannot be isolated (trusted submissions only)")
    grade.add_argument("--quiet", action="store_true", help="no progress bar")
    review = commands.add_parser("review", help="mark written answers in a local web page")
    review.add_argument("--out", type=Path, default=layout.GRADEBOOK, help="the folder `grade --out` wrote")
    review.add_argument("--solutions", type=Path, default=layout.SOLUTIONS, help="master notebooks")
    review.add_argument("--lab", help="only this lab's answers")
    review.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    review.add_argument("--reviewer", default=getpass.getuser(), help="your name, saved with each review")
    lecture = commands.add_parser("lecture", help="run the chapters; write executed HTML, slides and run times")
    lecture.add_argument("--smoke", action="store_true", help="the small settings of metadata.dlwb.smoke")
    lecture.add_argument("--only", nargs="+", default=(), metavar="NAME",
                         help="chapters by name or number: 00_setup 01")
    lecture.add_argument("--out", type=Path, default=layout.LECTURE_OUT, help="where the files go")
    lecture.add_argument("--chapters", type=Path, default=layout.CHAPTERS, help="folder of the chapters")
    lecture.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run")
    lecture.add_argument("--tag-slides", nargs="+", type=Path, metavar="NOTEBOOK",
                         help="only write metadata.slideshow.slide_type into these notebooks, run nothing")
    args = parser.parse_args(argv)
    if args.command == "grade":
        return _grade(args)
    if args.command == "lecture":
        return _lecture(args)
    if args.command == "review":
        return _review(args)

    from coursekit.release import ReleaseError, release_all

    try:
        changed = release_all(args.solutions, args.labs, check=args.check)
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check and changed:
        print("labs/ is out of date; run `python -m coursekit release`:\n  " + "\n  ".join(changed))
        return 1
    print("\n".join(f"- {c}" for c in changed) if changed else "labs/ is up to date")
    return 0


def _lecture(args) -> int:
    from coursekit import lecture

    if args.tag_slides:
        for path in args.tag_slides:
            print(f"{path}: {lecture.tag_slides_file(path)} cells retagged")
        return 0
    try:
        paths = lecture.chapters(args.only, args.chapters)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runs = lecture.build(paths, args.out, smoke=args.smoke, timeout_s=args.timeout)
    print(f"\n{lecture.run_times_table(runs)}\npages and slides in {args.out}/ (run times: {args.out}/run_times.md)")
    return 1 if any(r.error for r in runs) else 0


def _review(args) -> int:
    from coursekit.grading.review import ReviewApp, make_server

    try:
        app = ReviewApp(args.out, args.solutions, args.lab, args.reviewer)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    server = make_server(app, args.port)
    print(f"review written answers at http://127.0.0.1:{server.server_address[1]}/?token={app.token}\n"
          "(Ctrl-C stops the server)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _grade(args) -> int:
    from coursekit.grading.grade import grade_lab, summary

    limits = Limits(cell_timeout_s=args.cell_timeout, total_timeout_s=args.total_timeout,
                    call_timeout_s=args.call_timeout, submission_timeout_s=args.submission_timeout,
                    memory_bytes=args.memory_mb << 20)
    try:
        run = grade_lab(args.submissions, args.lab, solutions=args.solutions, out=args.out, limits=limits,
                        jobs=max(args.jobs, 1), allow_unisolated=args.allow_unisolated, progress=not args.quiet)
    except (FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(run))
    print(f"(this summary: {run.summary})")
    return 0


if __name__ == "__main__":
    skip_unused_format_grammars()  # before a command imports nbformat
    sys.exit(main())
