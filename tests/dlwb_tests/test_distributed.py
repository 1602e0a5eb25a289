"""dlwb.distributed (chapter 09): two gloo processes on the CPU reproduce one process at the full batch.

Float64 throughout, so "equal" means within ``ATOL`` (sums in a different order differ by rounding only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch._dynamo  # noqa: F401 — DDP imports it on first use; importing it once here saves it in every fork
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from conftest import ROOT
from dlwb import distributed

ATOL = 1e-12  # float64 gradients summed in another order
BATCH, WORLD = 16, 2


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def make_batch(seed: int = 1, batch: int = BATCH):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 5, generator=g, dtype=torch.float64), torch.randn(batch, 3, generator=g, dtype=torch.float64)


def loss_on_shard(model, rank, world_size, X, y):
    return nn.functional.mse_loss(model(distributed.shard(X, rank, world_size)), distributed.shard(y, rank, world_size))


def gradients_both_ways(rank, world_size):
    # Each process: batch B/2. By hand (all_reduce of every .grad), and with DDP.
    X, y = make_batch()
    by_hand = make_model()
    loss_on_shard(by_hand, rank, world_size, X, y).backward()
    distributed.allreduce_gradients(by_hand)
    ddp = DDP(make_model())
    loss_on_shard(ddp, rank, world_size, X, y).backward()
    return [p.grad for p in by_hand.parameters()], [p.grad for p in ddp.module.parameters()]


def full_batch_gradients():
    model = make_model()
    X, y = make_batch()
    nn.functional.mse_loss(model(X), y).backward()
    return [p.grad for p in model.parameters()]


def assert_all_close(got, expected, what):
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert torch.allclose(a, b, rtol=0, atol=ATOL), f"{what}: parameter {i} differs by {(a - b).abs().max():.3g}"


def test_two_processes_at_half_batch_give_the_full_batch_gradients_by_hand_and_with_ddp():
    reference = full_batch_gradients()
    results = distributed.launch(gradients_both_ways, WORLD)
    for rank, (by_hand, ddp) in enumerate(results):
        assert_all_close(ddp, reference, f"DDP on rank {rank} vs one process at batch {BATCH}")
        assert_all_close(by_hand, ddp, f"hand all-reduce vs DDP on rank {rank}")


def train(rank, world_size, steps):
    # SGD with momentum on this process's shard; DDP when started by launch, the plain model otherwise.
    X, y = make_batch()
    model = make_model()
    wrapped = DDP(model) if torch.distributed.is_initialized() else model
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_on_shard(wrapped, rank, world_size, X, y).backward()
        optimizer.step()
    return [p.detach() for p in model.parameters()]


def test_parameters_stay_in_sync_and_follow_the_single_process_run():
    steps = 5
    ranks = distributed.launch(train, WORLD, steps)
    for a, b in zip(*ranks, strict=True):
        assert torch.equal(a, b), "DDP replicas must hold bit-identical parameters after every step"
    single = train(0, 1, steps)  # one process, the whole batch
    assert_all_close(ranks[0], single, f"2 processes vs 1 after {steps} SGD steps")


def test_torchrun_launches_the_chapter_script():
    script = ROOT / "notebooks" / "scripts" / "ddp_train.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), "--steps", "3", "--batch-size", "8"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["world_size"] == 2 and report["backend"] == "gloo" and report["in_sync"] is True, report
    assert report["samples_per_s"] > 0


def test_setup_without_torchrun_says_how_to_start(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set.*torchrun"):
        distributed.setup()
    monkeypatch.setenv("RANK", "2")
    for name, value in (("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError, match=r"RANK=2 must lie in 0 .. WORLD_SIZE-1 = 1"):
        distributed.setup()


def test_shard_splits_evenly_or_says_why_not():
    x = torch.arange(12).view(6, 2)
    assert torch.equal(torch.cat([distributed.shard(x, r, 3) for r in range(3)]), x)
    assert distributed.shard(x, 1, 3).shape == (2, 2)
    with pytest.raises(ValueError, match="6 does not split into 4 equal shards"):
        distributed.shard(x, 0, 4)


def fail_on_rank_one(rank, world_size):
    if rank == 1:
        raise ValueError("rank one refuses")
    torch.distributed.barrier()  # rank 0 waits for rank 1 forever: launch must stop it
    return rank


def test_launch_reports_the_failing_rank_and_stops_the_others():
    with pytest.raises(ValueError, match="rank one refuses") as caught:
        distributed.launch(fail_on_rank_one, 2, timeout_s=30)
    assert "rank 1 of 2 failed" in str(caught.value.__cause__) and "fail_on_rank_one" in str(caught.value.__cause__)
