"""dlwb.rnn and dlwb.text: recurrent cells from scratch vs PyTorch and Keras, and the char-LM helpers.

Tolerances: in float64 the from-scratch cells compute the frameworks' arithmetic up to summation
order, so they must agree to rtol 1e-10, atol 1e-12. Keras in its default float32 keeps about 7
significant digits of values of order 1: atol 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dlwb import rnn, text

RTOL, ATOL = 1e-10, 1e-12  # float64, from scratch vs framework
F32_TOL = 1e-5  # float32 (Keras's default dtype)
SIZES = [(1, 1, 3, 2), (3, 5, 4, 6), (8, 12, 7, 16)]  # (B, T, D, H)


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: extra threads only wait for each other (badly so on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def inputs(B, T, D, H, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(B, T, D, generator=g, dtype=torch.float64)  # (B, T, D)
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64)  # (B, H)
    c0 = torch.randn(B, H, generator=g, dtype=torch.float64)  # (B, H)
    return xs, h0, c0


def weights(module, suffix=""):
    return [getattr(module, f"{n}{suffix}").detach() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


# ----------------------------------------------------------------------------------------------- the RNN cell
@pytest.mark.parametrize("B,T,D,H", SIZES)
def test_rnn_cell_matches_nn_rnncell(B, T, D, H):
    torch.manual_seed(B)
    xs, h0, _ = inputs(B, T, D, H)
    ref = nn.RNNCell(D, H).double()
    torch.testing.assert_close(rnn.rnn_cell(xs[:, 0], h0, *weights(ref)), ref(xs[:, 0], h0), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("B,T,D,H", SIZES)
def test_rnn_forward_matches_nn_rnn(B, T, D, H):
    torch.manual_seed(T)
    xs, h0, _ = inputs(B, T, D, H, seed=1)
    ref = nn.RNN(D, H, batch_first=True).double()
    hs_ref, h_last = ref(xs, h0[None])
    hs = rnn.rnn_forward(xs, h0, *weights(ref, "_l0"))
    assert hs.shape == (B, T, H)
    torch.testing.assert_close(hs, hs_ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(hs[:, -1], h_last[0], rtol=RTOL, atol=ATOL)


def test_rnn_forward_matches_keras_simplernn():
    import keras

    B, T, D, H = 3, 6, 4, 5
    torch.manual_seed(0)
    xs, h0, _ = inputs(B, T, D, H, seed=2)
    ref = nn.RNN(D, H, batch_first=True).double()
    layer = keras.layers.SimpleRNN(H, return_sequences=True, dtype="float64")
    layer.build((None, T, D))
    layer.set_weights(rnn.weights_to_keras(*weights(ref, "_l0")))
    got = keras.ops.convert_to_numpy(layer(xs.numpy(), initial_state=[h0.numpy()]))
    np.testing.assert_allclose(got, rnn.rnn_forward(xs, h0, *weights(ref, "_l0")).numpy(), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------- the LSTM cell
@pytest.mark.parametrize("B,T,D,H", SIZES)
def test_lstm_cell_matches_nn_lstmcell(B, T, D, H):
    torch.manual_seed(D)
    xs, h0, c0 = inputs(B, T, D, H, seed=3)
    ref = nn.LSTMCell(D, H).double()
    h1, c1 = rnn.lstm_cell(xs[:, 0], h0, c0, *weights(ref))
    h1_ref, c1_ref = ref(xs[:, 0], (h0, c0))
    assert h1.shape == c1.shape == (B, H)
    torch.testing.assert_close(h1, h1_ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(c1, c1_ref, rtol=RTOL, atol=ATOL)


def test_lstm_gate_order_is_i_f_g_o():
    """Only the forget gate's rows (H:2H) get a large bias: the cell must then keep c exactly."""
    D, H = 3, 4
    W_ih, W_hh = torch.zeros(4 * H, D, dtype=torch.float64), torch.zeros(4 * H, H, dtype=torch.float64)
    b_ih = torch.full((4 * H,), -50.0, dtype=torch.float64)  # every gate closed ...
    b_ih[H:2 * H] = 50.0  # ... except f
    c = torch.randn(2, H, dtype=torch.float64)
    h_new, c_new = rnn.lstm_cell(torch.randn(2, D, dtype=torch.float64), torch.zeros(2, H, dtype=torch.float64), c,
                                 W_ih, W_hh, b_ih, torch.zeros(4 * H, dtype=torch.float64))
    torch.testing.assert_close(c_new, c, rtol=0, atol=1e-12)  # f = 1, i = 0: the cell is kept
    torch.testing.assert_close(h_new, torch.zeros_like(h_new), rtol=0, atol=1e-12)  # o = 0: nothing shown


