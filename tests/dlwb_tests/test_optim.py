"""dlwb.optim vs torch.optim and keras.optimizers: 100-step trajectories, schedules, bias correction, errors.

The test problem: softmax regression of 256 random points (8 features, 4 classes), parameters ``W`` (8, 4) and
``b`` (4,), in mini-batches of 32 taken in a fixed order. Every implementation gets its gradients from the same
NumPy function, evaluated at its own current parameters, so differences come from the optimizers alone.

Precision and tolerances:

- Trajectories run in **float64** everywhere and must agree at each of the 100 steps within ``rtol=1e-10``,
  ``atol=1e-12`` (parameters are of size 1; the measured differences are below 1e-15: rounding only).
  Keras is made to compute in float64 by building its optimizer under ``keras.config.set_floatx("float64")``
  (otherwise a constant learning rate lives in a float32 variable) and by passing hyperparameters that Keras
  converts with ``ops.cast`` (SGD's momentum, Adam's betas, weight decay) as NumPy float64 numbers (a Python
  float becomes a float32 tensor first: 0.9 -> 0.899999976).
- The same comparison in **float32** (PyTorch float32 tensors against our float32 arrays) holds to
  ``rtol=1e-4``, ``atol=1e-6`` only.
- Schedules: PyTorch's (Python floats) within ``rtol=1e-12``; Keras' within ``rtol=1e-12`` when given float64
  learning rates, and within ``rtol=1e-5`` with its float32 default.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from dlwb import losses, optim

RTOL, ATOL = 1e-10, 1e-12  # float64 trajectories
RTOL32, ATOL32 = 1e-4, 1e-6  # float32 trajectories
NUM_STEPS = 100
f64 = np.float64

# --------------------------------------------------------------------------------------------- the problem
_rng = np.random.default_rng(0)
N_POINTS, N_FEATURES, N_CLASSES, BATCH = 256, 8, 4, 32
X = _rng.standard_normal((N_POINTS, N_FEATURES))
Y = np.argmax(X @ _rng.standard_normal((N_FEATURES, N_CLASSES)) + _rng.standard_normal((N_POINTS, N_CLASSES)), axis=1)
INIT = {"W": 0.1 * _rng.standard_normal((N_FEATURES, N_CLASSES)), "b": np.zeros(N_CLASSES)}


def grads_at(params, t):
    """Gradients of the mean softmax cross-entropy on batch ``t`` (batches cycle through the data in order)."""
    rows = slice(t * BATCH % N_POINTS, t * BATCH % N_POINTS + BATCH)
    dtype = params["W"].dtype
    dz = losses.softmax_cross_entropy_grad(X[rows] @ params["W"] + params["b"], Y[rows])
    return {"W": (X[rows].T @ dz).astype(dtype), "b": dz.sum(axis=0).astype(dtype)}


def run_ours(opt, dtype=np.float64):
    params = {k: v.astype(dtype) for k, v in INIT.items()}
    path = {k: [] for k in params}
    for t in range(NUM_STEPS):
        opt.step(params, grads_at(params, t))
        for k in params:
            assert params[k].dtype == dtype, "the optimizer changed the parameter's dtype"
            path[k].append(params[k].copy())
    return {k: np.array(v) for k, v in path.items()}


def run_torch(make_optimizer, make_scheduler=None, dtype=torch.float64):
    params = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in INIT.items()}
    opt = make_optimizer(list(params.values()))
    scheduler = make_scheduler(opt) if make_scheduler else None
    path = {k: [] for k in params}
    for t in range(NUM_STEPS):
        grads = grads_at({k: p.detach().numpy() for k, p in params.items()}, t)
        for k, p in params.items():
            p.grad = torch.from_numpy(grads[k])
        opt.step()
        if scheduler is not None:
            scheduler.step()
        for k, p in params.items():
            path[k].append(p.detach().numpy().copy())
    return {k: np.array(v) for k, v in path.items()}


def run_keras(make_optimizer):
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        variables = {k: keras.Variable(v, dtype="float64") for k, v in INIT.items()}
        opt = make_optimizer(keras)
        opt.build(list(variables.values()))

        @tf.function  # traced once; the same float64 arithmetic as eager steps, several times faster
        def apply(grads):
            opt.apply(grads, list(variables.values()))

        path = {k: [] for k in variables}
        for t in range(NUM_STEPS):
            grads = grads_at({k: v.numpy() for k, v in variables.items()}, t)
            apply([tf.constant(grads[k]) for k in variables])
            for k, v in variables.items():
                path[k].append(v.numpy().copy())
    finally:
        keras.config.set_floatx(floatx)
    return {k: np.array(v) for k, v in path.items()}


def assert_same_trajectory(ours, reference, rtol=RTOL, atol=ATOL):
    for k in ours:
        bad = ~np.isclose(ours[k], reference[k], rtol=rtol, atol=atol)
        if bad.any():
            step, *index = np.argwhere(bad)[0]
            raise AssertionError(
                f"trajectories first differ at step {step + 1}, parameter {k}{list(index)}: "
                f"ours {ours[k][(step, *index)]!r}, reference {reference[k][(step, *index)]!r} "
                f"(rtol={rtol:g}, atol={atol:g})"
            )


def max_difference(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


# --------------------------------------------------------------------------------------------- cases
def warm_cosine(lr, start_lr, final_lr, warmup=10):
    return functools.partial(optim.warmup_cosine, lr=lr, warmup_steps=warmup, total_steps=NUM_STEPS,
                             start_lr=start_lr, final_lr=final_lr)


def torch_warm_cosine(start_factor, final_lr, warmup=10):
    def make(opt):
        s = torch.optim.lr_scheduler
        return s.SequentialLR(opt, [s.LinearLR(opt, start_factor=start_factor, end_factor=1.0, total_iters=warmup),
                                    s.CosineAnnealingLR(opt, T_max=NUM_STEPS - warmup, eta_min=final_lr)],
                              milestones=[warmup])
    return make


#: name -> (our optimizer with convention="torch", torch optimizer factory, torch scheduler factory or None)
TORCH_CASES = {
    "sgd": (lambda: optim.SGD(0.1), lambda ps: torch.optim.SGD(ps, lr=0.1), None),
    "sgd_momentum": (lambda: optim.SGD(0.1, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), None),
    "sgd_nesterov_l2": (lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), None),
    "sgd_momentum_steplr": (lambda: optim.SGD(functools.partial(optim.step_decay, lr=0.1, step_size=30, gamma=0.1),
                                              momentum=0.9),
                            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
                            lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=30, gamma=0.1)),
    "rmsprop_defaults": (lambda: optim.RMSprop(0.01), lambda ps: torch.optim.RMSprop(ps, lr=0.01), None),
    "rmsprop_momentum_l2": (lambda: optim.RMSprop(0.01, rho=0.9, eps=1e-6, momentum=0.5, weight_decay=0.1),
                            lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5,
                                                           weight_decay=0.1), None),
    "adam_defaults": (lambda: optim.Adam(0.01), lambda ps: torch.optim.Adam(ps, lr=0.01), None),
    "adam_betas_eps_l2": (lambda: optim.Adam(0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                          lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                          None),
    "adamw": (lambda: optim.AdamW(0.01, weight_decay=0.1),
              lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1), None),
    "adamw_as_adam_decoupled": (lambda: optim.AdamW(0.01, weight_decay=0.1),
                                lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1,
                                                            decoupled_weight_decay=True), None),
    "adamw_warmup_cosine": (lambda: optim.AdamW(warm_cosine(0.01, 0.001, 1e-4), weight_decay=0.1),
                            lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
                            torch_warm_cosine(0.1, 1e-4)),
    "adam_cosine": (lambda: optim.Adam(functools.partial(optim.cosine_decay, lr=0.01, total_steps=NUM_STEPS,
                                                         final_lr=1e-3)),
                    lambda ps: torch.optim.Adam(ps, lr=0.01),
                    lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=NUM_STEPS, eta_min=1e-3)),
}


def keras_warm_cosine(keras):
    return keras.optimizers.schedules.CosineDecay(f64(0.001), NUM_STEPS - 10, alpha=0.01, warmup_target=f64(0.01),
                                                  warmup_steps=10)


#: name -> (our optimizer with convention="keras", keras optimizer factory taking the keras module)
KERAS_CASES = {
    "sgd": (lambda: optim.SGD(0.1, convention="keras"), lambda k: k.optimizers.SGD(0.1)),
    "sgd_momentum": (lambda: optim.SGD(0.1, momentum=0.9, convention="keras"),
                     lambda k: k.optimizers.SGD(0.1, momentum=f64(0.9))),
    "sgd_nesterov_decay": (lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01, convention="keras"),
                           lambda k: k.optimizers.SGD(0.1, momentum=f64(0.9), nesterov=True, weight_decay=f64(0.01))),
    "sgd_momentum_step_decay": (
        lambda: optim.SGD(functools.partial(optim.step_decay, lr=0.1, step_size=30, gamma=0.1), momentum=0.9,
                          convention="keras"),
        lambda k: k.optimizers.SGD(k.optimizers.schedules.ExponentialDecay(f64(0.1), 30, f64(0.1), staircase=True),
                                   momentum=f64(0.9))),
    "rmsprop_defaults": (lambda: optim.RMSprop(0.001, rho=0.9, eps=1e-7, convention="keras"),
                         lambda k: k.optimizers.RMSprop(0.001)),
    "rmsprop_momentum_decay": (
        lambda: optim.RMSprop(0.01, rho=0.9, eps=1e-7, momentum=0.5, weight_decay=0.1, convention="keras"),
        lambda k: k.optimizers.RMSprop(0.01, momentum=f64(0.5), weight_decay=f64(0.1))),
    "adam_defaults": (lambda: optim.Adam(0.01, eps=1e-7, convention="keras"),
                      lambda k: k.optimizers.Adam(0.01, beta_1=f64(0.9), beta_2=f64(0.999))),
    "adam_betas_eps_decay": (
        lambda: optim.Adam(0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, convention="keras"),
        lambda k: k.optimizers.Adam(0.01, beta_1=f64(0.8), beta_2=f64(0.99), epsilon=1e-6, weight_decay=f64(0.1))),
    "adamw": (lambda: optim.AdamW(0.01, eps=1e-7, weight_decay=0.1, convention="keras"),
              lambda k: k.optimizers.AdamW(0.01, weight_decay=f64(0.1), beta_1=f64(0.9), beta_2=f64(0.999))),
    "adamw_warmup_cosine": (
        lambda: optim.AdamW(warm_cosine(0.01, 0.001, 1e-4), eps=1e-7, weight_decay=0.1, convention="keras"),
        lambda k: k.optimizers.AdamW(keras_warm_cosine(k), weight_decay=f64(0.1), beta_1=f64(0.9),
                                     beta_2=f64(0.999))),
}


# --------------------------------------------------------------------------------------------- trajectories
@pytest.mark.parametrize("name", TORCH_CASES)
def test_trajectory_matches_torch(name):
    ours, make_torch, make_scheduler = TORCH_CASES[name]
    assert_same_trajectory(run_ours(ours()), run_torch(make_torch, make_scheduler))


@pytest.mark.parametrize("name", KERAS_CASES)
def test_trajectory_matches_keras(name):
    ours, make_keras = KERAS_CASES[name]
    assert_same_trajectory(run_ours(ours()), run_keras(make_keras))


@pytest.mark.parametrize("name", ["sgd_momentum", "adam_defaults", "adamw"])
def test_float32_trajectory_matches_torch_loosely(name):
    ours, make_torch, make_scheduler = TORCH_CASES[name]
    ours32 = run_ours(ours(), dtype=np.float32)
    torch32 = run_torch(make_torch, make_scheduler, dtype=torch.float32)
    assert_same_trajectory(ours32, torch32, rtol=RTOL32, atol=ATOL32)
    # ... but not to float64's tolerance: float32 rounding is visible after 100 steps
    assert max_difference(ours32, torch32) > ATOL


def test_list_and_dict_parameters_give_the_same_result():
    params_dict = {k: v.copy() for k, v in INIT.items()}
    params_list = [v.copy() for v in INIT.values()]
    opt_dict, opt_list = optim.Adam(0.01), optim.Adam(0.01)
    for t in range(10):
        grads = grads_at(params_dict, t)
        opt_dict.step(params_dict, grads)
        opt_list.step(params_list, [grads_at(dict(zip(INIT, params_list)), t)[k] for k in INIT])
    for k, p in zip(INIT, params_list):
        np.testing.assert_array_equal(params_dict[k], p)
    assert opt_dict.t == opt_list.t == 10


# --------------------------------------------------------------------------------------------- conventions
def test_conventions_are_different_optimizers_where_the_frameworks_differ():
    # Same hyperparameters, torch arithmetic vs keras arithmetic: equal only where the frameworks agree.
    same = [lambda c: optim.SGD(0.1, momentum=0.9, nesterov=True, convention=c)]  # constant lr: same trajectory
    different = [
        lambda c: optim.SGD(0.1, momentum=0.9, weight_decay=0.01, convention=c),  # L2 vs decoupled
        lambda c: optim.SGD(functools.partial(optim.step_decay, lr=0.1, step_size=50), momentum=0.9, convention=c),
        lambda c: optim.RMSprop(0.001, rho=0.9, eps=1e-7, convention=c),  # eps outside vs inside the root
        lambda c: optim.Adam(0.01, eps=1e-7, convention=c),  # eps vs eps-hat
        lambda c: optim.Adam(0.01, weight_decay=0.1, convention=c),  # L2 vs decoupled
    ]
    for make in same:
        assert max_difference(run_ours(make("torch")), run_ours(make("keras"))) < 1e-12
    for make in different:
        assert max_difference(run_ours(make("torch")), run_ours(make("keras"))) > 1e-6


def test_adamw_is_decoupled_in_both_conventions_and_adam_is_not():
    torch_adamw = run_ours(optim.AdamW(0.01, eps=1e-7, weight_decay=0.1))
    keras_adamw = run_ours(optim.AdamW(0.01, eps=1e-7, weight_decay=0.1, convention="keras"))
    keras_adam = run_ours(optim.Adam(0.01, eps=1e-7, weight_decay=0.1, convention="keras"))
    torch_adam = run_ours(optim.Adam(0.01, eps=1e-7, weight_decay=0.1))
    assert max_difference(keras_adamw, keras_adam) == 0.0  # Keras: every weight_decay is decoupled
    assert max_difference(torch_adam, torch_adamw) > 1e-3  # PyTorch: Adam's weight_decay is L2
    assert max_difference(torch_adamw, keras_adamw) < 1e-3  # only epsilon's placement differs


def test_momentum_forms_differ_after_a_learning_rate_drop():
    schedule = functools.partial(optim.step_decay, lr=0.1, step_size=50, gamma=0.1)
    steps, before = {}, {}
    for convention in optim.CONVENTIONS:
        path = run_ours(optim.SGD(schedule, momentum=0.9, convention=convention))["W"]  # path[i]: after step i + 1
        before[convention] = np.linalg.norm(path[49] - path[48])  # step 50, the last at lr 0.1
        steps[convention] = np.linalg.norm(path[50] - path[49])  # step 51, the first at lr 0.01
    assert math.isclose(before["torch"], before["keras"], rel_tol=1e-9)  # the same path up to the drop
    before = before["torch"]
    assert steps["torch"] < 0.2 * before  # the whole buffer is scaled by the new learning rate at once
    assert steps["keras"] > 0.5 * before  # the velocity still carries the old steps


# --------------------------------------------------------------------------------------------- bias correction
@pytest.mark.parametrize("convention", optim.CONVENTIONS)
@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 1e3, 1e6])
def test_first_adam_step_is_lr_whatever_the_gradient_scale(scale, convention):
    lr = 0.01
    rng = np.random.default_rng(1)
    grad = scale * rng.choice([-1.0, 1.0], 7) * rng.uniform(0.5, 2.0, 7)  # entries of size ~scale, both signs
    theta = [np.zeros(7)]
    optim.Adam(lr, eps=0.0, convention=convention).step(theta, [grad])  # eps = 0: exactly lr
    np.testing.assert_allclose(theta[0], -lr * np.sign(grad), rtol=1e-12)
    # With eps = 1e-8 the first step is lr |g| / (|g| + eps); Keras adds eps before the bias correction, which
    # makes it an effective eps / sqrt(1 - beta2) = 31.6 eps.
    eps_effective = 1e-8 if convention == "torch" else 1e-8 / math.sqrt(1 - 0.999)
    theta = [np.zeros(7)]
    optim.Adam(lr, eps=1e-8, convention=convention).step(theta, [grad])
    np.testing.assert_allclose(np.abs(theta[0]), lr * np.abs(grad) / (np.abs(grad) + eps_effective), rtol=1e-12)
    if scale >= 1.0:
        np.testing.assert_allclose(np.abs(theta[0]), lr, rtol=1e-6)


def test_adam_first_moment_is_a_moving_average_of_gradients():
    opt = optim.Adam(0.1, betas=(0.9, 0.999))
    theta, gradients = [np.zeros(3)], [np.array([1.0, -2.0, 3.0]), np.array([0.5, 0.5, 0.5])]
    for g in gradients:
        opt.step(theta, [g])
    np.testing.assert_allclose(opt.state[0]["m"], 0.9 * 0.1 * gradients[0] + 0.1 * gradients[1], rtol=1e-15)
    np.testing.assert_allclose(opt.state[0]["v"], 0.999 * 0.001 * gradients[0] ** 2 + 0.001 * gradients[1] ** 2,
                               rtol=1e-15)


def test_adamw_decays_weights_without_gradient_by_one_minus_lr_wd():
    theta = [np.array([2.0, -3.0])]
    opt = optim.AdamW(0.1, weight_decay=0.5, eps=1e-8)
    for _ in range(5):
        opt.step(theta, [np.zeros(2)])  # zero gradient: m = v = 0, only the decay acts
    np.testing.assert_allclose(theta[0], np.array([2.0, -3.0]) * (1 - 0.1 * 0.5) ** 5, rtol=1e-14)


# --------------------------------------------------------------------------------------------- schedules
def torch_lrs(make_scheduler, lr, num_steps=NUM_STEPS):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(opt)
    rates = []
    for _ in range(num_steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(rates)


def ours_lrs(schedule, num_steps=NUM_STEPS):
    return np.array([schedule(t) for t in range(num_steps)])


S = torch.optim.lr_scheduler
SCHEDULES = {  # name -> (ours, torch scheduler factory, peak lr)
    "step": (functools.partial(optim.step_decay, lr=0.1, step_size=30, gamma=0.1),
             lambda o: S.StepLR(o, step_size=30, gamma=0.1), 0.1),
    "step_gamma_half": (functools.partial(optim.step_decay, lr=0.3, step_size=7, gamma=0.5),
                        lambda o: S.StepLR(o, step_size=7, gamma=0.5), 0.3),
    "cosine": (functools.partial(optim.cosine_decay, lr=0.1, total_steps=NUM_STEPS),
               lambda o: S.CosineAnnealingLR(o, T_max=NUM_STEPS), 0.1),
    "cosine_min": (functools.partial(optim.cosine_decay, lr=0.1, total_steps=60, final_lr=0.002),
                   lambda o: S.CosineAnnealingLR(o, T_max=60, eta_min=0.002), 0.1),
    "warmup_cosine": (warm_cosine(0.1, 0.01, 0.001), torch_warm_cosine(0.1, 0.001), 0.1),
    "warmup_cosine_long_warmup": (warm_cosine(0.1, 0.05, 0.0, warmup=60), torch_warm_cosine(0.5, 0.0, warmup=60), 0.1),
    "warmup_from_zero": (functools.partial(optim.warmup_cosine, lr=0.1, warmup_steps=10, total_steps=NUM_STEPS),
                         lambda o: S.SequentialLR(o, [S.LambdaLR(o, lambda t: t / 10),
                                                      S.CosineAnnealingLR(o, T_max=NUM_STEPS - 10)],
                                                  milestones=[10]), 0.1),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_matches_torch(name):
    ours, make_scheduler, peak = SCHEDULES[name]
    steps = 61 if name == "cosine_min" else NUM_STEPS  # past T_max torch's cosine rises again (periodic)
    np.testing.assert_allclose(ours_lrs(ours, steps), torch_lrs(make_scheduler, peak, steps), rtol=1e-12, atol=0)


def keras_schedules(x):
    """(ours, keras schedule) pairs; ``x`` converts the learning rates (float: Keras' float32, f64: float64)."""
    keras = pytest.importorskip("keras")
    ks = keras.optimizers.schedules
    return {
        "step": (SCHEDULES["step"][0], ks.ExponentialDecay(x(0.1), 30, x(0.1), staircase=True)),
        "cosine_min": (SCHEDULES["cosine_min"][0], ks.CosineDecay(x(0.1), 60, alpha=0.02)),
        "warmup_cosine": (SCHEDULES["warmup_cosine"][0],
                          ks.CosineDecay(x(0.01), NUM_STEPS - 10, alpha=0.01, warmup_target=x(0.1), warmup_steps=10)),
        "warmup_from_zero": (SCHEDULES["warmup_from_zero"][0],
                             ks.CosineDecay(x(0.0), NUM_STEPS - 10, warmup_target=x(0.1), warmup_steps=10)),
    }


@pytest.mark.parametrize("name", ["step", "cosine_min", "warmup_cosine", "warmup_from_zero"])
def test_schedule_matches_keras(name):
    ours, schedule64 = keras_schedules(f64)[name]
    _, schedule32 = keras_schedules(float)[name]
    steps = range(120)  # beyond the end: Keras stays at the final value, as ours does
    expected64 = np.array([float(schedule64(t)) for t in steps])
    expected32 = np.array([float(schedule32(t)) for t in steps])
    np.testing.assert_allclose([ours(t) for t in steps], expected64, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose([ours(t) for t in steps], expected32, rtol=1e-5, atol=1e-9)


def test_schedule_endpoints():
    lr, start, final, warmup, total = 0.1, 0.01, 0.001, 10, 100
    f = functools.partial(optim.warmup_cosine, lr=lr, warmup_steps=warmup, total_steps=total, start_lr=start,
                          final_lr=final)
    assert f(0) == start
    assert math.isclose(f(warmup // 2), (start + lr) / 2, rel_tol=1e-15)
    assert f(warmup) == lr
    assert math.isclose(f((warmup + total) // 2), (lr + final) / 2, rel_tol=1e-12)
    assert math.isclose(f(total), final, rel_tol=1e-15)
    assert f(total + 50) == f(total)  # stays at the final value
    assert optim.warmup_cosine(0, 0.1, 0, 100) == 0.1  # no warm-up: starts at the peak
    assert optim.cosine_decay(0, 0.1, 100) == 0.1 and optim.cosine_decay(100, 0.1, 100) == 0.0
    assert [optim.step_decay(t, 1.0, 3, 0.5) for t in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert optim.SGD(f).current_lr() == start


def test_warmup_cosine_with_lr_one_is_a_lambda_lr_factor():
    """The one warm-up + cosine of the course: with lr=1.0 it is the factor PyTorch's LambdaLR multiplies by."""
    peak, warmup, total = 3e-3, 10, NUM_STEPS
    factor = functools.partial(optim.warmup_cosine, lr=1.0, warmup_steps=warmup, total_steps=total, start_lr=0.1,
                               final_lr=0.01)
    rates = torch_lrs(lambda o: S.LambdaLR(o, factor), peak)
    expected = [optim.warmup_cosine(t, peak, warmup, total, start_lr=0.1 * peak, final_lr=0.01 * peak)
                for t in range(NUM_STEPS)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=0)


def test_optimizer_follows_its_schedule():
    opt = optim.SGD(functools.partial(optim.step_decay, lr=1.0, step_size=2, gamma=0.5))
    theta = [np.zeros(1)]
    for _ in range(5):
        opt.step(theta, [np.ones(1)])  # each step moves by -lr_t
    assert theta[0][0] == -(1 + 1 + 0.5 + 0.5 + 0.25)


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make, message", [
    (lambda: optim.SGD(lr=-0.1), "lr must be a number at least 0"),
    (lambda: optim.SGD(lr="0.1"), "lr must be a number"),
    (lambda: optim.SGD(0.1, momentum=1.0), "momentum must be a number at least 0 and below 1"),
    (lambda: optim.SGD(0.1, momentum=-0.5), "momentum"),
    (lambda: optim.SGD(0.1, nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda: optim.SGD(0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda: optim.SGD(0.1, convention="jax"), "convention must be 'torch' or 'keras'"),
    (lambda: optim.RMSprop(0.01, rho=1.0), "rho must be a number at least 0 and below 1"),
    (lambda: optim.RMSprop(0.01, eps=-1e-8), "eps must be a number at least 0"),
    (lambda: optim.Adam(0.01, betas=(0.9, 1.0)), r"betas\[1\] must be a number at least 0 and below 1"),
    (lambda: optim.Adam(0.01, betas=(1.5, 0.999)), r"betas\[0\]"),
    (lambda: optim.Adam(0.01, betas=(0.9,)), "betas must be a pair"),
    (lambda: optim.AdamW(0.01, weight_decay=-0.01), "weight_decay"),
    (lambda: optim.AdamW(0.01, weight_decay=True), "weight_decay must be a number"),
    (lambda: optim.warmup_cosine(0, 0.1, 100, 100), "need 0 <= warmup_steps < total_steps"),
    (lambda: optim.cosine_decay(0, 0.1, 0), "total_steps must be at least 1"),
    (lambda: optim.step_decay(0, 0.1, 0), "step_size must be at least 1"),
])
def test_bad_hyperparameters_raise_a_helpful_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_parameters_and_gradients_raise_a_helpful_error():
    opt = optim.Adam(0.01)
    with pytest.raises(ValueError, match="grads must be a dict with the keys of params"):
        opt.step({"W": np.zeros(2)}, {"w": np.zeros(2)})
    with pytest.raises(ValueError, match=r"the gradient of 'W' has shape \(3,\) but the parameter has shape \(2,\)"):
        opt.step({"W": np.zeros(2)}, {"W": np.zeros(3)})
    with pytest.raises(ValueError, match="got 2 parameters but 1 gradients"):
        opt.step([np.zeros(2), np.zeros(2)], [np.zeros(2)])
    with pytest.raises(TypeError, match="must be a floating-point NumPy array"):
        opt.step([np.zeros(2, dtype=np.int64)], [np.zeros(2)])
    with pytest.raises(TypeError, match="must be a floating-point NumPy array"):
        opt.step([[0.0, 0.0]], [np.zeros(2)])
    assert opt.t == 0, "a failed step must not count"
