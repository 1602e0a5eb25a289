"""The MNIST CNN of pytorch/examples, and its training recipe, re-stated with the data held in memory.

Recipe: pytorch/examples, ``mnist/main.py``: ``Net`` = conv 3x3 1 -> 32, ReLU, conv 3x3 32 -> 64,
ReLU, max-pool 2, dropout 0.25, flatten (9216), linear 128, ReLU, dropout 0.5, linear 10,
log-softmax; negative log-likelihood loss; Adadelta with ``lr=1.0``; ``StepLR(step_size=1,
gamma=0.7)`` stepped after each epoch; ``batch_size=64``, ``test_batch_size=1000``, ``epochs=14``,
inputs normalised with MNIST's mean 0.1307 and standard deviation 0.3081, the test set
evaluated after every epoch. Upstream shuffles the training set every epoch only when
``torch.accelerator`` finds a device; on a CPU it keeps the file order. This re-statement always
reshuffles (upstream's accelerator data order), so both sides of the benchmark see shuffled
batches. The example loads batches through ``torchvision.datasets.MNIST`` and a ``DataLoader``;
here the whole set is one tensor in memory and batches are index slices of a fresh permutation.
The example publishes no accuracy figure; its logs print the test accuracy after each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass
class Config:
    batch_size: int = 64
    test_batch_size: int = 1000
    epochs: int = 14
    lr: float = 1.0
    gamma: float = 0.7


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (N, 32, 26, 26)
        x = F.relu(self.conv2(x))  # (N, 64, 24, 24)
        x = self.dropout1(F.max_pool2d(x, 2))  # (N, 64, 12, 12)
        x = F.relu(self.fc1(torch.flatten(x, 1)))  # (N, 128)
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)  # (N, 10) log-probabilities


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1], ``(N, 1, 28, 28)`` -> ``(x - 0.1307) / 0.3081`` (the example's ``transforms.Normalize``)."""
    return (images - MNIST_MEAN) / MNIST_STD


@torch.no_grad()
def test_accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cfg: Config) -> float:
    model.eval()
    correct = sum((model(X[i:i + cfg.test_batch_size]).argmax(dim=1) == y[i:i + cfg.test_batch_size]).sum().item()
                  for i in range(0, len(X), cfg.test_batch_size))
    model.train()
    return correct / len(X)


def train(X: torch.Tensor, y: torch.Tensor, cfg: Config, *, after_step, after_epoch,
          generator: torch.Generator | None = None) -> dict:
    """The example's ``train`` / ``test`` epochs on normalised in-memory tensors ``X (N, 1, 28, 28)``, ``y (N,)``.

    ``after_step(model, step, loss) -> bool`` runs after every batch and ``after_epoch(model, epoch) -> bool``
    after every epoch (where the example tests); either returning True ends training.
    """
    model = Net().to(X.device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=cfg.gamma)
    first = last = None
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(X), generator=generator, device=X.device)
        for start in range(0, len(X), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = F.nll_loss(model(X[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            last = loss.item()
            first = last if first is None else first
            if after_step(model, step, last):
                return {"model": model, "first_loss": first, "last_loss": last, "steps": step, "epochs": epoch}
        scheduler.step()
        if after_epoch(model, epoch):
            break
    return {"model": model, "first_loss": first, "last_loss": last, "steps": step, "epochs": epoch}
