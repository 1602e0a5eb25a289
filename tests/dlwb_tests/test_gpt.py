"""dlwb.gpt (chapter 07): the character-level GPT, its data, sampling and training helpers.

Tolerances are stated at each check: float32 logits of the two attention implementations
agree to ``atol=1e-5``; the loss at initialisation is within 0.1 nat of ``ln V`` (weights
start at standard deviation 0.02, so the logits are small but not zero).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlwb.gpt import (
    GPT,
    GPTConfig,
    RandomBatches,
    Throughput,
    configure_optimizer,
    generate,
    peak_flops,
)
from dlwb.optim import warmup_cosine
from dlwb.text import Vocab, sequence_cross_entropy
from dlwb.train import Trainer

TINY = GPTConfig(block_size=16, vocab_size=11, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20


def tiny_model(seed=0, **changes) -> GPT:
    torch.manual_seed(seed)
    return GPT(dataclasses.replace(TINY, **changes)).eval()


def ids(B, T, V=TINY.vocab_size, seed=0):
    return torch.randint(V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_random_batches():
    data = torch.arange(100)
    batches = RandomBatches(data, block_size=8, batch_size=4, num_batches=3, seed=1)
    got = list(batches)
    assert len(batches) == 3 == len(got)
    for X, Y in got:
        assert X.shape == Y.shape == (4, 8)
        assert torch.equal(Y, X + 1)  # data[i] = i: the targets are the inputs shifted by one
        assert X.max() < 99
    assert not torch.equal(got[0][0], list(batches)[0][0])  # a second pass draws new windows
    again = [X for X, _ in RandomBatches(data, 8, 4, 3, seed=1)]
    assert all(torch.equal(a, X) for a, (X, _) in zip(again, got))  # the same seed, the same windows
    with pytest.raises(ValueError, match="too few"):
        RandomBatches(torch.arange(8), 8, 1, 1)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="attention"):
        GPTConfig(attention="flash")
    with pytest.raises(ValueError, match="positions"):
        GPTConfig(positions="rotary")


@pytest.mark.parametrize("changes", [{}, {"attention": "scratch"}, {"positions": "sinusoidal"},
                                     {"bias": True, "tie_weights": False}])
def test_forward_shapes(changes):
    model = tiny_model(**changes)
    for T in (1, 7, TINY.block_size):
        assert model(ids(3, T)).shape == (3, T, TINY.vocab_size)
    with pytest.raises(ValueError, match="block_size"):
        model(ids(1, TINY.block_size + 1))


def test_weight_tying_and_parameter_count():
    tied, untied = tiny_model(), tiny_model(tie_weights=False)
    assert tied.lm_head.weight is tied.tok_emb.weight
    V, C, T = TINY.vocab_size, TINY.n_embd, TINY.block_size
    assert untied.num_params() - tied.num_params() == V * C
    assert tied.num_params(non_embedding=False) - tied.num_params() == T * C
    L = TINY.n_layer
    assert tied.num_params() == V * C + L * (2 * C + 4 * C * C + 8 * C * C) + C  # no biases by default
    assert tied.flops_per_token() == 6 * tied.num_params() + 12 * L * C * T


def test_loss_at_init_is_about_ln_vocab():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=65, n_layer=4, n_head=4, n_embd=128, dropout=0.0)).eval()
    x = ids(8, 32, V=65, seed=1)
    y = ids(8, 32, V=65, seed=2)
    with torch.no_grad():
        loss = sequence_cross_entropy(model(x), y).item()
    assert abs(loss - math.log(65)) < 0.1, f"loss at init {loss:.4f}, expected ln 65 = {math.log(65):.4f} +- 0.1"


@pytest.mark.parametrize("changes", [{}, {"attention": "scratch"}, {"positions": "sinusoidal"}])
def test_causal(changes):
    model = tiny_model(**changes)
    x = ids(2, 12)
    x2 = x.clone()
    x2[:, 8] = (x2[:, 8] + 1) % TINY.vocab_size  # change the token at position 8
    with torch.no_grad():
        a, b = model(x), model(x2)
    torch.testing.assert_close(a[:, :8], b[:, :8], rtol=0, atol=1e-6)  # earlier positions: unchanged
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-4  # position 8 and later see the change


def test_scratch_and_sdpa_attention_give_the_same_logits():
    sdpa, scratch = tiny_model(attention="sdpa"), tiny_model(attention="scratch")
    scratch.load_state_dict(sdpa.state_dict())
    x = ids(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(scratch(x), sdpa(x), rtol=1e-5, atol=1e-5)


def test_a_few_steps_reduce_the_loss():
    tok = Vocab(TEXT)
    data = torch.from_numpy(tok.encode(TEXT))
    model = tiny_model(vocab_size=len(tok)).train()
    optimizer = configure_optimizer(model, 3e-3)
    X, Y = next(iter(RandomBatches(data, TINY.block_size, 16, 1, seed=0)))
    losses = []
    for _ in range(30):
        loss = sequence_cross_entropy(model(X), Y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, f"30 AdamW steps on one batch: {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_trainer_with_random_batches_and_throughput(capsys):
    tok = Vocab(TEXT)
    data = torch.from_numpy(tok.encode(TEXT))
    model = tiny_model(vocab_size=len(tok))
    optimizer = configure_optimizer(model, 3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(warmup_cosine, lr=1.0, warmup_steps=2, total_steps=20, start_lr=1 / 3, final_lr=0.1))
    throughput = Throughput(8 * 16, model.flops_per_token(), peak_flops("cpu"))
    trainer = Trainer(model, optimizer, sequence_cross_entropy, grad_clip=1.0, scheduler=scheduler,
                      callbacks=[throughput], progress=False)
    val = list(RandomBatches(data, 16, 8, 2, seed=9))
    history = trainer.fit(RandomBatches(data, 16, 8, 10, seed=0), 2, val_iter=val)
    assert trainer.step == 20 and len(history["val_loss"]) == 2
    assert history["val_loss"][-1] < math.log(len(tok))
    assert len(throughput.rates) == 2 and all(r > 0 for r in throughput.rates)
    assert throughput.mfu(1000.0) is None
    out = capsys.readouterr().out
    assert "iter    20" in out and "tokens/s" in out and "MFU n/a" in out
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * 0.1)  # the cosine ended at final_lr


def test_full_split_evaluation_is_a_token_mean():
    # Trainer.evaluate over non-overlapping windows = the mean loss over all positions.
    model = tiny_model()
    data = ids(1, 16 * 5 + 1)[0]
    X, Y = data[:-1].view(5, 16), data[1:].view(5, 16)
    trainer = Trainer(model, None, sequence_cross_entropy, progress=False)
    got = trainer.evaluate(DataLoader(TensorDataset(X, Y), batch_size=2))["loss"]
    with torch.no_grad():
        ref = sequence_cross_entropy(model(X), Y).item()
    assert got == pytest.approx(ref, rel=1e-6)


def test_generate_length_and_context_crop():
    model = tiny_model()
    prompt = ids(2, 3)
    out = generate(model, prompt, 20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 23) and torch.equal(out[:, :3], prompt)
    assert out.min() >= 0 and out.max() < TINY.vocab_size
    long_prompt = ids(1, 40)  # longer than block_size = 16: only the last 16 ids are fed
    assert generate(model, long_prompt, 2, temperature=0).shape == (1, 42)
    model.train()
    generate(model, prompt, 1)
    assert model.training  # the mode is restored


def test_generate_top_k_and_temperature():
    model = tiny_model(seed=3)
    prompt = ids(1, 5, seed=4)
    with torch.no_grad():
        logits = model(prompt)[0, -1]  # (V,)
    greedy = generate(model, prompt, 1, temperature=0)[0, -1]
    assert greedy == logits.argmax()
    top1 = generate(model, prompt.repeat(50, 1), 1, top_k=1, generator=torch.Generator().manual_seed(0))[:, -1]
    assert torch.all(top1 == logits.argmax())  # top_k = 1 is greedy
    allowed = set(torch.topk(logits, 3).indices.tolist())
    sampled = generate(model, prompt.repeat(400, 1), 1, top_k=3, temperature=5.0,
                       generator=torch.Generator().manual_seed(1))[:, -1]
    assert set(sampled.tolist()) <= allowed, "top_k=3 sampled an id outside the 3 largest logits"
    assert len(set(sampled.tolist())) == 3  # a high temperature spreads the samples over all three
    a = generate(model, prompt, 10, generator=torch.Generator().manual_seed(7))
    b = generate(model, prompt, 10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def nanogpt_generate(model, idx, max_new_tokens, temperature, top_k, generator):
    """The reference: nanoGPT's ``GPT.generate`` (``model.py``), with a generator for repeatable draws."""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -model.config.block_size:])[:, -1, :] / temperature
        if top_k is not None:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -float("Inf")
        probs = torch.nn.functional.softmax(logits, dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, num_samples=1, generator=generator)), dim=1)
    return idx


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.8, 10), (1.5, 3), (1.0, 1)])
def test_generate_draws_the_ids_of_nanogpts_sampler(temperature, top_k):
    model = tiny_model(seed=5)
    prompt = ids(3, 4, seed=6)  # 4 + 25 ids: longer than block_size = 16, so the context is cropped too
    ours = generate(model, prompt, 25, temperature=temperature, top_k=top_k,
                    generator=torch.Generator().manual_seed(11))
    ref = nanogpt_generate(model, prompt, 25, temperature, top_k, torch.Generator().manual_seed(11))
    assert torch.equal(ours, ref)


