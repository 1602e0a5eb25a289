"""Model compression: int8 affine quantization, magnitude pruning and knowledge distillation.

Defined in chapter 10 (``notebooks/10_compression.ipynb``), where quantization is checked
against ``torch.quantize_per_tensor`` / ``torch.quantize_per_channel`` and PyTorch's dynamic
quantization, magnitude pruning against ``torch.nn.utils.prune.global_unstructured``, and the
distillation loss against ``F.kl_div`` and Keras's ``KLDivergence``. Lab 10 asks for the
distillation loss.

Conventions: quantized values are integer tensors (``torch.int8`` by default) with a float
``scale`` and an integer ``zero_point``, ``x ≈ (q - zero_point) * scale``; per-channel
parameters are 1-D tensors with one entry per slice of ``x`` along ``axis``.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from dlwb.train import Trainer

INT8 = (-128, 127)  # (qmin, qmax) of signed 8-bit integers


def _along(t: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Reshape per-channel parameters ``t`` (C,) to broadcast against ``x`` along ``axis``."""
    if axis is None:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def quant_params(x: torch.Tensor, *, axis: int | None = None, symmetric: bool = False,
                 qrange: tuple[int, int] = INT8) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the range of ``x`` onto the integers ``qrange = (qmin, qmax)``.

    Affine (asymmetric): the range is widened to contain 0, then
    ``scale = (max - min) / (qmax - qmin)`` and ``zero_point = clamp(qmin - round(min / scale))``,
    so that the real 0 is exactly representable (zero padding, ReLU outputs).
    Symmetric: ``scale = max|x| / ((qmax - qmin) / 2)`` and ``zero_point = 0``.
    ``axis=None`` gives one pair for the whole tensor (per-tensor); ``axis=k`` one pair per
    slice along dimension ``k`` (per-channel, e.g. per output row of a weight matrix), as 1-D tensors.

    Defined in chapter 10.
    """
    qmin, qmax = qrange
    if qmin >= qmax:
        raise ValueError(f"qrange must be (qmin, qmax) with qmin < qmax, got {qrange}")
    if not x.is_floating_point():
        raise TypeError(f"quant_params expects a floating-point tensor, got {x.dtype}; pass x.float()")
    if axis is None:
        lo, hi = x.min(), x.max()
    else:
        rows = x.movedim(axis, 0).reshape(x.size(axis), -1)  # (C, everything else)
        lo, hi = rows.min(dim=1).values, rows.max(dim=1).values  # (C,)
    lo, hi = lo.clamp(max=0).double(), hi.clamp(min=0).double()  # the range must contain 0
    if symmetric:
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero tensor: any scale works
        zero_point = torch.zeros_like(scale, dtype=torch.int64)
    else:
        scale = (hi - lo) / (qmax - qmin)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int64)
    return scale.float(), zero_point


def quantize(x: torch.Tensor, scale, zero_point, *, axis: int | None = None,
             qrange: tuple[int, int] = INT8, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """Affine quantization: ``q = clamp(round(x / scale + zero_point), qmin, qmax)`` as integers.

    ``round`` is round-half-to-even and ``x / scale`` is computed as ``x * (1 / scale)`` in float32,
    both as in PyTorch's kernels, so the integers equal ``torch.quantize_per_tensor``'s even on
    exact ties (``round(73.5 - 1) = 72``, whereas ``round(73.5) - 1 = 73``). With ``axis`` set,
    ``scale`` and ``zero_point`` are 1-D with one entry per slice of ``x`` along ``axis``.

    Defined in chapter 10.
    """
    scale, zero_point = torch.as_tensor(scale, dtype=torch.float32), torch.as_tensor(zero_point)
    if axis is not None and (scale.dim() != 1 or scale.numel() != x.size(axis)):
        raise ValueError(f"per-channel scale must have shape ({x.size(axis)},) for axis={axis} of a tensor of "
                         f"shape {tuple(x.shape)}, got {tuple(scale.shape)}")
    if (scale <= 0).any():
        raise ValueError("scale must be positive; compute it with quant_params")
    q = torch.round(x * _along(1 / scale, x, axis) + _along(zero_point, x, axis))  # rounded as PyTorch's kernels round
    return q.clamp(*qrange).to(dtype)


def dequantize(q: torch.Tensor, scale, zero_point, *, axis: int | None = None) -> torch.Tensor:
    """Back to floats: ``x̂ = (q - zero_point) * scale``; ``|x - x̂| <= scale / 2`` inside the range.

    Defined in chapter 10.
    """
    scale, zero_point = torch.as_tensor(scale, dtype=torch.float32), torch.as_tensor(zero_point)
    return (q.to(torch.float32) - _along(zero_point, q, axis)) * _along(scale, q, axis)


def model_size_bytes(net: nn.Module) -> int:
    """Bytes of ``torch.save(net.state_dict())``: the size of the model on disk (saved to memory).

    Defined in chapter 10.
    """
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def measure_latency(fn: Callable, *args, repeats: int = 30, warmup: int = 3, num_threads: int = 1) -> float:
    """Median wall-clock seconds of ``fn(*args)`` over ``repeats`` calls, after ``warmup`` calls.

    PyTorch's intra-op threads are pinned to ``num_threads`` during the measurement (and
    restored after), so that two models are timed on the same resources; the median ignores
    the occasional call slowed down by another process.

    Defined in chapter 10.
    """
    if repeats < 1 or warmup < 0 or num_threads < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0 and num_threads >= 1; got {repeats}, {warmup}, "
                         f"{num_threads}")
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                fn(*args)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn(*args)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


def prunable_weights(net: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` for every ``nn.Linear`` and ``nn.Conv2d`` of ``net``: what pruning touches.

    The same list is the ``parameters`` argument of ``torch.nn.utils.prune.global_unstructured``.

    Defined in chapter 10.
    """
    return [(m, "weight") for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


@torch.no_grad()
def magnitude_prune(net: nn.Module, amount: float) -> list[torch.Tensor]:
    """Global unstructured magnitude pruning: zero the ``round(amount * n)`` smallest ``|w|``.

    ``n`` counts the weights of every ``nn.Linear`` and ``nn.Conv2d`` (biases are kept); one
    threshold is chosen over all of them, so layers with many small weights lose more. The
    weights are zeroed in place; returns the 0/1 masks (1 = kept), one per weight tensor, as
    ``torch.nn.utils.prune.global_unstructured(..., prune.L1Unstructured)`` computes them.

    Defined in chapter 10.
    """
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount is the fraction of weights to prune and must be in [0, 1], got {amount}")
    weights = [getattr(m, name) for m, name in prunable_weights(net)]
    if not weights:
        raise ValueError("net has no nn.Linear or nn.Conv2d weights to prune")
    scores = torch.cat([w.abs().flatten() for w in weights])  # (n,)
    k = round(amount * scores.numel())
    keep = torch.ones_like(scores)
    keep[torch.topk(scores, k, largest=False).indices] = 0  # the k smallest magnitudes
    masks = list(keep.split([w.numel() for w in weights]))
    for i, w in enumerate(weights):
        masks[i] = masks[i].view_as(w)
        w.mul_(masks[i])
    return masks


def sparsity(net: nn.Module) -> float:
    """Fraction of the weights of ``net``'s ``nn.Linear`` and ``nn.Conv2d`` layers that are exactly 0.

    Defined in chapter 10.
    """
    weights = [getattr(m, name) for m, name in prunable_weights(net)]
    if not weights:
        raise ValueError("net has no nn.Linear or nn.Conv2d weights")
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      T: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): soft targets at temperature ``T`` plus hard labels.

    ``L = α T² KL(p_T ‖ q_T) + (1 − α) CE(s, y)``, with ``p_T = softmax(t / T)`` (teacher),
    ``q_T = softmax(s / T)`` (student), ``KL(p ‖ q) = Σ_k p_k (log p_k − log q_k)`` averaged
    over the batch. The soft term's gradient is ``∂/∂s_k = (q_k − p_k) / T ≈ (s_k − t_k) / (K T²)``
    for large ``T``, so ``T²`` keeps its size independent of ``T``. The teacher is detached:
    no gradient reaches it. Logits are ``(N, K)``, targets ``(N,)`` class indices.

    Defined in chapter 10.
    """
    if T <= 0:
        raise ValueError(f"the temperature T must be positive, got {T}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha weighs the soft term against the hard one and must be in [0, 1], got {alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits must have the same shape (N, K), got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    log_q = F.log_softmax(student_logits / T, dim=-1)  # (N, K)
    log_p = F.log_softmax(teacher_logits.detach() / T, dim=-1)  # (N, K)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()  # batch mean of KL(p_T || q_T)
    ce = F.cross_entropy(student_logits, targets)
    return alpha * T**2 * kl + (1 - alpha) * ce


class DistillationTrainer(Trainer):
    """A :class:`dlwb.train.Trainer` whose step trains ``net`` (the student) on :func:`distillation_loss`.

    The ``teacher`` runs in eval mode without gradients on the same batch. Evaluation is the
    Trainer's own, with its ``loss_fn`` (cross-entropy), so validation numbers compare with
    a student trained alone.

    Defined in chapter 10.
    """

    def __init__(self, net: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer, *,
                 T: float = 4.0, alpha: float = 0.9, **kwargs) -> None:
        super().__init__(net, optimizer, nn.CrossEntropyLoss(), **kwargs)
        self.teacher = teacher.to(self.device).eval()
        self.T, self.alpha = T, alpha

    def train_step(self, batch) -> dict[str, float]:
        X, y = batch
        with torch.no_grad():
            teacher_logits = self.teacher(X)  # (N, K)
        with self.autocast():
            outputs = self.net(X)  # (N, K)
            loss = distillation_loss(outputs, teacher_logits, y, self.T, self.alpha)
        self.backward_and_step(loss)
        return {"loss": loss.item(), **self._metric_values(outputs.detach(), y)}
