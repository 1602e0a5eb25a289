"""The one training loop: learning, callbacks, overridable step, clipping, AMP switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlwb import train
from dlwb.metrics import accuracy
from dlwb.train import Callback, Trainer


def blobs(n=400, seed=0):
    """Two Gaussian blobs in 2-D, 4 standard deviations apart: linearly separable in practice."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    X = torch.randn(n, 2, generator=g) + 4.0 * y[:, None].float()
    return X, y


def loaders(batch_size=32):
    X, y = blobs()
    return (DataLoader(TensorDataset(X[:320], y[:320]), batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(0)),
            DataLoader(TensorDataset(X[320:], y[320:]), batch_size=batch_size))


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))


class Recorder(Callback):
    def __init__(self):
        self.batches, self.epochs = [], []

    def on_batch_end(self, trainer, logs):
        self.batches.append(dict(logs))

    def on_epoch_end(self, trainer, logs):
        self.epochs.append(dict(logs))


def test_fit_learns_and_records_history():
    train_iter, val_iter = loaders()
    net, rec = make_net(), Recorder()
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                      metrics={"acc": accuracy}, callbacks=[rec], progress=False)
    history = trainer.fit(train_iter, num_epochs=5, val_iter=val_iter)
    assert history["epoch"] == [1, 2, 3, 4, 5]
    assert history["val_acc"][-1] >= 0.95  # separable blobs: near-perfect after 5 epochs
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert len(rec.batches) == 5 * len(train_iter) == len(history.batches)
    assert rec.epochs == history.epochs
    assert set(history.keys()) == {"epoch", "loss", "acc", "val_loss", "val_acc", "time_s"}
    # evaluate() is the sample-weighted mean over the whole split.
    X, y = blobs()
    with torch.no_grad():
        logits = net(X[320:])
    expected = trainer.evaluate(val_iter)
    assert expected["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y[320:]).item(), rel=1e-5)
    assert expected["acc"] == pytest.approx(accuracy(logits, y[320:]).item(), abs=1e-6)


def test_fit_continues_and_never_reinitialises():
    train_iter, _ = loaders()
    net = make_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.0), nn.CrossEntropyLoss(), progress=False)
    trainer.fit(train_iter, num_epochs=1)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed with lr=0: the loop must not touch the weights"
    trainer.fit(train_iter, num_epochs=2)
    assert trainer.epoch == 3 and trainer.history["epoch"] == [1, 2, 3]
    assert trainer.step == 3 * len(train_iter)


def test_callback_can_stop_training():
    class StopAfter(Callback):
        def on_batch_end(self, trainer, logs):
            if trainer.step == 3:
                trainer.stop_training = True

    train_iter, _ = loaders()
    net = make_net()
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                      callbacks=[StopAfter()], progress=False)
    history = trainer.fit(train_iter, num_epochs=10)
    assert trainer.step == 3 and len(history.epochs) == 1


def test_train_step_can_be_overridden():
    class TwoLossTrainer(Trainer):
        """Like a GAN: a step that is not loss_fn(net(X), y) and reports its own numbers."""

        def train_step(self, batch):
            X, _ = batch
            loss = self.net(X).pow(2).mean()
            self.backward_and_step(loss)
            return {"loss": loss.item(), "output_scale": loss.sqrt().item()}

    train_iter, _ = loaders()
    net = make_net()
    history = TwoLossTrainer(net, torch.optim.SGD(net.parameters(), lr=0.05), None, progress=False).fit(
        train_iter, num_epochs=3)
    assert history["output_scale"][-1] < history["output_scale"][0]


def test_grad_clip_bounds_the_update():
    X, y = blobs(64)
    net = make_net()
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=1.0), lambda out, t: 1e3 * nn.functional.cross_entropy(out, t),
                      grad_clip=0.1, progress=False)
    trainer.fit([(X, y)], num_epochs=1)
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    # SGD with lr=1 moves the weights by exactly the clipped gradient: norm <= 0.1.
    assert (after - before).norm().item() == pytest.approx(0.1, rel=1e-4)


