"""Recurrent networks from scratch: the tanh RNN cell, the LSTM cell, and a character-level LSTM.

Defined in chapter 05 (``notebooks/05_rnn_lstm.ipynb``), where each cell is derived, checked
against ``nn.RNNCell``, ``nn.LSTMCell`` / ``nn.LSTM`` and ``keras.layers.SimpleRNN`` /
``keras.layers.LSTM``, used to show why gradients vanish through a tanh RNN but can survive in
an LSTM, and where :class:`CharLSTM` is trained on tiny Shakespeare with truncated
backpropagation through time (:class:`TBPTTTrainer`). Lab 05 asks for the LSTM cell.

The cells work on PyTorch tensors (so autograd can differentiate them) and use PyTorch's weight
layout; rows are samples::

    x            (B, D)      one time step of a batch of inputs
    h, c         (B, H)      hidden state, and the LSTM's cell state
    W_ih         (G*H, D)    input-to-hidden weights; G = 1 for the RNN, 4 for the LSTM (gates i, f, g, o stacked)
    W_hh         (G*H, H)    hidden-to-hidden weights
    b_ih, b_hh   (G*H,)      two biases; only their sum matters (Keras keeps one)

Whole sequences are batch-first, ``xs`` of shape ``(B, T, D)``, as in Keras and in
``nn.LSTM(batch_first=True)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dlwb.text import Vocab, sample_next
from dlwb.train import Trainer


def rnn_cell(x, h, W_ih, W_hh, b_ih, b_hh):
    """One step of the tanh RNN, as ``nn.RNNCell``: ``h_new = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)``.

    x (B, D), h (B, H), W_ih (H, D), W_hh (H, H), b_ih and b_hh (H,). Returns h_new (B, H).

    Defined in chapter 05.
    """
    return torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)  # (B, H)


def rnn_forward(xs, h0, W_ih, W_hh, b_ih, b_hh):
    """Unroll :func:`rnn_cell` over a sequence: ``xs`` (B, T, D) from ``h0`` (B, H).

    Returns the hidden states of every step, ``hs`` (B, T, H); the last one is ``hs[:, -1]``.
    The same weights are used at every step.

    Defined in chapter 05.
    """
    h, hs = h0, []
    for t in range(xs.shape[1]):
        h = rnn_cell(xs[:, t], h, W_ih, W_hh, b_ih, b_hh)  # (B, H)
        hs.append(h)
    return torch.stack(hs, dim=1)  # (B, T, H)


def lstm_cell(x, h, c, W_ih, W_hh, b_ih, b_hh):
    """One step of the LSTM, as ``nn.LSTMCell``; returns ``(h_new, c_new)``, each (B, H).

    With W_ih (4H, D), W_hh (4H, H) and b_ih, b_hh (4H,) holding the four gates stacked in
    PyTorch's order i, f, g, o::

        z     = x W_ih^T + b_ih + h W_hh^T + b_hh     (B, 4H), cut into four (B, H) blocks
        i     = sigmoid(z_i)                          input gate: how much of the candidate to write
        f     = sigmoid(z_f)                          forget gate: how much of the old cell to keep
        g     = tanh(z_g)                             candidate cell values
        o     = sigmoid(z_o)                          output gate: how much of the cell to show
        c_new = f * c + i * g                         elementwise
        h_new = o * tanh(c_new)

    Defined in chapter 05.
    """
    z = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh  # (B, 4H)
    z_i, z_f, z_g, z_o = z.chunk(4, dim=-1)  # four (B, H) blocks, in PyTorch's gate order i, f, g, o
    i, f, o = torch.sigmoid(z_i), torch.sigmoid(z_f), torch.sigmoid(z_o)
    g = torch.tanh(z_g)
    c_new = f * c + i * g  # (B, H): an additive update, the path along which gradients survive
    h_new = o * torch.tanh(c_new)  # (B, H)
    return h_new, c_new


def lstm_forward(xs, state, W_ih, W_hh, b_ih, b_hh):
    """Unroll :func:`lstm_cell` over ``xs`` (B, T, D) from ``state = (h0, c0)``, each (B, H).

    Returns ``(hs, (h_T, c_T))``: the hidden states of every step (B, T, H) and the final state,
    like one layer of ``nn.LSTM(batch_first=True)``.

    Defined in chapter 05.
    """
    h, c = state
    hs = []
    for t in range(xs.shape[1]):
        h, c = lstm_cell(xs[:, t], h, c, W_ih, W_hh, b_ih, b_hh)  # (B, H) each
        hs.append(h)
    return torch.stack(hs, dim=1), (h, c)  # (B, T, H)


def weights_to_keras(W_ih, W_hh, b_ih, b_hh) -> list[np.ndarray]:
    """PyTorch's RNN or LSTM weights as the list ``set_weights`` of ``keras.layers.SimpleRNN`` / ``LSTM`` takes.

    Keras multiplies from the right, ``x @ kernel``, so it stores the transposes, and it has
    one bias::

        kernel           = W_ih^T          (D, G*H)
        recurrent_kernel = W_hh^T          (H, G*H)
        bias             = b_ih + b_hh     (G*H,)

    Both frameworks stack an LSTM's gates in the same order (PyTorch's i, f, g, o is Keras's
    i, f, c, o), so no reordering is needed. Not valid for the GRU, whose gate order and biases
    differ between the two.

    Defined in chapter 05.
    """
    W_ih, W_hh, b_ih, b_hh = (torch.as_tensor(w).detach().cpu() for w in (W_ih, W_hh, b_ih, b_hh))
    return [W_ih.T.numpy().copy(), W_hh.T.numpy().copy(), (b_ih + b_hh).numpy()]


class CharLSTM(nn.Module):
    """A character-level language model: embedding, stacked LSTM, linear read-out.

    ``forward(X, state=None)`` maps character ids X (B, T) to next-character logits (B, T, V)
    and returns the final ``state = (h, c)``, each (num_layers, B, hidden): passed to the next
    call, it continues the text where this one ended (``None`` starts from zeros).

    Defined in chapter 05.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden: int = 256, num_layers: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)  # a learned vector per character (= one-hot @ W)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, X, state=None):
        E = self.embed(X)  # (B, T, embed_dim)
        out, state = self.lstm(E, state)  # (B, T, hidden); state: h and c, each (num_layers, B, hidden)
        return self.head(out), state  # logits (B, T, V)


