"""GPU: the char Transformer's GPU configuration and the MNIST CNN on CUDA, course against reference.

Runs only where PyTorch sees a CUDA device; elsewhere it prints why it skipped and exits with
status 0, writing nothing. On a GPU:

1. the char Transformer in chapter 07's ``gpu`` preset, which is nanoGPT's
   ``config/train_shakespeare_char.py`` (6 layers x 6 heads x 384, context 256, batch 64, dropout
   0.2, lr 1e-3 decaying to 1e-4 at iteration 5000, published at val loss 1.4697), both sides in
   bfloat16 autocast: training tokens per second, MFU (``dlwb.gpt.peak_flops``) and the training
   time until the validation loss (20 fixed batches, evaluated every ``--eval-every`` seconds)
   first reaches 1.5;
2. ``benchmarks/mnist_cnn.py`` on CUDA: time to 99% test accuracy (``mnist_cnn_cuda.json``)::

    .venv/bin/python -m benchmarks.gpu                 # 300 s budget per Transformer run
"""

from __future__ import annotations

import torch

from benchmarks import chardata, harness, mnist_cnn, transformer_char
from benchmarks.reference import nanogpt_char

NAME = "gpu"
TARGET_VAL_LOSS = 1.5
PUBLISHED_VAL_LOSS = 1.4697  # nanoGPT, config/train_shakespeare_char.py, 5000 iterations
GPU_CONFIG = dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, batch_size=64, max_iters=5000,
                  lr_decay_iters=5000)


def parse_args(argv=None):
    p = harness.parser(__doc__.split("\n\n")[0], repeats=1)
    p.add_argument("--budget", type=float, default=300.0, help="seconds of training per Transformer run")
    p.add_argument("--eval-every", type=float, default=10.0, help="seconds between validation estimates")
    p.add_argument("--mnist-budget", type=float, default=60.0, help="seconds per MNIST run")
    return harness.parse_args(p, argv)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu benchmark skipped: PyTorch {torch.__version__} sees no CUDA device (nothing written).")
        return None
    session = harness.start(args, __file__)
    device = torch.device("cuda", 0)
    from dlwb.gpt import GPT, GPTConfig, peak_flops

    cfg = nanogpt_char.Config(**gpu_config(args.smoke))
    data = chardata.load(smoke=args.smoke)
    val_batches = [(X.to(device), Y.to(device)) for X, Y in chardata.fixed_windows(
        data.val_ids, cfg.block_size, cfg.batch_size, transformer_char.EVAL_BATCHES, transformer_char.EVAL_SEED)]
    budget = 5.0 if args.smoke else args.budget
    every = 1.0 if args.smoke else args.eval_every
    checkpoints = [every * k for k in range(1, int(budget / every) + 1)]
    flops_per_token = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=data.vocab_size, n_layer=cfg.n_layer,
                                    n_head=cfg.n_head, n_embd=cfg.n_embd, bias=cfg.bias)).flops_per_token()
    peak = peak_flops(device)

    def run(side, r):
        fn = transformer_char.run_course if side == "course" else transformer_char.run_reference
        torch.cuda.synchronize(device)
        clock, first, last, _ = fn(data, cfg, val_batches, checkpoints, args.seed + r, max_iters=cfg.max_iters,
                                   device=device, stop_below=TARGET_VAL_LOSS)
        torch.cuda.synchronize(device)
        final = clock.points[-1]
        tokens_per_s = final["tokens"] / clock.train_seconds
        hit = clock.first_below(TARGET_VAL_LOSS)
        return {"points": clock.points, "first_train_loss": first, "last_train_loss": last, "steps": final["step"],
                "tokens_per_s": tokens_per_s, "mfu": None if peak is None else flops_per_token * tokens_per_s / peak,
                "seconds_to_target": None if hit is None else hit["t_s"], "final_val_loss": final["val_loss"]}

    runs = harness.interleave(run, args.repeats, seed=args.seed)
    report = harness.Report(
        NAME, f"GPU: char Transformer (nanoGPT GPU config) on {torch.cuda.get_device_name(device)}",
        what=("dlwb.gpt + Trainer against the nanoGPT-style re-statement, both in bfloat16 autocast, nanoGPT's "
              "GPU configuration (6 x 6 x 384, context 256, batch 64, dropout 0.2); tokens/s, MFU and the "
              f"training time until the validation loss (20 fixed batches every {every:g} s) reaches "
              f"{TARGET_VAL_LOSS}, within {budget:g} s."),
        summary=f"char Transformer vs nanoGPT recipe, GPU configuration ({torch.cuda.get_device_name(device)})",
        figures=[harness.Figure("training tokens/s", "tokens_per_s", unit="tok/s", better="higher", headline=True),
                 harness.Figure("MFU", "mfu", better="higher"),
                 harness.Figure(f"seconds to val loss {TARGET_VAL_LOSS}", "seconds_to_target", unit="s",
                                headline=True),
                 harness.Figure("last val loss", "final_val_loss")],
        settings={"model_and_recipe": cfg.__dict__, "budget_s": budget, "eval_every_s": every,
                  "flops_per_token": flops_per_token, "peak_flops": peak, "data": data.source},
        notes=[f"nanoGPT publishes val loss {PUBLISHED_VAL_LOSS} for this configuration after 5000 iterations."],
        plot=harness.VAL_LOSS_CURVES)
    record = harness.write_report(report, runs, session)
    mnist_argv = ["--device", "cuda", "--threads", str(args.threads), "--repeats", str(args.repeats),
                  "--budget", str(args.mnist_budget), "--out-dir", str(args.out_dir)]
    mnist_cnn.main(mnist_argv + (["--smoke"] if args.smoke else []))
    return record


def gpu_config(smoke: bool) -> dict:
    """nanoGPT's GPU configuration; a small one for ``--smoke``."""
    if smoke:
        return dict(GPU_CONFIG, n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=8)
    return GPU_CONFIG


if __name__ == "__main__":
    main()
