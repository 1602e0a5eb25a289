"""What the course's own processes skip when they start: grammars for formats no notebook uses.

nbformat validates notebooks with jsonschema, and ``import jsonschema`` loads every optional format
checker that is installed. One of them, ``rfc3987-syntax`` (which jupyter-events' ``jsonschema[format-nongpl]``
installs), compiles Earley parsers for the ``iri`` and ``iri-reference`` formats when it is imported:
a second or more of every process that reads a notebook, each grader process and each notebook re-check
among them. No notebook schema uses those formats (nor could: nbformat validates with Draft 4, which
has none). :func:`skip_unused_format_grammars` marks the module unavailable in this process only (a
``None`` in ``sys.modules`` makes its import raise ``ImportError``, which jsonschema reads as "not
installed"); every other format checker, and all of nbformat's validation, stays as it is.

It is called first by the command line (``python -m coursekit``), the grader process
(:mod:`coursekit.grading.process`) and the test suite's notebook re-checks, before anything imports nbformat.
"""

from __future__ import annotations

import sys

UNUSED_FORMAT_GRAMMARS = ("rfc3987_syntax",)  # jsonschema's checker of the iri formats (Draft 7 and later)


def skip_unused_format_grammars() -> None:
    """Keep jsonschema from loading the format grammars no notebook needs; call it before importing nbformat."""
    if "jsonschema" in sys.modules:
        raise RuntimeError("skip_unused_format_grammars() must run before jsonschema is imported: it has loaded "
                           f"its format checkers already ({', '.join(UNUSED_FORMAT_GRAMMARS)} included, if installed)")
    for name in UNUSED_FORMAT_GRAMMARS:
        sys.modules.setdefault(name, None)
