"""Data-parallel training with ``torch.distributed``: process groups, hand all-reduce, sharding, local launch.

Taught in chapter 09 (``notebooks/09_scaling_out.ipynb``), where two processes at batch ``B/2``
each are shown to compute the gradients of one process at batch ``B``, by hand with
:func:`allreduce_gradients` and with ``DistributedDataParallel``. ``tests/dlwb_tests/test_distributed.py``
repeats those checks and launches ``notebooks/scripts/ddp_train.py`` with ``torchrun``.

Two ways to start the processes:

- ``torchrun --standalone --nproc_per_node=N script.py``: torchrun sets ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` for every process; the script calls :func:`setup`;
- :func:`launch` from a notebook or a test: forks ``N`` local processes on a free port (gloo, CPU)
  and returns what each returned, no terminal needed.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def setup(backend: str | None = None, timeout_s: float = 60.0) -> tuple[int, int, torch.device]:
    """Join the process group described by torchrun's environment; returns ``(rank, world_size, device)``.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. The backend is
    NCCL when CUDA is available (one GPU per process: ``cuda:LOCAL_RANK``), else gloo on the CPU.

    Defined in chapter 09.
    """
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not set: this code must run in a process started by torchrun "
            "(torchrun --standalone --nproc_per_node=2 script.py) or by dlwb.distributed.launch(fn, 2)."
        )
    rank, world_size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if not 0 <= rank < world_size:
        raise RuntimeError(f"RANK={rank} must lie in 0 .. WORLD_SIZE-1 = {world_size - 1}")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))
    return rank, world_size, device


def cleanup() -> None:
    """Leave the process group (if this process is in one).

    Defined in chapter 09.
    """
    if dist.is_initialized():
        dist.destroy_process_group()


def allreduce_gradients(model: nn.Module) -> None:
    """Average every gradient over the processes, in place: g <- (1/N) sum_r g_r.

    With equal shards, the loss of the whole batch is the mean of the shards' mean losses, so
    this average is the gradient of the whole batch: what ``DistributedDataParallel`` computes
    (in buckets, overlapped with the backward pass).

    Defined in chapter 09.
    """
    world_size = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # every process now holds sum_r g_r
            p.grad /= world_size


def shard(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s equal, contiguous part of ``batch`` along its first axis: ``(B, ...) -> (B/N, ...)``.

    Defined in chapter 09.
    """
    if len(batch) % world_size:
        raise ValueError(
            f"a batch of {len(batch)} does not split into {world_size} equal shards; the mean of the shards' mean "
            "losses equals the batch's mean loss only for equal shards: use a batch size divisible by the world size."
        )
    size = len(batch) // world_size
    return batch[rank * size:(rank + 1) * size]  # (B/N, ...)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the operating system picks it).

    Defined in chapter 09.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_rank(fn, rank: int, world_size: int, port: int, args: tuple, results, timeout_s: float) -> None:
    # In a child process: torchrun's environment, the process group, fn, its result as pickled bytes.
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    try:
        setup("gloo", timeout_s)
        results.put((rank, True, pickle.dumps(fn(rank, world_size, *args))))
    except BaseException as err:  # noqa: BLE001 — raised again in the parent
        try:
            error = pickle.dumps(err)
            pickle.loads(error)  # some exceptions pickle but cannot be rebuilt
        except Exception:  # noqa: BLE001
            error = pickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))
        results.put((rank, False, (error, traceback.format_exc())))
    finally:
        cleanup()


def launch(fn, world_size: int, *args, timeout_s: float = 60.0) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` local processes joined by gloo; their results by rank.

    The processes are forked where the platform can (Linux), so ``fn`` may be defined in a
    notebook; elsewhere they are spawned and ``fn`` must be importable. Results travel back
    pickled (tensors by value). If a process fails, the others are stopped and its exception is
    raised here, caused by a ``RuntimeError`` that holds the rank's traceback. For CPU demonstrations and tests; GPUs and several machines use torchrun.

    Defined in chapter 09.
    """
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_run_rank, args=(fn, rank, world_size, port, args, results, timeout_s))
             for rank in range(world_size)]
    for p in procs:
        p.start()
    outputs, deadline = {}, time.monotonic() + timeout_s
    try:
        while len(outputs) < world_size:
            try:
                rank, ok, payload = results.get(timeout=max(deadline - time.monotonic(), 0.01))
            except Exception:  # queue.Empty: nothing within the deadline
                dead = [r for r, p in enumerate(procs) if r not in outputs and p.exitcode is not None]
                raise RuntimeError(f"ranks {sorted(set(range(world_size)) - set(outputs))} did not finish within "
                                   f"{timeout_s:g} s (exited without a result: {dead}); a collective call that "
                                   "not every rank makes waits forever.") from None
            if not ok:
                error, text = payload
                raise pickle.loads(error) from RuntimeError(f"rank {rank} of {world_size} failed:\n{text}")
            outputs[rank] = pickle.loads(payload)
        for p in procs:
            p.join(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return [outputs[rank] for rank in range(world_size)]
