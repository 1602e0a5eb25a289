"""Figures (the right panels, lines, titles and counts) and the live training views."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from dlwb import metrics, plots
from dlwb.train import History


def history(n=3):
    h = History()
    for e in range(1, n + 1):
        h.epochs.append({"epoch": e, "loss": 1 / e, "acc": 0.5 + 0.1 * e, "val_loss": 1.2 / e,
                         "val_acc": 0.45 + 0.1 * e, "time_s": 0.1})
    return h


def test_plot_history_one_panel_per_quantity_with_val_curves():
    fig = plots.plot_history(history())
    assert [ax.get_title() for ax in fig.axes] == ["loss", "acc"]
    loss_ax = fig.axes[0]
    assert [line.get_label() for line in loss_ax.lines] == ["train loss", "val loss"]
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), [1.2, 0.6, 0.4])
    plt.close(fig)


def test_plot_history_errors():
    with pytest.raises(ValueError, match="empty"):
        plots.plot_history(History())
    with pytest.raises(KeyError, match="'f1'"):
        plots.plot_history(history(), keys=["f1"])


class FakeTrainer:
    def __init__(self, n):
        self.history = history(n)


def test_live_plot_redraws_the_same_figure():
    live = plots.LivePlot(keys=["loss"])
    live.on_epoch_end(FakeTrainer(1), history(1).epochs[-1])
    fig = live.fig
    live.on_epoch_end(FakeTrainer(4), history(4).epochs[-1])
    assert live.fig is fig
    assert len(fig.axes[0].lines[0].get_xdata()) == 4


def test_live_plot_prints_one_line_per_epoch_when_headless(capsys):
    live = plots.LivePlot()
    assert live.headless()  # no IPython kernel here
    for n in (1, 2):
        live.on_epoch_end(FakeTrainer(n), history(n).epochs[-1])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["epoch 1: loss 1.0000, acc 0.6000, val_loss 1.2000, val_acc 0.5500",
                     "epoch 2: loss 0.5000, acc 0.7000, val_loss 0.6000, val_acc 0.6500"]


def test_live_plot_updates_one_display_in_a_notebook(monkeypatch):
    import IPython.display

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def display(obj, display_id=False):
        assert display_id is True, "the figure must be displayed with a handle to update it in place"
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr(plots.LivePlot, "headless", staticmethod(lambda: False))
    live = plots.LivePlot()
    for n in (1, 2, 3):
        live.on_epoch_end(FakeTrainer(n), history(n).epochs[-1])
    assert shown == [("display", live.fig), ("update", live.fig), ("update", live.fig)]


def test_tensorboard_logger_writes_scalars_read_back(tmp_path):
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch import nn

    from dlwb.metrics import accuracy
    from dlwb.train import TensorBoardLogger, Trainer

    torch.manual_seed(0)
    X, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    batches = [(X[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]  # 4 steps per epoch
    net = nn.Linear(3, 2)
    with TensorBoardLogger(tmp_path, every_batch=True) as logger:
        trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                          metrics={"acc": accuracy}, callbacks=[logger], progress=False)
        trainer.fit(batches, 2, val_iter=batches)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/acc", "val/loss", "val/acc",
                                             "batch/loss", "batch/acc"}
    val_loss = events.Scalars("val/loss")
    assert [e.step for e in val_loss] == [1, 2]
    np.testing.assert_allclose([e.value for e in val_loss], trainer.history["val_loss"], rtol=1e-6)  # float32 storage
    assert [e.step for e in events.Scalars("batch/loss")] == list(range(1, 9))


def test_image_grid_titles_mark_mistakes():
    images = np.random.default_rng(0).random((5, 8, 8))
    fig = plots.image_grid(images, labels=[0, 1, 2, 3, 4], predictions=[0, 1, 7, 3, 4], ncols=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 6 and titles[:5] == ["0", "1", "2 (pred 7)", "3", "4"]
    assert len(fig.axes[5].images) == 0  # the spare cell stays empty
    plt.close(fig)
    with pytest.raises(ValueError, match="must be"):
        plots.image_grid(np.zeros((4, 4)))


def test_confusion_matrix_counts():
    cm = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert cm.sum() == 6
    fig = plots.plot_confusion_matrix(cm, ["a", "b", "c"], normalize=True)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[0] == "0.50" and texts[-1] == "0.67"
    plt.close(fig)
    with pytest.raises(ValueError, match="same shape"):
        metrics.confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="num_classes"):
        metrics.confusion_matrix([0, 5], [0, 1], num_classes=3)


def test_keras_live_plot_records_draws_and_prints_each_epoch(capsys):
    """model.fit(verbose=0) with the callback: a History of the Keras logs, one figure, one line per epoch."""
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((64, 3)).astype("float32")  # (N, 3)
    y = (x.sum(axis=1) > 0).astype("float32")  # (N,)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy", metrics=["accuracy"])
    live = plots.keras_live_plot()
    keras_history = model.fit(x, y, batch_size=16, epochs=3, validation_data=(x, y), verbose=0, callbacks=[live])

    assert live.history["epoch"] == [1, 2, 3]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(live.history[key], keras_history.history[key], rtol=1e-6)
    assert live.history["loss"][-1] < live.history["loss"][0]  # it trained
    assert [ax.get_title() for ax in live.live.fig.axes] == ["loss", "accuracy"]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3 and lines[-1].startswith("epoch 3: loss ") and "val_accuracy" in lines[-1]
    assert live.bar is None  # each epoch's bar is closed at its end
