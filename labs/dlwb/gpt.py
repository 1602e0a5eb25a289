"""A decoder-only Transformer (GPT) for characters, and what it takes to train it well.

Taught in chapter 07 (``notebooks/07_transformer.ipynb``): the model follows nanoGPT's layout
(pre-LayerNorm blocks, learned positions, optional weight tying) and is built from the
attention of :mod:`dlwb.attention`. Training uses the course's one loop,
:class:`dlwb.train.Trainer`, fed by :class:`RandomBatches`: GPT training is counted in
iterations, so an "epoch" of the Trainer is one interval between evaluations. Characters
become ids with chapter 05's :class:`dlwb.text.Vocab`, the loss is chapter 05's
:func:`dlwb.text.sequence_cross_entropy`, and :func:`generate` draws each id with chapter 05's
:func:`dlwb.text.sample_next`.

- :class:`RandomBatches` draws random windows ``(X, Y)`` of a text, ``Y`` shifted by one.
- :class:`GPTConfig`, :class:`CausalSelfAttention`, :class:`MLP`, :class:`Block`, :class:`GPT`:
  the model, and :func:`generate` to sample from it (temperature, top-k).
- :func:`configure_optimizer` (AdamW, fused on CUDA); the learning-rate
  schedule is chapter 02's :func:`dlwb.optim.warmup_cosine`.
- :func:`peak_flops` and :class:`Throughput`: tokens per second and model FLOPs utilisation.

Chapter 11 (language models) makes sampling fast with a KV cache, reusing the same model:

- :class:`KVCache` keeps every layer's keys and values of the positions seen so far;
  :func:`forward_cached` runs a chapter-07 :class:`GPT` on new positions only, against them.
- :func:`generate_cached`: :func:`generate` with the cache (and nucleus sampling, ``top_p``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dlwb.attention import MultiHeadAttention, scaled_dot_product_attention, sinusoidal_positions
from dlwb.text import sample_next
from dlwb.train import Callback


class RandomBatches:
    """``num_batches`` batches of random windows of ``data``: ``X`` and ``Y``, both ``(B, T)``.

    ``Y`` is ``X`` shifted by one position (``Y[b, t] = data[start_b + t + 1]``): at every
    position the model predicts the next id. Windows start anywhere, drawn from the
    batches' own generator (seeded with ``seed``), so each pass over the object gives new
    windows, and the same ones in every run. A sized iterable: ``Trainer.fit`` runs one
    "epoch" of ``num_batches`` iterations over it. Put ``data`` on the GPU to cut the copies.

    Defined in chapter 07.
    """

    def __init__(self, data: torch.Tensor, block_size: int, batch_size: int, num_batches: int, *,
                 seed: int = 0) -> None:
        if len(data) <= block_size:
            raise ValueError(f"the data has {len(data)} ids, too few for windows of block_size + 1 = "
                             f"{block_size + 1}")
        self.data, self.block_size, self.batch_size, self.num_batches = data, block_size, batch_size, num_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        offsets = torch.arange(self.block_size + 1)  # (T + 1,)
        for _ in range(self.num_batches):
            starts = torch.randint(len(self.data) - self.block_size, (self.batch_size,), generator=self.generator)
            windows = self.data[(starts[:, None] + offsets).to(self.data.device)]  # (B, T + 1)
            yield windows[:, :-1], windows[:, 1:]  # X (B, T), Y (B, T)


@dataclass
class GPTConfig:
    """The size and shape of a :class:`GPT`; the defaults are the GPU configuration of chapter 07.

    Defined in chapter 07.
    """

    block_size: int = 256  # context length T: the most positions the model sees at once
    vocab_size: int = 65  # ids in the vocabulary (tiny Shakespeare: 65 characters)
    n_layer: int = 6  # Transformer blocks
    n_head: int = 6  # attention heads per block; n_embd must be divisible by n_head
    n_embd: int = 384  # width C of the residual stream; each head gets C // n_head dimensions
    dropout: float = 0.2  # on embeddings, attention weights and each block's two outputs; 0.0 turns it off
    bias: bool = False  # biases in Linear and LayerNorm layers (GPT-2 has them; without is as good and faster)
    tie_weights: bool = True  # the output layer reuses the token-embedding matrix (one V x C matrix, not two)
    attention: str = "sdpa"  # "sdpa": F.scaled_dot_product_attention (flash on GPUs); "scratch": dlwb.attention
    positions: str = "learned"  # "learned": an embedding per position; "sinusoidal": fixed sin/cos encodings

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.attention not in ("sdpa", "scratch"):
            raise ValueError(f"attention must be 'sdpa' or 'scratch', got {self.attention!r}")
        if self.positions not in ("learned", "sinusoidal"):
            raise ValueError(f"positions must be 'learned' or 'sinusoidal', got {self.positions!r}")


class CausalSelfAttention(MultiHeadAttention):
    """Masked multi-head self-attention: position ``t`` attends to positions ``0 .. t`` only.

    A :class:`dlwb.attention.MultiHeadAttention` with the causal mask always on, the
    implementation chosen by ``config.attention``, and dropout on its output.

    Defined in chapter 07.
    """

    def __init__(self, config: GPTConfig) -> None:
        impl = "sdpa" if config.attention == "sdpa" else "scratch"
        super().__init__(config.n_embd, config.n_head, bias=config.bias, dropout=config.dropout, impl=impl)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = super().forward(x, is_causal=True)  # (B, T, C)
        return self.resid_dropout(y)


class MLP(nn.Module):
    """The position-wise feed-forward network: ``C -> 4C -> GELU -> C``, then dropout.

    Defined in chapter 07.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.fc(x))  # (B, T, 4C)
        return self.dropout(self.proj(x))  # (B, T, C)


