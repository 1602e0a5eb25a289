"""Verified, cached downloads of the course's datasets.

Taught in chapter 00. Every dataset is an entry of ``data/manifest.json``: for each file,
its name, its size in bytes, its SHA-256 and a list of URLs (the first is the primary,
the rest are mirrors). :func:`fetch` returns the local path of a file, looking in order:

1. the cache directory (``$DLWB_CACHE_DIR``, default ``data/cache/`` of the course),
2. read-only data directories listed in ``$DLWB_DATA_DIR`` (``os.pathsep``-separated),
3. each URL in turn: the download is streamed to a temporary file beside the cache
   entry, checked against the manifest's size and SHA-256, and only then renamed into
   place (``os.replace`` is atomic), so a broken download never leaves a bad file behind.

Files found in steps 1 and 2 are checked too. Set ``DLWB_OFFLINE=1`` to skip step 3.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

COURSE_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_PATH = COURSE_ROOT / "data" / "manifest.json"
CHUNK_BYTES = 1 << 16


class DownloadError(RuntimeError):
    """A dataset file could not be obtained; the message lists every source tried and why."""


class _SourceFailed(Exception):
    """One URL did not give the right bytes: unreachable, HTTP error, truncated or corrupt."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset, as listed in the manifest."""

    name: str
    sha256: str
    size: int
    urls: tuple[str, ...]

    @classmethod
    def from_dict(cls, entry: dict) -> FileSpec:
        missing = {"name", "sha256", "size", "urls"} - entry.keys()
        if missing:
            raise ValueError(f"manifest file entry {entry!r} lacks {sorted(missing)}")
        return cls(entry["name"], entry["sha256"].lower(), int(entry["size"]), tuple(entry["urls"]))


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, list[FileSpec]]:
    """Read the manifest: ``{dataset name: [FileSpec, ...]}``."""
    path = Path(path or MANIFEST_PATH)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"dataset manifest not found at {path}; dlwb expects the course layout "
            f"(data/manifest.json next to labs/dlwb). Install it with `pip install -e .` "
            f"from the course root."
        ) from None
    return {name: [FileSpec.from_dict(f) for f in ds["files"]] for name, ds in raw["datasets"].items()}


def cache_dir() -> Path:
    """Where downloads are kept: ``$DLWB_CACHE_DIR`` or the course's ``data/cache/``."""
    return Path(os.environ.get("DLWB_CACHE_DIR") or COURSE_ROOT / "data" / "cache")


def data_dirs() -> list[Path]:
    """Read-only directories from ``$DLWB_DATA_DIR`` searched before downloading."""
    value = os.environ.get("DLWB_DATA_DIR", "")
    return [Path(p) for p in value.split(os.pathsep) if p]


def is_offline() -> bool:
    return os.environ.get("DLWB_OFFLINE", "").lower() in {"1", "true", "yes"}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(path: Path, spec: FileSpec) -> bool:
    return path.is_file() and path.stat().st_size == spec.size and sha256_of(path) == spec.sha256


def _stream(url: str, spec: FileSpec, target: Path, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``target`` atomically, or raise ``_SourceFailed`` saying why."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise _SourceFailed(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        raise _SourceFailed(f"unreachable ({reason})") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest, received = hashlib.sha256(), 0
        with response, os.fdopen(fd, "wb") as out, tqdm(
            total=spec.size, unit="B", unit_scale=True, desc=spec.name, disable=not progress, leave=False
        ) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (http.client.HTTPException, OSError) as err:
                    raise _SourceFailed(f"connection broke after {received:,} bytes ({err})") from None
                if not chunk:
                    break
                received += len(chunk)
                if received > spec.size:
                    raise _SourceFailed(f"server sent more than the expected {spec.size:,} bytes")
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        if received != spec.size:
            raise _SourceFailed(f"truncated: got {received:,} of {spec.size:,} bytes")
        if digest.hexdigest() != spec.sha256:
            raise _SourceFailed(
                f"corrupt: sha256 {digest.hexdigest()} does not match the manifest's {spec.sha256}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(spec: FileSpec, *, timeout: float = 30.0, progress: bool = True) -> Path:
    """Return a verified local copy of one manifest file, downloading it if needed.

    Raises :class:`DownloadError` naming every source tried and why it failed, and how
    to place the file by hand.
    """
    cache = cache_dir()
    target = cache / spec.name
    if _matches(target, spec):
        return target
    for directory in data_dirs():
        if _matches(directory / spec.name, spec):
            return directory / spec.name
    failures = []
    if target.exists():
        failures.append(f"{target}: present but wrong size or checksum (will be replaced)")
    if is_offline():
        failures.append("network: skipped because DLWB_OFFLINE is set")
    else:
        cache.mkdir(parents=True, exist_ok=True)
        for url in spec.urls:
            try:
                _stream(url, spec, target, timeout, progress)
                return target
            except _SourceFailed as err:
                failures.append(f"{url}: {err}")
    tried = "\n  - ".join(failures)
    raise DownloadError(
        f"could not obtain {spec.name} ({spec.size:,} bytes, sha256 {spec.sha256}).\n"
        f"Tried:\n  - {tried}\n"
        f"To fix: connect to the internet and retry, or download the file yourself from "
        f"{spec.urls[0]} and put it in {cache} (or in a directory listed in $DLWB_DATA_DIR)."
    )


def download(name: str, *, manifest: str | os.PathLike | None = None, **kwargs) -> dict[str, Path]:
    """Fetch every file of dataset ``name`` from the manifest: ``{file name: local path}``.

    Defined in chapter 00.
    """
    datasets = load_manifest(manifest)
    if name not in datasets:
        raise KeyError(f"unknown dataset {name!r}; the manifest lists {sorted(datasets)}")
    return {spec.name: fetch(spec, **kwargs) for spec in datasets[name]}
