"""dlwb.gpt (chapters 07, 11): the character-level GPT, its data, sampling and training helpers.

Tolerances are stated at each check: float32 logits of the two attention implementations
agree to ``atol=1e-5``; the loss at initialisation is within 0.1 nat of ``ln V`` (weights
start at standard deviation 0.02, so the logits are small but not zero).

Chapter 11's KV cache: its logits agree with the model's own to ``atol=1e-5`` in float32 (the
same arithmetic in another order: another attention kernel, matrices of ``T_new`` rows) and to
``atol=1e-12`` in float64; the ids it generates are the same ids, exactly.
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
    KVCache,
    RandomBatches,
    Throughput,
    configure_optimizer,
    forward_cached,
    generate,
    generate_cached,
    peak_flops,
)
from dlwb.optim import warmup_cosine
from dlwb.text import Vocab, sample_next, sequence_cross_entropy
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


# ------------------------------------------------------------------------ chapter 11: the KV cache, top-p

CACHE_CASES = [{}, {"attention": "scratch"}, {"positions": "sinusoidal"}, {"bias": True, "tie_weights": False}]


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("changes", CACHE_CASES)
def test_cached_logits_are_the_models_at_every_position(changes, dtype, atol):
    model = tiny_model(seed=1, dropout=0.1, **changes).to(dtype)  # dropout in the config, but eval mode
    T = TINY.block_size
    x = ids(3, T, seed=2)
    with torch.no_grad():
        ref = model(x)  # (B, T, V): the whole sequence at once
    cache = KVCache(TINY.n_layer, T)
    start = 0
    for n in [5, 3] + [1] * (T - 8):  # a prefill of 5, a chunk of 3 (the mask within it), then single steps
        got = forward_cached(model, x[:, start:start + n], cache)  # (B, n, V)
        assert got.shape == (3, n, TINY.vocab_size) and got.dtype == dtype
        torch.testing.assert_close(got, ref[:, start:start + n], rtol=0, atol=atol,
                                   msg=lambda m: f"positions {start}..{start + n - 1}: {m}")
        start += n
        assert cache.length == start
    assert cache.k[0].shape == (3, TINY.n_head, T, TINY.n_embd // TINY.n_head)


def test_the_cache_refuses_positions_past_block_size_and_training_mode():
    model = tiny_model()
    cache = KVCache(TINY.n_layer, TINY.block_size)
    forward_cached(model, ids(2, 14), cache)
    with pytest.raises(ValueError, match="14 positions and 3 more make 17, beyond block_size=16"):
        forward_cached(model, ids(2, 3), cache)
    assert cache.length == 14  # a refused call caches nothing
    forward_cached(model, ids(2, 2), cache)  # exactly block_size positions
    with pytest.raises(ValueError, match="Start a new KVCache"):
        forward_cached(model, ids(2, 1), cache)
    with pytest.raises(ValueError, match="start a new KVCache"):
        forward_cached(model, ids(2, 5), KVCache(TINY.n_layer, 4))  # a cache shorter than block_size
    cache = KVCache(TINY.n_layer, TINY.block_size)
    forward_cached(model, ids(2, 3), cache)
    with pytest.raises(ValueError, match="one KVCache per batch"):
        forward_cached(model, ids(3, 1), cache)
    with pytest.raises(ValueError, match="block_size=16: ask for at most 13 new ids"):
        generate_cached(model, ids(1, 4), 14)  # 4 + 13 fed positions
    assert generate_cached(model, ids(1, 4), 13, temperature=0).shape == (1, 17)  # 4 + 12 = block_size
    assert torch.equal(generate_cached(model, ids(1, 40), 0), ids(1, 40))  # nothing to generate
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        forward_cached(model.train(), ids(2, 1), KVCache(TINY.n_layer, TINY.block_size))


@pytest.mark.parametrize("changes", CACHE_CASES)
def test_greedy_generate_cached_is_generate(changes):
    model = tiny_model(seed=3, dropout=0.1, **changes).train()  # both must switch dropout off
    prompt = ids(3, 4, seed=4)
    cached = generate_cached(model, prompt, 13, temperature=0)  # up to the full block: 4 + 12 = 16 fed
    assert model.training  # the mode is restored
    assert cached.shape == (3, 17) and torch.equal(cached[:, :4], prompt)
    assert torch.equal(cached, generate(model, prompt, 13, temperature=0))


def generate_with_top_p(model, idx, max_new_tokens, temperature, top_k, top_p, generator):
    """The reference: chapter 07's generate (the whole sequence at every step), passing top_p to sample_next."""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx)[:, -1, :].float()  # (B, V)
        idx = torch.cat([idx, sample_next(logits, temperature, generator, top_k, top_p)[:, None]], dim=1)
    return idx


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.8, 5, None), (2.0, None, 1.0),
                                                       (1.5, None, 0.9), (1.2, 6, 0.7)])