def test_scheduler_steps_every_batch():
    train_iter, _ = loaders()
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    Trainer(net, opt, nn.CrossEntropyLoss(), scheduler=sched, progress=False).fit(train_iter, num_epochs=1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 ** len(train_iter))


def test_amp_on_a_cpu_is_bf16_where_native_and_a_notice_elsewhere(capsys, monkeypatch):
    net = make_net()
    for native in (False, True):
        monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
        trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                          device="cpu", amp=True, progress=False)
        out = capsys.readouterr().out
        if native:
            assert trainer.amp_dtype == torch.bfloat16 and out == ""
        else:
            assert "no effect on cpu" in out and "no native bfloat16" in out and trainer.amp_dtype is None
        assert trainer.scaler is None  # bfloat16 has float32's range: no loss scaling


@pytest.mark.skipif(not train.cpu_has_native_bf16(), reason="needs a CPU with native bfloat16 (AVX512-BF16 or AMX)")
def test_amp_on_a_bf16_cpu_trains_in_bf16_to_the_same_accuracy():
    train_iter, val_iter = loaders()
    accs = {}
    for amp in (False, True):
        torch.manual_seed(0)
        net = make_net()
        trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                          device="cpu", amp=amp, metrics={"acc": accuracy}, progress=False)
        with trainer.autocast():
            assert net(next(iter(train_iter))[0]).dtype == (torch.bfloat16 if amp else torch.float32)
        accs[amp] = trainer.fit(train_iter, 5, val_iter)["val_acc"][-1]
    assert accs[True] >= 0.95 and abs(accs[True] - accs[False]) <= 0.02  # bf16 keeps 8 bits of mantissa


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_amp_on_cuda_trains_in_bf16():
    train_iter, val_iter = loaders()
    net = make_net()
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                      device="cuda", amp=True, metrics={"acc": accuracy}, progress=False)
    assert trainer.amp_dtype in (torch.bfloat16, torch.float16)
    assert trainer.fit(train_iter, 5, val_iter)["val_acc"][-1] >= 0.95


def test_empty_loader_is_a_clear_error():
    net = make_net()
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(), progress=False)
    with pytest.raises(ValueError, match="empty train_iter"):
        trainer.fit([], num_epochs=1)
    with pytest.raises(ValueError, match="empty data_iter"):
        trainer.evaluate([])
    with pytest.raises(ValueError, match="num_epochs"):
        trainer.fit([(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))], num_epochs=0)


def test_fit_draws_from_the_loader_generator_like_a_plain_loop():
    """Shuffles under fit() are those of a hand-written loop: no extra iterator is created."""
    X, y = blobs(96)

    def loader():
        return DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(3))

    plain = loader()
    for _ in range(2):
        for _batch in plain:
            pass
    trained = loader()
    net = make_net()
    Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(), progress=True).fit(trained, 2)
    assert torch.equal(plain.generator.get_state(), trained.generator.get_state())


def test_predict_returns_every_output_in_order_in_eval_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    X, y = torch.randn(25, 3), torch.randint(0, 2, (25,))
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(), progress=False)
    net.train()
    got = trainer.predict(DataLoader(TensorDataset(X, y), batch_size=7))  # (X, y) batches, last one short
    assert got.shape == (25, 2) and got.device.type == "cpu"
    net.eval()
    with torch.no_grad():
        expected = net(X)  # eval mode: dropout off, so the outputs are deterministic
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert net.training is False  # left as it was found
    net.train()
    bare = trainer.predict(X.split(10))  # bare X batches
    torch.testing.assert_close(bare, expected, rtol=1e-6, atol=1e-6)
    assert net.training is True and not got.requires_grad
    with pytest.raises(ValueError, match="empty data_iter"):
        trainer.predict([])
