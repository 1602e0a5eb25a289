"""GAN: chapter 06's DCGAN and GANTrainer against the TensorFlow-tutorial DCGAN recipe, at equal training time.

The course side is chapter 06's DCGAN as the notebook trains it (``benchmarks/course_models.py``:
width 16, latent 64; ``dlwb.gan.GANTrainer``, Adam 5e-4 with beta1 0.5, batch 32); the reference is
the TensorFlow tutorial's recipe re-stated in PyTorch (``benchmarks/reference/tf_dcgan.py``: a
larger generator, latent 100, Adam 1e-4, batch 256, both networks updated from one forward pass).
Both train on the same MNIST training images in ``[-1, 1]`` for the same wall-clock budget. Then
each generator draws 1,000 images from fixed noise, and chapter 06's Fréchet distance
(``dlwb.gan.frechet_distance``) compares their features in chapter 06's evaluator CNN (trained
once per run of this script, shared by both sides) with those of the training images.
Seconds per epoch: the measured seconds per step times the recipe's steps per epoch::

    .venv/bin/python -m benchmarks.gan                       # 60 s of training per side, 1 repeat
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from benchmarks import harness
from benchmarks.reference import tf_dcgan

NAME = "gan"
COURSE = {"batch_size": 32, "lr": 5e-4, "betas": (0.5, 0.999)}  # notebooks/06_gan.ipynb's parameters
NUM_SAMPLES, EVAL_EPOCHS = 1000, 3  # chapter 06: generated images per model, evaluator epochs


def parse_args(argv=None):
    p = harness.parser(__doc__.split("\n\n")[0], repeats=1)
    p.add_argument("--budget", type=float, default=60.0, help="seconds of training per side (default 60)")
    return harness.parse_args(p, argv)


def train_evaluator(X, y, epochs, seed):
    """Chapter 06's evaluator: Adam 1e-3, batch 64; returns the net and a features function (N, 128)."""
    from torch.utils.data import DataLoader, TensorDataset

    from benchmarks.course_models import make_evaluator
    from dlwb.metrics import accuracy
    from dlwb.train import Trainer

    torch.manual_seed(seed)
    evaluator = make_evaluator()
    trainer = Trainer(evaluator, torch.optim.Adam(evaluator.parameters(), lr=1e-3), nn.CrossEntropyLoss(),
                      device="cpu", metrics={"acc": accuracy}, progress=False)
    trainer.fit(DataLoader(TensorDataset(X, y), batch_size=64, shuffle=True,
                           generator=torch.Generator().manual_seed(seed)), epochs)

    @torch.no_grad()
    def features(images):
        evaluator.eval()
        return torch.cat([evaluator[:-2](b) for b in images.split(500)]).numpy().astype(np.float64)  # (N, 128)

    return features


def run_course(X, budget, seed, z_eval):
    from benchmarks.course_models import LATENT_DIM, make_dcgan_discriminator, make_dcgan_generator
    from torch.utils.data import DataLoader, TensorDataset

    from dlwb.gan import GANTrainer
    from dlwb.train import Callback

    G, D = make_dcgan_generator(), make_dcgan_discriminator()
    clock = harness.Stopwatch()

    class Budget(Callback):
        def on_batch_end(self, trainer, logs):
            trainer.stop_training = clock.elapsed >= budget

    trainer = GANTrainer(G, D, torch.optim.Adam(G.parameters(), lr=COURSE["lr"], betas=COURSE["betas"]),
                         torch.optim.Adam(D.parameters(), lr=COURSE["lr"], betas=COURSE["betas"]),
                         latent_dim=LATENT_DIM, device="cpu", callbacks=[Budget()], progress=False)
    train_iter = DataLoader(TensorDataset(X), batch_size=COURSE["batch_size"], shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(seed))
    clock.start()
    history = trainer.fit(train_iter, 10_000)
    clock.pause()
    G.eval()
    with torch.no_grad():
        samples = G(z_eval[:, :LATENT_DIM])  # (NUM_SAMPLES, 1, 28, 28)
    return {"samples": samples, "steps": trainer.step, "train_seconds": clock.elapsed,
            "steps_per_epoch": len(train_iter), "first_d_loss": history.batches[0]["loss"],
            "last_d_loss": history.batches[-1]["loss"]}


