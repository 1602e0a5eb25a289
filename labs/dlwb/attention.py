"""Attention from scratch: scaled dot-product attention, masks, multi-head attention, positions.

Taught in chapter 07 (``notebooks/07_transformer.ipynb``), where each piece is checked against
PyTorch's ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` and against
``keras.layers.MultiHeadAttention`` (``tests/dlwb_tests/test_attention.py`` repeats those checks). The GPT
of :mod:`dlwb.gpt` builds its blocks from :class:`MultiHeadAttention`.

Shapes: ``B`` batch, ``nh`` heads, ``T`` positions (``T_q`` queries, ``T_k`` keys), ``hs``
head size, ``C = nh * hs`` model width.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def causal_mask(T_q: int, T_k: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """The causal mask: ``mask[i, j]`` is True when query ``i`` may attend to key ``j``, i.e. ``j <= i``.

    Boolean, shape ``(T_q, T_k)`` (``T_k = T_q`` by default), lower triangular with the
    diagonal: position ``i`` sees itself and everything before it, nothing after. True means
    "may attend", as in ``F.scaled_dot_product_attention``.

    Defined in chapter 07.
    """
    T_k = T_q if T_k is None else T_k
    return torch.ones(T_q, T_k, dtype=torch.bool, device=device).tril()  # (T_q, T_k)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + M) V, and the attention weights.

    ``q``: ``(..., T_q, d)``, ``k``: ``(..., T_k, d)``, ``v``: ``(..., T_k, d_v)``; the leading
    dimensions (batch, heads) broadcast. Returns ``out``: ``(..., T_q, d_v)`` and ``weights``:
    ``(..., T_q, T_k)``, whose rows sum to 1::

        scores  = q @ k^T * scale              scale = 1 / sqrt(d) unless given
        scores[masked] = -inf                  so that exp(-inf) = 0: masked weights are exactly 0
        weights = softmax(scores, over keys)
        out     = weights @ v

    ``attn_mask``: boolean, True where a query may attend to a key (the convention of
    ``F.scaled_dot_product_attention``), or a float tensor added to the scores; it broadcasts
    against ``(..., T_q, T_k)``. ``is_causal`` adds :func:`causal_mask`. Every row must keep at
    least one key. ``dropout_p > 0`` drops weights (training only: pass 0 to evaluate), and
    the weights returned are the ones used.

    Defined in chapter 07.
    """
    d = q.size(-1)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    # Scale so that the scores have variance about 1, not d: large scores would saturate the softmax.
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T_q, T_k)
    if is_causal:
        scores = scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), device=q.device), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = torch.softmax(scores, dim=-1)  # (..., T_q, T_k), each row sums to 1
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights  # (..., T_q, d_v), (..., T_q, T_k)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: ``nh`` attentions side by side, each in its own subspace.

    For an input ``X`` of shape ``(B, T, C)`` and ``nh`` heads of size ``hs = C / nh``::

        head_i = Attention(X W_q^i, X W_k^i, X W_v^i)       (B, T, hs) each
        MHA(X) = concat(head_1, ..., head_nh) W_o            (B, T, C)

    The projections of all heads are one ``nn.Linear(C, 3C)`` (``W_q``, ``W_k``, ``W_v``
    stacked: the layout of ``nn.MultiheadAttention.in_proj_weight``) and ``W_o`` is
    ``nn.Linear(C, C)``. ``impl="scratch"`` computes the attention with
    :func:`scaled_dot_product_attention` and returns its weights ``(B, nh, T, T)``;
    ``impl="sdpa"`` calls ``F.scaled_dot_product_attention`` (a fused kernel, flash
    attention on recent GPUs), which never forms the weights, and returns ``None`` for them.
    ``dropout`` acts on the attention weights, in training mode only.

    Defined in chapter 07.
    """

    def __init__(self, d_model: int, n_head: int, *, bias: bool = True, dropout: float = 0.0,
                 impl: str = "scratch") -> None:
        super().__init__()
        if d_model % n_head != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_head={n_head}: every head needs "
                             f"d_model / n_head dimensions")
        if impl not in ("scratch", "sdpa"):
            raise ValueError(f"impl must be 'scratch' or 'sdpa', got {impl!r}")
        self.n_head, self.dropout, self.impl = n_head, dropout, impl
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # W_q, W_k, W_v of all heads at once
        self.proj = nn.Linear(d_model, d_model, bias=bias)  # W_o

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        dropout_p = self.dropout if self.training else 0.0
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                               is_causal=is_causal)  # (B, nh, T, hs)
            weights = None
        else:
            y, weights = scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                                      is_causal=is_causal)  # (B, nh, T, hs), (B, nh, T, T)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): the heads side by side again
        return self.proj(y), weights  # (B, T, C)


def keras_mha_weights(mha: MultiHeadAttention) -> list[np.ndarray]:
    """The weights of ``mha`` in the order and layout of ``keras.layers.MultiHeadAttention.set_weights``.

    Keras keeps one kernel per projection with the heads as their own axis: query, key and
    value kernels ``(C, nh, hs)`` and biases ``(nh, hs)``, the output kernel ``(nh, hs, C)``
    and bias ``(C,)``. PyTorch's ``nn.Linear`` stores ``W^T``, ``(out, in)``, so each weight
    is transposed before its output axis is split into heads. Without biases
    (``bias=False``, Keras' ``use_bias=False``) only the four kernels are returned.

    Defined in chapter 07.
    """
    C, nh = mha.proj.in_features, mha.n_head
    hs = C // nh
    W = mha.qkv.weight.detach().cpu().numpy()  # (3C, C): W_q, W_k, W_v stacked, each (out, in)
    b = None if mha.qkv.bias is None else mha.qkv.bias.detach().cpu().numpy()  # (3C,)
    weights = []
    for i in range(3):  # query, key, value
        weights.append(W[i * C:(i + 1) * C].T.reshape(C, nh, hs))  # (C, nh, hs)
        if b is not None:
            weights.append(b[i * C:(i + 1) * C].reshape(nh, hs))  # (nh, hs)
    weights.append(mha.proj.weight.detach().cpu().numpy().T.reshape(nh, hs, C))  # (nh, hs, C)
    if mha.proj.bias is not None:
        weights.append(mha.proj.bias.detach().cpu().numpy())  # (C,)
    return weights


def sinusoidal_positions(T: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed positional encodings of "Attention Is All You Need", shape ``(T, d)``::

        PE[pos, 2i]     = sin(pos / base^(2i / d))
        PE[pos, 2i + 1] = cos(pos / base^(2i / d))        i = 0 .. d/2 - 1

    Each pair of columns turns at its own frequency, from one radian per position down to
    ``1 / base``. Every row has norm ``sqrt(d / 2)``, and ``PE[pos + k]`` is a fixed rotation
    of ``PE[pos]`` (it depends on ``k`` only), so a dot product of two rows depends only on
    their distance. ``d`` must be even.

    Defined in chapter 07.
    """
    if d % 2 != 0:
        raise ValueError(f"d={d} must be even: the encodings come in (sin, cos) pairs")
    pos = torch.arange(T, dtype=torch.float64)[:, None]  # (T, 1)
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angles = pos * inv_freq  # (T, d/2)
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1)  # (T, d/2, 2)
    return pe.view(T, d).float()  # (T, d): sin, cos, sin, cos, ...
