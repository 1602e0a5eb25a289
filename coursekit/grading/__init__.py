"""Grading student labs safely: collect, sandbox, test, score, record, give feedback.

The trust model, in one sentence: student code runs only in a sandboxed worker process,
and everything that decides a score (the tests, the reference values, the comparisons)
runs in the grader's own process, which receives nothing from the student but plain
values (JSON, and NumPy arrays read with ``allow_pickle=False``).

Modules, in the order a submission meets them:

collect    find each student's latest submission (directory or zip), by file time
notebook   read, validate and upgrade a submission; rebuild it on the instructor's cells
sandbox    start the worker isolated (namespaces, an allow-list root, limits), talk to it
           (the worker and ``wire``, the only encoding of values that crosses the boundary,
           are ``coursekit.sandboxed``: the one part of coursekit the sandbox can see)
session    one submission's worker across restarts after time-outs, within its time budget
runner     executes the graded test cells in the grader, with student names as proxies
result     the typed result of one submission (its parts, their statuses), and its JSON
gradebook  SQLite gradebook and CSV export
feedback   per-student Markdown/HTML feedback without hidden tests or expected values
grade      grade one submission (an ordered list of stages), or a batch in parallel; the summary
process    the process that grades one submission of a batch (``python -m coursekit.grading.process``)
cli        ``python -m coursekit grade`` (coursekit/__main__.py)
"""
