"""Code taught in a chapter and kept in dlwb stays the same in both places.

A notebook cell whose first line is ``# dlwb.<module>`` defines functions or classes that
graduate into ``labs/dlwb/<module>.py``. Each such definition must be the same code as the
module's (compared as syntax trees, so comments and blank lines may differ), and every public
definition of such a module must be taught in one of those cells.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict

import nbformat
import pytest

from conftest import ROOT

MARKER = re.compile(r"#\s*dlwb\.(\w+)\s*$")


def definitions(source: str) -> dict[str, str]:
    tree = ast.parse(source)
    return {node.name: ast.dump(node) for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def taught_cells():
    """(module, notebook, definitions) for every graduating cell in the course."""
    found = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            lines = cell.source.splitlines()
            if cell.cell_type == "code" and lines and (m := MARKER.match(lines[0])):
                found.append((m.group(1), path.name, definitions(cell.source)))
    return found


CELLS = taught_cells()
MODULES = sorted({module for module, _, _ in CELLS})


def test_graduated_cells_exist():
    assert CELLS, "no notebook cell starts with '# dlwb.<module>': nothing graduates into dlwb"


@pytest.mark.parametrize("module", MODULES)
def test_module_matches_the_chapter(module):
    path = ROOT / "labs" / "dlwb" / f"{module}.py"
    assert path.exists(), f"a cell graduates into dlwb.{module}, but {path} does not exist"
    in_module = definitions(path.read_text())
    taught = defaultdict(list)
    for mod, notebook, defs in CELLS:
        if mod == module:
            for name, dump in defs.items():
                taught[name].append((notebook, dump))
    for name, versions in taught.items():
        assert name in in_module, f"{versions[0][0]} teaches {name} for dlwb.{module}, but the module lacks it"
        for notebook, dump in versions:
            assert dump == in_module[name], f"{name} in {notebook} differs from dlwb.{module}.{name}"
    untaught = [n for n in in_module if not n.startswith("_") and n not in taught]
    assert not untaught, f"dlwb.{module} has {untaught}, which no '# dlwb.{module}' cell teaches"
