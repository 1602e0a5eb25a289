"""Char Transformer: chapter 07's GPT and Trainer against a nanoGPT-style baseline, at equal training time.

Both sides train the same model shape on the same split of tiny Shakespeare (90/10, 65
characters) with the same recipe: 4 layers, 4 heads, width 128, context 64, batch 12, AdamW
(lr 1e-3, betas 0.9 / 0.99, weight decay 0.1), 100 warm-up iterations and a cosine decay to
1e-4 at iteration 2000, gradient clipping at 1.0, no dropout. The course side is
``dlwb.gpt`` (GPT, RandomBatches, configure_optimizer) with chapter 02's
``dlwb.optim.warmup_cosine``, trained by ``dlwb.train.Trainer``; the reference is
``benchmarks/reference/nanogpt_char.py``. Each is evaluated on the same 20 fixed validation
batches (12 x 64 characters, nanoGPT's ``--eval_iters=20``) when its training clock
(evaluations excluded) passes each checkpoint, and stops at the last checkpoint or at
iteration 2000. Reported: validation loss at each checkpoint, training tokens per second, and
the ratios course / reference::

    .venv/bin/python -m benchmarks.transformer_char                       # checkpoints 60, 150, 300 s
    .venv/bin/python -m benchmarks.transformer_char --checkpoints 60 150 --repeats 1
    .venv/bin/python -m benchmarks.transformer_char --reproduce           # to iteration 2000, both sides
"""

from __future__ import annotations

from functools import partial

import torch

from benchmarks import chardata, harness
from benchmarks.reference import nanogpt_char

NAME = "transformer_char"
PUBLISHED_VAL_LOSS = 1.8857  # nanoGPT CPU command at iteration 2000, seed 1337 (README: "1.88")
EVAL_BATCHES, EVAL_SEED = 20, 7


def parse_args(argv=None):
    p = harness.parser(__doc__.split("\n\n")[0], repeats=1)
    p.add_argument("--checkpoints", type=float, nargs="+", default=[60.0, 150.0, 300.0],
                   help="seconds of training time at which to evaluate (default 60 150 300)")
    p.add_argument("--reproduce", action="store_true",
                   help="train both sides for the recipe's full 2000 iterations (no time limit)")
    return harness.parse_args(p, argv)


def run_course(data, cfg, val_batches, checkpoints, seed, *, max_iters, device="cpu", stop_below=None):
    """dlwb.gpt's model, optimizer, schedule and batches, trained by dlwb.train.Trainer (bf16 autocast on CUDA and bf16 CPUs)."""
    from dlwb.gpt import GPT, GPTConfig, RandomBatches, configure_optimizer
    from dlwb.optim import warmup_cosine
    from dlwb.text import sequence_cross_entropy
    from dlwb.train import Callback, Trainer

    device = torch.device(device)
    model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=data.vocab_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias)).to(device)
    optimizer = configure_optimizer(model, cfg.learning_rate, weight_decay=cfg.weight_decay,
                                    betas=(cfg.beta1, cfg.beta2), device=device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(  # nanoGPT's warm-up: from lr / (W + 1)
        warmup_cosine, lr=1.0, warmup_steps=cfg.warmup_iters, total_steps=cfg.lr_decay_iters,
        start_lr=1 / (cfg.warmup_iters + 1), final_lr=cfg.min_lr / cfg.learning_rate))
    trainer = Trainer(model, optimizer, sequence_cross_entropy, device=device, amp=True, grad_clip=cfg.grad_clip,
                      scheduler=scheduler, progress=False)
    clock = chardata.TimeCheckpoints(checkpoints, lambda: trainer.evaluate(val_batches)["loss"], max_steps=max_iters,
                                     extra_steps=[cfg.max_iters], stop_below=stop_below)

    class Clock(Callback):
        def on_batch_end(self, trainer, logs):
            trainer.stop_training = clock.after_step(trainer.step, trainer.step * cfg.batch_size * cfg.block_size)

    trainer.callbacks.append(Clock())
    clock.start()
    batches = RandomBatches(data.train_ids.to(device), cfg.block_size, cfg.batch_size, max_iters, seed=seed)
    history = trainer.fit(batches, 1)
    return clock, history.batches[0]["loss"], history.batches[-1]["loss"], model


