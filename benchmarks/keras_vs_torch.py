"""Keras vs PyTorch: the same CNN and MLP trained by each framework, seconds per epoch and final accuracy.

The models are the course's side-by-side pairs: chapter 03's MLP (784 -> 128, ReLU -> 10; Adam
1e-3, batch 64) and chapter 04's classic CNN (conv 3x3 32, ReLU, max-pool 2, dense 128, ReLU,
dense 10; Adam 1e-3, batch 128), with logits and the cross-entropy. The PyTorch side is the
course's ``dlwb.train.Trainer`` over shuffled ``dlwb.data.TensorBatches`` (chapter 03), the CNN
as chapter 04's fast twin ("Memory and layout": channels_last, pooling before the ReLU, Keras's
flatten order) with the fused Adam, in float32; where the CPU has native bfloat16, the CNN is
also trained with ``Trainer(amp=True)`` (bf16 autocast), reported on its own row against the
same float32 Keras run. The reference is Keras 3 ``model.fit`` on NumPy arrays (TensorFlow
backend, ``jit_compile=False`` on the CPU as in the chapters). Per epoch times come from each framework's own epoch boundaries; the first epoch
(Keras traces its graph there) is reported apart from the steady epochs. Ratio: PyTorch / Keras::

    .venv/bin/python -m benchmarks.keras_vs_torch                 # 3 epochs, 3 repeats
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from torch import nn

from benchmarks import harness

NAME = "keras_vs_torch"
MODELS = {"mlp": {"batch_size": 64, "lr": 1e-3}, "cnn": {"batch_size": 128, "lr": 1e-3}}  # chapters 03 and 04
HIDDEN = 128  # chapter 03's MLP width


def parse_args(argv=None):
    p = harness.parser(__doc__.split("\n\n")[0], repeats=3)
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3; at least 2)")
    return harness.parse_args(p, argv)


def torch_model(kind: str) -> nn.Module:
    from benchmarks.course_models import make_fast_classic_cnn

    if kind == "cnn":
        return make_fast_classic_cnn(10)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


def keras_model(kind: str):
    import keras

    if kind == "cnn":
        layers = [keras.Input((28, 28, 1)), keras.layers.Conv2D(32, (3, 3), activation="relu"),
                  keras.layers.MaxPooling2D((2, 2)), keras.layers.Flatten(),
                  keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)]
    else:
        layers = [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(HIDDEN, activation="relu"),
                  keras.layers.Dense(10)]
    return keras.Sequential(layers)


def run_torch(kind, data, epochs, seed, amp=False):
    from dlwb.data import TensorBatches
    from dlwb.metrics import accuracy
    from dlwb.train import Trainer

    fmt = torch.channels_last if kind == "cnn" else torch.contiguous_format
    X = torch.from_numpy(data.x_train[:, None]).contiguous(memory_format=fmt)  # (N, 1, 28, 28)
    X_test = torch.from_numpy(data.x_test[:, None]).contiguous(memory_format=fmt)
    net = torch_model(kind)
    optimizer = torch.optim.Adam(net.parameters(), lr=MODELS[kind]["lr"], fused=True)
    trainer = Trainer(net, optimizer, nn.CrossEntropyLoss(), device="cpu", metrics={"acc": accuracy}, amp=amp,
                      progress=False)
    train_iter = TensorBatches(X, data.y_train, MODELS[kind]["batch_size"], shuffle=True,
                               generator=torch.Generator().manual_seed(seed))
    history = trainer.fit(train_iter, epochs)
    test = trainer.evaluate(TensorBatches(X_test, data.y_test, 1000))
    return {"epoch_seconds": history["time_s"], "test_acc": test["acc"], "first_train_loss": history.batches[0]["loss"],
            "last_train_loss": history.batches[-1]["loss"]}


def run_keras(kind, data, epochs, seed):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_model(kind)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=MODELS[kind]["lr"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                  jit_compile=False)
    times, losses = [], []

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

        def on_train_batch_end(self, batch, logs=None):
            if not losses:
                losses.append(float(logs["loss"]))

    x, x_test = data.x_train[..., None], data.x_test[..., None]  # (N, 28, 28, 1): channels last
    history = model.fit(x, data.y_train, batch_size=MODELS[kind]["batch_size"], epochs=epochs, shuffle=True,
                        verbose=0, callbacks=[EpochTimes()])
    _, acc = model.evaluate(x_test, data.y_test, batch_size=1000, verbose=0)
    return {"epoch_seconds": times, "test_acc": float(acc), "first_train_loss": losses[0],
            "last_train_loss": float(history.history["loss"][-1])}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch is reported apart from the steady ones")
    session = harness.start(args, __file__)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf_threads = f"{args.threads} intra-op, 1 inter-op"
    except RuntimeError:  # TensorFlow already started in this process (a test run); its settings stay
        tf_threads = "already set in this process"
    from dlwb import data as dlwb_data
    from dlwb.train import cpu_has_native_bf16

    bf16 = cpu_has_native_bf16()  # the CNN's bf16 row

    mnist = dlwb_data.load_mnist()
    if args.smoke:
        mnist = dlwb_data.ImageData(mnist.x_train[:256], mnist.y_train[:256], mnist.x_test[:200], mnist.y_test[:200],
                                    source=mnist.source + ", 256 train / 200 test images (smoke)")
    print(f"Keras vs PyTorch: {mnist.source}, {args.epochs} epochs, {args.repeats} repeat(s)")

    def run(side, r):
        result = {}
        for kind in MODELS:
            fn = run_torch if side == "course" else run_keras
            out = fn(kind, mnist, args.epochs, args.seed + r)
            result[kind] = out
            result[f"{kind}_first_epoch_s"] = out["epoch_seconds"][0]
            result[f"{kind}_epoch_s"] = statistics.median(out["epoch_seconds"][1:])
            result[f"{kind}_test_acc"] = out["test_acc"]
        if side == "course" and bf16:
            out = run_torch("cnn", mnist, args.epochs, args.seed + r, amp=True)
            result["cnn_bf16"] = out
            result["cnn_bf16_epoch_s"] = statistics.median(out["epoch_seconds"][1:])
            result["cnn_bf16_test_acc"] = out["test_acc"]
        elif bf16:  # the same float32 Keras run is the reference of the bf16 row
            result["cnn_bf16_epoch_s"], result["cnn_bf16_test_acc"] = result["cnn_epoch_s"], result["cnn_test_acc"]
        result["first_train_loss"], result["last_train_loss"] = result["cnn"]["first_train_loss"], \
            result["cnn"]["last_train_loss"]
        return result

    runs = harness.interleave(run, args.repeats, seed=args.seed)
    per_epoch, first_epoch = "seconds per epoch (epochs 2+)", "seconds, first epoch"
    accuracy = f"test accuracy after {args.epochs} epochs"
    figures = [harness.Figure(f"{kind.upper()}: {label}", f"{kind}_{key}", unit=unit, better=better,
                              target=1.0 if (kind, key) == ("cnn", "epoch_s") else None,
                              sides=("PyTorch", "Keras"), headline=kind == "cnn")
               for kind in MODELS for key, label, unit, better in [("epoch_s", per_epoch, "s", "lower"),
                                                                   ("first_epoch_s", first_epoch, "s", "lower"),
                                                                   ("test_acc", accuracy, "", "higher")]]
    if bf16:
        figures += [harness.Figure(f"CNN, PyTorch in bf16 autocast: {label}", f"cnn_bf16_{key}", unit=unit,
                                   better=better, target=1.0 if key == "epoch_s" else None,
                                   sides=("PyTorch bf16", "Keras float32"), headline=key == "epoch_s")
                    for key, label, unit, better in [("epoch_s", per_epoch, "s", "lower"),
                                                     ("test_acc", accuracy, "", "higher")]]
    notes = ["Here 'course' is PyTorch through dlwb.train.Trainer and 'reference' is Keras 3 model.fit; a ratio "
             "below 1 for seconds means PyTorch is faster."]
    if "subset" in mnist.source:
        notes.append(f"Offline MNIST subset: {len(mnist.x_train):,} training and {len(mnist.x_test):,} held-out "
                     "test images.")
    report = harness.Report(
        NAME, "Keras vs PyTorch: the same MLP and CNN on MNIST (CPU)",
        what=("Chapter 03's MLP and chapter 04's classic CNN, trained by dlwb.train.Trainer (PyTorch, the 'course' "
              f"column) and by Keras 3 model.fit (TensorFlow backend, the 'reference' column), {args.epochs} epochs "
              "each, Adam 1e-3; seconds per epoch (first epoch apart) and test accuracy after the last epoch."),
        summary=("PyTorch `Trainer` vs Keras `fit`, chapter 04's fast twin of the classic CNN "
                 f"({len(mnist.x_train):,} MNIST training images)"),
        figures=figures,
        settings={"models": MODELS, "epochs": args.epochs, "data": mnist.source,
                  "train_images": len(mnist.x_train), "keras_backend": keras.backend.backend(),
                  "tensorflow_threads": tf_threads},
        notes=notes,
        plot=harness.Bars({kind.upper(): f"{kind}_epoch_s" for kind in MODELS}, sides=("PyTorch", "Keras"),
                          xlabel="seconds per epoch (median, epochs 2+)"))
    return harness.write_report(report, runs, session)


if __name__ == "__main__":
    main()
