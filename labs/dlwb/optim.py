"""Optimizers and learning-rate schedules, from scratch in NumPy.

Defined in chapter 02 (``notebooks/02_optimizers.ipynb``), where each update rule is derived, drawn on two
loss surfaces and shown to follow the same trajectory as ``torch.optim`` and ``keras.optimizers`` for 100
steps; lab 02 asks for Adam and the warm-up + cosine schedule.

The API in one example::

    params = {"W": W, "b": b}  # floating-point NumPy arrays, updated in place
    opt = Adam(lr=functools.partial(warmup_cosine, lr=1e-3, warmup_steps=10, total_steps=100))
    for t in range(100):
        grads = grad_fn(params)  # the same keys and shapes as params
        opt.step(params, grads)

- ``params`` is a dict of arrays (or a list of arrays); ``step`` changes them in place, as ``torch.optim``
  does, and keeps each array's state (momentum buffer, moving averages) under its key.
- ``lr`` is a number or a schedule: a function ``lr(t)`` of ``t``, the number of steps taken before this one
  (0 for the first step). That is the convention of ``torch.optim.lr_scheduler`` (``scheduler.step()`` after
  every ``optimizer.step()``) and of Keras (a schedule is called with ``optimizer.iterations``).
- ``convention="torch"`` (the default) or ``"keras"`` picks the framework whose arithmetic is reproduced where
  the two differ: where epsilon goes (RMSprop, Adam), whether the learning rate scales the momentum buffer or
  each gradient as it enters it (SGD and RMSprop with momentum: equal for a constant learning rate), and what
  ``weight_decay`` means: an L2 term added to the gradient (PyTorch's SGD, RMSprop and Adam) or a decoupled
  shrinking of the weights (every Keras optimizer, and AdamW in both frameworks).
- Hyperparameters default to PyTorch's values. Keras' differ: ``eps=1e-7``, RMSprop ``rho=0.9``,
  AdamW ``weight_decay=0.004``, SGD ``lr=0.01``.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

CONVENTIONS = ("torch", "keras")


def _check_range(name: str, value, low: float, high: float = math.inf) -> float:
    """``value`` as a float in ``[low, high)``; otherwise a ValueError that names the hyperparameter.

    Defined in chapter 02.
    """
    if not isinstance(value, Real) or isinstance(value, bool) or not low <= value < high:
        upper = "" if high == math.inf else f" and below {high:g}"
        raise ValueError(f"{name} must be a number at least {low:g}{upper}, got {value!r}")
    return float(value)


def _pairs(params, grads) -> list:
    """``(key, parameter, gradient)`` for every parameter; keys are dict keys or list positions.

    Each parameter must be a floating-point NumPy array (it is updated in place) and its gradient must have
    its shape: nothing is broadcast.

    Defined in chapter 02.
    """
    if isinstance(params, dict):
        if not isinstance(grads, dict) or set(grads) != set(params):
            got = sorted(grads) if isinstance(grads, dict) else type(grads).__name__
            raise ValueError(f"grads must be a dict with the keys of params, {sorted(params)}; got {got}")
        keys = list(params)
        ps, gs = [params[k] for k in keys], [grads[k] for k in keys]
    else:
        ps, gs = list(params), list(grads)
        if len(ps) != len(gs):
            raise ValueError(f"got {len(ps)} parameters but {len(gs)} gradients: pass one gradient per parameter")
        keys = list(range(len(ps)))
    triples = []
    for key, p, g in zip(keys, ps, gs):
        if not isinstance(p, np.ndarray) or not np.issubdtype(p.dtype, np.floating):
            raise TypeError(f"parameter {key!r} must be a floating-point NumPy array (it is updated in place), "
                            f"got {type(p).__name__} {getattr(p, 'dtype', '')}; use np.asarray(p, dtype=np.float64)")
        g = np.asarray(g, dtype=p.dtype)
        if g.shape != p.shape:
            raise ValueError(f"the gradient of {key!r} has shape {g.shape} but the parameter has shape {p.shape}")
        triples.append((key, p, g))
    return triples


def _weight_decay(p: np.ndarray, g: np.ndarray, lr: float, weight_decay: float, decoupled: bool) -> np.ndarray:
    r"""Apply weight decay :math:`\lambda` and return the gradient to use.

    L2 (``decoupled=False``): return :math:`g + \lambda\theta`, the gradient of the loss plus
    :math:`\frac\lambda2 \lVert\theta\rVert^2`. Decoupled: shrink the weights in place,
    :math:`\theta \leftarrow \theta - \eta \lambda \theta`, and return :math:`g` unchanged.

    Defined in chapter 02.
    """
    if weight_decay == 0.0:
        return g
    if decoupled:
        p -= lr * weight_decay * p
        return g
    return g + weight_decay * p


class Optimizer:
    """Base class: the learning rate (a number or a schedule), the step count ``t`` and per-parameter state.

    A subclass implements :meth:`update`, the rule for one array. :meth:`step` applies it to every parameter
    with this step's learning rate, then counts the step.

    Defined in chapter 02.
    """

    def __init__(self, lr, convention: str = "torch") -> None:
        if not callable(lr):
            _check_range("lr", lr, 0.0)
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be 'torch' or 'keras', got {convention!r}")
        self.lr = lr
        self.convention = convention
        self.t = 0  # steps taken so far
        self.state = {}  # parameter key -> {"m": array, ...}

    def current_lr(self) -> float:
        """The learning rate of the next step: ``lr(t)`` for a schedule, otherwise ``lr``."""
        return float(self.lr(self.t)) if callable(self.lr) else float(self.lr)

    def step(self, params, grads) -> None:
        """Update every array of ``params`` in place, using the gradient under the same key in ``grads``."""
        lr = self.current_lr()
        for key, p, g in _pairs(params, grads):
            self.update(p, g, self.state.setdefault(key, {}), lr)
        self.t += 1

    def update(self, p: np.ndarray, g: np.ndarray, state: dict, lr: float) -> None:
        """Change ``p`` in place from its gradient ``g``; ``state`` is this parameter's memory."""
        raise NotImplementedError


