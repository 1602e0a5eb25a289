"""Tiny Shakespeare for the character-level benchmarks, and their shared time-checkpointed evaluation.

Both sides of a character benchmark see the same split (nanoGPT's ``data/shakespeare_char/prepare.py``:
the sorted characters as the vocabulary, 65 of them; the first 90% of the text for training, the
rest for validation) and are evaluated on the same fixed validation batches, at the same points
of their *training* time: :class:`TimeCheckpoints` pauses the clock while it evaluates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from benchmarks.harness import Figure, Stopwatch


@dataclass
class CharData:
    train_ids: torch.Tensor  # (N_train,) int64
    val_ids: torch.Tensor  # (N_val,) int64
    vocab_size: int  # 65 for tiny Shakespeare
    source: str  # where the text came from


def load(smoke: bool = False) -> CharData:
    """Tiny Shakespeare (``$DLWB_DATA_DIR`` or the cache; else ``dlwb.data``'s offline fallback), split 90/10.

    With ``smoke`` only the first 100,000 characters are used (the vocabulary of those).
    """
    from dlwb import data
    from dlwb.text import Vocab, split_ids

    text = data.load_text("tinyshakespeare")
    source = "tiny Shakespeare" if len(text) == 1_115_394 else f"offline fallback text ({len(text):,} characters)"
    if smoke:
        text, source = text[:100_000], source + ", first 100,000 characters (smoke)"
    vocab = Vocab(text)
    train, val = split_ids(torch.from_numpy(vocab.encode(text)), val_fraction=0.1)
    return CharData(train, val, len(vocab), source)


def fixed_windows(ids: torch.Tensor, block_size: int, batch_size: int, num_batches: int,
                  seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``num_batches`` batches ``(X, Y)`` of random windows of ``ids``, each ``(batch_size, block_size)``.

    Drawn once from their own generator: every evaluation of every side sees the same batches.
    """
    g = torch.Generator().manual_seed(seed)
    offsets = torch.arange(block_size + 1)  # (T + 1,)
    batches = []
    for _ in range(num_batches):
        starts = torch.randint(len(ids) - block_size, (batch_size,), generator=g)  # (B,)
        windows = ids[starts[:, None] + offsets]  # (B, T + 1)
        batches.append((windows[:, :-1], windows[:, 1:]))  # X (B, T), Y (B, T)
    return batches


class TimeCheckpoints:
    """Evaluate at given seconds of training time; the clock stops while evaluating.

    The training loop calls :meth:`start` once, then :meth:`after_step` after every
    optimisation step with the number of steps taken and the tokens trained on so far;
    ``after_step`` evaluates when the training time has passed the next checkpoint and
    returns ``True`` once the last checkpoint is done or ``max_steps`` is reached. A
    checkpoint that training ends before reaching gets the final evaluation (marked
    ``"finished": True``). With ``stop_below``, training also ends at the first checkpoint whose
    validation loss is at most that. ``points`` holds ``{t_s, step, tokens, val_loss}`` per evaluation.
    """

    def __init__(self, checkpoints: Sequence[float], evaluate: Callable[[], float], *, max_steps: int,
                 extra_steps: Sequence[int] = (), stop_below: float | None = None) -> None:
        self.checkpoints = sorted(checkpoints)
        self.evaluate, self.max_steps, self.stop_below = evaluate, max_steps, stop_below
        self.extra_steps = set(extra_steps)  # also evaluate at these step counts (e.g. the recipe's max_iters)
        self.clock = Stopwatch()
        self.points: list[dict] = []
        self._next = 0

    def start(self) -> None:
        self.points.append(self._point(0, 0))
        self.clock.start()

    def _point(self, step: int, tokens: int) -> dict:
        self.clock.pause()
        point = {"t_s": round(self.clock.elapsed, 2), "step": step, "tokens": tokens, "val_loss": self.evaluate()}
        self.clock.start()
        return point

    def after_step(self, step: int, tokens: int) -> bool:
        elapsed = self.clock.elapsed
        if step in self.extra_steps:
            self.points.append({**self._point(step, tokens), "at_step": step})
        while self._next < len(self.checkpoints) and elapsed >= self.checkpoints[self._next]:
            self.points.append({**self._point(step, tokens), "checkpoint_s": self.checkpoints[self._next]})
            self._next += 1
            if self.stop_below is not None and self.points[-1]["val_loss"] <= self.stop_below:
                self._next = len(self.checkpoints)
        if self._next == len(self.checkpoints):
            return True
        if step >= self.max_steps:  # the recipe's budget is spent before the last checkpoint
            final = self._point(step, tokens)
            for c in self.checkpoints[self._next:]:
                self.points.append({**final, "checkpoint_s": c, "finished": True})
            self._next = len(self.checkpoints)
            return True
        return False

    def first_below(self, value: float) -> dict | None:
        """The first evaluation whose validation loss is at most ``value``, if any."""
        return next((p for p in self.points if p["val_loss"] <= value), None)

    def result(self, checkpoints: Sequence[float], first_loss: float, last_loss: float) -> dict:
        """A run's record: points, steps, training time, tokens/s, val loss and step at each checkpoint."""
        final = self.points[-1]
        result = {"points": self.points, "first_train_loss": first_loss, "last_train_loss": last_loss,
                  "steps": final["step"], "train_seconds": round(self.train_seconds, 2),
                  "tokens_per_s": final["tokens"] / self.train_seconds}
        for c in checkpoints:
            p = self.at(c)
            result[f"val_loss_at_{c:g}s"] = None if p is None else p["val_loss"]
            result[f"step_at_{c:g}s"] = None if p is None else p["step"]
        return result

    @staticmethod
    def figures(checkpoints: Sequence[float], *, steps: bool = False, headline: Sequence[float] = ()) -> list[Figure]:
        """The report's rows for the records :meth:`result` writes: the validation loss at each checkpoint
        (target: at most the reference's), with the iteration each side had reached beside it when ``steps``;
        the checkpoints in ``headline`` are also rows of the README's Performance table."""
        return [Figure(f"val loss at {c:g} s of training", f"val_loss_at_{c:g}s", target=1.0,
                       detail=(f"step_at_{c:g}s", "iter {:g}") if steps else None, headline=c in headline)
                for c in checkpoints]

    def at(self, checkpoint: float) -> dict | None:
        """The evaluation made for ``checkpoint`` seconds, if training got there."""
        return next((p for p in self.points if p.get("checkpoint_s") == checkpoint), None)

    @property
    def train_seconds(self) -> float:
        return self.clock.elapsed
