"""Where the course's folders are: the one place that knows the layout of a course checkout."""

from __future__ import annotations

from dlwb.download import COURSE_ROOT  # the checkout dlwb (labs/dlwb) belongs to: its data/ is there too

CHAPTERS = COURSE_ROOT / "notebooks"  # the chapters, 00_setup.ipynb ...
SOLUTIONS = COURSE_ROOT / "solutions"  # the master labs: the only hand-edited copy
LABS = COURSE_ROOT / "labs"  # the student labs, generated from SOLUTIONS
BUILD = COURSE_ROOT / "build"  # generated output, git-ignored
LECTURE_OUT = BUILD / "lecture"  # the chapters' executed pages, slides and run times
GRADEBOOK = COURSE_ROOT / "gradebook"  # where `grade` writes, by default
