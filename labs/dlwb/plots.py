"""Figures the chapters share: training curves (also live), image grids, confusion matrices.

Every function returns its ``matplotlib`` Figure, so a notebook shows it and a test can
inspect it. Nothing is drawn on import.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from dlwb.train import Callback, History


def plot_history(history: History, keys: Sequence[str] | None = None, *, fig=None):
    """Loss and metric curves over epochs, one panel per quantity, train beside ``val_``.

    ``keys`` picks the quantities (default: every recorded one except ``epoch``/``time_s``).

    Defined in chapter 00.
    """
    if not history.epochs:
        raise ValueError("the history is empty: train for at least one epoch before plotting")
    recorded = history.keys()
    if keys is None:
        keys = [k for k in recorded if k not in {"epoch", "time_s"} and not k.startswith("val_")]
    unknown = [k for k in keys if k not in recorded]
    if unknown:
        raise KeyError(f"{unknown} not in the history; recorded: {recorded}")
    fig = fig or plt.figure(figsize=(4.5 * len(keys), 3.2))
    fig.clear()
    epochs = history["epoch"]
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        ax.plot(epochs, history[key], "o-", label=f"train {key}")
        if f"val_{key}" in recorded:
            ax.plot(epochs, history[f"val_{key}"], "s--", label=f"val {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


class LivePlot(Callback):
    """A :class:`dlwb.train.Callback` that redraws :func:`plot_history` after every epoch.

    Where a notebook front end shows images (JupyterLab, the classic notebook, VS Code) the
    figure is displayed once and then updated in place through its display handle: one
    output, not one per epoch. Headless (no IPython kernel, or the non-interactive ``Agg``
    backend that papermill runs and CI use), it prints one text line per epoch instead, e.g.
    ``epoch 3: loss 0.4120, acc 0.8812, val_loss 0.4511, val_acc 0.8700``. Either way
    ``self.fig`` holds the up-to-date figure.

    Defined in chapter 00.
    """

    def __init__(self, keys: Sequence[str] | None = None) -> None:
        self.keys = keys
        self.fig = None
        self._handle = None

    @staticmethod
    def headless() -> bool:
        """True where a displayed figure would not be seen: no kernel, or the ``Agg`` backend."""
        from IPython import get_ipython

        shell = get_ipython()
        return shell is None or getattr(shell, "kernel", None) is None or \
            matplotlib.get_backend().lower() == "agg"

    def on_epoch_end(self, trainer, logs) -> None:
        self.update(trainer.history, logs)

    def update(self, history: History, logs) -> None:
        """Redraw ``history`` (or print ``logs``, the last epoch's numbers, when headless)."""
        from IPython.display import display

        if self.fig is None:
            self.fig = plt.figure(figsize=(9, 3.2))
            plt.close(self.fig)  # shown through the display handle only, not again at cell end
        plot_history(history, self.keys, fig=self.fig)
        if self.headless():
            print(text_line(logs))
        elif self._handle is None:
            self._handle = display(self.fig, display_id=True)
        else:
            self._handle.update(self.fig)


def keras_live_plot(keys: Sequence[str] | None = None, *, progress: bool = True):
    """The :class:`dlwb.train.Trainer`'s training views for Keras: pass it to ``model.fit(..., verbose=0,
    callbacks=[...])``.

    Returns a ``keras.callbacks.Callback`` that shows a ``tqdm.auto`` bar over each epoch's
    batches (with the running loss; closed at the epoch's end) and a :class:`LivePlot` of the
    epoch logs, updated in place, or one text line per epoch when headless. Its ``history``
    is a :class:`dlwb.train.History` of those logs, epochs counted from 1.

    Defined in chapter 00.
    """
    import keras
    from tqdm.auto import tqdm

    class KerasLivePlot(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.history, self.live, self.bar = History(), LivePlot(keys), None

        def on_epoch_begin(self, epoch, logs=None) -> None:
            if progress:
                self.bar = tqdm(total=self.params.get("steps"), desc=f"epoch {epoch + 1}", leave=False)

        def on_train_batch_end(self, batch, logs=None) -> None:
            if self.bar is not None:
                self.bar.update(1)
                if logs and "loss" in logs:
                    self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

        def on_epoch_end(self, epoch, logs=None) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            logs = logs or {}
            first = [k for k in ("loss", "val_loss") if k in logs]  # loss first, as the Trainer records it
            record = {"epoch": epoch + 1, **{k: float(logs[k]) for k in first + [k for k in logs if k not in first]}}
            self.history.epochs.append(record)
            self.live.update(self.history, record)

    return KerasLivePlot()


def text_line(logs) -> str:
    """One epoch's numbers as text: ``epoch 3: loss 0.4120, val_loss 0.4511`` (``time_s`` left out).

    Defined in chapter 00.
    """
    values = ", ".join(f"{k} {v:.4f}" for k, v in logs.items() if k not in {"epoch", "time_s"})
    return f"epoch {logs.get('epoch', '?')}: {values}"


def image_grid(images, labels=None, predictions=None, *, ncols: int = 8, cmap: str = "gray"):
    """Show images in a grid; titles give the label, and the prediction when it differs.

    ``images``: ``(N, H, W)`` grey or ``(N, H, W, 3)`` colour, any range (each is scaled).

    Defined in chapter 00.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
    n = len(images)
    if n == 0:
        raise ValueError("no images to show")
    ncols = min(ncols, n)
    nrows = -(-n // ncols)  # ceiling division
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i], cmap=cmap if images.ndim == 3 else None)
        if labels is not None:
            wrong = predictions is not None and predictions[i] != labels[i]
            title = f"{labels[i]} (pred {predictions[i]})" if wrong else str(labels[i])
            ax.set_title(title, fontsize=8, color="crimson" if wrong else "black")
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str] | None = None, *, normalize: bool = False):
    """Heat map of a confusion matrix with the count (or row share) written in each cell.

    Defined in chapter 03.
    """
    cm = np.asarray(cm)
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    k = len(cm)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(0.55 * k + 2, 0.55 * k + 1.5))
    im = ax.imshow(values, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set(xticks=range(k), yticks=range(k), xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true")
    threshold = values.max() / 2
    for i in range(k):
        for j in range(k):
            text = f"{values[i, j]:.2f}" if normalize else str(values[i, j])
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] > threshold else "black")
    fig.tight_layout()
    return fig