class SGD(Optimizer):
    r"""Stochastic gradient descent, with optional (Nesterov) momentum and weight decay.

    Without momentum: :math:`\theta_{t+1} = \theta_t - \eta_t g_t`. With momentum :math:`\mu`, two forms:

    - ``convention="torch"``: :math:`b_t = \mu b_{t-1} + g_t`, :math:`\theta_{t+1} = \theta_t - \eta_t b_t`
      (Nesterov: :math:`\theta_{t+1} = \theta_t - \eta_t (g_t + \mu b_t)`). The buffer sums gradients and
      this step's learning rate scales all of it.
    - ``convention="keras"``: :math:`v_t = \mu v_{t-1} - \eta_t g_t`, :math:`\theta_{t+1} = \theta_t + v_t`
      (Nesterov: :math:`\theta_{t+1} = \theta_t + \mu v_t - \eta_t g_t`). The velocity sums steps: each
      gradient keeps the learning rate it arrived with.

    Both start from 0. For a constant :math:`\eta`, :math:`v_t = -\eta b_t` and the trajectories are the same;
    under a schedule they differ. ``weight_decay`` :math:`\lambda`: PyTorch adds :math:`\lambda\theta_t` to
    the gradient (L2, which then enters the buffer); Keras shrinks the weights first (decoupled).

    Defined in chapter 02.
    """

    def __init__(self, lr=1e-3, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 convention: str = "torch") -> None:
        super().__init__(lr, convention)
        self.momentum = _check_range("momentum", momentum, 0.0, 1.0)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        if nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0, e.g. SGD(lr, momentum=0.9, nesterov=True)")
        self.nesterov = bool(nesterov)

    def update(self, p, g, state, lr):
        g = _weight_decay(p, g, lr, self.weight_decay, decoupled=self.convention == "keras")
        mu = self.momentum
        if mu == 0.0:
            p -= lr * g
        elif self.convention == "torch":
            b = state["b"] = mu * state.get("b", 0.0) + g  # a sum of gradients
            p -= lr * (g + mu * b if self.nesterov else b)
        else:
            v = state["v"] = mu * state.get("v", 0.0) - lr * g  # a sum of steps
            p += mu * v - lr * g if self.nesterov else v


