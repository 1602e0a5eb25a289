"""Generative adversarial networks: the two losses, the Fréchet distance and the GAN trainer.

Defined in chapter 06 (``notebooks/06_gan.ipynb``), where the losses are derived from the
minimax game and checked against ``F.binary_cross_entropy_with_logits`` and
``keras.losses.BinaryCrossentropy(from_logits=True)``, the Fréchet distance is checked against
its closed form for Gaussians, and :class:`GANTrainer` trains an MLP GAN and a DCGAN on MNIST.
Lab 06 asks for the two losses and one training step written with plain tensors.

Conventions: ``D`` returns one **logit** per image, ``l = log(D(x) / (1 - D(x)))``, so that
``D(x) = sigmoid(l)``; the losses take logits (never probabilities) and return batch means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg
import torch
from torch import nn

from dlwb.train import Callback, Trainer


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``softplus(x) = log(1 + e^x) = log(e^0 + e^x)``, computed as a log-sum-exp: no overflow.

    ``-log(sigmoid(l)) = softplus(-l)`` and ``-log(1 - sigmoid(l)) = softplus(l)``.

    Defined in chapter 06.
    """
    return torch.logaddexp(x, torch.zeros_like(x))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss, from logits: real images are class 1, generated ones class 0.

    ``L_D = -mean log D(x) - mean log(1 - D(G(z))) = mean softplus(-real) + mean softplus(fake)``,
    the sum of two binary cross-entropies. Minimising it maximises the game's value
    ``V(D, G)``; when ``D`` cannot tell the two apart (``D = 1/2`` everywhere) it is
    ``2 log 2 = 1.386``.

    Defined in chapter 06.
    """
    return softplus(-real_logits).mean() + softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's non-saturating loss, from logits: ``L_G = -mean log D(G(z))``.

    ``= mean softplus(-fake)``: the cross-entropy of calling the fakes real. Its gradient with
    respect to a logit is ``sigmoid(l) - 1``, close to -1 when ``D`` rejects a fake with
    confidence, where the minimax loss ``mean log(1 - D(G(z)))`` has gradient ``-sigmoid(l)``,
    close to 0 (it saturates).

    Defined in chapter 06.
    """
    return softplus(-fake_logits).mean()


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and covariance ``(d, d)`` (unbiased, ``N - 1``) of the rows of ``features`` ``(N, d)``.

    Defined in chapter 06.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must have shape (N, d) with N >= 2, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_from_statistics(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    r"""Fréchet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    .. math:: d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{tr}\big(\Sigma_1 + \Sigma_2
              - 2 (\Sigma_1 \Sigma_2)^{1/2}\big)

    The matrix square root comes from ``scipy.linalg.sqrtm``. Rounding can leave it with a tiny
    imaginary part, which is dropped; if it is not finite (a singular product), ``eps`` is
    added to both diagonals and it is computed again.

    Defined in chapter 06.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes do not match: mu {mu1.shape} and {mu2.shape}, sigma {sigma1.shape} and {sigma2.shape}")
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)  # (d, d): the square root of a product of two PSD matrices
    if not np.all(np.isfinite(covmean)):
        offset = eps * np.eye(len(mu1))
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # rounding can leave imaginary parts of order 1e-10
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance(features1, features2) -> float:
    """Fréchet distance between two sets of feature vectors ``(N1, d)`` and ``(N2, d)``.

    Fits a Gaussian to each set (:func:`gaussian_statistics`) and measures the distance between
    the two Gaussians (:func:`frechet_distance_from_statistics`). With Inception features it
    is the FID; chapter 06 uses the features of a small MNIST classifier. It depends on the
    sample sizes: compare only numbers computed with the same ``N``.

    Defined in chapter 06.
    """
    return frechet_distance_from_statistics(*gaussian_statistics(features1), *gaussian_statistics(features2))


class GANTrainer(Trainer):
    """:class:`dlwb.train.Trainer` for a GAN: each step updates the discriminator, then the generator.

    The loop (epochs, devices, progress bar, history, callbacks) is the Trainer's; only
    :meth:`train_step` differs. ``train_iter`` yields batches of real images (a label, if the
    batch has one, is ignored). The logs of a step are ``loss`` (the discriminator's,
    ``2 log 2 = 1.386`` when it cannot tell real from fake), ``g_loss`` (the generator's
    non-saturating loss) and the discriminator's mean probabilities ``d_real = D(x)`` and
    ``d_fake = D(G(z))``. ``amp=True`` runs the forward passes in bfloat16 where the Trainer does.

    Defined in chapter 06.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, g_optimizer: torch.optim.Optimizer,
                 d_optimizer: torch.optim.Optimizer, *, latent_dim: int, device=None,
                 callbacks: Sequence[Callback] = (), amp: bool = False,
                 progress: bool = True) -> None:
        net = nn.ModuleDict({"generator": generator, "discriminator": discriminator})
        super().__init__(net, None, None, device=device, callbacks=callbacks, amp=amp, progress=progress)
        if self.scaler is not None:  # float16 would need one gradient scaler per optimizer
            print("NOTICE: this GPU has no bfloat16; GANTrainer trains in float32.")
            self.amp_dtype, self.scaler = None, None
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.latent_dim = latent_dim

    def sample_noise(self, n: int) -> torch.Tensor:
        """``n`` latent vectors ``z ~ N(0, I)``, shape ``(n, latent_dim)``, on the trainer's device."""
        return torch.randn(n, self.latent_dim, device=self.device)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's logits ``(B, 1)``; under mixed precision cast to float32 for the losses."""
        logits = self.discriminator(x)
        return logits.float() if self.amp_dtype is not None else logits

    def train_step(self, batch) -> dict[str, float]:
        """One discriminator step, then one generator step, on the same noise ``z``."""
        real = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, ...) real images
        z = self.sample_noise(len(real))  # (B, latent_dim)

        # 1. The discriminator: real -> 1, fake -> 0. detach(): no gradient flows into G.
        with self.autocast():
            fake = self.generator(z)  # (B, ...) like real
            real_logits = self.logits(real)  # (B, 1)
            fake_logits = self.logits(fake.detach())  # (B, 1)
            d_loss = discriminator_loss(real_logits, fake_logits)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()

        # 2. The generator: make the updated D call the same fakes real. D is frozen, so
        # backward() computes gradients for G's parameters only.
        self.discriminator.requires_grad_(False)
        try:
            with self.autocast():
                g_loss = generator_loss(self.logits(fake))
            self.g_optimizer.zero_grad(set_to_none=True)
            g_loss.backward()
            self.g_optimizer.step()
        finally:
            self.discriminator.requires_grad_(True)
        return {"loss": d_loss.item(), "g_loss": g_loss.item(),
                "d_real": torch.sigmoid(real_logits).mean().item(),
                "d_fake": torch.sigmoid(fake_logits).mean().item()}

    @torch.no_grad()
    def eval_step(self, batch) -> dict[str, float]:
        """Both losses on a batch of held-out real images and fresh noise, without updates."""
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        with self.autocast():
            real_logits = self.logits(real)
            fake_logits = self.logits(self.generator(self.sample_noise(len(real))))
        return {"loss": discriminator_loss(real_logits, fake_logits).item(),
                "g_loss": generator_loss(fake_logits).item()}
