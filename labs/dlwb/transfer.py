"""Transfer learning: freezing parameters, and low-rank adapters (LoRA) written from scratch.

Taught in chapter 08 (``notebooks/08_transfer_learning.ipynb``): a model pretrained on one
task is fine-tuned on another by training all of it, only its head, or only small low-rank
updates of its weight matrices.

- :func:`freeze` turns gradients off for every parameter of a module;
  :func:`count_trainable` counts the parameters an optimizer would still update.
- :class:`LoRALinear` wraps a frozen ``nn.Linear`` and learns ``W + (alpha / r) B A``.
- :func:`apply_lora` puts a :class:`LoRALinear` in place of chosen ``nn.Linear`` layers;
  :func:`merge_lora` folds each update back into a plain ``nn.Linear``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    """Turn off the gradients of every parameter of ``module`` (``requires_grad = False``); returns it.

    A frozen parameter gets no ``.grad``, so no optimizer changes it. Freezing does not
    change the module's mode: a frozen ``BatchNorm`` in training mode still updates its
    running statistics (call ``.eval()`` on it to keep them).

    Defined in chapter 08.
    """
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def count_trainable(module: nn.Module) -> int:
    """The number of parameters with ``requires_grad``; a tied parameter counts once.

    Defined in chapter 08.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (LoRA, Hu et al. 2021)::

        y = x W^T + b + s x A^T B^T = x (W + s B A)^T + b,     s = alpha / r

    ``W`` ``(out, in)`` and ``b`` are the base layer's, frozen. ``A`` ``(r, in)`` starts
    random (Kaiming-uniform, as ``nn.Linear``) and ``B`` ``(out, r)`` starts at zero, so the
    wrapped layer first computes exactly what the base layer does. The update ``s B A`` has
    rank at most ``r`` and ``r (in + out)`` parameters instead of ``in * out``. The scale
    ``alpha / r`` keeps the size of the update about the same when ``r`` changes.

    Defined in chapter 08.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if not isinstance(rank, int) or not 1 <= rank <= min(base.in_features, base.out_features):
            raise ValueError(f"rank must be an int from 1 to min(in_features, out_features) = "
                             f"{min(base.in_features, base.out_features)}, got {rank!r}")
        self.base = freeze(base)
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scale = self.alpha / rank
        weight = base.weight
        self.A = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device, dtype=weight.dtype))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's initialisation

    def delta_weight(self) -> torch.Tensor:
        """The update ``s B A``, shape ``(out, in)``, of rank at most ``r``."""
        return self.scale * (self.B @ self.A)  # (out, r) @ (r, in) -> (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(-1) != self.base.in_features:
            raise ValueError(f"the input has {x.size(-1)} features in its last dimension; "
                             f"this layer expects {self.base.in_features}")
        update = (x @ self.A.T) @ self.B.T  # (..., in) -> (..., r) -> (..., out): never forms B A
        return self.base(x) + self.scale * update  # (..., out)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight ``W + s B A`` and the base bias: the same function, no adapter."""
        base = self.base
        layer = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                          device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(base.weight + self.delta_weight())
            if base.bias is not None:
                layer.bias.copy_(base.bias)
        return layer

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def apply_lora(model: nn.Module, rank: int, alpha: float | None = None, *,
               targets: Sequence[str] = ("qkv", "proj", "fc")) -> list[str]:
    """Freeze ``model`` and put a :class:`LoRALinear` in place of each ``nn.Linear`` named in ``targets``.

    A layer is chosen when the last part of its qualified name (``blocks.0.attn.qkv`` ->
    ``qkv``) is in ``targets``; the defaults pick every matrix of chapter 07's GPT blocks.
    Afterwards only the adapters' ``A`` and ``B`` are trainable. Returns the names of the
    wrapped layers, in order.

    Defined in chapter 08.
    """
    freeze(model)
    chosen = [name for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets]
    if not chosen:
        linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"no nn.Linear layer is named one of {list(targets)}; the model's nn.Linear layers: {linear}")
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
    return chosen


def merge_lora(model: nn.Module) -> int:
    """Replace every :class:`LoRALinear` of ``model`` by its merged ``nn.Linear``, in place; returns how many.

    The merged model computes the same function (up to float rounding) with no extra cost
    per token. The merged layers are trainable ``nn.Linear`` s again.

    Defined in chapter 08.
    """
    wrapped = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merged())
    return len(wrapped)