def test_optimizer_groups():
    model = tiny_model(bias=True)
    opt = configure_optimizer(model, 1e-3, weight_decay=0.1, device="cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == model.num_params(non_embedding=False)  # every parameter once, the tied one too
    assert not opt.defaults["fused"]


def nanogpt_lr_factor(it, warmup_iters, lr_decay_iters, min_ratio):
    # nanoGPT's get_lr (train.py) divided by the peak rate: the reference for chapter 07's schedule.
    if it < warmup_iters:
        return (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_ratio
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_ratio + 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) * (1.0 - min_ratio)


@pytest.mark.parametrize("warmup, total", [(100, 2000), (100, 5000), (10, 110), (2, 20)])
def test_chapter_07_schedule_is_nanogpts(warmup, total):
    # Chapter 07 uses chapter 02's warmup_cosine as a LambdaLR factor, starting at 1 / (W + 1).
    f = partial(warmup_cosine, lr=1.0, warmup_steps=warmup, total_steps=total, start_lr=1 / (warmup + 1),
                final_lr=0.1)
    for step in range(total + 50):
        assert f(step) == pytest.approx(nanogpt_lr_factor(step, warmup, total, 0.1), rel=0, abs=1e-12), step


def test_bf16_autocast_on_cpu():
    model = tiny_model()
    x, y = ids(2, 16), ids(2, 16, seed=5)
    with torch.no_grad():
        ref = sequence_cross_entropy(model(x), y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
            loss = sequence_cross_entropy(logits, y)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 0.05  # bfloat16 keeps about 3 significant digits


def test_peak_flops_unknown_on_cpu():
    assert peak_flops("cpu") is None
    assert peak_flops(torch.device("cpu")) is None


@pytest.mark.parametrize(("name", "peak"), [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                            ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GeForce GTX 1080", None)])
def test_peak_flops_reads_the_data_sheet_table_by_gpu_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops("cuda:0") == peak  # the PCIe H100 is matched before the SXM entry


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_step_compiled_bf16_fused():
    device = torch.device("cuda")
    model = GPT(dataclasses.replace(TINY, block_size=64, n_embd=64, n_head=2)).to(device)
    net = torch.compile(model)
    optimizer = configure_optimizer(model, 1e-3, device=device)
    assert optimizer.defaults["fused"]
    x, y = ids(4, 64).to(device), ids(4, 64, seed=1).to(device)
    losses = []
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = sequence_cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    name = torch.cuda.get_device_name(device)
    if any(model in name for model in ("H100", "A100")):  # the GPUs the course's MFU figures are for
        assert peak_flops(device) is not None, f"{name} should be in PEAK_BF16_FLOPS"
