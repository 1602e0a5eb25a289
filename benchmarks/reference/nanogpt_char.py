"""A nanoGPT-style character Transformer and its training loop, re-stated from the public recipe.

Recipe: karpathy/nanoGPT, ``config/train_shakespeare_char.py`` with the CPU command of its
README ("I only have a macbook")::

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

and the defaults of ``train.py`` that it keeps: AdamW with ``learning_rate=1e-3``, ``min_lr=1e-4``,
``beta1=0.9``, ``beta2=0.99``, ``weight_decay=0.1`` on the 2-D parameters only, ``warmup_iters=100``
(linear), cosine decay to ``min_lr`` at ``lr_decay_iters``, ``grad_clip=1.0``, ``bias=False``,
``seed=1337``, data prepared by ``data/shakespeare_char/prepare.py`` (sorted characters, 65 of
them; 90/10 split). Published figures: the README reports a validation loss of about 1.88 for
this CPU run ("This still runs in about ~3 minutes, but gets us a loss of only 1.88"); its
published figure at iteration 2000 with seed 1337 is 1.8857. (The GPU configuration, 6 x 6 x 384, context
256, dropout 0.2, 5000 iterations, is published at 1.4697.)

The model is nanoGPT's ``model.py`` layout: token and learned position embeddings, pre-LayerNorm
blocks of causal self-attention (one ``c_attn`` projection to q, k, v; ``F.scaled_dot_product_attention``)
and a 4x GELU MLP, a final LayerNorm, and an output layer tied to the token embedding; weights
normal(0, 0.02), the residual projections normal(0, 0.02 / sqrt(2 n_layer)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class Config:
    block_size: int = 64  # --block_size=64
    vocab_size: int = 65
    n_layer: int = 4  # --n_layer=4
    n_head: int = 4  # --n_head=4
    n_embd: int = 128  # --n_embd=128
    dropout: float = 0.0  # --dropout=0.0
    bias: bool = False  # train.py's default
    batch_size: int = 12  # --batch_size=12
    learning_rate: float = 1e-3
    min_lr: float = 1e-4  # learning_rate / 10
    max_iters: int = 2000  # --max_iters=2000
    lr_decay_iters: int = 2000  # --lr_decay_iters=2000
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99  # "make a bit bigger because number of tokens per iter is small"
    grad_clip: float = 1.0


class SelfAttention(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class FeedForward(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C)


class Layer(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(cfg.n_embd, bias=cfg.bias), SelfAttention(cfg)
        self.ln_2, self.mlp = nn.LayerNorm(cfg.n_embd, bias=cfg.bias), FeedForward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CharTransformer(nn.Module):
    """ids ``(B, T)`` -> logits ``(B, T, V)``."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))  # (B, T, C)
        for layer in self.h:
            x = layer(x)
        return self.lm_head(self.ln_f(x))  # (B, T, V)


def lr_at(it: int, cfg: Config) -> float:
    """train.py's ``get_lr``: linear warm-up, cosine decay to ``min_lr`` at ``lr_decay_iters``, then ``min_lr``."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW; weight decay on tensors of two or more dimensions (matmuls, embeddings) only."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                             lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             fused=next(model.parameters()).device.type == "cuda")


@torch.no_grad()
def loss_on(model: nn.Module, batches, bf16: bool = False) -> float:
    """Mean cross-entropy over fixed batches (the recipe's ``estimate_loss``, on given batches), eval mode."""
    model.eval()
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        losses = [F.cross_entropy(model(X.to(device)).flatten(0, 1).float(), Y.to(device).flatten()).item()
                  for X, Y in batches]
    model.train()
    return sum(losses) / len(losses)


def train(train_ids: torch.Tensor, cfg: Config, *, after_step, device: str | torch.device = "cpu",
          bf16: bool = False) -> dict:
    """The recipe's loop: random windows from the global generator, AdamW, clipping, ``get_lr`` each step.

    ``after_step(model, step, tokens) -> bool`` is called after every step (the benchmark's
    clock and evaluations); training stops when it returns True or at ``max_iters``. On CUDA
    the recipe trains in bfloat16 autocast (``dtype='bfloat16'``) with the fused AdamW.
    Returns the model and the first and last training losses.
    """
    device = torch.device(device)
    model = CharTransformer(cfg).to(device)
    optimizer = make_optimizer(model, cfg)
    train_ids = train_ids.to(device)
    offsets = torch.arange(cfg.block_size + 1, device=device)
    first = last = None
    it = 0
    while it < cfg.max_iters:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(it, cfg)
        ix = torch.randint(len(train_ids) - cfg.block_size, (cfg.batch_size,))  # train.py's get_batch
        windows = train_ids[ix.to(device)[:, None] + offsets]  # (B, T + 1)
        X, Y = windows[:, :-1], windows[:, 1:]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(X).flatten(0, 1).float(), Y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        it += 1
        last = loss.item()
        first = last if first is None else first
        if after_step(model, it, it * cfg.batch_size * cfg.block_size):
            break
    return {"model": model, "first_loss": first, "last_loss": last, "steps": it}
