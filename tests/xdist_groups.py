"""A pytest plugin that makes ``--dist loadgroup`` keep each ``xdist_group`` on one worker.

The suite's conftest uses it; ``tests/course/test_xdist_groups.py`` loads it alone with ``-p``.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Make ``--dist loadgroup`` keep each ``xdist_group`` on one worker under pytest 9.

    pytest-xdist's worker appends ``@<group>`` to a grouped test's node id by writing
    ``item._nodeid``; pytest 9 reads the id from ``item._id``, so the suffix is lost and the
    scheduler spreads a group over every worker (a JupyterLab server and each grading module's
    fixtures then start once per worker). This copies xdist's id to where pytest reads it.
    """
    if not (hasattr(config, "workerinput") and config.getvalue("loadgroup")):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        grouped = getattr(item, "_nodeid", None)
        if isinstance(grouped, str) and "@" in grouped and "@" not in item.nodeid:
            item._id = coerce_node_id(grouped)
