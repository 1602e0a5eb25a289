"""A char-rnn-style character LSTM and its training loop, re-stated from the public recipe.

Recipe: karpathy/char-rnn, ``train.lua`` and its README (Torch 7; tiny Shakespeare ships with it
as ``data/tinyshakespeare/input.txt``): the text cut into ``batch_size`` parallel streams read
in chunks of ``seq_length`` characters (``util/CharSplitLMMinibatchLoader.lua``), the LSTM state
carried from one chunk to the next, RMSprop (``learning_rate=2e-3``, ``decay_rate=0.95``),
gradients clipped element-wise to ``[-grad_clip, grad_clip]`` with ``grad_clip=5``, ``seq_length=50``,
``batch_size=50``, parameters initialised uniform in ``[-0.08, 0.08]`` and the forget-gate biases
set to 1 ("to encourage remembering in the beginning"). char-rnn's default is 2 layers of 128
units with one-hot inputs; the benchmark fixes the size for both sides at chapter 05's 2 x 256
with a 64-wide embedding, so the embedding replaces the one-hot input. The README publishes no
validation loss for tiny Shakespeare.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class Config:
    vocab_size: int = 65
    embed_dim: int = 64  # chapter 05's size (char-rnn feeds one-hot vectors)
    rnn_size: int = 256  # chapter 05's size (char-rnn's default: 128)
    num_layers: int = 2
    seq_length: int = 50
    batch_size: int = 50
    learning_rate: float = 2e-3
    decay_rate: float = 0.95  # RMSprop's moving average of squared gradients
    grad_clip: float = 5.0  # element-wise
    init_range: float = 0.08


class CharRNN(nn.Module):
    """ids ``(B, T)`` and a state -> logits ``(B, T, V)`` and the new state."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.rnn = nn.LSTM(cfg.embed_dim, cfg.rnn_size, cfg.num_layers, batch_first=True)
        self.decoder = nn.Linear(cfg.rnn_size, cfg.vocab_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-cfg.init_range, cfg.init_range)
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    p[cfg.rnn_size:2 * cfg.rnn_size] = 1.0  # forget gate (gates i, f, g, o); bias_hh stays small

    def forward(self, X: torch.Tensor, state=None):
        out, state = self.rnn(self.embed(X), state)  # (B, T, H)
        return self.decoder(out), state  # (B, T, V)


def minibatches(ids: torch.Tensor, cfg: Config):
    """char-rnn's loader: ``batch_size`` streams, chunks of ``seq_length``; yields ``(X, Y)``, each ``(B, T)``."""
    per_stream = (len(ids) - 1) // cfg.batch_size
    n_chunks = per_stream // cfg.seq_length
    usable = n_chunks * cfg.seq_length
    X_all = ids[:cfg.batch_size * per_stream].view(cfg.batch_size, per_stream)[:, :usable]  # (B, L)
    Y_all = ids[1:cfg.batch_size * per_stream + 1].view(cfg.batch_size, per_stream)[:, :usable]  # (B, L)
    for k in range(n_chunks):
        cols = slice(k * cfg.seq_length, (k + 1) * cfg.seq_length)
        yield X_all[:, cols], Y_all[:, cols]


def train(train_ids: torch.Tensor, cfg: Config, *, after_step) -> dict:
    """The recipe's loop, epoch after epoch; ``after_step(model, step, tokens) -> bool`` stops it when True."""
    model = CharRNN(cfg)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=cfg.learning_rate, alpha=cfg.decay_rate, eps=1e-8)
    first = last = None
    step = 0
    while True:
        state = None  # every epoch starts from a zero state
        for X, Y in minibatches(train_ids, cfg):
            logits, state = model(X, state)
            state = tuple(s.detach() for s in state)  # carry the values, not the graph
            loss = F.cross_entropy(logits.flatten(0, 1), Y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for p in model.parameters():
                p.grad.clamp_(-cfg.grad_clip, cfg.grad_clip)
            optimizer.step()
            step += 1
            last = loss.item()
            first = last if first is None else first
            if after_step(model, step, step * cfg.batch_size * cfg.seq_length):
                return {"model": model, "first_loss": first, "last_loss": last, "steps": step}
