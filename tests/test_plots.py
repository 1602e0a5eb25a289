"""Figures: the right panels, lines, titles and counts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from dlwb import plots
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


def test_live_plot_redraws_the_same_figure():
    class FakeTrainer:
        pass

    trainer, live = FakeTrainer(), plots.LivePlot(keys=["loss"])
    trainer.history = history(1)
    live.on_epoch_end(trainer, trainer.history.epochs[-1])
    fig = live.fig
    trainer.history = history(4)
    live.on_epoch_end(trainer, trainer.history.epochs[-1])
    assert live.fig is fig
    assert len(fig.axes[0].lines[0].get_xdata()) == 4


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
    cm = plots.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert cm.sum() == 6
    fig = plots.plot_confusion_matrix(cm, ["a", "b", "c"], normalize=True)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[0] == "0.50" and texts[-1] == "0.67"
    plt.close(fig)
    with pytest.raises(ValueError, match="same shape"):
        plots.confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="num_classes"):
        plots.confusion_matrix([0, 5], [0, 1], num_classes=3)
