"""The DCGAN of TensorFlow's tutorial, re-stated in PyTorch: models, losses and the training step.

Recipe: tensorflow.org, "Deep Convolutional Generative Adversarial Network"
(``tutorials/generative/dcgan``), on MNIST scaled to ``[-1, 1]``: ``BATCH_SIZE = 256``,
``noise_dim = 100``, ``EPOCHS = 50``, ``tf.keras.optimizers.Adam(1e-4)`` for each network (Keras'
default betas 0.9 and 0.999), binary cross-entropy on logits, and one ``train_step`` that runs the
generator and the discriminator once and applies both networks' gradients from the same forward
pass (two gradient tapes).

Generator: Dense 7*7*256 (no bias), BatchNormalization, LeakyReLU; reshape to 7x7x256;
Conv2DTranspose 128 5x5 stride 1 'same' (no bias), BN, LeakyReLU; Conv2DTranspose 64 5x5 stride 2
'same' (no bias), BN, LeakyReLU; Conv2DTranspose 1 5x5 stride 2 'same' (no bias), tanh.
Discriminator: Conv2D 64 5x5 stride 2 'same', LeakyReLU, Dropout 0.3; Conv2D 128 5x5 stride 2
'same', LeakyReLU, Dropout 0.3; Flatten; Dense 1 (a logit). Keras defaults carried over: LeakyReLU
slope 0.3, BatchNormalization momentum 0.99 (PyTorch's ``momentum=0.01``) and epsilon 1e-3. PyTorch
pads 'same' symmetrically (TensorFlow puts the odd pixel at the end); the sizes are the same.
The tutorial publishes sample images after 50 epochs, no numeric figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class Config:
    batch_size: int = 256
    noise_dim: int = 100
    lr: float = 1e-4
    epochs: int = 50


def _bn(channels: int, dims: int = 2) -> nn.Module:
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(channels, momentum=0.01, eps=1e-3)  # Keras' BatchNormalization defaults


def make_generator(cfg: Config) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(cfg.noise_dim, 7 * 7 * 256, bias=False), _bn(7 * 7 * 256, dims=1), nn.LeakyReLU(0.3),
        nn.Unflatten(1, (256, 7, 7)),  # (B, 256, 7, 7)
        nn.ConvTranspose2d(256, 128, 5, stride=1, padding=2, bias=False), _bn(128), nn.LeakyReLU(0.3),  # (B, 128, 7, 7)
        nn.ConvTranspose2d(128, 64, 5, stride=2, padding=2, output_padding=1, bias=False),  # (B, 64, 14, 14)
        _bn(64), nn.LeakyReLU(0.3),
        nn.ConvTranspose2d(64, 1, 5, stride=2, padding=2, output_padding=1, bias=False), nn.Tanh(),  # (B, 1, 28, 28)
    )


def make_discriminator() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 64, 5, stride=2, padding=2), nn.LeakyReLU(0.3), nn.Dropout(0.3),  # (B, 64, 14, 14)
        nn.Conv2d(64, 128, 5, stride=2, padding=2), nn.LeakyReLU(0.3), nn.Dropout(0.3),  # (B, 128, 7, 7)
        nn.Flatten(),  # (B, 6272)
        nn.Linear(128 * 7 * 7, 1),  # (B, 1): a logit
    )


def train_step(G: nn.Module, D: nn.Module, g_opt, d_opt, images: torch.Tensor, cfg: Config) -> dict:
    """The tutorial's ``train_step``: one forward pass, each network's loss, both updated at once."""
    noise = torch.randn(len(images), cfg.noise_dim, device=images.device)
    generated = G(noise)
    real_output, fake_output = D(images), D(generated)
    gen_loss = F.binary_cross_entropy_with_logits(fake_output, torch.ones_like(fake_output))
    disc_loss = (F.binary_cross_entropy_with_logits(real_output, torch.ones_like(real_output))
                 + F.binary_cross_entropy_with_logits(fake_output, torch.zeros_like(fake_output)))
    g_params, d_params = list(G.parameters()), list(D.parameters())
    g_grads = torch.autograd.grad(gen_loss, g_params, retain_graph=True)  # the generator tape
    d_grads = torch.autograd.grad(disc_loss, d_params)  # the discriminator tape
    for params, grads in ((g_params, g_grads), (d_params, d_grads)):
        for p, g in zip(params, grads):
            p.grad = g
    g_opt.step()
    d_opt.step()
    return {"gen_loss": gen_loss.item(), "disc_loss": disc_loss.item()}


def train(images: torch.Tensor, cfg: Config, *, after_step, generator: torch.Generator | None = None) -> dict:
    """The tutorial's ``train``: shuffled batches of ``batch_size`` (the last one smaller), ``epochs`` passes.

    ``after_step(G, step, logs) -> bool`` runs after every step; True ends training.
    """
    G, D = make_generator(cfg), make_discriminator()
    g_opt = torch.optim.Adam(G.parameters(), lr=cfg.lr)
    d_opt = torch.optim.Adam(D.parameters(), lr=cfg.lr)
    first = last = None
    step = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), cfg.batch_size):
            logs = train_step(G, D, g_opt, d_opt, images[order[start:start + cfg.batch_size]], cfg)
            step += 1
            last = logs
            first = logs if first is None else first
            if after_step(G, step, logs):
                return {"generator": G, "first": first, "last": last, "steps": step}
    return {"generator": G, "first": first, "last": last, "steps": step}
