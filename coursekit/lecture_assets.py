"""The JavaScript a lecture folder needs, copied from installed packages so it works without internet.

A lecture folder (``build/lecture/`` by default) holds the chapters' pages and slides and, in
``_static/``, the two libraries they load by relative URL:

- ``_static/mathjax/``: MathJax 2.7 from the ``jupyter-server-mathjax`` package (which also
  serves it to JupyterLab and RISE). Math is drawn by its HTML-CSS output with the STIX web fonts
  shipped beside it.
- ``_static/reveal.js/``: reveal.js 5 from the ``sphinx-revealjs`` package, installed without
  its dependencies (only these files are read; the package is never imported).

The folder can be copied anywhere (a USB stick, a laptop in a room without network) and opened
from ``file://``. Nothing is downloaded: the packages are found with :mod:`importlib.metadata`.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import dataclass
from pathlib import Path

STATIC = "_static"  # the assets' folder inside a lecture folder


@dataclass(frozen=True)
class Asset:
    """One library: the distribution that ships it, its folder there, and what a lecture needs of it."""

    name: str  # the folder under _static/
    distribution: str  # the pip distribution that ships it
    folder: str  # its folder inside the distribution
    entry: str  # the file the pages load, relative to the folder
    ignore: tuple[str, ...]  # shutil.ignore_patterns: parts a lecture never loads

    def source(self) -> tuple[Path, str]:
        """The installed folder and its distribution's version; a clear error naming `make env` when missing."""
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"{self.name} for offline lectures comes from the package {self.distribution}, which is not "
                f"installed: run `make env` (or pip install the pin from requirements*.txt)") from None
        folder = Path(dist.locate_file(self.folder))
        if not (folder / self.entry).is_file():
            raise FileNotFoundError(f"{self.distribution} {dist.version} has no {self.folder}/{self.entry}; "
                                    "install the version pinned in requirements*.txt")
        return folder, dist.version


MATHJAX = Asset("mathjax", "jupyter-server-mathjax", "jupyter_server_mathjax/static", "MathJax.js",
                ignore=("SVG", "*.map"))  # HTML-CSS output (its STIX web fonts are in fonts/): no SVG
REVEAL = Asset("reveal.js", "sphinx-revealjs", "sphinx_revealjs/_static/revealjs", "dist/reveal.js",
               ignore=("*.map", "*.esm.js", "highlight", "markdown", "math", "search", "zoom", "css"))
ASSETS = (MATHJAX, REVEAL)


def url(asset: Asset) -> str:
    """The asset's folder, relative to a page in the lecture folder."""
    return f"{STATIC}/{asset.name}"


def install(out_dir: Path) -> list[Path]:
    """Copy every asset into ``out_dir/_static/`` (again only when its package version changed).

    Returns the folders written. A ``VERSION`` file in each records what was copied.
    """
    written = []
    for asset in ASSETS:
        target = out_dir / STATIC / asset.name
        stamp = target / "VERSION"
        folder, version = asset.source()
        wanted = f"{asset.distribution} {version}\n"
        if stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted and (target / asset.entry).is_file():
            continue
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns(*asset.ignore))
        stamp.write_text(wanted, encoding="utf-8")
        written.append(target)
    return written
