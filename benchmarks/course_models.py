"""The course's models that live in the chapters' notebooks rather than in ``dlwb``, for the benchmarks.

Each definition is the notebook's, unchanged (``tests/benchmarks_tests/test_benchmarks.py`` checks that every one
is AST-identical to the definition of the same name in its notebook), so the benchmarks
measure what the chapters teach:

- chapter 04 (``notebooks/04_cnn.ipynb``): :class:`FlattenHWC`, :func:`augment`, :func:`conv_block`, :class:`StrongCNN`,
  :class:`AugmentedTrainer` (its batches come from ``dlwb.data.TensorBatches``, as in the notebook);
- chapter 06 (``notebooks/06_gan.ipynb``): :func:`make_dcgan_generator`, :func:`make_dcgan_discriminator`,
  with the notebook's ``LATENT_DIM`` and ``DCGAN_WIDTH``.

The layer stacks that the notebooks write as expressions (chapter 04's fast twin of the classic CNN,
chapter 06's evaluator CNN) are rebuilt by the functions at the end, layer for layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlwb.train import Trainer

NOTEBOOK_DEFINITIONS = {
    "notebooks/04_cnn.ipynb": ("FlattenHWC", "augment", "conv_block", "StrongCNN", "AugmentedTrainer"),
    "notebooks/06_gan.ipynb": ("make_dcgan_generator", "make_dcgan_discriminator"),
}

LATENT_DIM = 64  # chapter 06: size of the noise vector z
DCGAN_WIDTH = 16  # chapter 06: channels of the DCGANs' first convolution


class FlattenHWC(nn.Module):
    """Flatten (N, C, H, W) in the order (h, w, c), as Keras does: a view of a channels_last tensor, no copy."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)  # (N, H, W, C) -> (N, H * W * C)


def augment(X, max_shift=2, max_degrees=10.0, generator=None):
    """Random shifts (whole pixels) and rotations of a batch of images (N, C, H, W), one of each per image."""
    N, _, H, W = X.shape
    angle = (torch.rand(N, device=X.device, generator=generator) * 2 - 1) * math.radians(max_degrees)  # (N,)
    shift = torch.randint(-max_shift, max_shift + 1, (N, 2), device=X.device, generator=generator)  # (N, 2) pixels
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, 2 * shift[:, 0] / W], dim=1),
                         torch.stack([sin, cos, 2 * shift[:, 1] / H], dim=1)], dim=1)  # (N, 2, 3)
    grid = F.affine_grid(theta.to(X.dtype), list(X.shape), align_corners=False)  # (N, H, W, 2): where to read
    return F.grid_sample(X, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (N, C, H, W)


def conv_block(in_channels, out_channels):
    """Conv 3x3 (padding 1: same size) -> batch norm -> max-pool 2x2 (half the size) -> ReLU.

    Pooling before the ReLU gives the same values as after it (section 8, "Memory and layout") on a quarter of them.
    """
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),  # BN's beta is the bias
                         nn.BatchNorm2d(out_channels), nn.MaxPool2d(2), nn.ReLU())


class StrongCNN(nn.Module):
    """Two conv blocks (1 -> 32 -> 64 channels, 28 -> 14 -> 7 pixels), then dropout, Linear 128, dropout, Linear."""

    def __init__(self, dropout=0.25, num_classes=10):
        super().__init__()
        self.block1 = conv_block(1, 32)
        self.block2 = conv_block(32, 64)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(128, num_classes))

    def forward(self, x):
        x = self.block1(x)  # (N, 32, 14, 14)
        x = self.block2(x)  # (N, 64, 7, 7)
        return self.head(x)  # (N, num_classes): logits


class AugmentedTrainer(Trainer):
    """A Trainer whose training batches pass through `augment_fn` first; evaluation sees the images as they are."""

    def __init__(self, *args, augment_fn, **kwargs):
        super().__init__(*args, **kwargs)
        self.augment_fn = augment_fn

    def train_step(self, batch):
        X, y = batch
        return super().train_step((self.augment_fn(X), y))


def make_dcgan_generator(width=DCGAN_WIDTH):
    return nn.Sequential(
        nn.Linear(LATENT_DIM, 2 * width * 7 * 7, bias=False), nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU(),
        nn.Unflatten(1, (2 * width, 7, 7)),  # (B, 2w, 7, 7)
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),  # (B, w, 14, 14)
        nn.BatchNorm2d(width), nn.ReLU(),
        nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1), nn.Tanh(),  # (B, 1, 28, 28)
    )


def make_dcgan_discriminator(width=DCGAN_WIDTH):
    return nn.Sequential(
        nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, w, 14, 14)
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False),  # (B, 2w, 7, 7)
        nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
        nn.Flatten(),  # (B, 2w * 49)
        nn.Linear(2 * width * 7 * 7, 1),  # (B, 1)
    )


def make_evaluator() -> nn.Sequential:
    """Chapter 06's evaluator CNN; its 128 features before the last ReLU define the Fréchet distance."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 14, 14)
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 7, 7)
        nn.Flatten(),  # (B, 3136)
        nn.Linear(64 * 7 * 7, 128),  # (B, 128): the features, taken before the ReLU
        nn.ReLU(),
        nn.Linear(128, 10),  # (B, 10): logits of the 10 digits
    )


def make_fast_classic_cnn(num_classes: int = 10) -> nn.Sequential:
    """Chapter 04's fast twin of the classic CNN ("Memory and layout"): the same function, stored channels_last,
    pooling before the ReLU, flattened in Keras's (h, w, c) order."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),  # (N, 32, 26, 26), stored as NHWC
        nn.MaxPool2d(2), nn.ReLU(),  # (N, 32, 13, 13): pooling first gives the same values
        FlattenHWC(),  # (N, 5408), in the order (h, w, c)
        nn.Linear(32 * 13 * 13, 128), nn.ReLU(),  # (N, 128)
        nn.Linear(128, num_classes),  # (N, 10): logits
    ).to(memory_format=torch.channels_last)