class Block(nn.Module):
    """A pre-LayerNorm Transformer block: attention, then the MLP, each added to the residual stream.

    Defined in chapter 07.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C): each position gathers from the ones before it
        x = x + self.mlp(self.ln_2(x))  # (B, T, C): each position computes on its own
        return x


class GPT(nn.Module):
    """A decoder-only Transformer language model: ids ``(B, T)`` in, next-id logits ``(B, T, V)`` out.

    Token embedding plus position embedding, ``n_layer`` :class:`Block` s, a final LayerNorm
    and a linear map back to the vocabulary (tied to the token embedding when
    ``config.tie_weights``). Weights start as in GPT-2: normal with standard deviation 0.02,
    and ``0.02 / sqrt(2 n_layer)`` for the projections that write into the residual stream
    (two per block), so that its variance does not grow with depth.

    Defined in chapter 07.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        if config.positions == "learned":
            self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        else:
            self.register_buffer("pos_table", sinusoidal_positions(config.block_size, config.n_embd), persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.tok_emb.weight  # one parameter, used twice
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # attn.proj and mlp.proj write into the residual stream
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
            elif p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"a sequence of {T} positions is longer than block_size={self.config.block_size}; "
                             f"pass idx[:, -block_size:]")
        if self.config.positions == "learned":
            pos = self.pos_emb(torch.arange(T, device=idx.device))  # (T, C)
        else:
            pos = self.pos_table[:T]  # (T, C)
        x = self.drop(self.tok_emb(idx) + pos)  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, counted once when tied; without the position embedding when ``non_embedding``."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.config.positions == "learned":
            n -= self.pos_emb.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward and backward), as estimated in the PaLM paper::

            6 N + 12 n_layer n_embd T

        ``6 N``: each weight does a multiply and an add, once forward and twice backward;
        ``12 n_layer n_embd T``: the attention's two ``(T x T)`` matrix products.
        """
        cfg = self.config
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue each row of ``idx`` ``(B, T0)`` by ``max_new_tokens`` sampled ids: ``(B, T0 + max_new_tokens)``.

    One id at a time: feed the last ``block_size`` ids, take the last position's logits
    ``z``, and sample the next id from ``softmax(z / temperature)`` with chapter 05's
    :func:`dlwb.text.sample_next`. A temperature below 1
    sharpens the distribution, above 1 flattens it, and 0 always picks the most likely id.
    With ``top_k``, only the ``top_k`` largest logits keep a chance; the rest get
    probability 0. Runs in eval mode (no dropout) and restores the model's mode afterwards.
    ``generator`` (for repeatable samples) must live on the model's device.

    Defined in chapter 07.
    """
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -model.config.block_size:]  # (B, <= block_size): what the model can see
            logits = model(idx_cond)[:, -1, :].float()  # (B, V): the next id's logits
            idx_next = sample_next(logits, temperature, generator, top_k)  # (B,): chapter 05's sampler
            idx = torch.cat([idx, idx_next[:, None]], dim=1)  # (B, T + 1)
    finally:
        model.train(was_training)
    return idx


