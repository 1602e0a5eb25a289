"""The course's one training loop for PyTorch, extended by callbacks and an overridable step.

Taught in chapter 03, where the loop is first written out by hand and :meth:`Trainer.predict` is the
one path from a trained net to its predictions. Nothing in this file knows about a particular
model: a chapter that needs a different step (the GAN of chapter 06 updates two networks)
subclasses :class:`Trainer` and overrides :meth:`Trainer.train_step`; everything else (epochs,
devices, progress bars, history, callbacks, mixed precision) stays the same.

Vocabulary, as in every chapter: ``net``, ``loss_fn``, ``optimizer``, ``num_epochs``,
``train_iter`` / ``val_iter`` (anything that yields ``(X, y)`` batches, such as a
``torch.utils.data.DataLoader``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Callback:
    """Hooks the :class:`Trainer` calls; override the ones you need.

    ``logs`` holds plain floats: after a batch, that batch's ``loss`` and metrics; after an
    epoch, the epoch's means (``loss``, ``acc``, ...) and validation values (``val_loss``,
    ``val_acc``, ...) plus ``epoch`` and ``time_s``. Set ``trainer.stop_training = True``
    to end training after the current batch.
    """

    def on_batch_end(self, trainer: Trainer, logs: Mapping[str, float]) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, logs: Mapping[str, float]) -> None:
        pass


class History:
    """What :meth:`Trainer.fit` returns: one dict of floats per epoch and per batch.

    ``history["val_loss"]`` is the list of that value over epochs.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.batches: list[dict[str, float]] = []

    def __getitem__(self, key: str) -> list[float]:
        values = [e[key] for e in self.epochs if key in e]
        if not values:
            raise KeyError(f"no epoch recorded {key!r}; recorded keys: {self.keys()}")
        return values

    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for e in self.epochs for k in e))

    def __repr__(self) -> str:
        last = self.epochs[-1] if self.epochs else {}
        return f"History({len(self.epochs)} epochs, last={ {k: round(v, 4) for k, v in last.items()} })"


def to_device(batch, device: torch.device):
    """Move a tensor, or a tuple/list/dict of tensors, to ``device`` (other values unchanged)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _batch_size(batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    return len(first)


class _Mean:
    """Running, sample-weighted means of named floats."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: Mapping[str, float], n: int) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * n
        self.count += n

    def result(self) -> dict[str, float]:
        return {k: s / self.count for k, s in self.sums.items()}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX), as oneDNN reports it.

    There, bf16 autocast runs convolutions and matrix products about twice as fast as float32
    (chapter 04, "Memory and layout"); elsewhere bf16 is emulated and slower than float32.

    Defined in chapter 04.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