class RMSprop(Optimizer):
    r"""RMSprop: divide each gradient entry by the root of a moving average of its squares.

    :math:`s_t = \rho s_{t-1} + (1 - \rho) g_t^2` (elementwise, :math:`s_0 = 0`), then

    - ``convention="torch"``: :math:`\theta_{t+1} = \theta_t - \eta_t\, g_t / (\sqrt{s_t} + \epsilon)`;
    - ``convention="keras"``: :math:`\theta_{t+1} = \theta_t - \eta_t\, g_t / \sqrt{s_t + \epsilon}`: epsilon
      inside the root, so the same number damps far more (:math:`\sqrt{10^{-7}} \approx 3 \cdot 10^{-4}`).

    With momentum :math:`\mu`, PyTorch keeps :math:`b_t = \mu b_{t-1} + g_t / (\sqrt{s_t} + \epsilon)` and
    steps by :math:`-\eta_t b_t`; Keras keeps :math:`m_t = \mu m_{t-1} + \eta_t g_t / \sqrt{s_t + \epsilon}`
    and steps by :math:`-m_t` (as for :class:`SGD`, equal for a constant learning rate). Weight decay as in
    :class:`SGD`. ``rho`` is PyTorch's ``alpha`` (default 0.99) and Keras' ``rho`` (default 0.9).

    Defined in chapter 02.
    """

    def __init__(self, lr=1e-2, rho: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0, convention: str = "torch") -> None:
        super().__init__(lr, convention)
        self.rho = _check_range("rho", rho, 0.0, 1.0)
        self.eps = _check_range("eps", eps, 0.0)
        self.momentum = _check_range("momentum", momentum, 0.0, 1.0)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)

    def update(self, p, g, state, lr):
        g = _weight_decay(p, g, lr, self.weight_decay, decoupled=self.convention == "keras")
        s = state["s"] = self.rho * state.get("s", 0.0) + (1.0 - self.rho) * g**2  # moving mean of g^2
        if self.convention == "torch":
            step = g / (np.sqrt(s) + self.eps)
            if self.momentum:
                step = state["b"] = self.momentum * state.get("b", 0.0) + step
            p -= lr * step
        else:
            step = lr * g / np.sqrt(s + self.eps)
            if self.momentum:
                step = state["m"] = self.momentum * state.get("m", 0.0) + step
            p -= step


class Adam(Optimizer):
    r"""Adam: a moving average of the gradients, scaled per entry by the root of one of their squares.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2,
        \qquad m_0 = v_0 = 0,

        \hat m_t = \frac{m_t}{1 - \beta_1^t}, \qquad \hat v_t = \frac{v_t}{1 - \beta_2^t}, \qquad
        \theta_{t+1} = \theta_t - \eta_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon},

    where :math:`t = 1, 2, \dots` numbers this step. :math:`m_t` is a moving average of *gradients*, not of
    parameter changes. Bias correction undoes the pull of :math:`m_0 = v_0 = 0` towards zero: the first step
    moves every entry by :math:`\eta` (for :math:`\epsilon \ll |g|`), whatever the scale of the gradient.

    ``convention="keras"`` adds epsilon to :math:`\sqrt{v_t}` before the correction (Kingma & Ba's
    "epsilon hat"): :math:`\theta_{t+1} = \theta_t - \eta_t \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}
    \frac{m_t}{\sqrt{v_t} + \epsilon}`, an effective epsilon :math:`\epsilon / \sqrt{1 - \beta_2^t}` (about 32
    times larger at :math:`t = 1` for :math:`\beta_2 = 0.999`). ``weight_decay`` :math:`\lambda`: PyTorch adds
    :math:`\lambda\theta` to the gradient (L2, which Adam then divides by :math:`\sqrt{\hat v_t}`); Keras
    shrinks the weights (decoupled, as :class:`AdamW`).

    Defined in chapter 02.
    """

    def __init__(self, lr=1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, convention: str = "torch") -> None:
        super().__init__(lr, convention)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), e.g. (0.9, 0.999), got {betas!r}")
        self.beta1 = _check_range("betas[0]", betas[0], 0.0, 1.0)
        self.beta2 = _check_range("betas[1]", betas[1], 0.0, 1.0)
        self.eps = _check_range("eps", eps, 0.0)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        self.decoupled = convention == "keras"  # Keras decays the weights of every optimizer decoupled

    def update(self, p, g, state, lr):
        t = self.t + 1  # this step's number, from 1
        g = _weight_decay(p, g, lr, self.weight_decay, self.decoupled)
        m = state["m"] = self.beta1 * state.get("m", 0.0) + (1.0 - self.beta1) * g  # moving mean of g
        v = state["v"] = self.beta2 * state.get("v", 0.0) + (1.0 - self.beta2) * g**2  # moving mean of g^2
        if self.convention == "torch":
            m_hat = m / (1.0 - self.beta1**t)  # m_t alone is too small by the factor 1 - beta1^t
            v_hat = v / (1.0 - self.beta2**t)
            p -= lr * m_hat / (np.sqrt(v_hat) + self.eps)
        else:
            step_size = lr * math.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
            p -= step_size * m / (np.sqrt(v) + self.eps)