def run_reference(data, cfg, val_batches, checkpoints, seed, *, max_iters, device="cpu", stop_below=None):
    """The nanoGPT-style re-statement (benchmarks/reference/nanogpt_char.py), its own loop."""
    device = torch.device(device)
    bf16 = device.type == "cuda"
    recipe_iters = cfg.max_iters  # evaluated there too: the published figure's iteration
    cfg = nanogpt_char.Config(**{**cfg.__dict__, "vocab_size": data.vocab_size, "max_iters": max_iters})
    holder = {}
    clock = chardata.TimeCheckpoints(checkpoints, lambda: nanogpt_char.loss_on(holder["model"], val_batches, bf16),
                                     max_steps=max_iters, extra_steps=[recipe_iters],
                                     stop_below=stop_below)

    def after_step(model, step, tokens):
        holder["model"] = model
        return clock.after_step(step, tokens)

    torch.manual_seed(seed)
    holder["model"] = nanogpt_char.CharTransformer(cfg).to(device)  # for the evaluation at 0 s; train() builds its own
    torch.manual_seed(seed)
    clock.start()
    out = nanogpt_char.train(data.train_ids, cfg, after_step=after_step, device=device, bf16=bf16)
    return clock, out["first_loss"], out["last_loss"], out["model"]


def _with_curve(checkpoints, every):
    """The reported checkpoints plus evenly spaced extra ones for the plot."""
    last = max(checkpoints)
    extra = [every * k for k in range(1, int(last / every) + 1)]
    return sorted(set(checkpoints) | set(extra))


def main(argv=None) -> dict:
    args = parse_args(argv)
    session = harness.start(args, __file__)
    cfg = nanogpt_char.Config()
    checkpoints = [0.5, 1.0, 2.0] if args.smoke else sorted(args.checkpoints)
    if args.reproduce:
        checkpoints = [24 * 3600.0]  # a day: in practice, until iteration 2000
    max_iters = 30 if args.smoke else cfg.max_iters
    curve_every = 0.5 if args.smoke else (30.0 if max(checkpoints) <= 600 else 3600.0)
    data = chardata.load(smoke=args.smoke)
    val_batches = chardata.fixed_windows(data.val_ids, cfg.block_size, cfg.batch_size, EVAL_BATCHES, EVAL_SEED)
    print(f"char Transformer: {data.source}, checkpoints {checkpoints} s, {args.repeats} repeat(s)")

    def run(side, r):
        fn = run_course if side == "course" else run_reference
        clock, first, last, _ = fn(data, cfg, val_batches, _with_curve(checkpoints, curve_every), args.seed + r,
                                   max_iters=max_iters)
        result = clock.result(checkpoints, first, last)
        at_max = next((p for p in clock.points if p.get("at_step") == cfg.max_iters), None)
        result["val_loss_at_iter_2000"] = None if at_max is None else at_max["val_loss"]
        return result

    runs = harness.interleave(run, args.repeats, seed=args.seed)
    at_checkpoints = [] if args.reproduce else chardata.TimeCheckpoints.figures(checkpoints, steps=True,
                                                                                 headline=checkpoints[:1])
    report = harness.Report(
        NAME, "Char Transformer vs nanoGPT-style baseline (tiny Shakespeare, CPU)",
        what=("dlwb.gpt.GPT + dlwb.train.Trainer against a nanoGPT-style re-statement "
              "(benchmarks/reference/nanogpt_char.py); 4 layers x 4 heads x 128, context 64, batch 12, "
              "AdamW lr 1e-3 with 100 warm-up iterations and a cosine decay to 1e-4 at iteration 2000, no dropout; "
              "validation loss on 20 fixed batches of 12 x 64 characters at the checkpoints of training time "
              "(evaluations not counted); each side stops at its last checkpoint or at iteration 2000."),
        summary="char Transformer vs nanoGPT recipe (4×4×128, ctx 64, batch 12; course in bf16 where native)",
        figures=[*at_checkpoints,
                 harness.Figure("training tokens/s", "tokens_per_s", unit="tok/s", better="higher", target=1.10,
                                headline=True),
                 harness.Figure("val loss at iteration 2000", "val_loss_at_iter_2000", target=1.0, headline=True,
                                absent=(None, f"published {PUBLISHED_VAL_LOSS}"))],
        settings={"model_and_recipe": cfg.__dict__, "checkpoints_s": checkpoints, "max_iters": max_iters,
                  "eval_batches": EVAL_BATCHES, "data": data.source, "reproduce": args.reproduce},
        notes=[f"Published reference figure: val loss {PUBLISHED_VAL_LOSS} at iteration 2000 (seed 1337, nanoGPT's "
               "CPU command); 'n/a' at iteration 2000 means that side did not get there within the time budget "
               "(run with --reproduce for the full 2000 iterations)."],
        plot=harness.VAL_LOSS_CURVES,
        published={"val_loss_at_iter_2000_seed_1337": PUBLISHED_VAL_LOSS})
    return harness.write_report(report, runs, session)


if __name__ == "__main__":
    main()