def configure_optimizer(model: nn.Module, lr: float, *, weight_decay: float = 0.1,
                        betas: tuple[float, float] = (0.9, 0.99),
                        device: torch.device | str = "cpu") -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on biases and LayerNorm gains); fused on CUDA.

    The fused implementation updates all parameters in one GPU kernel instead of several per
    parameter tensor.

    Defined in chapter 07.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=torch.device(device).type == "cuda")


PEAK_BF16_FLOPS = {  # dense bfloat16 tensor-core peaks from the data sheets, FLOP/s; first match wins
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "A100": 312e12,
}


def peak_flops(device: torch.device | str) -> float | None:
    """The device's dense bfloat16 peak in FLOP/s, or ``None`` where it is not in :data:`PEAK_BF16_FLOPS`.

    Defined in chapter 07.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


class Throughput(Callback):
    """A :class:`dlwb.train.Callback` that measures tokens per second and MFU, and reports each interval.

    Each Trainer "epoch" (an interval between evaluations) is timed from the end of its first
    iteration to the end of its last, so evaluation, the first iteration and
    ``torch.compile``'s compilation are left out. MFU, the model FLOPs utilisation, is the
    share of the device's peak that the model's arithmetic uses::

        MFU = flops_per_token * tokens_per_second / peak_flops

    "n/a" where the peak is unknown (CPUs, GPUs not in :data:`PEAK_BF16_FLOPS`).
    ``rates`` holds the tokens per second of every interval.

    Defined in chapter 07.
    """

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak: float | None, *,
                 verbose: bool = True) -> None:
        self.tokens_per_step, self.flops_per_token, self.peak = tokens_per_step, flops_per_token, peak
        self.verbose = verbose
        self.rates: list[float] = []
        self._first: float | None = None
        self._last: float | None = None
        self._steps = 0

    def mfu(self, tokens_per_s: float) -> float | None:
        return None if self.peak is None else self.flops_per_token * tokens_per_s / self.peak

    def on_batch_end(self, trainer, logs) -> None:
        now = time.perf_counter()
        if self._first is None:
            self._first, self._steps = now, 0
        else:
            self._steps += 1
        self._last = now

    def on_epoch_end(self, trainer, logs) -> None:
        rate = self._steps * self.tokens_per_step / (self._last - self._first) if self._steps else float("nan")
        self.rates.append(rate)
        self._first = None
        if self.verbose:
            mfu = self.mfu(rate)
            val = f", val loss {logs['val_loss']:.4f}" if "val_loss" in logs else ""
            print(f"iter {trainer.step:>5}: train loss {logs['loss']:.4f}{val} | {rate:,.0f} tokens/s | "
                  f"MFU {'n/a' if mfu is None else f'{mfu:.1%}'}")


class KVCache:
    """The keys and values of every layer for the positions a :class:`GPT` has seen so far.

    Layer ``l`` keeps ``k[l]`` and ``v[l]``, each ``(B, nh, max_len, hs)``, allocated at its
    first :meth:`append` (batch, heads, dtype and device from the keys it gets) and filled
    from the left: positions ``0 .. length - 1`` hold what :func:`forward_cached` has seen.
    Preallocating ``max_len`` positions (the model's ``block_size``) writes each new position
    in place instead of copying the whole cache at every step.

    Defined in chapter 11.
    """

    def __init__(self, n_layer: int, max_len: int) -> None:
        self.n_layer, self.max_len = n_layer, max_len
        self.k: list[torch.Tensor | None] = [None] * n_layer  # per layer (B, nh, max_len, hs)
        self.v: list[torch.Tensor | None] = [None] * n_layer  # per layer (B, nh, max_len, hs)
        self.length = 0  # positions cached in every layer; forward_cached advances it

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` ``(B, nh, T_new, hs)`` at positions ``length .. length + T_new - 1`` of ``layer``.

        Returns the layer's keys and values of all positions so far, ``(B, nh, length + T_new, hs)``
        each. ``length`` itself moves on only when every layer has appended (:func:`forward_cached`).
        """
        B, nh, T_new, hs = k.shape
        end = self.length + T_new
        if end > self.max_len:
            raise ValueError(f"the cache holds {self.length} of at most {self.max_len} positions: "
                             f"{T_new} more do not fit; start a new KVCache")
        if self.k[layer] is None:
            self.k[layer] = k.new_zeros(B, nh, self.max_len, hs)  # (B, nh, max_len, hs)
            self.v[layer] = v.new_zeros(B, nh, self.max_len, hs)  # (B, nh, max_len, hs)
        elif self.k[layer].shape[:2] != (B, nh):
            raise ValueError(f"the cache holds {tuple(self.k[layer].shape[:2])} (batch, heads), got {(B, nh)}: "
                             f"use one KVCache per batch")
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, nh, end, hs) each