class AdamW(Adam):
    r"""Adam with decoupled weight decay: :math:`\theta \leftarrow \theta - \eta_t \lambda \theta`, then the
    step of :class:`Adam` (in both conventions).

    L2 regularisation adds :math:`\lambda\theta` to the gradient, and Adam then divides it by
    :math:`\sqrt{\hat v_t}`: weights with large gradients are hardly decayed at all. Decoupled decay shrinks
    every weight by the same factor :math:`1 - \eta_t\lambda` (Loshchilov & Hutter, 2019).
    ``weight_decay`` defaults to PyTorch's 0.01 (Keras: 0.004).

    Defined in chapter 02.
    """

    def __init__(self, lr=1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, convention: str = "torch") -> None:
        super().__init__(lr, betas, eps, weight_decay, convention)
        self.decoupled = True


def step_decay(t: int, lr: float, step_size: int, gamma: float = 0.1) -> float:
    r"""Step decay: :math:`\eta_t = \eta\, \gamma^{\lfloor t / s \rfloor}`, ``lr`` times ``gamma`` every
    ``step_size`` steps.

    PyTorch: ``StepLR(opt, step_size, gamma)``; Keras: ``ExponentialDecay(lr, step_size, gamma, staircase=True)``.

    Defined in chapter 02.
    """
    if step_size < 1:
        raise ValueError(f"step_size must be at least 1, got {step_size}")
    return lr * gamma ** (t // step_size)


def cosine_decay(t: int, lr: float, total_steps: int, final_lr: float = 0.0) -> float:
    r"""Half a cosine from ``lr`` down to ``final_lr`` over ``total_steps`` steps, then ``final_lr``:
    :math:`\eta_t = \eta_{\min} + \tfrac12 (\eta - \eta_{\min}) \big(1 + \cos(\pi \min(t, T) / T)\big)`.

    PyTorch: ``CosineAnnealingLR(opt, T_max=total_steps, eta_min=final_lr)`` (which rises again after
    ``T_max``: it is periodic); Keras: ``CosineDecay(lr, decay_steps=total_steps, alpha=final_lr / lr)``
    (which stays at ``final_lr``, as here).

    Defined in chapter 02.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    t = min(t, total_steps)
    return final_lr + 0.5 * (lr - final_lr) * (1.0 + math.cos(math.pi * t / total_steps))


def warmup_cosine(t: int, lr: float, warmup_steps: int, total_steps: int, start_lr: float = 0.0,
                  final_lr: float = 0.0) -> float:
    r"""Linear warm-up from ``start_lr`` to ``lr`` over ``warmup_steps`` steps, then :func:`cosine_decay`
    down to ``final_lr`` over the remaining ``total_steps - warmup_steps`` steps:

    .. math::
        \eta_t = \eta_{\rm start} + (\eta - \eta_{\rm start}) \frac{t}{W} \quad (t < W), \qquad
        \eta_t = \text{cosine\_decay}(t - W, \eta, T - W, \eta_{\min}) \quad (t \ge W).

    The first step uses ``start_lr`` and step ``W`` the peak ``lr``. PyTorch: ``SequentialLR`` of
    ``LinearLR(start_factor=start_lr / lr, total_iters=W)`` and ``CosineAnnealingLR(T_max=T - W, eta_min)``
    with ``milestones=[W]`` (``LinearLR`` cannot start at 0: use ``LambdaLR`` for the warm-up then);
    Keras: ``CosineDecay(start_lr, decay_steps=T - W, alpha=final_lr / lr, warmup_target=lr, warmup_steps=W)``.

    Defined in chapter 02.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got warmup_steps={warmup_steps}, "
                         f"total_steps={total_steps}")
    if t < warmup_steps:
        return start_lr + (lr - start_lr) * t / warmup_steps
    return cosine_decay(t - warmup_steps, lr, total_steps - warmup_steps, final_lr)
