"""dlwb.compress (chapter 10) against PyTorch's quantized tensors, pruning utilities and KL divergence.

Tolerances: integers equal ``torch.quantize_per_tensor``'s and ``torch.quantize_per_channel``'s
exactly (the same float32 arithmetic, ties included). Dequantized values lie within ``scale / 2`` of the input
(plus 1e-6 for float32 rounding). Pruning masks equal ``prune.global_unstructured``'s exactly (random
weights have no ties). The distillation loss agrees with the ``F.kl_div`` / ``F.cross_entropy``
reference to ``rtol=1e-5, atol=1e-6`` in float32 and 1e-12 in float64.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

from dlwb.compress import (
    DistillationTrainer,
    dequantize,
    distillation_loss,
    magnitude_prune,
    measure_latency,
    model_size_bytes,
    prunable_weights,
    quant_params,
    quantize,
    sparsity,
)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def torch_quantize(fn, *args):
    with warnings.catch_warnings():  # PyTorch 2.13 announces the removal of quantized tensors
        warnings.simplefilter("ignore")
        return fn(*args)


@pytest.mark.parametrize("seed,shift", [(0, 0.0), (1, 2.0), (2, -3.0), (3, 0.5)])
def test_per_tensor_quantization_matches_torch(seed, shift):
    x = 3 * randn(40, 17, seed=seed) + shift  # shifted: the range need not be centred on 0
    scale, zero_point = quant_params(x)
    q = quantize(x, scale, zero_point)
    ref = torch_quantize(torch.quantize_per_tensor, x, float(scale), int(zero_point), torch.qint8)
    assert q.dtype == torch.int8
    assert torch.equal(q, ref.int_repr())
    assert torch.equal(dequantize(q, scale, zero_point), ref.dequantize())
    assert (dequantize(q, scale, zero_point) - x).abs().max() <= scale / 2 + 1e-6


@pytest.mark.parametrize("axis", [0, 1])
def test_per_channel_quantization_matches_torch(axis):
    x = randn(64, 33, seed=4) * torch.linspace(0.1, 5, 33)  # columns of very different ranges
    scale, zero_point = quant_params(x, axis=axis)
    assert scale.shape == zero_point.shape == (x.size(axis),)
    q = quantize(x, scale, zero_point, axis=axis)
    ref = torch_quantize(torch.quantize_per_channel, x, scale.double(), zero_point, axis, torch.qint8).int_repr()
    assert torch.equal(q, ref)
    error = (dequantize(q, scale, zero_point, axis=axis) - x).abs()
    assert (error <= scale.reshape([-1, 1] if axis == 0 else [1, -1]) / 2 + 1e-6).all()


def test_quantize_rounds_ties_as_torch():
    # x / s = 73.5 exactly and z = -1: PyTorch rounds x / s + z = 72.5 to even, 72 (not round(73.5) - 1 = 73).
    scale, zero_point = 2.0**-8, -1
    x = torch.tensor([73.5, 72.5, -0.5, 0.5]) * scale
    ref = torch_quantize(torch.quantize_per_tensor, x, scale, zero_point, torch.qint8).int_repr()
    assert torch.equal(quantize(x, scale, zero_point), ref)
    assert quantize(x, scale, zero_point).tolist() == [72, 72, -2, 0]


def test_per_channel_is_more_accurate_than_per_tensor_for_uneven_rows():
    x = randn(8, 50, seed=5) * torch.logspace(-2, 1, 8)[:, None]  # rows from 0.01 to 10 in size
    per_tensor = dequantize(quantize(x, *quant_params(x)), *quant_params(x))
    per_row = dequantize(quantize(x, *quant_params(x, axis=0), axis=0), *quant_params(x, axis=0), axis=0)
    small = slice(0, 2)  # the two smallest rows: per tensor, the large rows' scale rounds them to almost nothing
    assert (per_row - x)[small].abs().mean() < (per_tensor - x)[small].abs().mean() / 10


def test_quant_params_match_torch_observers():
    from torch.ao.quantization.observer import MinMaxObserver

    x = randn(100, seed=6) + 0.7
    for qscheme, symmetric in ((torch.per_tensor_affine, False), (torch.per_tensor_symmetric, True)):
        observer = MinMaxObserver(dtype=torch.qint8, qscheme=qscheme)
        observer(x)
        ref_scale, ref_zero = observer.calculate_qparams()
        scale, zero_point = quant_params(x, symmetric=symmetric)
        assert torch.allclose(scale, ref_scale.squeeze(), rtol=1e-6) and int(zero_point) == int(ref_zero)


def test_zero_is_exact_and_constant_tensors_work():
    x = torch.tensor([0.0, 0.3, 1.7, 2.5])  # all positive: the range is widened to contain 0
    scale, zero_point = quant_params(x)
    assert dequantize(quantize(x, scale, zero_point), scale, zero_point)[0] == 0
    zeros = torch.zeros(5)
    assert torch.equal(dequantize(quantize(zeros, *quant_params(zeros)), *quant_params(zeros)), zeros)


def test_quantization_errors():
    x = randn(4, 3)
    with pytest.raises(ValueError, match="qmin < qmax"):
        quant_params(x, qrange=(5, 5))
    with pytest.raises(TypeError, match="floating-point"):
        quant_params(torch.arange(4))
    with pytest.raises(ValueError, match="per-channel scale must have shape"):
        quantize(x, torch.ones(4), torch.zeros(4, dtype=torch.int64), axis=1)
    with pytest.raises(ValueError, match="scale must be positive"):
        quantize(x, 0.0, 0)


def test_model_size_of_dynamic_int8_linear_is_about_a_quarter():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qnet = torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)
    n_params = sum(p.numel() for p in net.parameters())
    assert 4 * n_params < model_size_bytes(net) < 4 * n_params + 4096  # float32 plus a small header
    assert 0.2 < model_size_bytes(qnet) / model_size_bytes(net) < 0.35


def test_measure_latency_is_a_median_and_restores_threads():
    threads = torch.get_num_threads()
    calls = []
    seconds = measure_latency(lambda: calls.append(torch.get_num_threads()), repeats=5, warmup=2, num_threads=1)
    assert len(calls) == 7 and set(calls) == {1} and torch.get_num_threads() == threads
    assert 0 <= seconds < 0.01
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency(lambda: None, repeats=0)


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 12), nn.ReLU(),
                         nn.Linear(12, 3))


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.9, 0.95, 1.0])
def test_magnitude_prune_matches_torch_global_unstructured(amount):
    net, ref = small_net(), small_net()
    masks = magnitude_prune(net, amount)
    prune.global_unstructured(prunable_weights(ref), pruning_method=prune.L1Unstructured, amount=amount)
    ref_masks = [m.weight_mask for m, _ in prunable_weights(ref)]
    assert len(masks) == len(ref_masks) and all(torch.equal(a, b) for a, b in zip(masks, ref_masks))
    for (m, _), (r, _) in zip(prunable_weights(net), prunable_weights(ref)):
        prune.remove(r, "weight")
        assert torch.equal(m.weight, r.weight) and torch.equal(m.bias, r.bias)  # biases untouched
    n = sum(m.weight.numel() for m, _ in prunable_weights(net))
    assert sparsity(net) == pytest.approx(round(amount * n) / n, abs=0)


def test_prune_errors():
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        magnitude_prune(small_net(), 1.5)
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        magnitude_prune(nn.ReLU(), 0.5)
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        sparsity(nn.Sequential(nn.ReLU()))


def reference_distillation(s, t, y, T, alpha):
    soft = F.kl_div(F.log_softmax(s / T, dim=-1), F.softmax(t / T, dim=-1), reduction="batchmean")
    return alpha * T**2 * soft + (1 - alpha) * F.cross_entropy(s, y)


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (10.0, 0.3), (0.5, 1.0), (2.0, 0.0)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, dict(rtol=1e-5, atol=1e-6)),
                                       (torch.float64, dict(rtol=1e-12, atol=1e-12))])
def test_distillation_loss_matches_kl_div_reference(T, alpha, dtype, tol):
    s, t = 3 * randn(16, 10, seed=7, dtype=dtype), 3 * randn(16, 10, seed=8, dtype=dtype)
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(distillation_loss(s, t, y, T, alpha), reference_distillation(s, t, y, T, alpha),
                               **tol)


def test_distillation_loss_edges_and_gradients():
    s, t = randn(8, 5, seed=10, dtype=torch.float64), randn(8, 5, seed=11, dtype=torch.float64)
    y = torch.arange(8) % 5
    assert torch.allclose(distillation_loss(s, t, y, 3.0, 0.0), F.cross_entropy(s, y), rtol=1e-12, atol=1e-12)
    assert distillation_loss(t, t, y, 3.0, 1.0).abs() < 1e-12  # the student equals the teacher: KL = 0
    s.requires_grad_(True)
    t.requires_grad_(True)
    distillation_loss(s, t, y, 2.0, 0.7).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None  # the teacher is detached
    # Large T: the soft term's gradient tends to (s - t)/K (zero-mean logits) once multiplied by T^2.
    s0 = (s.detach() - s.detach().mean(-1, keepdim=True)).requires_grad_(True)
    t0 = t.detach() - t.detach().mean(-1, keepdim=True)
    distillation_loss(s0, t0, y, 1000.0, 1.0).backward()
    assert torch.allclose(s0.grad * 8, (s0 - t0).detach() / 5, rtol=1e-2, atol=1e-5)  # batchmean: x N


def test_distillation_loss_errors():
    s, y = randn(4, 3), torch.zeros(4, dtype=torch.int64)
    for T in (0.0, -1.0):
        with pytest.raises(ValueError, match="T must be positive"):
            distillation_loss(s, s, y, T, 0.5)
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"alpha .* must be in \[0, 1\]"):
            distillation_loss(s, s, y, 2.0, alpha)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(s, randn(4, 5), y, 2.0, 0.5)


def test_distillation_trainer_moves_the_student_towards_the_teacher():
    torch.manual_seed(0)
    X = torch.randn(256, 6)
    teacher = nn.Linear(6, 3)
    y = teacher(X).argmax(-1).detach()
    student = nn.Linear(6, 3)
    frozen = copy.deepcopy(teacher.state_dict())
    batches = [(X[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]

    def gap():  # KL(teacher || student) at T = 1, over all inputs
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(student(X), -1), F.softmax(teacher(X), -1), reduction="batchmean"))

    before = gap()
    trainer = DistillationTrainer(student, teacher, torch.optim.Adam(student.parameters(), lr=0.05), T=2.0,
                                  alpha=1.0, progress=False)
    history = trainer.fit(batches, 5, val_iter=batches)
    assert gap() < before / 4
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen.items())  # the teacher is not trained
    assert not teacher.training and "val_loss" in history.keys()