@torch.no_grad()
def forward_cached(model: GPT, idx_new: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """The logits ``(B, T_new, V)`` of the new ids ``idx_new`` ``(B, T_new)``, which follow the cached ones.

    The same modules and weights as ``model(idx)`` (chapter 07's :class:`GPT`), run on the new
    positions only: with ``L = cache.length`` positions cached, the new ones are
    ``L .. L + T_new - 1`` (their position embeddings), and in every block the new queries
    attend to the cached keys and values together with the new ones::

        q, k_new, v_new = LN_1(x) W_q, LN_1(x) W_k, LN_1(x) W_v     (B, nh, T_new, hs)
        K = [K_cache; k_new],  V = [V_cache; v_new]                  (B, nh, L + T_new, hs)
        y = softmax(q K^T / sqrt(hs) + M) V,   M[i, j] = -inf where j > L + i

    This is exact, not an approximation: causal attention never lets a position see the ones
    after it, so what a block computes at an old position (its ``x``, hence its ``k``
    and ``v``) cannot change when new positions arrive. Only the new rows of the attention
    are new, and the mask is needed only within the new chunk. A prefill of the ``T0``
    prompt ids is one call; each generated id is then one call with ``T_new = 1``, costing
    ``O(L)`` instead of the ``O(L^2)`` of running the whole sequence again.

    The positions end at ``block_size``: there is no position embedding past it, and sliding
    the window would give every cached position a new position, hence new keys. Eval mode
    only (dropout would make the cached keys random).

    Defined in chapter 11.
    """
    if model.training:
        raise ValueError("forward_cached is for inference: call model.eval() first "
                         "(in training mode dropout would make the cached keys and values random)")
    B, T_new = idx_new.shape
    L = cache.length
    if L + T_new > model.config.block_size:
        raise ValueError(f"the cache holds {L} positions and {T_new} more make {L + T_new}, beyond "
                         f"block_size={model.config.block_size}: the model has no position embedding past it. "
                         f"Start a new KVCache with at most block_size ids (e.g. the last ones: a re-prefill, "
                         f"since every position and so every key changes), or use generate, which does that "
                         f"at every step")
    if model.config.positions == "learned":
        pos = model.pos_emb(torch.arange(L, L + T_new, device=idx_new.device))  # (T_new, C)
    else:
        pos = model.pos_table[L:L + T_new]  # (T_new, C)
    x = model.drop(model.tok_emb(idx_new) + pos)  # (B, T_new, C)
    # query i (position L + i) may attend to keys 0 .. L + i: all cached ones, and the new ones up to itself
    mask = torch.ones(T_new, L + T_new, dtype=torch.bool, device=idx_new.device).tril(diagonal=L)  # (T_new, L + T_new)
    for layer, block in enumerate(model.blocks):
        attn = block.attn  # chapter 07's CausalSelfAttention, a dlwb.attention.MultiHeadAttention
        C = x.shape[-1]
        hs = C // attn.n_head
        q, k, v = attn.qkv(block.ln_1(x)).split(C, dim=2)  # 3 x (B, T_new, C)
        q = q.view(B, T_new, attn.n_head, hs).transpose(1, 2)  # (B, nh, T_new, hs)
        k = k.view(B, T_new, attn.n_head, hs).transpose(1, 2)  # (B, nh, T_new, hs)
        v = v.view(B, T_new, attn.n_head, hs).transpose(1, 2)  # (B, nh, T_new, hs)
        k, v = cache.append(layer, k, v)  # (B, nh, L + T_new, hs) each: the cached positions, then the new
        if attn.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T_new, hs)
        else:
            y, _ = scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T_new, hs)
        y = y.transpose(1, 2).contiguous().view(B, T_new, C)  # (B, T_new, C): the heads side by side again
        x = x + attn.resid_dropout(attn.proj(y))  # (B, T_new, C): Block.forward's first line
        x = x + block.mlp(block.ln_2(x))  # (B, T_new, C): its second
    cache.length = L + T_new
    return model.lm_head(model.ln_f(x))  # (B, T_new, V)


