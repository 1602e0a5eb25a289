"""Seeds, devices and the environment report.

Taught in chapter 00 (``notebooks/00_setup.ipynb``). Nothing here runs on import: a
notebook calls :func:`set_seed` and :func:`get_device` once, at the top, explicitly.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import sys

import numpy as np
import torch

DEVICE_ENV_VAR = "DLWB_DEVICE"


def set_seed(seed: int) -> None:
    """Seed every random number generator the course uses.

    Covers Python's ``random``, NumPy's global generator, PyTorch (CPU and every CUDA
    device) and, once Keras 3 or TensorFlow has been imported, Keras through
    ``keras.utils.set_random_seed`` (which also seeds the TensorFlow backend;
    ``tf.random.set_seed`` alone is not repeatable). Import Keras before seeding: a
    PyTorch-only notebook then never pays TensorFlow's seconds of start-up.

    Defined in chapter 00.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if "keras" in sys.modules or "tensorflow" in sys.modules:
        import keras

        keras.utils.set_random_seed(seed)


def _cuda_name(index: int) -> str:
    props = torch.cuda.get_device_properties(index)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"


def get_device(prefer: str | None = None, *, verbose: bool = True) -> torch.device:
    """Pick the device to train on: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the environment variable ``DLWB_DEVICE``) forces a choice, e.g.
    ``"cpu"`` to compare speeds; asking for a device that is not there is an error, not
    a silent fallback. With ``verbose`` a one-line report says what was chosen and why.

    Defined in chapter 00.
    """
    choice = prefer or os.environ.get(DEVICE_ENV_VAR) or None
    mps_ok = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if choice is None:
        if torch.cuda.is_available():
            device = torch.device("cuda", 0)
        elif mps_ok:
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    else:
        try:
            device = torch.device(choice)
        except RuntimeError as err:
            raise ValueError(
                f"unknown device {choice!r}: use 'cuda', 'cuda:N', 'mps' or 'cpu'"
            ) from err
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"device {choice!r} was requested but PyTorch sees no CUDA GPU "
                    f"(torch {torch.__version__}). Install a CUDA build of torch (README, 'GPU') "
                    f"or use get_device('cpu')."
                )
            if device.index is None:
                device = torch.device("cuda", 0)
            if device.index >= torch.cuda.device_count():
                raise RuntimeError(
                    f"device {choice!r} was requested but only {torch.cuda.device_count()} "
                    f"CUDA device(s) exist"
                )
        elif device.type == "mps" and not mps_ok:
            raise RuntimeError(f"device {choice!r} was requested but MPS is not available here")
        elif device.type not in {"cuda", "mps", "cpu"}:
            raise ValueError(f"unsupported device {choice!r}: use 'cuda', 'mps' or 'cpu'")
    if verbose:
        print(f"Using device: {describe_device(device)}")
    return device


def describe_device(device: torch.device) -> str:
    """One line naming a device: ``cuda:0 (NVIDIA H100, 79 GiB)`` or ``cpu (2 threads)``."""
    if device.type == "cuda":
        return f"{device} ({_cuda_name(device.index or 0)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


COURSE_PACKAGES = (
    "torch",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "numpy",
    "scikit-learn",
    "matplotlib",
    "jupyterlab",
    "ipywidgets",
    "papermill",
)


def describe_environment() -> dict[str, str]:
    """Versions, devices and threads of this machine, as an ordered ``{name: value}`` dict.

    Used by chapter 00 to check the set-up; paste its output into a bug report.
    Packages that are not installed are left out.
    """
    env = {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "cpu threads (torch)": str(torch.get_num_threads()),
        "cpu cores (os)": str(os.cpu_count()),
    }
    for dist in COURSE_PACKAGES:
        version = _version(dist)
        if version is not None:
            env[dist] = version
    if torch.cuda.is_available():
        env["cuda (torch build)"] = str(torch.version.cuda)
        for i in range(torch.cuda.device_count()):
            env[f"cuda:{i}"] = _cuda_name(i)
    else:
        env["cuda"] = "not available"
    mps_ok = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    env["mps"] = "available" if mps_ok else "not available"
    env["default device"] = describe_device(get_device(verbose=False))
    return env
