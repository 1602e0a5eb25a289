"""dlwb.transfer: freezing, LoRA adapters from scratch, merging them back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlwb.gpt import GPT, GPTConfig
from dlwb.text import sequence_cross_entropy
from dlwb.transfer import LoRALinear, apply_lora, count_trainable, freeze, merge_lora


def small_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                         tie_weights=False))


def trained_lora_layer(seed: int = 0, rank: int = 2) -> tuple[LoRALinear, torch.Tensor]:
    """A LoRALinear (12 -> 7, rank 2) after 20 Adam steps towards random targets, and an input batch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(12, 7), rank, alpha=4.0)
    x, target = torch.randn(32, 12, generator=g), torch.randn(32, 7, generator=g)
    opt = torch.optim.Adam([layer.A, layer.B], lr=1e-2)
    for _ in range(20):
        loss = (layer(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return layer, x


def test_freeze_and_count():
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    assert count_trainable(net) == 4 * 3 + 3 + 3 * 2 + 2
    freeze(net[0])
    assert count_trainable(net) == 3 * 2 + 2
    assert not any(p.requires_grad for p in net[0].parameters())
    assert freeze(net) is net and count_trainable(net) == 0


def test_zero_init_gives_identical_outputs():
    torch.manual_seed(0)
    base = nn.Linear(10, 6)
    x = torch.randn(5, 3, 10)
    expected = base(x)
    layer = LoRALinear(base, rank=3, alpha=8.0)
    assert torch.equal(layer.B, torch.zeros(6, 3)) and layer.A.abs().sum() > 0
    assert torch.equal(layer(x), expected)  # B = 0: exactly the base layer
    assert layer.scale == pytest.approx(8.0 / 3)


def test_gradients_reach_only_A_and_B():
    layer, x = trained_lora_layer()
    layer.zero_grad()
    layer(x).sum().backward()
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    assert layer.A.grad is not None and layer.B.grad is not None
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["A", "B"]
    assert count_trainable(layer) == 2 * (12 + 7)


def test_update_has_rank_at_most_r_and_equals_a_dense_update():
    layer, x = trained_lora_layer(rank=2)
    delta = layer.delta_weight()
    assert delta.shape == (7, 12)
    sv = torch.linalg.svdvals(delta.detach().double())  # (7,), largest first
    assert sv[1] > 1e-3 * sv[0] and torch.all(sv[2:] < 1e-5 * sv[0])  # rank 2: the rest is float32 rounding
    dense = x @ (layer.base.weight + delta).T + layer.base.bias  # (32, 7)
    assert torch.allclose(layer(x), dense, rtol=1e-5, atol=1e-5)  # float32, sums in another order


def test_merged_layer_computes_the_same_function():
    layer, x = trained_lora_layer(seed=3)
    merged = layer.merged()
    assert type(merged) is nn.Linear and merged.weight.requires_grad
    assert torch.allclose(merged(x), layer(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(merged.bias, layer.base.bias)


def test_apply_lora_to_a_gpt_and_merge_back():
    net = small_gpt()
    X = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(1))
    before = net(X).detach()
    wrapped = apply_lora(net, rank=2, alpha=4.0)
    assert wrapped == [f"blocks.{i}.{name}" for i in range(2) for name in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")]
    assert torch.equal(net(X), before)  # B = 0 everywhere
    C = 16
    shapes = [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)]  # (out, in) of qkv, attn.proj, fc, mlp.proj
    assert count_trainable(net) == 2 * sum(2 * (o + i) for o, i in shapes)
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        loss = sequence_cross_entropy(net(X), X.roll(-1, dims=1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in net.named_parameters() if n in frozen)
    adapted = net(X).detach()
    assert not torch.allclose(adapted, before, atol=1e-4)
    assert merge_lora(net) == 8
    assert not any(isinstance(m, LoRALinear) for m in net.modules())
    assert torch.allclose(net(X), adapted, rtol=1e-5, atol=1e-5)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="rank must be"):
        LoRALinear(nn.Linear(8, 4), rank=5)  # more than min(in, out)
    with pytest.raises(ValueError, match="rank must be"):
        LoRALinear(nn.Linear(8, 4), rank=0)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv2d(1, 1, 3), rank=1)
    with pytest.raises(ValueError, match="expects 8"):
        LoRALinear(nn.Linear(8, 4), rank=2)(torch.randn(3, 7))
    with pytest.raises(ValueError, match="no nn.Linear layer"):
        apply_lora(small_gpt(), rank=2, targets=("query",))
