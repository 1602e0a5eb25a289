"""Dataset loaders: real files through the download path, and the offline fallbacks."""

from __future__ import annotations

import gzip
import hashlib
import json
import re

import numpy as np
import pytest

from conftest import SHARED_DATA
from dlwb import data
from dlwb.download import DownloadError


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as a gzipped IDX file, as MNIST ships it."""
    magic = data.IDX_IMAGES_MAGIC if array.ndim == 3 else data.IDX_LABELS_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def serve_dataset(server, tmp_path, name: str, files: dict[str, bytes]):
    """Put ``files`` on the loopback server and write a manifest for them."""
    entries = []
    for fname, body in files.items():
        server.routes[f"/{fname}"] = ("ok", body)
        entries.append({"name": fname, "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                        "urls": [server.url(f"/{fname}")]})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"datasets": {name: {"files": entries}}}))
    return manifest


def test_load_mnist_reads_idx_files(cache, server, tmp_path):
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    train_y, test_y = rng.integers(0, 10, 12, dtype=np.uint8), rng.integers(0, 10, 5, dtype=np.uint8)
    manifest = serve_dataset(server, tmp_path, "mnist", {
        "train-images-idx3-ubyte.gz": idx_bytes(train_x),
        "train-labels-idx1-ubyte.gz": idx_bytes(train_y),
        "t10k-images-idx3-ubyte.gz": idx_bytes(test_x),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(test_y),
    })
    mnist = data.load_mnist(manifest=manifest, fallback=False)
    assert mnist.source == "MNIST (official IDX files)"
    assert mnist.x_train.dtype == np.float32 and mnist.x_train.shape == (12, 28, 28)
    np.testing.assert_allclose(mnist.x_train, train_x / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(mnist.y_test, test_y)
    assert mnist.y_train.dtype == np.int64


def test_read_idx_rejects_garbage(tmp_path):
    bad_magic = tmp_path / "bad.gz"
    bad_magic.write_bytes(gzip.compress(b"\x00\x00\x09\x99" + bytes(20)))
    with pytest.raises(ValueError, match="not an MNIST IDX file"):
        data.read_idx(bad_magic)
    short = tmp_path / "short.gz"
    raw = gzip.decompress(idx_bytes(np.zeros((3, 4, 4), np.uint8)))[:-5]  # drop the last 5 pixels
    short.write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match="header announces"):
        data.read_idx(short)


def test_load_mnist_offline_falls_back_to_real_subset(offline, capsys):
    mnist = data.load_mnist()
    out = capsys.readouterr().out
    assert "NOTICE" in out and "5,000-image" in out and "DLWB_OFFLINE" in out
    assert mnist.x_train.shape == (4000, 28, 28) and mnist.x_test.shape == (1000, 28, 28)
    assert np.bincount(mnist.y_test).tolist() == [100] * 10
    assert len(np.unique(mnist.y_train[:50])) == 10  # shuffled: a prefix holds every digit
    assert 0.0 <= mnist.x_train.min() and mnist.x_train.max() <= 1.0
    # Real digits, not noise: the mean image of each class differs from the others.
    means = np.stack([mnist.x_train[mnist.y_train == d].mean(0) for d in range(10)])
    assert np.linalg.matrix_rank(means.reshape(10, -1)) == 10
    # No image is in both splits.
    train_rows = {row.tobytes() for row in mnist.x_train}
    assert not any(row.tobytes() in train_rows for row in mnist.x_test)


def test_load_mnist_without_fallback_raises(offline):
    with pytest.raises(DownloadError, match="train-images-idx3-ubyte.gz"):
        data.load_mnist(fallback=False)


def test_corrupt_download_falls_back_with_reason(cache, server, tmp_path, capsys):
    manifest = serve_dataset(server, tmp_path, "mnist", {"train-images-idx3-ubyte.gz": b"x" * 100})
    server.routes["/train-images-idx3-ubyte.gz"] = ("ok", b"y" * 100)  # served bytes differ
    mnist = data.load_mnist(manifest=manifest)
    assert "corrupt" in capsys.readouterr().out
    assert mnist.source.startswith("MNIST 5,000-image subset")
    assert not (cache / "train-images-idx3-ubyte.gz").exists()


def test_load_digits_is_stratified_and_repeatable():
    a, b = data.load_digits(), data.load_digits()
    assert a.x_train.shape == (1437, 8, 8) and a.x_test.shape == (360, 8, 8)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert np.bincount(a.y_test).min() >= 35  # every digit in the test split (about 36 each)
    assert a.num_classes == 10


def test_load_text_offline_falls_back_to_shakespeare(offline, capsys):
    text = data.load_text("tinyshakespeare")
    assert "NOTICE" in capsys.readouterr().out
    assert abs(len(text) - data.TEXT_FALLBACK_CHARS) < 5_000
    # Laid out like tiny Shakespeare: "SPEAKER:" lines followed by verse, no Markdown.
    speakers = re.findall(r"^([A-Z][A-Za-z .']+):$", text, flags=re.M)
    assert len(speakers) > 5_000
    assert "**" not in text and "#" not in text
    assert "HAMLET" not in text[:1000]  # sorted by genre folder, then title: comedies first
    assert data.load_text() == text  # repeatable


def test_load_text_without_fallback_raises(offline):
    with pytest.raises(DownloadError, match="tinyshakespeare.txt"):
        data.load_text(fallback=False)


def test_load_text_unknown_name():
    with pytest.raises(KeyError, match="unknown text"):
        data.load_text("war-and-peace")


def test_load_text_downloads(cache, server, tmp_path):
    body = "First Citizen:\nBefore we proceed any further, hear me speak.\n".encode()
    manifest = serve_dataset(server, tmp_path, "tinyshakespeare", {"tinyshakespeare.txt": body})
    assert data.load_text(manifest=manifest, fallback=False) == body.decode()


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present (a user's clone)")
def test_load_text_from_shared_data_dir(cache, monkeypatch):
    monkeypatch.setenv("DLWB_DATA_DIR", str(SHARED_DATA))
    text = data.load_text(fallback=False)
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:")
