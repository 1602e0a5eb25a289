"""The course's processes start without the format grammars no notebook uses (coursekit.startup)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coursekit import startup

PROBE = """
import sys
from coursekit.startup import skip_unused_format_grammars
skip_unused_format_grammars()
import jsonschema
import nbformat
checkers = jsonschema.Draft7Validator.FORMAT_CHECKER.checkers
nbformat.validate(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]))
broken = nbformat.v4.new_notebook()
broken.cells.append({"cell_type": "code", "source": "x", "metadata": {}})  # no outputs, no execution_count
try:
    nbformat.validate(broken)
    rejected = False
except nbformat.ValidationError:
    rejected = True
print(sys.modules["rfc3987_syntax"] is None, "iri" in checkers, "email" in checkers, rejected)
"""


def test_notebooks_are_still_validated_without_the_iri_grammar():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    # The iri grammar is not loaded and its format is gone; the other checkers and nbformat's validation stay.
    assert out == ["True", "False", "True", "True"]


def test_skipping_after_jsonschema_was_imported_is_refused():
    import jsonschema  # noqa: F401 — this process has its format checkers already

    with pytest.raises(RuntimeError, match="must run before jsonschema is imported"):
        startup.skip_unused_format_grammars()
