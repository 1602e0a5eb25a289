"""Text as integers, and batches of it for character-level language models.

Defined in chapter 05 (a character-level LSTM on tiny Shakespeare); the Transformer chapter
reuses it. A language model reads ids ``X`` and predicts, at every position, the id that comes
next: the targets ``y`` are the same text shifted by one character.

- :class:`Vocab` maps characters to ids and back.
- :func:`split_ids` keeps the first 90% for training and the last 10% for validation.
- :func:`windows` cuts independent ``(X, y)`` examples, to shuffle (Keras, a ``DataLoader``).
- :class:`BPTTBatches` lays the text out as parallel streams whose consecutive batches
  continue each other, so that a recurrent model can carry its state across batches.
- :func:`sequence_cross_entropy` is the loss, in nats per character; :func:`sample_next`
  draws the next character at a temperature (and, for chapter 07, from the top k only;
  for chapter 11, from the nucleus of probability top p).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


class Vocab:
    """The characters of a text, each with an integer id: ``encode`` and ``decode`` are inverses.

    Ids follow the sorted characters, so they do not depend on where a character first
    appears. ``len(vocab)`` is the number of characters V.

    Defined in chapter 05.
    """

    def __init__(self, text: str) -> None:
        if not text:
            raise ValueError("cannot build a vocabulary from an empty text")
        self.chars = sorted(set(text))  # id -> character
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}  # character -> id

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """The ids of ``text``, an int64 array of shape (len(text),)."""
        try:
            return np.array([self.stoi[ch] for ch in text], dtype=np.int64)
        except KeyError as err:
            raise KeyError(f"character {err.args[0]!r} is not in the vocabulary of {len(self)} characters; "
                           "build the Vocab from a text that contains it") from None

    def decode(self, ids) -> str:
        """The text of a sequence of ids (a list, NumPy array or CPU tensor)."""
        return "".join(self.chars[int(i)] for i in np.asarray(ids).ravel())

    def __repr__(self) -> str:
        return f"Vocab({len(self)} characters: {''.join(self.chars)!r})"


def split_ids(ids, val_fraction: float = 0.1):
    """The first ``1 - val_fraction`` of the ids for training, the rest for validation.

    The split is contiguous, not shuffled: neighbouring characters are nearly the same
    example, so a shuffled split would leak the validation text into training.

    Defined in chapter 05.
    """
    n_train = int(len(ids) * (1 - val_fraction))
    if not 0 < n_train < len(ids):
        raise ValueError(f"val_fraction={val_fraction} leaves no training or no validation ids out of {len(ids)}")
    return ids[:n_train], ids[n_train:]


def windows(ids, seq_len: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Independent examples: windows of ``seq_len + 1`` ids, one starting every ``stride`` ids.

    Returns ``X`` and ``y``, each (N, seq_len) int64, with ``y[:, t] = X[:, t + 1]`` and the
    last target the id after the window. The default stride ``seq_len`` gives non-overlapping
    inputs. Shuffle them freely: each window starts from an empty state.

    Defined in chapter 05.
    """
    ids = np.asarray(ids, dtype=np.int64)
    stride = stride or seq_len
    if len(ids) < seq_len + 1:
        raise ValueError(f"{len(ids)} ids are too few for one window of seq_len + 1 = {seq_len + 1}")
    starts = np.arange(0, len(ids) - seq_len, stride)  # (N,)
    chunks = ids[starts[:, None] + np.arange(seq_len + 1)]  # (N, seq_len + 1)
    return chunks[:, :-1], chunks[:, 1:]  # (N, seq_len) each


class BPTTBatches:
    """Consecutive batches for truncated backpropagation through time.

    The ids are cut into ``batch_size`` streams of equal length L, the rows of
    ``X_all = ids[:B*L].view(B, L)``; the targets ``Y_all`` are the same streams shifted by one
    id. Batch k is ``(X_all[:, kT:(k+1)T], Y_all[:, kT:(k+1)T])`` with T = ``seq_len``, both
    (B, T) int64 tensors, so row b of batch k+1 continues row b of batch k: a recurrent model
    may carry its state from one batch to the next. Only full batches are made; ``len()`` is
    their number, and every iteration starts again at the beginning.

    Defined in chapter 05.
    """

    def __init__(self, ids, batch_size: int, seq_len: int) -> None:
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        stream_len = (len(ids) - 1) // batch_size  # -1: the last input needs a next id
        if stream_len < seq_len:
            raise ValueError(f"{len(ids)} ids make {batch_size} streams of {stream_len}, shorter than "
                             f"seq_len={seq_len}: use a smaller batch_size or seq_len")
        self.batch_size, self.seq_len = batch_size, seq_len
        n = batch_size * stream_len
        self.X_all = ids[:n].view(batch_size, stream_len)  # (B, L)
        self.Y_all = ids[1 : n + 1].view(batch_size, stream_len)  # (B, L): the next id of each input
        self.num_batches = stream_len // seq_len

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        for k in range(self.num_batches):
            cols = slice(k * self.seq_len, (k + 1) * self.seq_len)
            yield self.X_all[:, cols], self.Y_all[:, cols]  # (B, T) each


def sequence_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: logits (B, T, V), targets y (B, T), in nats per character.

    ``ln V`` for a model that knows nothing (uniform predictions). Computed in float32, also
    for logits from a bfloat16 autocast forward pass. Chapter 07 trains its GPT with it too.

    Defined in chapter 05.
    """
    # .float(): bfloat16 logits (autocast, a bf16 model) would otherwise get a bfloat16 log-softmax and mean
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))  # (B*T, V) against (B*T,)


def sample_next(logits: torch.Tensor, temperature: float = 1.0,
                generator: torch.Generator | None = None, top_k: int | None = None,
                top_p: float | None = None) -> torch.Tensor:
    """Draw one id per row of ``logits`` (..., V) from ``softmax(logits / temperature)``.

    Temperature 1 samples the model's own distribution; below 1 sharpens it (more likely,
    more repetitive text), above 1 flattens it (more surprising, more mistakes); 0 takes the
    arg-max. With ``top_k`` (chapter 07), only the ``top_k`` largest logits of each row keep
    a chance; the others get probability 0. With ``top_p`` (chapter 11, nucleus sampling),
    only the most likely ids whose probabilities first add up to at least ``top_p`` keep a
    chance: sorted so that ``p_(1) >= p_(2) >= ...``, id ``(j)`` stays when
    ``p_(1) + ... + p_(j-1) < top_p``, so the most likely id always stays and ``top_p = 1``
    keeps them all. ``top_k`` acts first, then ``top_p`` on what it kept, then the softmax
    renormalises. Returns the ids, shape ``logits.shape[:-1]``.

    Defined in chapter 05.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for all ids), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None for all ids), got {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]  # (..., 1): k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))  # the others: probability 0
    if top_p is not None and top_p < 1:  # top_p = 1 keeps every id: skip the sort
        sorted_probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)  # (..., V) each
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (..., V): the mass of the ids ranked above
        drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= top_p)  # (..., V)
        logits = logits.masked_fill(drop, float("-inf"))  # outside the nucleus: probability 0
    probs = torch.softmax(logits, dim=-1)  # (..., V)
    flat = probs.reshape(-1, probs.shape[-1])  # (rows, V)
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
