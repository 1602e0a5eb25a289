"""Command line: ``python -m dlwb release [--check]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlwb.download import COURSE_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlwb", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    release = commands.add_parser("release", help="generate the student labs from the master notebooks")
    release.add_argument("--solutions", type=Path, default=COURSE_ROOT / "solutions", help="master notebooks")
    release.add_argument("--labs", type=Path, default=COURSE_ROOT / "labs", help="where the student labs go")
    release.add_argument("--check", action="store_true", help="write nothing; exit 1 if labs/ is out of date")
    args = parser.parse_args(argv)

    from dlwb.release import ReleaseError, release_all

    try:
        changed = release_all(args.solutions, args.labs, check=args.check)
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check and changed:
        print("labs/ is out of date; run `python -m dlwb release`:\n  " + "\n  ".join(changed))
        return 1
    print("\n".join(f"- {c}" for c in changed) if changed else "labs/ is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
