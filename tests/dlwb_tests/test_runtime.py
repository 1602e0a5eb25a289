"""Seeds, device choice and the environment report."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from dlwb import runtime


def draw_all():
    import keras

    return (
        random.random(),
        np.random.rand(3).tolist(),
        torch.rand(3).tolist(),
        keras.random.uniform((3,)).numpy().tolist(),
    )


def keras_init():
    import keras

    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    return layer.kernel.numpy()


def test_set_seed_makes_every_framework_repeatable():
    import keras  # noqa: F401  (imported first: set_seed seeds Keras once it is imported)

    runtime.set_seed(123)
    first, k1 = draw_all(), keras_init()
    runtime.set_seed(123)
    second, k2 = draw_all(), keras_init()
    assert first == second
    np.testing.assert_array_equal(k1, k2)
    runtime.set_seed(124)
    assert draw_all()[:4] != first[:4]


def test_set_seed_leaves_tensorflow_unimported_until_a_notebook_imports_keras():
    script = """
import sys
from dlwb import runtime
runtime.set_seed(5)
print("tensorflow" in sys.modules, "keras" in sys.modules)
import keras
draws = []
for _ in range(2):
    runtime.set_seed(5)
    draws.append(keras.random.uniform((3,)).numpy().tolist())
print(draws[0] == draws[1])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout.split()
    assert out == ["False", "False", "True"], out


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "7", True])
def test_set_seed_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed must be an int"):
        runtime.set_seed(bad)


def test_get_device_prefers_accelerators_and_reports(capsys, monkeypatch):
    monkeypatch.delenv(runtime.DEVICE_ENV_VAR, raising=False)
    device = runtime.get_device()
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert device.type == expected
    assert capsys.readouterr().out.startswith(f"Using device: {expected}")


def test_get_device_cuda_then_mps_then_cpu_order(monkeypatch):
    monkeypatch.delenv(runtime.DEVICE_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert runtime.get_device(verbose=False).type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert runtime.get_device(verbose=False).type == "cpu"


def test_get_device_explicit_and_env(monkeypatch):
    assert runtime.get_device("cpu", verbose=False) == torch.device("cpu")
    monkeypatch.setenv(runtime.DEVICE_ENV_VAR, "cpu")
    assert runtime.get_device(verbose=False) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        runtime.get_device("tpu-please", verbose=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_get_device_missing_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU.*get_device\\('cpu'\\)"):
        runtime.get_device("cuda", verbose=False)


def test_describe_environment_lists_versions_and_devices(monkeypatch):
    monkeypatch.delenv(runtime.DEVICE_ENV_VAR, raising=False)
    env = runtime.describe_environment()
    assert env["torch"] == torch.__version__.split("+")[0] or env["torch"] == torch.__version__
    assert env["numpy"] == np.__version__
    assert "keras" in env and ("tensorflow-cpu" in env or "tensorflow" in env)
    if torch.cuda.is_available():
        expected = f"cuda:0 ({torch.cuda.get_device_name(0)}, "
    elif torch.backends.mps.is_available():
        expected = "mps (Apple GPU)"
    else:
        expected = f"cpu ({torch.get_num_threads()} threads)"
    assert env["default device"].startswith(expected), (env["default device"], expected)
    assert all(isinstance(v, str) for v in env.values())