@pytest.mark.parametrize("num_layers", [1, 2])
def test_stacked_lstm_forward_matches_nn_lstm(num_layers):
    B, T, D, H = 4, 9, 5, 6
    torch.manual_seed(num_layers)
    xs, _, _ = inputs(B, T, D, H, seed=4)
    g = torch.Generator().manual_seed(5)
    h0 = torch.randn(num_layers, B, H, generator=g, dtype=torch.float64)
    c0 = torch.randn(num_layers, B, H, generator=g, dtype=torch.float64)
    ref = nn.LSTM(D, H, num_layers=num_layers, batch_first=True).double()
    out_ref, (hT_ref, cT_ref) = ref(xs, (h0, c0))
    layer_input = xs
    for k in range(num_layers):
        layer_input, (hT, cT) = rnn.lstm_forward(layer_input, (h0[k], c0[k]), *weights(ref, f"_l{k}"))
        torch.testing.assert_close(hT, hT_ref[k], rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(cT, cT_ref[k], rtol=RTOL, atol=ATOL)
    assert layer_input.shape == (B, T, H)
    torch.testing.assert_close(layer_input, out_ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("T", [1, 7])
@pytest.mark.parametrize("dtype,tol", [("float64", (RTOL, ATOL)), ("float32", (F32_TOL, F32_TOL))])
def test_lstm_matches_keras_lstm_with_ported_weights(T, dtype, tol):
    """T = 1 is a single step of the cell; T = 7 a sequence. Keras: kernel (D, 4H), gates i, f, c, o, one bias."""
    import keras

    B, D, H = 3, 4, 5
    torch.manual_seed(T)
    xs, h0, c0 = inputs(B, T, D, H, seed=6)
    ref = nn.LSTMCell(D, H).double()
    hs, (hT, cT) = rnn.lstm_forward(xs, (h0, c0), *weights(ref))
    layer = keras.layers.LSTM(H, return_sequences=True, return_state=True, dtype=dtype)
    layer.build((None, T, D))
    layer.set_weights([w.astype(dtype) for w in rnn.weights_to_keras(*weights(ref))])
    outs = layer(xs.numpy().astype(dtype), initial_state=[h0.numpy().astype(dtype), c0.numpy().astype(dtype)])
    rtol, atol = tol
    for got, want in zip(outs, (hs, hT, cT)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want.numpy(), rtol=rtol, atol=atol)


def test_weights_to_keras_layout():
    D, H = 3, 4
    ref = nn.LSTMCell(D, H)
    kernel, recurrent, bias = rnn.weights_to_keras(*weights(ref))
    assert kernel.shape == (D, 4 * H) and recurrent.shape == (H, 4 * H) and bias.shape == (4 * H,)
    np.testing.assert_array_equal(kernel, ref.weight_ih.detach().numpy().T)
    np.testing.assert_allclose(bias, (ref.bias_ih + ref.bias_hh).detach().numpy(), rtol=0, atol=1e-7)


# --------------------------------------------------------------------------------------------- gradient flow
def test_lstm_forward_gradients_match_nn_lstm_autograd():
    """Backpropagating through the from-scratch unrolled cell gives nn.LSTM's parameter gradients."""
    B, T, D, H = 2, 6, 3, 4
    torch.manual_seed(0)
    xs, h0, c0 = inputs(B, T, D, H, seed=7)
    ref = nn.LSTM(D, H, batch_first=True).double()
    out_ref, _ = ref(xs, (h0[None], c0[None]))
    (out_ref ** 2).sum().backward()
    params = [w.clone().requires_grad_(True) for w in weights(ref, "_l0")]
    hs, _ = rnn.lstm_forward(xs, (h0, c0), *params)
    (hs ** 2).sum().backward()
    for p, name in zip(params, ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")):
        torch.testing.assert_close(p.grad, getattr(ref, name).grad, rtol=1e-9, atol=1e-12)


def _relative_hidden_grads(kind, forget_bias=0.0, T=80, D=8, H=32):
    torch.manual_seed(0)
    cell = (nn.RNNCell if kind == "rnn" else nn.LSTMCell)(D, H).double()
    W = [w.clone() for w in weights(cell)]
    if kind == "lstm":
        W[2][H:2 * H] += forget_bias
    xs = torch.randn(4, T, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = torch.zeros(4, H, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(4, H, dtype=torch.float64)
    hs = []
    for t in range(T):
        h = rnn.rnn_cell(xs[:, t], h, *W) if kind == "rnn" else rnn.lstm_cell(xs[:, t], h, c, *W)
        if kind == "lstm":
            h, c = h
        h.retain_grad()
        hs.append(h)
    h.sum().backward()
    norms = np.array([x.grad.norm().item() for x in hs])
    return norms / norms[-1]


def test_gradient_vanishes_through_tanh_rnn_but_survives_an_open_forget_gate():
    rnn_rel = _relative_hidden_grads("rnn")
    lstm_rel = _relative_hidden_grads("lstm", forget_bias=3.0)
    assert np.all(np.isfinite(rnn_rel)) and np.all(np.isfinite(lstm_rel))
    assert rnn_rel[-51] < 1e-6, "the tanh RNN's gradient 50 steps back should have vanished"
    assert lstm_rel[-51] > 1e-3, "with forget gates near 0.95 the LSTM's gradient should survive 50 steps"


# --------------------------------------------------------------------------------------------- text helpers
def test_vocab_round_trip_and_sorted_ids():
    sample = "To be, or not to be: that is the question.\n"
    vocab = text.Vocab(sample)
    assert len(vocab) == len(set(sample)) and vocab.chars == sorted(set(sample))
    ids = vocab.encode(sample)
    assert ids.dtype == np.int64 and ids.shape == (len(sample),)
    assert vocab.decode(ids) == sample
    assert vocab.decode(torch.from_numpy(ids)) == sample
    assert text.Vocab(sample[::-1]).stoi == vocab.stoi  # ids do not depend on the order of the text


def test_vocab_rejects_unknown_characters_with_a_useful_message():
    with pytest.raises(KeyError, match="'!' is not in the vocabulary"):
        text.Vocab("abc").encode("ab!")
    with pytest.raises(ValueError):
        text.Vocab("")


def test_split_ids_is_contiguous_90_10():
    ids = np.arange(1000)
    train, val = text.split_ids(ids, 0.1)
    assert len(train) == 900 and len(val) == 100
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)
    with pytest.raises(ValueError):
        text.split_ids(np.arange(5), 0.0)


def test_windows_shapes_and_shift():
    ids = np.arange(23)
    X, y = text.windows(ids, seq_len=5)
    assert X.shape == y.shape == (4, 5) and X.dtype == np.int64
    np.testing.assert_array_equal(y, X + 1)
    np.testing.assert_array_equal(X[:, 0], [0, 5, 10, 15])
    X2, _ = text.windows(ids, seq_len=5, stride=2)
    np.testing.assert_array_equal(X2[:, 0], np.arange(0, 18, 2))
    with pytest.raises(ValueError):
        text.windows(np.arange(4), seq_len=5)


def test_bptt_batches_shapes_and_continuity():
    ids = np.arange(1001)
    batches = text.BPTTBatches(ids, batch_size=4, seq_len=10)
    stream_len = 1000 // 4
    assert len(batches) == stream_len // 10 == len(list(batches))
    got = list(batches)
    for X, y in got:
        assert X.shape == y.shape == (4, 10) and X.dtype == torch.long
        torch.testing.assert_close(y, X + 1)  # the targets are the next ids
    rows = torch.cat([X for X, _ in got], dim=1)  # (4, 250): each row is one contiguous stream
    for b in range(4):
        torch.testing.assert_close(rows[b], torch.arange(b * stream_len, (b + 1) * stream_len))
    assert len(list(batches)) == len(batches)  # iterating again starts over
    with pytest.raises(ValueError, match="seq_len"):
        text.BPTTBatches(np.arange(30), batch_size=4, seq_len=10)


def test_sequence_cross_entropy_is_the_mean_over_all_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    y = torch.randint(0, 7, (3, 5), generator=g)
    ref = nn.CrossEntropyLoss()(logits.permute(0, 2, 1), y)  # (B, V, T) layout
    torch.testing.assert_close(text.sequence_cross_entropy(logits, y), ref)


def test_sample_next_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    assert text.sample_next(logits, 0.0).tolist() == [0, 2]
    draws = text.sample_next(torch.tensor([2.0, 1.0, 0.0]).expand(20_000, 3), 1.0, torch.Generator().manual_seed(0))
    assert draws.shape == (20_000,)
    freq = np.bincount(draws.numpy(), minlength=3) / 20_000
    np.testing.assert_allclose(freq, torch.softmax(torch.tensor([2.0, 1.0, 0.0]), 0).numpy(), atol=0.015)
    cold = text.sample_next(torch.tensor([2.0, 1.0, 0.0]).expand(2000, 3), 0.25, torch.Generator().manual_seed(0))
    assert (cold == 0).float().mean() > 0.95  # a low temperature concentrates on the arg-max
    with pytest.raises(ValueError):
        text.sample_next(logits, -1.0)


def test_sample_next_top_k_keeps_exactly_k_candidates():
    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))  # (rows, V): three distributions
    for k in (1, 3, 7):
        draws = text.sample_next(logits.repeat(3000, 1), 4.0, torch.Generator().manual_seed(k), top_k=k)  # (9000,)
        draws = draws.view(3000, 3)  # column r: the draws from row r
        for r in range(3):
            kept = torch.topk(logits[r], k).indices
            assert set(draws[:, r].tolist()) == set(kept.tolist()), f"top_k={k}, row {r}: not exactly the k largest"
            expected = torch.softmax(logits[r, kept] / 4.0, dim=0).numpy()  # renormalised over the k kept
            freq = np.bincount(draws[:, r].numpy(), minlength=10)[kept.numpy()] / 3000
            np.testing.assert_allclose(freq, expected, atol=0.04)
    assert text.sample_next(logits[None], 1.0, top_k=2).shape == (1, 3)  # (..., V) -> (...)
    assert torch.equal(text.sample_next(logits, 0.0, top_k=3), logits.argmax(dim=-1))
    for k in (10, 50):  # k >= V keeps every id: the same draws as no top_k
        assert torch.equal(text.sample_next(logits, 1.0, torch.Generator().manual_seed(5), top_k=k),
                           text.sample_next(logits, 1.0, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="top_k"):
        text.sample_next(logits, 1.0, top_k=0)


# --------------------------------------------------------------------------------------- the language model
def test_char_lstm_shapes_and_carried_state_equals_one_long_pass():
    torch.manual_seed(0)
    net = rnn.CharLSTM(11, embed_dim=5, hidden=8, num_layers=2).eval()
    X = torch.randint(0, 11, (3, 20))
    logits, (h, c) = net(X)
    assert logits.shape == (3, 20, 11) and h.shape == c.shape == (2, 3, 8)
    first, state = net(X[:, :12])
    second, _ = net(X[:, 12:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), logits, rtol=1e-5, atol=1e-6)


def test_detach_state():
    a = torch.ones(2, requires_grad=True) * 2
    assert rnn.detach_state(None) is None
    assert not rnn.detach_state(a).requires_grad
    h, c = rnn.detach_state((a, a + 1))
    assert not h.requires_grad and not c.requires_grad and torch.equal(c, a.detach() + 1)


def hello_data():
    sample = "hello world, hello there. " * 40
    vocab = text.Vocab(sample)
    return vocab, vocab.encode(sample)


def test_tbptt_trainer_learns_and_carries_a_detached_state():
    vocab, ids = hello_data()
    torch.manual_seed(0)
    net = rnn.CharLSTM(len(vocab), embed_dim=8, hidden=32, num_layers=1)
    trainer = rnn.TBPTTTrainer(net, torch.optim.Adam(net.parameters(), lr=1e-2), text.sequence_cross_entropy,
                               grad_clip=1.0, progress=False)
    batches = text.BPTTBatches(ids, batch_size=4, seq_len=16)
    history = trainer.fit(batches, 8)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    h, c = trainer.state
    assert h.shape == (1, 4, 32) and not h.requires_grad and not c.requires_grad
    assert trainer.state_epoch == trainer.epoch - 1  # the state of the last epoch's batches


def test_tbptt_evaluation_carries_the_state_through_the_streams():
    """Evaluating batch by batch with the carried state equals one forward pass over the whole streams."""
    vocab, ids = hello_data()
    torch.manual_seed(1)
    net = rnn.CharLSTM(len(vocab), embed_dim=4, hidden=16, num_layers=2)
    trainer = rnn.TBPTTTrainer(net, None, text.sequence_cross_entropy, progress=False)
    batches = text.BPTTBatches(ids, batch_size=3, seq_len=10)
    used = len(batches) * 10
    with torch.no_grad():
        logits, _ = net.eval()(batches.X_all[:, :used])
        expected = text.sequence_cross_entropy(logits, batches.Y_all[:, :used]).item()
    assert trainer.evaluate(batches)["loss"] == pytest.approx(expected, rel=1e-5)
    assert trainer.evaluate(batches)["loss"] == pytest.approx(expected, rel=1e-5)  # the state restarts each time


def test_generate_is_reproducible_and_extends_the_prompt():
    vocab, _ = hello_data()
    torch.manual_seed(0)
    net = rnn.CharLSTM(len(vocab), embed_dim=4, hidden=8, num_layers=1).train()
    a = rnn.generate(net, vocab, "hel", 25, 1.0, torch.Generator().manual_seed(3))
    b = rnn.generate(net, vocab, "hel", 25, 1.0, torch.Generator().manual_seed(3))
    assert a == b and a.startswith("hel") and len(a) == 28 and set(a) <= set(vocab.chars)
    assert net.training  # the mode is restored
    assert rnn.generate(net, vocab, "hel", 10, 0.0) == rnn.generate(net, vocab, "hel", 10, 0.0)