class Trainer:
    """Train and evaluate a PyTorch ``net`` with one readable loop.

    ``metrics`` maps names to functions ``f(outputs, y) -> scalar tensor`` (batch means),
    e.g. ``{"acc": accuracy}`` (:func:`dlwb.metrics.accuracy`). ``amp=True`` runs the
    forward pass in bfloat16 autocast on CUDA (float16 with a gradient scaler where bfloat16
    is unsupported) and on CPUs with
    native bfloat16 arithmetic (AVX512-BF16 or AMX, see :func:`cpu_has_native_bf16`); elsewhere
    it is ignored with a notice. ``grad_clip`` clips the global gradient norm. ``scheduler`` is
    stepped once per batch. The net is trained as it is: ``fit`` never re-initialises it.

    Defined in chapter 03.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
        *,
        device: torch.device | str | None = None,
        metrics: Mapping[str, Metric] | None = None,
        callbacks: Sequence[Callback] = (),
        amp: bool = False,
        grad_clip: float | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        progress: bool = True,
    ) -> None:
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        self.net = net.to(self.device)
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.metrics = dict(metrics or {})
        self.callbacks = list(callbacks)
        self.grad_clip = grad_clip
        self.scheduler = scheduler
        self.progress = progress
        self.amp_dtype = self._amp_dtype(amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.history = History()
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.stop_training = False

    def _amp_dtype(self, amp: bool) -> torch.dtype | None:
        if not amp:
            return None
        if self.device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if self.device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        why = ("this CPU has no native bfloat16 (AVX512-BF16 or AMX)" if self.device.type == "cpu"
               else "autocast is used on CUDA and on CPUs with native bfloat16 only")
        print(f"NOTICE: amp=True has no effect on {self.device.type}: {why}; training in float32.")
        return None

    def autocast(self):
        """The mixed-precision context for forward passes (a no-op without AMP)."""
        device_type = self.device.type if self.device.type in ("cuda", "cpu") else "cpu"
        return torch.autocast(device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, optional clipping, ``optimizer.step()``, scheduler step."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def _metric_values(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return {name: float(fn(outputs.float(), y)) for name, fn in self.metrics.items()}

    def train_step(self, batch) -> dict[str, float]:
        """One optimisation step on one batch; returns plain floats (``loss`` and metrics).

        Override this for models that are not ``loss_fn(net(X), y)`` (chapter 06's GAN).
        """
        X, y = batch
        with self.autocast():
            outputs = self.net(X)
            loss = self.loss_fn(outputs, y)
        self.backward_and_step(loss)
        return {"loss": loss.item(), **self._metric_values(outputs.detach(), y)}

    @torch.no_grad()
    def eval_step(self, batch) -> dict[str, float]:
        """Loss and metrics on one batch, without gradients."""
        X, y = batch
        with self.autocast():
            outputs = self.net(X)
            loss = self.loss_fn(outputs, y)
        return {"loss": loss.item(), **self._metric_values(outputs, y)}

    @contextlib.contextmanager
    def eval_mode(self):
        """The net in eval mode (dropout off, batch norm on its running statistics), then back as it was."""
        was_training = self.net.training
        self.net.eval()
        try:
            yield
        finally:
            self.net.train(was_training)

    def evaluate(self, data_iter: Iterable) -> dict[str, float]:
        """Sample-weighted mean loss and metrics over ``data_iter``, in eval mode."""
        mean = _Mean()
        with self.eval_mode():
            for batch in data_iter:
                batch = to_device(batch, self.device)
                mean.add(self.eval_step(batch), _batch_size(batch))
        if mean.count == 0:
            raise ValueError("evaluate() got an empty data_iter: check the DataLoader and its dataset")
        return mean.result()

    @torch.no_grad()
    def predict(self, data_iter: Iterable) -> torch.Tensor:
        """The net's outputs for every sample of ``data_iter``, in order, on the CPU, in eval mode.

        ``data_iter`` yields ``(X, y)`` batches (``y`` is ignored) or bare ``X`` batches; the result
        is ``net(X)`` of all batches concatenated, e.g. ``(N, num_classes)`` logits, as float32.
        The one path from a trained net to predictions: ``predict(test_iter).argmax(-1)``.
        """
        outputs = []
        with self.eval_mode():
            for batch in data_iter:
                X = batch[0] if isinstance(batch, (list, tuple)) else batch
                with self.autocast():
                    outputs.append(self.net(to_device(X, self.device)).float().cpu())
        if not outputs:
            raise ValueError("predict() got an empty data_iter: check the loader and its data")
        return torch.cat(outputs)

    def fit(self, train_iter: Iterable, num_epochs: int, val_iter: Iterable | None = None) -> History:
        """Train for ``num_epochs`` more epochs; returns (and keeps adding to) ``self.history``."""
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be at least 1, got {num_epochs}")
        self.stop_training = False
        for _ in range(num_epochs):
            start = time.perf_counter()
            self.net.train()
            mean = _Mean()
            # The bar is updated by hand: given the iterable, tqdm.auto would call iter() on it an extra
            # time, and a DataLoader's iterator draws from its generator, changing the shuffles.
            bar = tqdm(total=len(train_iter) if hasattr(train_iter, "__len__") else None,
                       desc=f"epoch {self.epoch + 1}", leave=False, disable=not self.progress)
            for batch in train_iter:
                batch = to_device(batch, self.device)
                logs = self.train_step(batch)
                self.step += 1
                mean.add(logs, _batch_size(batch))
                self.history.batches.append({"step": self.step, **logs})
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
                for cb in self.callbacks:
                    cb.on_batch_end(self, logs)
                if self.stop_training:
                    break
            bar.close()
            if mean.count == 0:
                raise ValueError("fit() got an empty train_iter: check the DataLoader and its dataset")
            self.epoch += 1
            logs = {"epoch": self.epoch, **mean.result()}
            if val_iter is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(val_iter).items()})
            logs["time_s"] = time.perf_counter() - start
            self.history.epochs.append(logs)
            for cb in self.callbacks:
                cb.on_epoch_end(self, logs)
            if self.stop_training:
                break
        return self.history


class TensorBoardLogger(Callback):
    """Write every epoch's numbers (and, with ``every_batch``, every batch's) to TensorBoard.

    Scalars go to ``log_dir`` through ``torch.utils.tensorboard.SummaryWriter`` (the
    ``tensorboard`` package): ``loss``/``acc`` as ``train/loss``, ``train/acc`` and
    ``val_loss``/``val_acc`` as ``val/loss``, ``val/acc``, at the epoch number; batch values
    as ``batch/loss`` at the optimizer step. View them with ``tensorboard --logdir LOG_DIR``.
    Call :meth:`close` (or use the logger as a context manager) to flush the event file.

    Defined in chapter 00.
    """

    def __init__(self, log_dir, *, every_batch: bool = False) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("TensorBoardLogger needs the tensorboard package: "
                              "pip install -r requirements.txt -c constraints.txt") from err
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.every_batch = every_batch

    def on_batch_end(self, trainer: Trainer, logs: Mapping[str, float]) -> None:
        if self.every_batch:
            for key, value in logs.items():
                self.writer.add_scalar(f"batch/{key}", value, trainer.step)

    def on_epoch_end(self, trainer: Trainer, logs: Mapping[str, float]) -> None:
        for key, value in logs.items():
            if key in {"epoch", "time_s"}:
                continue
            tag = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
            self.writer.add_scalar(tag, value, trainer.epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
