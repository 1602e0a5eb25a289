"""coursekit: the instructor's tools of the deep-learning course workbook.

Releasing student labs from the master notebooks, grading submissions in a sandbox, and the
lecture output of the chapters. It imports the student package ``dlwb``; ``dlwb`` never
imports it, and a submission being graded cannot read it. The command line::

    python -m coursekit release [--check]
    python -m coursekit grade SUBMISSIONS --lab NAME
    python -m coursekit review
    python -m coursekit lecture [--smoke] [--only NAME ...]

Modules
-------
layout     where the course's folders are (the one place that knows)
release    student labs generated from the master notebooks
grading    sandboxed, trustworthy grading of submissions
sandboxed  the only code the grading sandbox can see: its worker and the wire format
lecture    executed HTML, slides and run times of the chapters
"""