def run_reference(X, budget, seed, z_eval):
    cfg = tf_dcgan.Config()
    clock = harness.Stopwatch()
    clock.start()
    out = tf_dcgan.train(X, cfg, after_step=lambda G, step, logs: clock.elapsed >= budget,
                         generator=torch.Generator().manual_seed(seed))
    clock.pause()
    G = out["generator"]
    G.eval()
    with torch.no_grad():
        samples = G(z_eval[:, :cfg.noise_dim])  # (NUM_SAMPLES, 1, 28, 28)
    return {"samples": samples, "steps": out["steps"], "train_seconds": clock.elapsed,
            "steps_per_epoch": math.ceil(len(X) / cfg.batch_size), "first_d_loss": out["first"]["disc_loss"],
            "last_d_loss": out["last"]["disc_loss"]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    session = harness.start(args, __file__)
    from dlwb import data as dlwb_data
    from dlwb.gan import frechet_distance

    mnist = dlwb_data.load_mnist()
    n_train, n_samples = (256, 200) if args.smoke else (len(mnist.x_train), NUM_SAMPLES)
    X = torch.from_numpy(mnist.x_train[:n_train, None] * 2 - 1)  # (N, 1, 28, 28) in [-1, 1]
    y = torch.from_numpy(mnist.y_train[:n_train])
    budget = 1.5 if args.smoke else args.budget
    features = train_evaluator(X, y, 1 if args.smoke else EVAL_EPOCHS, args.seed)
    train_features = features(X)
    # (n_samples, 128): each side takes the first latent_dim columns, so both draw from the same noise
    z_eval = torch.randn(n_samples, 128, generator=torch.Generator().manual_seed(args.seed + 3))
    noise = torch.rand(n_samples, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed)) * 2 - 1
    held_out = torch.from_numpy(mnist.x_test[:n_samples, None] * 2 - 1)  # (n_samples, 1, 28, 28)
    baseline = {"real held-out images": frechet_distance(features(held_out), train_features),
                "uniform noise": frechet_distance(features(noise), train_features)}
    print(f"DCGAN: {mnist.source}, {budget:g} s per side; Fréchet baselines {baseline}")

    def run(side, r):
        fn = run_course if side == "course" else run_reference
        out = fn(X, budget, args.seed + r, z_eval)
        seconds_per_step = out["train_seconds"] / out["steps"]
        return {"steps": out["steps"], "train_seconds": round(out["train_seconds"], 2),
                "epochs": out["steps"] / out["steps_per_epoch"], "steps_per_epoch": out["steps_per_epoch"],
                "seconds_per_epoch": seconds_per_step * out["steps_per_epoch"],
                "images_per_s": out["steps"] * len(X) / out["steps_per_epoch"] / out["train_seconds"],
                "frechet": frechet_distance(features(out["samples"]), train_features),
                "first_d_loss": out["first_d_loss"], "last_d_loss": out["last_d_loss"]}

    runs = harness.interleave(run, args.repeats, seed=args.seed)
    report = harness.Report(
        NAME, "DCGAN: chapter 06 vs the TensorFlow-tutorial recipe (MNIST, CPU)",
        what=(f"Chapter 06's DCGAN + GANTrainer (batch 32, Adam 5e-4, beta1 0.5) against the TF tutorial's DCGAN "
              f"re-stated in PyTorch (batch 256, Adam 1e-4), {budget:g} s of training each on {n_train:,} MNIST "
              f"images; Fréchet distance (chapter 06's evaluator features, {n_samples:,} samples vs the training "
              "images) after that budget, and seconds per epoch."),
        summary="DCGAN vs TF-tutorial recipe",
        figures=[harness.Figure(f"Fréchet distance after {budget:g} s", "frechet", headline=True),
                 harness.Figure("seconds per epoch", "seconds_per_epoch", unit="s"),
                 harness.Figure("training images per second", "images_per_s", unit="img/s", better="higher"),
                 harness.Figure(f"epochs in {budget:g} s", "epochs", better="higher")],
        settings={"course": COURSE, "reference": tf_dcgan.Config().__dict__, "budget_s": budget,
                  "train_images": n_train, "samples": n_samples, "evaluator_epochs": 1 if args.smoke else EVAL_EPOCHS,
                  "data": mnist.source, "frechet_baselines": baseline},
        notes=["Fréchet distance of reference sets: " + ", ".join(f"{k} {v:.1f}" for k, v in baseline.items())
               + " (lower is closer to the training images)."],
        plot=harness.Bars({"": "frechet"}, extra=baseline,
                          xlabel=f"Fréchet distance after {budget:g} s of training (lower is better)"))
    return harness.write_report(report, runs, session)


if __name__ == "__main__":
    main()
