"""dlwb.gan: the GAN losses, the Fréchet distance and one step of GANTrainer.

Tolerances: in float64 the losses must equal their closed forms and PyTorch's
``F.binary_cross_entropy_with_logits`` to rtol 1e-12 (the same arithmetic up to rounding); the
Fréchet distance must equal the closed form for Gaussians to rtol 1e-9 (scipy's ``sqrtm`` in
float64), be 0 for identical sets to 1e-9 of the features' variance, and be symmetric to rtol 1e-9.
A GAN step with SGD must give exactly the update computed by hand with autograd (float64, rtol 1e-12).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlwb import gan

RTOL = 1e-12  # float64 losses vs closed forms and PyTorch
FD_RTOL = 1e-9  # Fréchet distance vs closed forms (matrix square roots in float64)


def float64(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


# --- the losses --------------------------------------------------------------------------------------------------

def test_softplus_is_log_one_plus_exp_without_overflow():
    x = float64([-1000.0, -50.0, -1.0, 0.0, 1.0, 50.0, 1000.0])
    expected = [0.0, math.exp(-50.0), math.log1p(math.exp(-1.0)), math.log(2.0), 1.0 + math.log1p(math.exp(-1.0)),
                50.0 + math.log1p(math.exp(-50.0)), 1000.0]
    assert torch.allclose(gan.softplus(x), float64(expected), rtol=RTOL, atol=0)


def test_losses_at_one_half_are_two_log_two_and_log_two():
    zeros = torch.zeros(10, 1, dtype=torch.float64)  # D(x) = sigmoid(0) = 1/2 for every sample
    assert gan.discriminator_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2), rel=RTOL)
    assert gan.generator_loss(zeros).item() == pytest.approx(math.log(2), rel=RTOL)


def test_losses_closed_form_for_single_logits():
    real, fake = float64([[2.0]]), float64([[-1.0]])
    # -log sigmoid(2) - log(1 - sigmoid(-1)) = log(1 + e^-2) + log(1 + e^-1)
    assert gan.discriminator_loss(real, fake).item() == pytest.approx(
        math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)), rel=RTOL)
    # -log sigmoid(-1) = log(1 + e)
    assert gan.generator_loss(fake).item() == pytest.approx(math.log1p(math.e), rel=RTOL)


def test_the_two_terms_are_separate_means():
    real, fake = torch.full((8, 1), 2.0, dtype=torch.float64), torch.full((3, 1), -1.0, dtype=torch.float64)
    assert gan.discriminator_loss(real, fake).item() == pytest.approx(
        math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)), rel=RTOL)


@pytest.mark.parametrize("shape, scale", [((1, 1), 1.0), ((64, 1), 3.0), ((16,), 30.0), ((8, 4), 1e3)])
def test_losses_match_binary_cross_entropy_with_logits(shape, scale):
    gen = torch.Generator().manual_seed(len(shape) * 100 + int(scale))
    real = scale * torch.randn(*shape, generator=gen, dtype=torch.float64)
    fake = scale * torch.randn(*shape, generator=gen, dtype=torch.float64)
    ref_d = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
             + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    ref_g = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    assert torch.isclose(gan.discriminator_loss(real, fake), ref_d, rtol=RTOL, atol=0)
    assert torch.isclose(gan.generator_loss(fake), ref_g, rtol=RTOL, atol=0)


def test_loss_gradients_are_the_closed_forms_and_stay_finite():
    real = float64([-1000.0, -3.0, 0.0, 2.5, 1000.0]).requires_grad_(True)
    fake = float64([-1000.0, -0.5, 0.0, 4.0, 1000.0]).requires_grad_(True)
    gan.discriminator_loss(real, fake).backward()
    n = len(real)
    # d/dl mean softplus(-l) = (sigmoid(l) - 1) / n;  d/dl mean softplus(l) = sigmoid(l) / n
    assert torch.allclose(real.grad, (torch.sigmoid(real) - 1).detach() / n, rtol=RTOL, atol=1e-300)
    assert torch.allclose(fake.grad, torch.sigmoid(fake).detach() / n, rtol=RTOL, atol=1e-300)
    fake_g = fake.detach().clone().requires_grad_(True)
    gan.generator_loss(fake_g).backward()
    assert torch.allclose(fake_g.grad, (torch.sigmoid(fake_g) - 1).detach() / n, rtol=RTOL, atol=1e-300)
    # The non-saturating loss keeps a gradient of about -1/n where D rejects a fake (logit -1000).
    assert fake_g.grad[0].item() == pytest.approx(-1 / n, rel=1e-12)


def discrete_problem():
    """Two distributions on 4 points, as 20 equally weighted samples each (means are exact expectations)."""
    p_data = np.array([0.40, 0.30, 0.20, 0.10])
    p_g = np.array([0.10, 0.25, 0.25, 0.40])
    real_points = np.repeat(np.arange(4), (p_data * 20).round().astype(int))  # (20,) point indices
    fake_points = np.repeat(np.arange(4), (p_g * 20).round().astype(int))  # (20,)
    return p_data, p_g, real_points, fake_points


def test_discriminator_loss_at_the_optimum_is_log_four_minus_twice_js():
    p_data, p_g, real_points, fake_points = discrete_problem()
    optimal_logit = torch.from_numpy(np.log(p_data / p_g))  # l*(x) = log p_data(x) - log p_g(x)
    loss = gan.discriminator_loss(optimal_logit[real_points], optimal_logit[fake_points]).item()
    m = (p_data + p_g) / 2
    js = 0.5 * np.sum(p_data * np.log(p_data / m)) + 0.5 * np.sum(p_g * np.log(p_g / m))
    assert loss == pytest.approx(math.log(4) - 2 * js, rel=RTOL)


def test_the_optimal_discriminator_minimises_the_loss():
    p_data, p_g, real_points, fake_points = discrete_problem()
    logit = torch.from_numpy(np.log(p_data / p_g)).requires_grad_(True)  # one logit per point: any discriminator
    loss = gan.discriminator_loss(logit[real_points], logit[fake_points])
    (grad,) = torch.autograd.grad(loss, logit)
    assert torch.allclose(grad, torch.zeros(4, dtype=torch.float64), atol=1e-15)  # stationary at l*
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # and a minimum: the loss is convex in the logits
        moved = logit.detach() + 0.1 * torch.randn(4, generator=gen, dtype=torch.float64)
        assert gan.discriminator_loss(moved[real_points], moved[fake_points]).item() > loss.item()


def test_when_the_generator_matches_the_data_the_optimal_loss_is_two_log_two():
    _, _, real_points, _ = discrete_problem()
    logit = torch.zeros(4, dtype=torch.float64)  # D* = 1/2 when p_g = p_data
    assert gan.discriminator_loss(logit[real_points], logit[real_points]).item() == pytest.approx(2 * math.log(2), rel=RTOL)


# --- the Fréchet distance ------------------------------------------------------------------------------------------

def test_gaussian_statistics_are_mean_and_unbiased_covariance():
    x = np.random.default_rng(0).standard_normal((50, 3))
    mu, sigma = gan.gaussian_statistics(x)
    assert np.allclose(mu, x.mean(axis=0), rtol=RTOL)
    assert np.allclose(sigma, torch.cov(torch.from_numpy(x).T).numpy(), rtol=1e-12)  # divides by N - 1
    with pytest.raises(ValueError, match="shape"):
        gan.gaussian_statistics(np.zeros(5))


def test_frechet_distance_one_dimensional_closed_form():
    # (mu1 - mu2)^2 + (sigma1 - sigma2)^2
    assert gan.frechet_distance_from_statistics(1.0, 4.0, -0.5, 0.25) == pytest.approx(1.5**2 + 1.5**2, rel=FD_RTOL)


def test_frechet_distance_diagonal_covariances_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    std1, std2 = rng.uniform(0.3, 2.0, 6), rng.uniform(0.3, 2.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((std1 - std2) ** 2)
    got = gan.frechet_distance_from_statistics(mu1, np.diag(std1**2), mu2, np.diag(std2**2))
    assert got == pytest.approx(expected, rel=FD_RTOL)


def symmetric_sqrt(a):
    eigenvalues, eigenvectors = np.linalg.eigh(a)
    return eigenvectors @ np.diag(np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


@pytest.mark.parametrize("d", [2, 5, 20])
def test_frechet_distance_general_covariances_against_the_symmetric_formula(d):
    rng = np.random.default_rng(d)
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    sigma1, sigma2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)  # do not commute
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    root1 = symmetric_sqrt(sigma1)
    # tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2), a square root of a symmetric matrix
    expected = (np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
                - 2 * np.trace(symmetric_sqrt(root1 @ sigma2 @ root1)))
    assert gan.frechet_distance_from_statistics(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=FD_RTOL)


def test_frechet_distance_is_zero_for_identical_sets_and_symmetric():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((500, 16)) * rng.uniform(0.5, 3.0, 16) + 1.0
    b = rng.standard_normal((800, 16))
    assert abs(gan.frechet_distance(a, a)) < 1e-9 * np.trace(np.cov(a, rowvar=False))
    assert gan.frechet_distance(a, b) == pytest.approx(gan.frechet_distance(b, a), rel=FD_RTOL)
    assert gan.frechet_distance(a, b) > 0


def test_frechet_distance_of_samples_approaches_the_gaussians_distance():
    # N(1, 1.5^2 I) and N(0, I) in 4-D: 4 (1 - 0)^2 + 4 (1.5 - 1)^2 = 5. With 20,000 samples each the estimate
    # is within a few hundredths (its bias is about d^2 / N, its noise a little more).
    rng = np.random.default_rng(3)
    a = 1.0 + 1.5 * rng.standard_normal((20_000, 4))
    b = rng.standard_normal((20_000, 4))
    assert gan.frechet_distance(a, b) == pytest.approx(5.0, abs=0.1)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # scipy says the product is singular
def test_frechet_distance_handles_features_that_never_vary():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((300, 5)), rng.standard_normal((300, 5)) + 0.5
    a[:, 0] = b[:, 0] = 0.0  # a dead unit: singular covariances
    got = gan.frechet_distance(a, b)
    expected = gan.frechet_distance(a[:, 1:], b[:, 1:])  # the constant feature contributes nothing
    assert math.isfinite(got) and got == pytest.approx(expected, rel=1e-4)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        gan.frechet_distance_from_statistics(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# --- the GAN trainer ---------------------------------------------------------------------------------------------

class FixedNoise(gan.GANTrainer):
    """The trainer with a fixed batch of noise, so a test can recompute the step."""

    def __init__(self, *args, noise, **kwargs):
        super().__init__(*args, **kwargs)
        self.noise = noise

    def sample_noise(self, n):
        return self.noise[:n]


def tiny_problem(lr=0.05, seed=0):
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    D = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64) + 1.0  # (16, 3) "real" data
    z = torch.randn(16, 2, generator=gen, dtype=torch.float64)  # (16, 2) noise
    g_opt, d_opt = torch.optim.SGD(G.parameters(), lr=lr), torch.optim.SGD(D.parameters(), lr=lr)
    trainer = FixedNoise(G, D, g_opt, d_opt, latent_dim=2, noise=z, device="cpu", progress=False)
    return trainer, G, D, g_opt, d_opt, x, z


def parameters_of(module):
    return [p.detach().clone() for p in module.parameters()]


def test_one_step_is_exactly_a_d_step_then_a_g_step_against_the_updated_d():
    lr = 0.05
    trainer, G, D, *_, x, z = tiny_problem(lr)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    # By hand: D descends L_D with the fakes held fixed ...
    fake = G_ref(z).detach()
    d_loss = gan.discriminator_loss(D_ref(x), D_ref(fake))
    d_grads = torch.autograd.grad(d_loss, list(D_ref.parameters()))
    with torch.no_grad():
        for p, g in zip(D_ref.parameters(), d_grads):
            p -= lr * g
    # ... then G descends L_G through the updated D.
    g_loss = gan.generator_loss(D_ref(G_ref(z)))
    g_grads = torch.autograd.grad(g_loss, list(G_ref.parameters()))
    with torch.no_grad():
        for p, g in zip(G_ref.parameters(), g_grads):
            p -= lr * g
    logs = trainer.train_step([x])
    for ours, ref in zip(list(D.parameters()) + list(G.parameters()), list(D_ref.parameters()) + list(G_ref.parameters())):
        assert torch.allclose(ours, ref, rtol=RTOL, atol=1e-15)
    assert logs["loss"] == pytest.approx(d_loss.item(), rel=RTOL)
    assert logs["g_loss"] == pytest.approx(g_loss.item(), rel=RTOL)


def test_each_network_moves_only_in_its_own_update_and_its_loss_falls():
    trainer, G, D, g_opt, d_opt, x, z = tiny_problem()
    start_G, start_D = parameters_of(G), parameters_of(D)
    seen = {}

    def after_d_step(optimizer, args, kwargs):
        seen["G"], seen["D"] = parameters_of(G), parameters_of(D)
        with torch.no_grad():
            seen["d_loss"] = gan.discriminator_loss(D(x), D(G(z))).item()
            seen["g_loss"] = gan.generator_loss(D(G(z))).item()

    with torch.no_grad():
        d_loss_before = gan.discriminator_loss(D(x), D(G(z))).item()
    handle = d_opt.register_step_post_hook(after_d_step)
    trainer.train_step([x])
    handle.remove()
    # The discriminator's update: D moves, its loss on this batch falls, G does not move.
    assert all(torch.equal(a, b) for a, b in zip(seen["G"], start_G))
    assert not all(torch.equal(a, b) for a, b in zip(seen["D"], start_D))
    assert seen["d_loss"] < d_loss_before
    # The generator's update: G moves, its loss against the updated D falls, D does not move.
    assert all(torch.equal(a, b) for a, b in zip(parameters_of(D), seen["D"]))
    assert not all(torch.equal(a, b) for a, b in zip(parameters_of(G), seen["G"]))
    with torch.no_grad():
        assert gan.generator_loss(D(G(z))).item() < seen["g_loss"]


def test_the_generator_step_leaves_no_gradient_in_d_and_unfreezes_it():
    trainer, G, D, *_, x, z = tiny_problem()
    D_ref = copy.deepcopy(D)
    d_loss = gan.discriminator_loss(D_ref(x), D_ref(G(z).detach()))
    expected = torch.autograd.grad(d_loss, list(D_ref.parameters()))
    trainer.train_step([x])
    assert all(p.requires_grad for p in D.parameters())
    for p, g in zip(D.parameters(), expected):  # D's .grad holds L_D's gradient only, nothing from G's step
        assert torch.allclose(p.grad, g, rtol=RTOL, atol=1e-15)


def test_logs_labels_and_fit():
    trainer, *_ = tiny_problem()
    x = torch.randn(40, 3, dtype=torch.float64)
    labels = torch.zeros(40, dtype=torch.long)  # a batch may carry labels; they are ignored
    trainer.noise = torch.randn(40, 2, dtype=torch.float64)
    loader = DataLoader(TensorDataset(x, labels), batch_size=10)
    history = trainer.fit(loader, 2, val_iter=DataLoader(TensorDataset(x), batch_size=20))
    assert trainer.step == 8 and len(history.epochs) == 2
    last = history.epochs[-1]
    assert {"loss", "g_loss", "d_real", "d_fake", "val_loss", "val_g_loss"} <= set(last)
    assert 0 < last["d_real"] < 1 and 0 < last["d_fake"] < 1
    assert all(math.isfinite(v) for v in last.values())


def test_amp_on_cpu_is_bf16_where_native_and_else_a_notice_and_float32(capsys, monkeypatch):
    from dlwb import train

    for native in (False, True):
        monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
        G, D = nn.Linear(2, 3), nn.Linear(3, 1)
        trainer = gan.GANTrainer(G, D, torch.optim.SGD(G.parameters(), lr=0.1),
                                 torch.optim.SGD(D.parameters(), lr=0.1), latent_dim=2, device="cpu", amp=True,
                                 progress=False)
        noticed = "NOTICE" in capsys.readouterr().out
        assert (trainer.amp_dtype, noticed) == ((torch.bfloat16, False) if native else (None, True))
        logs = trainer.train_step([torch.randn(8, 3)])  # bf16 autocast runs on any CPU, emulated where not native
        assert all(math.isfinite(v) for v in logs.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_step_on_cuda_with_bfloat16_autocast():
    G = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16))
    D = nn.Sequential(nn.Linear(16, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    trainer = gan.GANTrainer(G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()),
                             latent_dim=8, device="cuda", amp=True, progress=False)
    logs = trainer.train_step([torch.randn(64, 16, device="cuda")])
    assert all(math.isfinite(v) for v in logs.values())
    assert next(G.parameters()).device.type == "cuda"