def test_sampling_generate_cached_draws_the_ids_of_generate(temperature, top_k, top_p):
    # Both call sample_next once per step on (B, V) float32 logits: the generator gives them the same numbers.
    model = tiny_model(seed=5)
    prompt = ids(3, 2, seed=6)
    cached = generate_cached(model, prompt, 15, temperature=temperature, top_k=top_k, top_p=top_p,
                             generator=torch.Generator().manual_seed(11))
    if top_p in (None, 1.0):  # top_p = 1 keeps every id: chapter 07's generate without it
        ref = generate(model, prompt, 15, temperature=temperature, top_k=top_k,
                       generator=torch.Generator().manual_seed(11))
    else:
        ref = generate_with_top_p(model, prompt, 15, temperature, top_k, top_p, torch.Generator().manual_seed(11))
    assert torch.equal(cached, ref)
    assert not torch.equal(cached, generate_cached(model, prompt, 15, temperature=0))  # it did sample


def test_a_batch_generates_each_row_as_if_alone():
    model = tiny_model(seed=7)
    prompts = ids(4, 3, seed=8)
    batch = generate_cached(model, prompts, 12, temperature=0)
    for b in range(4):
        assert torch.equal(batch[b:b + 1], generate_cached(model, prompts[b:b + 1], 12, temperature=0)), b


def test_sample_next_top_p_keeps_the_nucleus():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # ranked: id 1 (0.5), 3 (0.3), 0 (0.15), 2 (0.05)
    logits = probs.log().expand(20_000, 4)  # (rows, V): one distribution, many draws
    for top_p, kept in [(0.4, [1]), (0.7, [1, 3]), (0.9, [1, 3, 0]), (0.99, [1, 3, 0, 2])]:
        draws = sample_next(logits, 1.0, torch.Generator().manual_seed(0), top_p=top_p)  # (20000,)
        assert sorted(set(draws.tolist())) == sorted(kept), f"top_p={top_p}: kept {set(draws.tolist())}"
        freq = torch.bincount(draws, minlength=4)[kept].double() / len(draws)
        torch.testing.assert_close(freq, (probs[kept] / probs[kept].sum()).double(), rtol=0, atol=0.015)
    # top_k acts first: of ids 1 and 3, renormalised to 0.625 and 0.375, top_p = 0.55 keeps id 1 alone
    # (on all four ids it would keep both: 0.5 < 0.55)
    assert set(sample_next(logits, 1.0, torch.Generator().manual_seed(1), top_k=2, top_p=0.55).tolist()) == {1}
    many = torch.randn(3, 10, generator=torch.Generator().manual_seed(0)).repeat(500, 1)  # (1500, V)
    for temperature in (0.5, 1.0, 3.0):  # top_p = 1 changes nothing: the same draws as without it
        assert torch.equal(sample_next(many, temperature, torch.Generator().manual_seed(2), top_p=1.0),
                           sample_next(many, temperature, torch.Generator().manual_seed(2)))
        tiny = sample_next(many, temperature, torch.Generator().manual_seed(3), top_p=1e-6)
        assert torch.equal(tiny, many.argmax(dim=-1))  # a tiny top_p keeps the most likely id only: greedy
    assert sample_next(torch.randn(2, 5, 7), 1.0, top_p=0.5).shape == (2, 5)  # (..., V) -> (...)
    assert torch.equal(sample_next(many, 0.0, top_p=0.5), many.argmax(dim=-1))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
            sample_next(many, 1.0, top_p=bad)
