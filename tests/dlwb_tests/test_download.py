"""The download path, exercised against a loopback HTTP server (no internet needed)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket

import pytest

from dlwb import download as dl
from dlwb.download import DownloadError, FileSpec

BODY = os.urandom(200_000)  # several 64 KiB chunks
SHA = hashlib.sha256(BODY).hexdigest()


def spec(*urls: str, body: bytes = BODY) -> FileSpec:
    return FileSpec("blob.bin", hashlib.sha256(body).hexdigest(), len(body), tuple(urls))


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/blob.bin"  # nothing listens here any more


def leftovers(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_verifies_and_caches(cache, server):
    server.routes["/blob.bin"] = ("ok", BODY)
    path = dl.fetch(spec(server.url("/blob.bin")), progress=False)
    assert path == cache / "blob.bin"
    assert path.read_bytes() == BODY
    # A second fetch is served from the cache: the server sees no new request.
    assert dl.fetch(spec(server.url("/blob.bin")), progress=False) == path
    assert server.hits["/blob.bin"] == 1
    assert leftovers(cache) == ["blob.bin"]  # no temporary .part files


def test_mirror_is_used_when_primary_fails(cache, server):
    server.routes["/mirror/blob.bin"] = ("ok", BODY)
    path = dl.fetch(spec(server.url("/missing/blob.bin"), server.url("/mirror/blob.bin")), progress=False)
    assert path.read_bytes() == BODY
    assert server.hits["/missing/blob.bin"] == 1


@pytest.mark.parametrize(
    ("mode", "body", "reason"),
    [
        ("ok", bytes(len(BODY)), "corrupt: sha256"),  # right size, wrong bytes
        ("truncated", BODY, "bytes"),  # connection closes half-way
        ("oversize", BODY, "more than the expected"),
        ("404", BODY, "HTTP 404"),
    ],
)
def test_bad_download_is_rejected_and_leaves_nothing(cache, server, mode, body, reason):
    server.routes["/blob.bin"] = (mode, body)
    with pytest.raises(DownloadError) as err:
        dl.fetch(spec(server.url("/blob.bin")), progress=False)
    message = str(err.value)
    assert reason in message
    assert "blob.bin" in message and "To fix" in message
    assert leftovers(cache) == []  # neither a bad file nor a partial one is kept


def test_truncated_primary_then_good_mirror(cache, server):
    server.routes["/a/blob.bin"] = ("truncated", BODY)
    server.routes["/b/blob.bin"] = ("ok", BODY)
    path = dl.fetch(spec(server.url("/a/blob.bin"), server.url("/b/blob.bin")), progress=False)
    assert path.read_bytes() == BODY


def test_no_network_error_names_every_source(cache):
    url = closed_port_url()
    with pytest.raises(DownloadError, match="unreachable") as err:
        dl.fetch(spec(url), progress=False, timeout=5)
    assert url in str(err.value)


def test_offline_switch_skips_the_network(offline, server):
    server.routes["/blob.bin"] = ("ok", BODY)
    with pytest.raises(DownloadError, match="DLWB_OFFLINE"):
        dl.fetch(spec(server.url("/blob.bin")), progress=False)
    assert server.hits["/blob.bin"] == 0


def test_corrupt_cached_file_is_replaced(cache, server):
    cache.mkdir(parents=True)
    (cache / "blob.bin").write_bytes(b"not the file")
    server.routes["/blob.bin"] = ("ok", BODY)
    assert dl.fetch(spec(server.url("/blob.bin")), progress=False).read_bytes() == BODY


def test_data_dir_is_searched_and_checked(cache, tmp_path, monkeypatch, server):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    (good / "blob.bin").write_bytes(BODY)
    (bad / "blob.bin").write_bytes(BODY[:-1] + b"x")  # same size, wrong checksum
    monkeypatch.setenv("DLWB_DATA_DIR", os.pathsep.join([str(bad), str(good)]))
    assert dl.fetch(spec(server.url("/blob.bin")), progress=False) == good / "blob.bin"
    assert server.hits["/blob.bin"] == 0


def test_download_by_manifest_name(cache, server, tmp_path):
    server.routes["/blob.bin"] = ("ok", BODY)
    manifest = tmp_path / "manifest.json"
    entry = {"name": "blob.bin", "size": len(BODY), "sha256": SHA, "urls": [server.url("/blob.bin")]}
    manifest.write_text(json.dumps({"datasets": {"blob": {"files": [entry]}}}))
    files = dl.download("blob", manifest=manifest, progress=False)
    assert files["blob.bin"].read_bytes() == BODY
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        dl.download("nope", manifest=manifest)


def test_course_manifest_is_well_formed():
    datasets = dl.load_manifest()
    assert {"mnist", "tinyshakespeare"} <= set(datasets)
    for files in datasets.values():
        for f in files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), f"{f.name}: sha256 must be 64 lower-case hex digits"
            assert f.size > 0
            assert len(f.urls) >= 2, f"{f.name} needs a mirror"
            assert all(u.startswith("https://") for u in f.urls)
