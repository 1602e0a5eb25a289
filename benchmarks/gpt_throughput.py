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

    python benchmarks/gpt_throughput.py                      # the chapter's cpu preset on the CPU
    python benchmarks/gpt_throughput.py --block-size 256     # a longer context
    python benchmarks/gpt_throughput.py --device cuda --compile

Writes ``benchmarks/results/gpt_throughput.json`` (and ``.md``, ``.png``) through ``benchmarks/harness.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` as a package, run as a script

import torch  # noqa: E402

from benchmarks import harness  # noqa: E402
from dlwb import runtime  # noqa: E402
from dlwb.gpt import GPT, GPTConfig, configure_optimizer, gpt_loss, peak_flops  # noqa: E402

PRESETS = {  # the chapter's presets: (model, batch size)
    "cpu": (dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0), 12),
    "gpu": (dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2), 64),
}
IMPLS = ("scratch", "sdpa")


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
    return parser.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    harness.pin_threads(args.threads)
    args.rounds = args.repeats  # timed rounds per implementation, alternating
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
            loss = gpt_loss(nets[impl](X), Y)
        optimizers[impl].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models[impl].parameters(), 1.0)
        optimizers[impl].step()
        return loss

    # Same weights, same batch: the first losses must agree (dropout aside).
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for m in models.values():
            m.eval()
        first = {impl: gpt_loss(nets[impl](batches[0][0]), batches[0][1]).item() for impl in IMPLS}
        for m in models.values():
            m.train()

    for impl in IMPLS:
        for i in range(args.warmup):
            step(impl, i)
    sync(device)
    rates = {impl: [] for impl in IMPLS}
    peak_memory = {}
    for r in range(args.rounds):
        for impl in (IMPLS if r % 2 == 0 else IMPLS[::-1]):  # alternate the order
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            start = time.perf_counter()
            for i in range(steps):
                loss = step(impl, i)
            loss.item()
            sync(device)
            rates[impl].append(steps * batch_size * T / (time.perf_counter() - start))
            if device.type == "cuda":
                peak_memory[impl] = torch.cuda.max_memory_allocated(device) / 2**20

    flops_per_token = models["sdpa"].flops_per_token()
    peak = peak_flops(device)
    results = {}
    for impl in IMPLS:
        median = statistics.median(rates[impl])
        results[impl] = {
            "tokens_per_s": median,
            "ms_per_iter": 1000 * batch_size * T / median,
            "tokens_per_s_rounds": rates[impl],
            "mfu": None if peak is None else flops_per_token * median / peak,
            "peak_memory_mib": peak_memory.get(impl),
            "first_loss": first[impl],
        }
    ratio = results["scratch"]["tokens_per_s"] / results["sdpa"]["tokens_per_s"]
    report = harness.new_report(
        "gpt_throughput", f"GPT training throughput: from-scratch attention vs SDPA ({device.type})", args,
        what=("Training iterations (forward, backward, clip, AdamW) of dlwb.gpt.GPT with the same weights and "
              "batches: attention='scratch' (dlwb.attention, the 'course' column) against attention='sdpa' "
              "(F.scaled_dot_product_attention, the 'reference' column), alternating rounds."),
        settings={"device": runtime.describe_device(device), "preset": preset, "model": model_kwargs,
                  "parameters": models["sdpa"].num_params(), "batch_size": batch_size,
                  "tokens_per_iter": batch_size * T, "bf16_autocast": amp, "compile": args.compile,
                  "steps_per_round": steps, "warmup": args.warmup})
    report["runs"] = {side: [{"repeat": r, "tokens_per_s": rate, "first_loss": first[impl]}
                             for r, rate in enumerate(rates[impl])]
                      for side, impl in zip(harness.SIDES, IMPLS)}
    report["results"] = results
    report["metrics"] = [
        harness.metric("training tokens/s", results["scratch"]["tokens_per_s"], results["sdpa"]["tokens_per_s"],
                       unit="tok/s", better="higher", course_label="scratch", reference_label="sdpa"),
        harness.metric("first loss (same weights, same batch)", first["scratch"], first["sdpa"], better="lower",
                       course_label="scratch", reference_label="sdpa")]
    if peak is not None:
        report["metrics"].append(harness.metric("MFU", results["scratch"]["mfu"], results["sdpa"]["mfu"],
                                                better="higher", course_label="scratch", reference_label="sdpa"))
    report["curves"] = [{"label": f"{impl} attention", "side": side, "x": list(range(1, len(rates[impl]) + 1)),
                         "y": rates[impl]} for side, impl in zip(harness.SIDES, IMPLS)]
    report["plot"] = {"xlabel": "round", "ylabel": "training tokens/s"}

    print(f"dlwb.gpt.GPT training throughput on {runtime.describe_device(device)}, torch {torch.__version__}")
    print(f"preset {preset}: {model_kwargs}, batch {batch_size} x {T} tokens, bf16 {amp}, compile {args.compile}, "
          f"{args.rounds} rounds of {steps} iterations each")
    header = f"{'attention':<10} {'tokens/s':>12} {'ms/iter':>9} {'MFU':>7} {'peak MiB':>9} {'relative':>9}"
    print(header)
    print("-" * len(header))
    for impl in IMPLS:
        res = results[impl]
        mfu = "n/a" if res["mfu"] is None else f"{res['mfu']:.1%}"
        mem = "-" if res["peak_memory_mib"] is None else f"{res['peak_memory_mib']:.0f}"
        print(f"{impl:<10} {res['tokens_per_s']:>12,.0f} {res['ms_per_iter']:>9.1f} {mfu:>7} {mem:>9} "
              f"{res['tokens_per_s'] / results['sdpa']['tokens_per_s']:>9.2f}")
    print(f"ratio scratch / sdpa (tokens/s): {ratio:.2f}; first losses: "
          + ", ".join(f"{impl} {first[impl]:.4f}" for impl in IMPLS))
    harness.write_report(report, args.out_dir, started=started)
    return report


if __name__ == "__main__":
    main()
