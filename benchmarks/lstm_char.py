"""Char LSTM: chapter 05's CharLSTM and TBPTTTrainer against a char-rnn-style baseline, at equal training time.

Both sides are 2-layer LSTMs of 256 units over a 64-wide character embedding, trained on the
same split of tiny Shakespeare (90/10) with their own recipes: the course's chapter 05 settings
(``dlwb.rnn.CharLSTM``, ``dlwb.rnn.TBPTTTrainer`` over ``dlwb.text.BPTTBatches`` of 32 streams x
128 characters, Adam lr 2e-3, gradient norm clipped at 1) against char-rnn's
(``benchmarks/reference/lstm_char.py``: 50 streams x 50 characters, RMSprop lr 2e-3, element-wise
clipping at 5). Both carry the state from batch to batch. Each is evaluated on the Transformer
benchmark's 20 fixed validation batches of 12 windows x 64 characters, from a zero state, when its
training clock (evaluations excluded) passes each checkpoint::

    .venv/bin/python -m benchmarks.lstm_char                   # checkpoint 150 s
    .venv/bin/python -m benchmarks.lstm_char --checkpoints 60 --repeats 1
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from benchmarks import chardata, harness
from benchmarks.reference import lstm_char

NAME = "lstm_char"
TARGET_VAL_LOSS = 1.755  # the course's target for a 2 x 256 LSTM (embedding 64) at about 150 s of training
EVAL_BATCHES, EVAL_BATCH, EVAL_LEN, EVAL_SEED = 20, 12, 64, 7  # the Transformer benchmark's batches
COURSE = {"batch_size": 32, "seq_len": 128, "lr": 2e-3, "grad_clip": 1.0}  # notebooks/05_rnn_lstm.ipynb


def parse_args(argv=None):
    p = harness.parser(__doc__.split("\n\n")[0], repeats=1)
    p.add_argument("--checkpoints", type=float, nargs="+", default=[150.0],
                   help="seconds of training time at which to evaluate (default 150)")
    return harness.parse_args(p, argv)


@torch.no_grad()
def val_loss(model, batches) -> float:
    """Mean cross-entropy of ``model(X) -> (logits, state)`` over fixed batches, each from a zero state."""
    was_training = model.training
    model.eval()
    losses = [F.cross_entropy(model(X)[0].flatten(0, 1), Y.flatten()).item() for X, Y in batches]
    model.train(was_training)
    return sum(losses) / len(losses)


def run_course(data, cfg, val_batches, checkpoints, seed, max_steps):
    from dlwb.rnn import CharLSTM, TBPTTTrainer
    from dlwb.text import BPTTBatches, sequence_cross_entropy
    from dlwb.train import Callback

    net = CharLSTM(data.vocab_size, cfg.embed_dim, cfg.rnn_size, cfg.num_layers)
    trainer = TBPTTTrainer(net, torch.optim.Adam(net.parameters(), lr=COURSE["lr"]), sequence_cross_entropy,
                           device="cpu", grad_clip=COURSE["grad_clip"], progress=False)
    clock = chardata.TimeCheckpoints(checkpoints, lambda: val_loss(net, val_batches), max_steps=max_steps)
    tokens_per_step = COURSE["batch_size"] * COURSE["seq_len"]

    class Clock(Callback):
        def on_batch_end(self, trainer, logs):
            trainer.stop_training = clock.after_step(trainer.step, trainer.step * tokens_per_step)

    trainer.callbacks.append(Clock())
    clock.start()
    history = trainer.fit(BPTTBatches(data.train_ids, COURSE["batch_size"], COURSE["seq_len"]), 10_000)
    return clock, history.batches[0]["loss"], history.batches[-1]["loss"]


def run_reference(data, cfg, val_batches, checkpoints, seed, max_steps):
    holder = {"model": lstm_char.CharRNN(cfg)}  # evaluated at 0 s; train() builds its own with the same seed
    clock = chardata.TimeCheckpoints(checkpoints, lambda: val_loss(holder["model"], val_batches), max_steps=max_steps)

    def after_step(model, step, tokens):
        holder["model"] = model
        return clock.after_step(step, tokens)

    torch.manual_seed(seed)
    holder["model"] = lstm_char.CharRNN(cfg)
    torch.manual_seed(seed)
    clock.start()
    out = lstm_char.train(data.train_ids, cfg, after_step=after_step)
    return clock, out["first_loss"], out["last_loss"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    session = harness.start(args, __file__)
    checkpoints = [1.0, 2.0] if args.smoke else sorted(args.checkpoints)
    max_steps = 25 if args.smoke else 10**9  # the time budget decides
    data = chardata.load(smoke=args.smoke)
    cfg = lstm_char.Config(vocab_size=data.vocab_size)
    eval_batches = 2 if args.smoke else EVAL_BATCHES
    val_batches = chardata.fixed_windows(data.val_ids, EVAL_LEN, EVAL_BATCH, eval_batches, EVAL_SEED)
    curve = checkpoints if args.smoke else sorted(set(checkpoints) | {max(checkpoints) * k / 6 for k in range(1, 6)})
    print(f"char LSTM: {data.source}, checkpoints {checkpoints} s, {args.repeats} repeat(s)")

    def run(side, r):
        fn = run_course if side == "course" else run_reference
        clock, first, last = fn(data, cfg, val_batches, curve, args.seed + r, max_steps)
        return clock.result(checkpoints, first, last)

    runs = harness.interleave(run, args.repeats, seed=args.seed)
    report = harness.Report(
        NAME, "Char LSTM vs char-rnn-style baseline (tiny Shakespeare, CPU)",
        what=("dlwb.rnn.CharLSTM + TBPTTTrainer (chapter 05: 32 x 128 BPTT batches, Adam 2e-3, norm clip 1) "
              "against a char-rnn-style re-statement (benchmarks/reference/lstm_char.py: 50 x 50 batches, "
              "RMSprop 2e-3, element-wise clip 5); both 2 x 256 LSTM over a 64-wide embedding; validation loss "
              "on the Transformer benchmark's 20 fixed batches of 12 x 64 characters, from a zero state, "
              "at the checkpoints of training time."),
        summary="char LSTM 2×256 vs char-rnn recipe",
        figures=[*chardata.TimeCheckpoints.figures(checkpoints, headline=checkpoints),
                 harness.Figure("training tokens/s", "tokens_per_s", unit="tok/s", better="higher")],
        settings={"course": COURSE, "reference": cfg.__dict__, "checkpoints_s": checkpoints,
                  "eval": {"batches": eval_batches, "batch_size": EVAL_BATCH, "length": EVAL_LEN}, "data": data.source},
        notes=[f"The course's target for this model size at about 150 s: val loss {TARGET_VAL_LOSS}. "
               "char-rnn publishes no tiny-Shakespeare loss."],
        plot=harness.VAL_LOSS_CURVES,
        published={"target_val_loss_at_about_150s": TARGET_VAL_LOSS})
    return harness.write_report(report, runs, session)


if __name__ == "__main__":
    main()
