"""Find every student's submissions for a lab, in a folder or a zip, and pick the latest.

Layout: ``<root>/<student>/…/<lab>.ipynb``. In a zip, the root is the zip itself, or the
folder inside it that has the zip's name (``subs.zip`` holding ``subs/<student>/…``, as
"compress folder" makes it), decided entry by entry; the ``__MACOSX/`` folder and ``._*``
files that macOS Finder adds are metadata, never submissions. "Latest" is decided by the
file time recorded at collection (the file's modification time, or the zip entry's date),
never by anything inside the notebook; on equal times the lexically last path wins, so the
choice is stable. Files that become one student from different paths are reported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from coursekit.grading.notebook import MAX_NOTEBOOK_BYTES

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


def _looks_like(name: str, lab: str) -> bool:
    """A notebook named almost like the lab (``lab01 (1).ipynb``, ``Lab01-copy.ipynb``): a student's, misnamed."""
    return name.lower().endswith(".ipynb") and lab.lower() in name.lower() and name != f"{lab}.ipynb"


def _from_folder(root: Path, lab: str) -> tuple[list[Submission], list[str]]:
    found, problems = [], []
    for folder, dirs, files in os.walk(root):  # never follows a linked folder
        here = Path(folder)
        dirs.sort()
        for name in dirs:
            if (here / name).is_symlink():
                problems.append(f"{student_id(str((here / name).relative_to(root)))}: a symbolic link to a folder; "
                                "not followed (put the files themselves in the submissions)")
        for name in sorted(files):
            path = here / name
            where = student_id(str(path.relative_to(root)))
            parts = path.relative_to(root).parts
            if _looks_like(name, lab):
                problems.append(f"{where}: not named {lab}.ipynb; skipped (rename it to be graded)")
            if name != f"{lab}.ipynb" or _is_macos_metadata(parts):
                continue
            if path.is_symlink():
                problems.append(f"{where}: a symbolic link; skipped (submit the file itself)")
            elif len(parts) < 2:
                problems.append(f"{where}: not inside a student's folder; skipped")
            elif ".ipynb_checkpoints" in parts:
                problems.append(f"{where}: a Jupyter checkpoint copy, not the notebook; skipped")
            elif not path.is_file():
                problems.append(f"{where}: not a regular file; skipped")
            else:
                stat = path.stat()
                found.append(Submission(student_id(parts[0]), path, where, stat.st_mtime, _digest(path), stat.st_size))
    return found, problems


def _is_macos_metadata(parts: tuple[str, ...]) -> bool:
    """Finder's "Compress" adds ``__MACOSX/…/._<name>`` (resource forks) beside every file."""
    return "__MACOSX" in parts or parts[-1].startswith("._")


def _from_zip(archive: Path, lab: str, extract_to: Path) -> tuple[list[Submission], list[str]]:
    found, problems, total, metadata = [], [], 0, 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = PurePosixPath(info.filename.replace("\\", "/"))  # old Windows tools write backslashes
            if info.is_dir() or not name.parts:
                continue
            if _is_macos_metadata(name.parts):
                metadata += 1
                continue
            if _looks_like(name.name, lab):
                problems.append(f"{info.filename}: not named {lab}.ipynb; skipped (rename it to be graded)")
            if name.name != f"{lab}.ipynb":
                continue
            if (name.is_absolute() or ".." in name.parts or name.parts[0].endswith(":")
                    or (info.external_attr >> 16) & 0o170000 == 0o120000):
                problems.append(f"{info.filename}: unsafe path or link in the zip; skipped")
                continue
            # The folder named like the zip ("class.zip" holding "class/<student>/…"), entry by entry.
            parts = name.parts[1:] if name.parts[0] == archive.stem and len(name.parts) >= 3 else name.parts
            if len(parts) < 2:
                problems.append(f"{info.filename}: not inside a student's folder; skipped")
                continue
            if ".ipynb_checkpoints" in parts:
                problems.append(f"{info.filename}: a Jupyter checkpoint copy, not the notebook; skipped")
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
    if metadata:
        problems.append(f"{archive.name}: {metadata} macOS metadata entries (__MACOSX/, ._*) ignored")
    return found, problems


def _merged(found: list[Submission], latest: dict[str, Submission]) -> list[str]:
    """A loud line for each student made of files from different paths (an extra top folder merges a class)."""
    origins: dict[str, list[str]] = {}
    for sub in found:
        origins.setdefault(sub.student, []).append(sub.origin)
    return [f"{student}: {len(paths)} files became this one student ({', '.join(sorted(paths))}); only the "
            f"latest by file time, {latest[student].origin}, is graded. If they are different students' work, "
            "the zip or folder has an extra top folder: remove it, or name the zip like that folder"
            for student, paths in sorted(origins.items()) if len(set(paths)) > 1]


def collect(source: Path, lab: str, workspace: Path) -> tuple[dict[str, Submission], list[Submission], list[str]]:
    """``(latest per student, every submission found, problems)`` for ``lab``."""
    problems: list[str] = []
    if source.is_dir():
        found, problems = _from_folder(source, lab)
    elif zipfile.is_zipfile(source):
        extract_to = workspace / "extracted"
        extract_to.mkdir(parents=True, exist_ok=True)
        found, problems = _from_zip(source, lab, extract_to)
    else:
        raise FileNotFoundError(f"{source} is neither a folder nor a zip file of submissions")
    latest: dict[str, Submission] = {}
    for sub in sorted(found, key=lambda s: (s.file_time, s.origin)):
        latest[sub.student] = sub
    return latest, found, problems + _merged(found, latest)
