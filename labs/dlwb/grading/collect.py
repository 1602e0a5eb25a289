"""Find every student's submissions for a lab, in a folder or a zip, and pick the latest.

Layout: ``<root>/<student>/…/<lab>.ipynb``. In a zip, the root is the zip itself, or the
folder inside it that has the zip's name (``subs.zip`` holding ``subs/<student>/…``, as
"compress folder" makes it). "Latest" is decided by the file time recorded at
collection (the file's modification time, or the zip entry's date), never by anything
inside the notebook; on equal times the lexically last path wins, so the choice is stable.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dlwb.grading.notebook import MAX_NOTEBOOK_BYTES

MAX_ZIP_BYTES = 4 << 30  # all notebooks of one lab, uncompressed


@dataclass
class Submission:
    student: str
    path: Path  # a readable copy (extracted when the source is a zip)
    origin: str  # where it came from, relative to the root or the zip
    file_time: float  # seconds since the epoch
    sha256: str
    size: int


def student_id(name: str) -> str:
    """A folder name as valid text: bytes that are not UTF-8 become ``\\xNN`` (distinct, printable)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _from_folder(root: Path, lab: str) -> list[Submission]:
    found = []
    for path in sorted(root.rglob(f"{lab}.ipynb")):
        parts = path.relative_to(root).parts
        if len(parts) < 2 or path.is_symlink() or not path.is_file() or ".ipynb_checkpoints" in parts:
            continue
        stat = path.stat()
        found.append(Submission(student_id(parts[0]), path, student_id("/".join(parts)), stat.st_mtime,
                                _digest(path), stat.st_size))
    return found


def _from_zip(archive: Path, lab: str, extract_to: Path) -> tuple[list[Submission], list[str]]:
    found, problems, total = [], [], 0
    with zipfile.ZipFile(archive) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        names = [PurePosixPath(i.filename) for i in infos]
        tops = {n.parts[0] for n in names if n.parts}
        strip = 1 if tops == {archive.stem} else 0
        for info, name in zip(infos, names):
            parts = name.parts[strip:]
            if name.name != f"{lab}.ipynb" or len(parts) < 2 or ".ipynb_checkpoints" in parts:
                continue
            if name.is_absolute() or ".." in name.parts or (info.external_attr >> 16) & 0o170000 == 0o120000:
                problems.append(f"{info.filename}: unsafe path or link in the zip; skipped")
                continue
            if info.file_size > MAX_NOTEBOOK_BYTES or total + info.file_size > MAX_ZIP_BYTES:
                problems.append(f"{info.filename}: too large ({info.file_size:,} bytes); skipped")
                continue
            total += info.file_size
            target = extract_to / f"{len(found):05d}.ipynb"
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            file_time = time.mktime((*info.date_time, 0, 0, -1))
            found.append(Submission(parts[0], target, "/".join(parts), file_time, _digest(target), info.file_size))
    return found, problems


def collect(source: Path, lab: str, workspace: Path) -> tuple[dict[str, Submission], list[Submission], list[str]]:
    """``(latest per student, every submission found, problems)`` for ``lab``."""
    problems: list[str] = []
    if source.is_dir():
        found = _from_folder(source, lab)
    elif zipfile.is_zipfile(source):
        extract_to = workspace / "extracted"
        extract_to.mkdir(parents=True, exist_ok=True)
        found, problems = _from_zip(source, lab, extract_to)
    else:
        raise FileNotFoundError(f"{source} is neither a folder nor a zip file of submissions")
    latest: dict[str, Submission] = {}
    for sub in sorted(found, key=lambda s: (s.file_time, s.origin)):
        latest[sub.student] = sub
    return latest, found, problems
