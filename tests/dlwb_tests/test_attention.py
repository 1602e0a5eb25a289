"""dlwb.attention (chapter 07) against PyTorch's and Keras' own attention.

Tolerances: float64 comparisons with PyTorch agree to rounding (1e-12); float32 ones to
``atol=1e-6, rtol=1e-5`` (the same arithmetic summed in a different order); Keras (float32,
TensorFlow kernels) to ``atol=1e-5, rtol=1e-5``. Masked attention weights must be exactly 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dlwb.attention import (
    MultiHeadAttention,
    causal_mask,
    keras_mha_weights,
    scaled_dot_product_attention,
    sinusoidal_positions,
)

SHAPES = [(2, 3, 5, 8), (1, 1, 1, 4), (4, 2, 17, 16), (3, 7, 6), (2, 4, 64, 32)]  # (..., T, d)
F64 = dict(rtol=1e-12, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-6)


def qkv(shape, dtype=torch.float64, seed=0, T_k=None, d_v=None):
    g = torch.Generator().manual_seed(seed)
    *lead, T, d = shape
    T_k = T if T_k is None else T_k
    d_v = d if d_v is None else d_v
    return (torch.randn(*lead, T, d, generator=g, dtype=dtype),
            torch.randn(*lead, T_k, d, generator=g, dtype=dtype),
            torch.randn(*lead, T_k, d_v, generator=g, dtype=dtype))


def test_causal_mask():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert torch.equal(m, torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))
    assert causal_mask(2, 3).tolist() == [[True, False, False], [True, True, False]]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("is_causal", [False, True])
def test_matches_sdpa_float64(shape, is_causal):
    q, k, v = qkv(shape)
    out, weights = scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    assert out.shape == ref.shape and weights.shape == (*shape[:-1], shape[-2])
    torch.testing.assert_close(out, ref, **F64)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)), **F64)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("is_causal", [False, True])
def test_matches_sdpa_float32(shape, is_causal):
    q, k, v = qkv(shape, dtype=torch.float32, seed=1)
    out, _ = scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), **F32)


def test_cross_attention_shapes_and_custom_scale():
    q, k, v = qkv((2, 3, 5, 8), T_k=9, d_v=6)
    out, weights = scaled_dot_product_attention(q, k, v, scale=0.3)
    assert out.shape == (2, 3, 5, 6) and weights.shape == (2, 3, 5, 9)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3), **F64)
    # Causal with T_q != T_k: the mask is aligned at the top left, as in PyTorch.
    out, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), **F64)


def test_boolean_and_float_masks_match_sdpa():
    q, k, v = qkv((2, 2, 7, 4), seed=3)
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(2, 1, 7, 7, generator=g) > 0.5  # broadcast over heads
    mask |= torch.eye(7, dtype=torch.bool)  # every row keeps at least one key
    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **F64)
    assert torch.all(weights.masked_select(~mask.expand_as(weights)) == 0)
    additive = torch.randn(7, 7, generator=g, dtype=torch.float64)
    out, _ = scaled_dot_product_attention(q, k, v, attn_mask=additive)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=additive), **F64)


@pytest.mark.parametrize("T", [1, 2, 9, 33])
def test_masked_positions_get_exactly_zero_weight(T):
    q, k, v = qkv((2, 3, T, 8), dtype=torch.float32, seed=T)
    _, weights = scaled_dot_product_attention(10 * q, 10 * k, v, is_causal=True)  # large scores, too
    upper = ~causal_mask(T)
    assert torch.all(weights[..., upper] == 0), "a future position got a non-zero weight"
    assert torch.all(weights[..., ~upper] >= 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, T), rtol=0, atol=1e-6)


def test_gradients_match_sdpa():
    q, k, v = (t.requires_grad_() for t in qkv((2, 2, 6, 4), seed=5))
    out, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, **F64)


def test_causal_output_ignores_the_future():
    q, k, v = (t.requires_grad_() for t in qkv((1, 1, 6, 4), seed=6))
    out, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    (gk,) = torch.autograd.grad(out[0, 0, 2].sum(), k)  # output at position 2
    assert torch.all(gk[0, 0, 3:] == 0) and torch.any(gk[0, 0, :3] != 0)


def test_dropout_uses_the_weights_it_returns():
    q, k, v = qkv((2, 2, 8, 4), seed=7)
    torch.manual_seed(0)
    out, weights = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert torch.any(weights == 0)
    torch.testing.assert_close(out, weights @ v, **F64)


def ported_torch_mha(mha: MultiHeadAttention) -> nn.MultiheadAttention:
    C = mha.proj.in_features
    ref = nn.MultiheadAttention(C, mha.n_head, bias=mha.qkv.bias is not None, batch_first=True)
    ref = ref.to(mha.qkv.weight.dtype)
    with torch.no_grad():
        ref.in_proj_weight.copy_(mha.qkv.weight)  # the same (3C, C) layout
        ref.out_proj.weight.copy_(mha.proj.weight)
        if mha.qkv.bias is not None:
            ref.in_proj_bias.copy_(mha.qkv.bias)
            ref.out_proj.bias.copy_(mha.proj.bias)
    return ref.eval()


@pytest.mark.parametrize("C, nh, T, bias, causal", [(8, 2, 5, True, False), (8, 2, 5, True, True),
                                                    (12, 3, 1, True, True), (16, 4, 10, False, True),
                                                    (6, 1, 7, True, False)])
def test_multihead_matches_nn_multiheadattention(C, nh, T, bias, causal):
    torch.manual_seed(C + T)
    mha = MultiHeadAttention(C, nh, bias=bias).double().eval()
    if bias:  # nn.Linear's biases are small; make them matter
        with torch.no_grad():
            mha.qkv.bias.normal_()
            mha.proj.bias.normal_()
    ref = ported_torch_mha(mha)
    x = torch.randn(3, T, C, dtype=torch.float64)
    ours, weights = mha(x, is_causal=causal)
    # nn.MultiheadAttention's boolean mask is the opposite: True means "may NOT attend".
    theirs, ref_weights = ref(x, x, x, attn_mask=~causal_mask(T) if causal else None, need_weights=True,
                              average_attn_weights=False)
    torch.testing.assert_close(ours, theirs, **F64)
    torch.testing.assert_close(weights, ref_weights, **F64)


def test_multihead_sdpa_impl_matches_scratch():
    torch.manual_seed(0)
    scratch = MultiHeadAttention(32, 4, impl="scratch").eval()
    fused = MultiHeadAttention(32, 4, impl="sdpa").eval()
    fused.load_state_dict(scratch.state_dict())
    x = torch.randn(2, 11, 32)
    (a, w), (b, none) = scratch(x, is_causal=True), fused(x, is_causal=True)
    assert w.shape == (2, 4, 11, 11) and none is None
    torch.testing.assert_close(a, b, **F32)


def test_multihead_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="impl"):
        MultiHeadAttention(8, 2, impl="flash")


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")  # T = 1: Keras warns that the softmax is trivial
@pytest.mark.parametrize("C, nh, T, bias, causal", [(8, 2, 5, True, False), (12, 3, 6, True, True),
                                                    (16, 4, 1, False, True), (16, 2, 9, False, False)])
def test_multihead_matches_keras(C, nh, T, bias, causal):
    keras = pytest.importorskip("keras")
    torch.manual_seed(100 + C + T)
    mha = MultiHeadAttention(C, nh, bias=bias).eval()
    if bias:
        with torch.no_grad():
            mha.qkv.bias.normal_()
            mha.proj.bias.normal_()
    layer = keras.layers.MultiHeadAttention(num_heads=nh, key_dim=C // nh, use_bias=bias)
    x = torch.randn(2, T, C)
    x_np = x.numpy()
    layer(x_np, x_np)  # build the layer
    layer.set_weights(keras_mha_weights(mha))  # kernels (C, nh, hs), output kernel (nh, hs, C)
    theirs, scores = layer(x_np, x_np, use_causal_mask=causal, return_attention_scores=True)
    ours, weights = mha(x, is_causal=causal)
    np.testing.assert_allclose(ours.detach().numpy(), keras.ops.convert_to_numpy(theirs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weights.detach().numpy(), keras.ops.convert_to_numpy(scores), rtol=1e-5, atol=1e-5)


def test_keras_weight_layout():
    mha = MultiHeadAttention(12, 3)
    shapes = [w.shape for w in keras_mha_weights(mha)]
    assert shapes == [(12, 3, 4), (3, 4)] * 3 + [(3, 4, 12), (12,)]
    assert [w.shape for w in keras_mha_weights(MultiHeadAttention(12, 3, bias=False))] == [(12, 3, 4)] * 3 + [(3, 4, 12)]


def test_sinusoidal_positions_formula():
    T, d = 50, 16
    pe = sinusoidal_positions(T, d)
    assert pe.shape == (T, d) and pe.dtype == torch.float32
    pos, i = np.arange(T)[:, None], np.arange(d // 2)[None, :]
    angles = pos / 10000.0 ** (2 * i / d)
    np.testing.assert_allclose(pe[:, 0::2].numpy(), np.sin(angles), rtol=0, atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2].numpy(), np.cos(angles), rtol=0, atol=1e-6)
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * (d // 2)))


def test_sinusoidal_positions_properties():
    T, d = 128, 32
    pe = sinusoidal_positions(T, d).double()
    assert pe.abs().max() <= 1.0
    torch.testing.assert_close(pe.norm(dim=1), torch.full((T,), math.sqrt(d / 2), dtype=torch.float64),
                               rtol=0, atol=1e-5)
    # The dot product of two positions depends only on their distance k.
    for k in (1, 5, 40):
        dots = (pe[:-k] * pe[k:]).sum(dim=1)  # (T - k,)
        assert (dots.max() - dots.min()).item() < 1e-5
    # PE[pos + k] is PE[pos] times one fixed rotation: a 2x2 rotation by k * w_i for each (sin, cos) pair.
    k = 7
    w = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,) frequencies
    M = torch.zeros(d, d, dtype=torch.float64)
    for i, b in enumerate(k * w):
        M[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[b.cos(), -b.sin()], [b.sin(), b.cos()]])
    torch.testing.assert_close(pe[:-k] @ M, pe[k:], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(4, 5)
