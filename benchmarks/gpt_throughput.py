"""Training throughput of chapter 07's GPT: the from-scratch attention against PyTorch's fused SDPA.

The same model (``dlwb.gpt.GPT``) with the same weights and the same batches, built twice: once with
``GPTConfig(attention="scratch")`` (``dlwb.attention.scaled_dot_product_attention``, which forms the
``T x T`` weights) and once with ``attention="sdpa"`` (``F.scaled_dot_product_attention``: a fused
kernel, flash attention on recent GPUs). One training iteration is forward, loss, backward, gradient
clipping and an AdamW step. The two are timed in alternating rounds in one process, so that a change
in the machine's load hits both alike; the table reports the median tokens per second of each and the
ratio scratch / sdpa (in the harness's terms: the course's from-scratch attention against PyTorch's
fused kernel as the reference).

CPU by default, CUDA when present (then with bfloat16 autocast and the ``gpu`` preset, as in the
chapter)::

    .venv/bin/python -m benchmarks.gpt_throughput                      # the chapter's cpu preset on the CPU
    .venv/bin/python -m benchmarks.gpt_throughput --block-size 256     # a longer context
    .venv/bin/python -m benchmarks.gpt_throughput --device cuda --compile

Writes ``benchmarks/results/gpt_throughput.json`` (and ``.md``, ``.png``) through ``benchmarks/harness.py``.
"""

from __future__ import annotations

import time

import torch

from benchmarks import harness
from dlwb import runtime
from dlwb.gpt import GPT, GPTConfig, configure_optimizer, peak_flops
from dlwb.text import sequence_cross_entropy

PRESETS = {  # the chapter's presets: (model, batch size)
    "cpu": (dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0), 12),
    "gpu": (dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2), 64),
}
IMPLS = ("scratch", "sdpa")  # the course's side, the reference side


def parse_args(argv=None):
    parser = harness.parser(__doc__.split("\n\n")[0], repeats=5)
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: CUDA when present, else CPU)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="model size and batch (default: gpu on CUDA, cpu elsewhere)")
    parser.add_argument("--block-size", type=int, default=None, help="context length T (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per iteration (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None, help="iterations per timed round (default: 10 CPU, 50 GPU)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per implementation first")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    return harness.parse_args(parser, argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    args = parse_args(argv)
    session = harness.start(args, __file__)
    device = runtime.get_device(args.device, verbose=False)
    preset = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    model_kwargs, batch_size = PRESETS[preset]
    model_kwargs = dict(model_kwargs, block_size=args.block_size or model_kwargs["block_size"])
    batch_size = args.batch_size or batch_size
    steps = args.steps or (50 if device.type == "cuda" else 10)
    if args.smoke:
        steps, args.warmup, model_kwargs = 2, 1, dict(model_kwargs, n_layer=1)
    amp = device.type == "cuda"
    T = model_kwargs["block_size"]

    torch.manual_seed(args.seed)
    models, nets, optimizers = {}, {}, {}
    for impl in IMPLS:
        models[impl] = GPT(GPTConfig(vocab_size=65, attention=impl, **model_kwargs)).to(device)
        if impl != IMPLS[0]:
            models[impl].load_state_dict(models[IMPLS[0]].state_dict())  # the same weights
        nets[impl] = torch.compile(models[impl]) if args.compile else models[impl]
        optimizers[impl] = configure_optimizer(models[impl], 1e-3, device=device)
    g = torch.Generator().manual_seed(args.seed)
    batches = [(torch.randint(65, (batch_size, T), generator=g).to(device),
                torch.randint(65, (batch_size, T), generator=g).to(device)) for _ in range(4)]

    def step(impl: str, i: int) -> float:
        X, Y = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = sequence_cross_entropy(nets[impl](X), Y)
        optimizers[impl].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models[impl].parameters(), 1.0)
        optimizers[impl].step()
        return loss

    # Same weights, same batch: the first losses must agree (dropout aside).
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for m in models.values():
            m.eval()
        first = {impl: sequence_cross_entropy(nets[impl](batches[0][0]), batches[0][1]).item() for impl in IMPLS}
        for m in models.values():
            m.train()

    for impl in IMPLS:
        for i in range(args.warmup):
            step(impl, i)
    sync(device)
    flops_per_token, peak = models["sdpa"].flops_per_token(), peak_flops(device)

    def run(side, r):  # one timed round of one implementation; the rounds alternate the order
        impl = dict(zip(harness.SIDES, IMPLS))[side]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        for i in range(steps):
            loss = step(impl, i)
        loss.item()
        sync(device)
        rate = steps * batch_size * T / (time.perf_counter() - start)
        return {"tokens_per_s": rate, "ms_per_iter": 1000 * batch_size * T / rate, "first_loss": first[impl],
                "mfu": None if peak is None else flops_per_token * rate / peak,
                "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}

    print(f"dlwb.gpt.GPT training throughput on {runtime.describe_device(device)}: preset {preset}, {model_kwargs}, "
          f"batch {batch_size} x {T} tokens, bf16 {amp}, compile {args.compile}, {args.repeats} rounds of {steps} "
          "iterations each")
    runs = harness.interleave(run, args.repeats, seed=args.seed)
    figures = [harness.Figure("training tokens/s", "tokens_per_s", unit="tok/s", better="higher", sides=IMPLS),
               harness.Figure("first loss (same weights, same batch)", "first_loss", sides=IMPLS)]
    if peak is not None:
        figures.append(harness.Figure("MFU", "mfu", better="higher", sides=IMPLS))
    report = harness.Report(
        "gpt_throughput", f"GPT training throughput: from-scratch attention vs SDPA ({device.type})",
        what=("Training iterations (forward, backward, clip, AdamW) of dlwb.gpt.GPT with the same weights and "
              "batches: attention='scratch' (dlwb.attention, the 'course' column) against attention='sdpa' "
              "(F.scaled_dot_product_attention, the 'reference' column), alternating rounds."),
        summary=f"GPT from-scratch attention vs `F.scaled_dot_product_attention` ({device.type})",
        figures=figures,
        settings={"device": runtime.describe_device(device), "preset": preset, "model": model_kwargs,
                  "parameters": models["sdpa"].num_params(), "batch_size": batch_size,
                  "tokens_per_iter": batch_size * T, "bf16_autocast": amp, "compile": args.compile,
                  "steps_per_round": steps, "warmup": args.warmup},
        plot=harness.PerRepeat("tokens_per_s", xlabel="round", ylabel="training tokens/s",
                               sides=tuple(f"{impl} attention" for impl in IMPLS)))
    return harness.write_report(report, runs, session)


if __name__ == "__main__":
    main()
