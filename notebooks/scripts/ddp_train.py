"""Train a small regression MLP with DistributedDataParallel; run it with torchrun.

One machine, two CPU processes (gloo)::

    torchrun --standalone --nproc_per_node=2 notebooks/scripts/ddp_train.py --steps 50

One process per GPU (NCCL is chosen when CUDA is available), several machines: run on every node
with the same endpoint, and ``--node_rank`` 0 .. nnodes-1::

    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=node0.example.org:29500 notebooks/scripts/ddp_train.py

Every process sees the same data stream and keeps its shard of each batch (``dlwb.distributed.shard``);
DDP averages the gradients, so the model follows the single-process run at the full batch size.
Rank 0 prints one JSON line: world size, first and last loss, samples per second, and whether
the parameters are identical on every process at the end. Taught in chapter 09.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from dlwb import distributed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size (all processes together)")
    parser.add_argument("--width", type=int, default=128, help="hidden units of the MLP")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and the data")
    args = parser.parse_args()

    rank, world_size, device = distributed.setup()
    torch.manual_seed(args.seed)  # the same initial model everywhere (DDP also broadcasts rank 0's)
    model = nn.Sequential(nn.Linear(16, args.width), nn.Tanh(), nn.Linear(args.width, 1)).to(device)
    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(ddp_model.parameters(), lr=args.lr)
    data = torch.Generator().manual_seed(args.seed + 1)  # the same batches on every process
    w_true = torch.randn(16, 1, generator=data)
    losses, start = [], time.perf_counter()
    for _ in range(args.steps):
        X = torch.randn(args.batch_size, 16, generator=data)  # (B, 16)
        y = torch.sin(X @ w_true)  # (B, 1)
        X, y = distributed.shard(X, rank, world_size).to(device), distributed.shard(y, rank, world_size).to(device)
        loss = nn.functional.mse_loss(ddp_model(X), y)  # on this process's B/N samples
        optimizer.zero_grad()
        loss.backward()  # DDP all-reduces the gradients during the backward pass
        optimizer.step()
        losses.append(loss.detach())
    seconds = time.perf_counter() - start
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(gathered, flat)
    mean_losses = torch.stack(losses)
    dist.all_reduce(mean_losses)  # sum over processes of each process's mean loss
    mean_losses /= world_size  # the full batch's mean loss, step by step
    if rank == 0:
        print(json.dumps({"world_size": world_size, "backend": dist.get_backend(), "steps": args.steps,
                          "first_loss": round(mean_losses[0].item(), 6), "last_loss": round(mean_losses[-1].item(), 6),
                          "samples_per_s": round(args.steps * args.batch_size / seconds, 1),
                          "in_sync": all(torch.equal(g, gathered[0]) for g in gathered)}))
    distributed.cleanup()


if __name__ == "__main__":
    main()