@torch.no_grad()
def generate_cached(model: GPT, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`generate` with a :class:`KVCache`: ``idx`` ``(B, T0)`` continued to ``(B, T0 + max_new_tokens)``.

    One :func:`forward_cached` call on the whole prompt (the prefill), then one per generated
    id, on that id alone. The ids are drawn as :func:`generate` draws them, with
    :func:`dlwb.text.sample_next` once per step on the ``(B, V)`` logits of the last position
    (temperature, ``top_k``, and ``top_p`` for nucleus sampling), so with the same
    ``generator`` it gives the same ids. The rows of ``idx`` are generated together in one
    batch, so they are prompts of equal length ``T0``. The model sees every position at once,
    so ``T0 + max_new_tokens - 1`` (the last id is never fed) may not exceed ``block_size``;
    beyond it, :func:`generate` crops the context at every step. Runs in eval mode and
    restores the model's mode afterwards; ``generator`` must live on the model's device.

    Defined in chapter 11.
    """
    T0 = idx.shape[1]
    if max_new_tokens > 0 and T0 + max_new_tokens - 1 > model.config.block_size:
        raise ValueError(f"a prompt of {T0} ids and {max_new_tokens} new ones feed {T0 + max_new_tokens - 1} "
                         f"positions, beyond block_size={model.config.block_size}: ask for at most "
                         f"{max(model.config.block_size - T0 + 1, 0)} new ids or pass a shorter prompt, "
                         f"or use generate, which crops the context")
    if max_new_tokens <= 0:
        return idx
    was_training = model.training
    model.eval()
    try:
        cache = KVCache(model.config.n_layer, model.config.block_size)
        logits = forward_cached(model, idx, cache)[:, -1, :].float()  # (B, V): the prefill, all T0 positions
        for step in range(max_new_tokens):
            idx_next = sample_next(logits, temperature, generator, top_k, top_p)  # (B,): chapter 05's sampler
            idx = torch.cat([idx, idx_next[:, None]], dim=1)  # (B, T + 1)
            if step < max_new_tokens - 1:  # the last id needs no logits
                logits = forward_cached(model, idx_next[:, None], cache)[:, -1, :].float()  # (B, V): one position
    finally:
        model.train(was_training)
    return idx