def detach_state(state):
    """A recurrent state with its history cut off: ``None``, a tensor, or a tuple of tensors.

    The values stay; backpropagation stops there (the "truncation" of truncated BPTT).

    Defined in chapter 05.
    """
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(detach_state(s) for s in state)


class TBPTTTrainer(Trainer):
    """:class:`dlwb.train.Trainer` for truncated backpropagation through time with a carried state.

    For a ``net(X, state) -> (outputs, state)`` and batches that continue each other row by
    row (:class:`dlwb.text.BPTTBatches`): the state at the end of one batch is the initial state
    of the next, detached, so the model sees the text as one long sequence while gradients flow
    back at most one batch (``seq_len`` steps). The state starts from zeros at the beginning of
    every epoch and of every evaluation. Only the steps are overridden; the loop is Trainer's.

    Defined in chapter 05.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.state = None  # carried from one training batch to the next
        self.state_epoch = None  # the epoch that state belongs to
        self.eval_state = None

    def train_step(self, batch) -> dict[str, float]:
        X, y = batch
        if self.state_epoch != self.epoch:  # a new epoch starts again at the beginning of the text
            self.state, self.state_epoch = None, self.epoch
        with self.autocast():
            outputs, state = self.net(X, self.state)
            loss = self.loss_fn(outputs, y)
        self.backward_and_step(loss)
        self.state = detach_state(state)  # keep the values, forget how they were computed
        return {"loss": loss.item(), **self._metric_values(outputs.detach(), y)}

    @torch.no_grad()
    def eval_step(self, batch) -> dict[str, float]:
        X, y = batch
        with self.autocast():
            outputs, self.eval_state = self.net(X, self.eval_state)
            loss = self.loss_fn(outputs, y)
        return {"loss": loss.item(), **self._metric_values(outputs, y)}

    def evaluate(self, data_iter) -> dict[str, float]:
        self.eval_state = None
        return super().evaluate(data_iter)


@torch.no_grad()
def generate(net: nn.Module, vocab: Vocab, prompt: str, num_chars: int, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> str:
    """Continue ``prompt`` by ``num_chars`` characters sampled one at a time from ``net(X, state)``.

    The prompt is read in one call; then each sampled character is fed back with the carried
    state. ``temperature`` divides the logits (see :func:`dlwb.text.sample_next`). Returns the
    prompt followed by the sampled text.

    Defined in chapter 05.
    """
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    X = torch.as_tensor(vocab.encode(prompt), device=device)[None]  # (1, len(prompt))
    logits, state = net(X)  # (1, len(prompt), V)
    ids = []
    for _ in range(num_chars):
        next_id = sample_next(logits[:, -1].float().cpu(), temperature, generator)  # (1,)
        ids.append(int(next_id))
        logits, state = net(next_id.to(device)[None], state)  # (1, 1, V): one step, carrying the state
    net.train(was_training)
    return prompt + vocab.decode(ids)
