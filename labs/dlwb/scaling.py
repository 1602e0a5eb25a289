"""Scaling laws and the cost of a language model: a Chinchilla fit, compute-optimal sizes, FLOPs, money, memory.

Defined in chapter 11, where a few small models trained on a grid of sizes ``N`` and token
counts ``D`` give losses ``L``; :func:`fit_loss_surface` fits Hoffmann et al.'s parametric law
to them, :func:`compute_optimal` splits a compute budget between ``N`` and ``D``, and
:func:`cost_table` prices the published models of :data:`MODEL_SHAPES` from first principles.
``tests/dlwb_tests/test_scaling.py`` checks the fit on synthetic data from a known surface,
the optimum against a dense search along the iso-FLOP curve, and every cost on hand-computed cases.

Conventions: ``N`` counts all parameters (embeddings included, as Hoffmann et al. do), ``D``
training tokens, ``C`` training FLOPs, losses are in nats per token; bytes are bytes and
``GB`` is 10^9 bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber


@dataclass(frozen=True)
class LossSurface:
    """The parametric loss of Hoffmann et al. (2022), ``L(N, D) = E + A / N^alpha + B / D^beta``.

    ``E`` is the loss of an ideal model (the entropy of the text), ``A / N^alpha`` what a model
    of ``N`` parameters misses however long it trains, ``B / D^beta`` what ``D`` tokens of training
    miss however large the model. ``residual`` is the root-mean-square of
    ``log L_fit - log L_observed`` over the points it was fitted to (``None`` for published values).

    Defined in chapter 11.
    """

    E: float  # irreducible loss, nats per token
    A: float  # size term's scale
    B: float  # data term's scale
    alpha: float  # size exponent
    beta: float  # data exponent
    residual: float | None = None  # RMS log error of the fit; None for published surfaces

    def predict(self, N, D):
        """The predicted loss ``E + A / N^alpha + B / D^beta`` (broadcasts over arrays)."""
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta


# Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models" (arXiv:2203.15556),
# Approach 3: the fitted parametric loss L(N, D) = 1.69 + 406.4 / N^0.34 + 410.7 / D^0.28.
# These are the rounded values printed in the paper; Besiroglu et al. (below) find that the rounding
# alone shifts the law's predictions noticeably.
CHINCHILLA = LossSurface(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)

# Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt" (arXiv:2404.10102): the same
# fit redone on data read off Hoffmann et al.'s plots, optimised to convergence. Its
# compute-optimal split agrees with Hoffmann et al.'s Approaches 1 and 2 (about 20 tokens a parameter).
BESIROGLU = LossSurface(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)

# Kaplan et al. 2020, "Scaling Laws for Neural Language Models" (arXiv:2001.08361), the single-variable laws
# of their summary: L(N) = (N_c / N)^alpha_N with N_c = 8.8e13 non-embedding parameters (models trained to
# convergence), and L(D) = (D_c / D)^alpha_D with D_c = 5.4e13 tokens (large models, early stopping).
# Their N leaves out embeddings and their laws have no constant term E, so these exponents are
# not comparable with alpha and beta above.
KAPLAN_ALPHA_N = 0.076
KAPLAN_ALPHA_D = 0.095


def fit_loss_surface(N, D, L, *, delta: float = 1e-3, n_starts: int = 4) -> LossSurface:
    """Fit ``L(N, D) = E + A / N^alpha + B / D^beta`` to observed losses as Hoffmann et al. (2022) do.

    With ``a = log A``, ``b = log B``, ``e = log E`` the prediction's logarithm is a log-sum-exp,
    and the fit minimises the Huber loss of the log residuals over the five parameters::

        log L_hat_i = LSE(a - alpha log N_i, b - beta log D_i, e)
        min_{a, b, e, alpha, beta}  sum_i Huber_delta(log L_hat_i - log L_i),   delta = 1e-3

    ``Huber_delta(r) = r^2 / 2`` for ``|r| <= delta`` and ``delta (|r| - delta / 2)`` beyond: least
    squares for small residuals, absolute error for outliers. L-BFGS starts from the best
    ``n_starts`` points of Hoffmann et al.'s grid of initial values (alpha, beta in 0, 0.5, .., 2;
    e in -1, -0.5, .., 1; a, b in 0, 5, .., 25) and the lowest minimum wins.

    Defined in chapter 11.
    """
    N, D, L = (np.asarray(x, dtype=float).ravel() for x in (N, D, L))
    if not len(N) == len(D) == len(L):
        raise ValueError(f"N, D and L must have one entry per trained model; got {len(N)}, {len(D)} and {len(L)}")
    if len(L) < 5:
        raise ValueError(f"the surface has 5 parameters: fit it to at least 5 (N, D, L) points, not {len(L)}")
    if n_starts < 1:
        raise ValueError(f"n_starts = {n_starts}: L-BFGS needs at least one starting point")
    for name, x in (("N", N), ("D", D), ("L", L)):
        if not np.all(np.isfinite(x) & (x > 0)):
            raise ValueError(f"every {name} must be finite and positive (parameters, tokens, loss in nats)")
    log_N, log_D, log_L = np.log(N), np.log(D), np.log(L)

    def log_predict(theta):  # theta (..., 5) = (a, b, e, alpha, beta) -> log L_hat (..., n), weights (..., n, 3)
        a, b, e, alpha, beta = (theta[..., k, None] for k in range(5))
        terms = np.stack([a - alpha * log_N, b - beta * log_D, e + np.zeros_like(log_N)], axis=-1)  # (..., n, 3)
        top = terms.max(axis=-1, keepdims=True)  # log-sum-exp: subtract the largest term so exp cannot overflow
        w = np.exp(terms - top)
        total = w.sum(axis=-1)
        return top[..., 0] + np.log(total), w / total[..., None]  # the weights are d LSE / d terms

    def objective(theta):  # the Huber loss and its gradient, for L-BFGS
        log_L_hat, p = log_predict(theta)  # (n,), (n, 3)
        r = log_L_hat - log_L  # (n,): log residuals
        psi = np.clip(r, -delta, delta)  # Huber'(r)
        grad = np.array([psi @ p[:, 0], psi @ p[:, 1], psi @ p[:, 2],
                         -psi @ (p[:, 0] * log_N), -psi @ (p[:, 1] * log_D)])
        return huber(delta, r).sum(), grad

    # Hoffmann et al.'s grid of initial values, all scored at once; L-BFGS then runs from the best few
    # only, since starts that begin far from the data end in the same minima or in worse ones.
    grid = np.stack(np.meshgrid(np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5),
                                np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5), indexing="ij"), axis=-1).reshape(-1, 5)
    scores = huber(delta, log_predict(grid)[0] - log_L).sum(axis=-1)  # (4500,)
    best = None
    for theta0 in grid[np.argsort(scores)[:n_starts]]:
        # The objective is tiny near a good fit (about n * 1e-8), so the default stopping rule, which
        # compares its decrease with 1, would stop far from the minimum: Besiroglu et al. trace Hoffmann
        # et al.'s biased estimates to such an early stop. Stop only when the gradient vanishes or no
        # step lowers the objective any more.
        result = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                          options={"ftol": 0.0, "gtol": 1e-14, "maxiter": 2000})
        if best is None or result.fun < best.fun:
            best = result
    a, b, e, alpha, beta = best.x
    residual = float(np.sqrt(np.mean((log_predict(best.x)[0] - log_L) ** 2)))
    return LossSurface(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta),
                       residual=residual)


def compute_optimal(C, fit: LossSurface):
    """The model size and token count ``(N_opt, D_opt)`` of least loss for ``C`` training FLOPs, ``C = 6 N D``.

    Setting ``dL/dN = 0`` along ``D = C / (6 N)`` gives ``alpha A / N^alpha = beta B / D^beta``, hence::

        N_opt = G (C / 6)^(beta / (alpha + beta)),   D_opt = G^-1 (C / 6)^(alpha / (alpha + beta)),
        G = (alpha A / (beta B))^(1 / (alpha + beta))

    ``E`` does not move the optimum. Broadcasts over an array of budgets.

    Defined in chapter 11.
    """
    C = np.asarray(C, dtype=float)
    if not np.all(np.isfinite(C) & (C > 0)):
        raise ValueError("the compute budget C must be a positive number of FLOPs")
    if fit.alpha <= 0 or fit.beta <= 0:
        raise ValueError(f"alpha = {fit.alpha} and beta = {fit.beta} must be positive for the loss to have a "
                         "minimum along C = 6 N D; refit with more (N, D) points or a wider grid")
    G = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1 / (fit.alpha + fit.beta))
    N_opt = G * (C / 6) ** (fit.beta / (fit.alpha + fit.beta))
    D_opt = (C / 6) ** (fit.alpha / (fit.alpha + fit.beta)) / G  # equals C / (6 N_opt)
    return N_opt[()], D_opt[()]  # [()] turns 0-d arrays into scalars and leaves arrays alone


def iso_loss_tokens(N, loss: float, fit: LossSurface):
    """The tokens ``D`` that a model of ``N`` parameters needs to reach ``loss``: one iso-loss curve ``D(N)``.

    Solving ``loss = E + A / N^alpha + B / D^beta`` for ``D``::

        D = (B / (loss - E - A / N^alpha))^(1 / beta)

    ``nan`` where ``loss <= E + A / N^alpha``: no amount of data brings a model that small to that loss.

    Defined in chapter 11.
    """
    N = np.asarray(N, dtype=float)
    if not np.all(N > 0):
        raise ValueError("model sizes N must be positive")
    gap = loss - fit.E - fit.A / N**fit.alpha  # what the data term may still contribute
    with np.errstate(divide="ignore", invalid="ignore"):
        D = np.where(gap > 0, (fit.B / np.where(gap > 0, gap, 1.0)) ** (1 / fit.beta), np.nan)
    return D[()]


def training_flops(n_params: float, tokens: float) -> float:
    """Training FLOPs ``C ≈ 6 N D``: per token and parameter, 2 FLOPs forward (a multiply and an add) and 4 backward.

    Left out: attention's own matrix products, ``12 n_layer T d_model`` FLOPs per token for context
    ``T`` (forward and backward; chapter 07's ``GPT.flops_per_token`` adds them), small for
    ``T << 6 d_model``; recomputation: with activation checkpointing the forward pass runs twice,
    about ``8 N D`` FLOPs of work, while MFU still counts ``6 N D``; and the element-wise work
    (norms, softmax, activations), a few FLOPs per activation rather than per parameter.

    Defined in chapter 11.
    """
    if n_params <= 0 or tokens <= 0:
        raise ValueError(f"n_params = {n_params} and tokens = {tokens} must both be positive")
    return 6.0 * n_params * tokens


def gpu_hours(flops: float, peak_flops_per_s: float, mfu: float) -> float:
    """GPU-hours to do ``flops`` at model FLOPs utilisation ``mfu`` of a peak: ``flops / (peak * mfu) / 3600``.

    ``peak_flops_per_s`` is one GPU's dense peak for the precision trained in (bfloat16 on an H100
    SXM: 989e12); ``mfu`` the fraction of it a run sustains, 0.3 to 0.5 for large runs.

    Defined in chapter 11.
    """
    if flops <= 0 or peak_flops_per_s <= 0:
        raise ValueError(f"flops = {flops} and peak_flops_per_s = {peak_flops_per_s} must be positive")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu = {mfu} is a fraction of the peak: it must lie in (0, 1], e.g. 0.4 for 40%")
    return flops / (peak_flops_per_s * mfu) / 3600


def training_cost(flops: float, peak_flops_per_s: float, mfu: float, price_per_gpu_hour: float) -> float:
    """The price of a training run: ``gpu_hours(flops, peak, mfu) * price_per_gpu_hour``.

    Defined in chapter 11.
    """
    if price_per_gpu_hour < 0:
        raise ValueError(f"price_per_gpu_hour = {price_per_gpu_hour} must not be negative")
    return gpu_hours(flops, peak_flops_per_s, mfu) * price_per_gpu_hour


def training_memory_bytes(n_params: float, *, weights: int = 2, master_weights: int = 4, grads: int = 2,
                          adam_m: int = 4, adam_v: int = 4) -> float:
    """Bytes of model state for mixed-precision Adam training: ``n_params * (weights + master + grads + m + v)``.

    The defaults are the usual convention (Rajbhandari et al. 2020, ZeRO: 16 bytes a parameter):
    bfloat16 weights for the forward and backward passes (2), a float32 master copy that the
    optimizer updates (4), bfloat16 gradients (2; pass ``grads=4`` for float32 gradients, 18 in
    all) and Adam's two float32 moments (4 + 4). Activations, buffers and fragmentation come on top.

    Defined in chapter 11.
    """
    if n_params <= 0:
        raise ValueError(f"n_params = {n_params} must be positive")
    return n_params * (weights + master_weights + grads + adam_m + adam_v)


def activation_bytes_per_layer(seq_len: int, batch: int, d_model: int, n_head: int, *,
                               recompute: bool = False) -> float:
    """Bytes of activations one transformer layer keeps for the backward pass.

    From Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"
    (arXiv:2205.05198).

    Without recomputation, for ``s = seq_len``, ``b = batch``, ``h = d_model``, ``a = n_head``::

        s b h (34 + 5 a s / h)

    ``34 s b h``: the 16-bit inputs of the layer's matrix products, norms and GELU and the 1-byte
    dropout masks; ``5 a s^2 b``: the attention scores, softmax and its dropout, ``(a, s, s)`` per
    sequence. With full recomputation (activation checkpointing) only the layer's input stays,
    ``2 s b h``, and the rest is rebuilt by a second forward pass during the backward pass.
    The formula assumes a GPT-style 4h MLP and no tensor or sequence parallelism; FlashAttention,
    which never stores the scores, removes most of the ``5 a s / h`` term.

    Defined in chapter 11.
    """
    if min(seq_len, batch, d_model, n_head) <= 0:
        raise ValueError("seq_len, batch, d_model and n_head must all be positive")
    s, b, h, a = seq_len, batch, d_model, n_head
    if recompute:
        return 2.0 * s * b * h  # the layer's bf16 input, checkpointed
    return s * b * h * (34 + 5 * a * s / h)


def kv_cache_bytes(n_layer: int, n_kv_head: int, head_dim: int, seq_len: int, batch: int = 1,
                   bytes_per_value: float = 2) -> float:
    """Bytes of the key-value cache for generation: ``2 * n_layer * n_kv_head * head_dim * seq_len * batch * bytes``.

    Every layer keeps a key and a value (the 2) of ``head_dim`` numbers per KV head for every
    position generated so far. Grouped-query attention shares each KV head among several query
    heads, so ``n_kv_head`` may be far below the number of attention heads.

    Defined in chapter 11.
    """
    if min(n_layer, n_kv_head, head_dim, seq_len, batch, bytes_per_value) <= 0:
        raise ValueError("n_layer, n_kv_head, head_dim, seq_len, batch and bytes_per_value must all be positive")
    return 2.0 * n_layer * n_kv_head * head_dim * seq_len * batch * bytes_per_value


def inference_memory_bytes(n_params: float, kv_bytes: float, *, bytes_per_param: float = 2) -> float:
    """Bytes to serve a model: its weights, ``n_params * bytes_per_param`` (2 in bfloat16), plus its KV cache.

    ``kv_bytes`` comes from :func:`kv_cache_bytes` for the batch and context served; it grows with
    both, while the weights are paid once. Activations of a forward pass are small beside these.

    Defined in chapter 11.
    """
    if n_params <= 0 or kv_bytes < 0 or bytes_per_param <= 0:
        raise ValueError("n_params and bytes_per_param must be positive and kv_bytes must not be negative")
    return n_params * bytes_per_param + kv_bytes


@dataclass(frozen=True)
class ModelShape:
    """The shape of a decoder-only transformer: what :func:`param_count` and :func:`cost_table` need.

    ``mlp="gelu"`` is GPT-2's MLP, two matrices ``d_model x d_ff`` and ``d_ff x d_model``;
    ``mlp="swiglu"`` is Llama's gated MLP, three (gate, up, down). ``n_kv_head < n_head`` is
    grouped-query attention.

    Defined in chapter 11.
    """

    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    d_ff: int  # hidden width of the MLP
    vocab_size: int
    context: int  # longest sequence the model was built for
    mlp: str = "swiglu"  # "gelu" (2 matrices, GPT-2) or "swiglu" (3 matrices, Llama)
    norm: str = "rmsnorm"  # "layernorm" (gain and bias) or "rmsnorm" (gain only)
    bias: bool = False  # biases in the attention and MLP projections (GPT-2 has them)
    learned_positions: bool = False  # a learned position embedding (GPT-2) rather than RoPE (Llama)
    tied_embeddings: bool = False  # the output head reuses the token embedding matrix

    def __post_init__(self):
        if self.d_model % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"d_model = {self.d_model} must divide into n_head = {self.n_head} heads, "
                             f"and n_head into n_kv_head = {self.n_kv_head} groups")
        if self.mlp not in ("gelu", "swiglu") or self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu' (got {self.mlp!r}), "
                             f"norm 'layernorm' or 'rmsnorm' (got {self.norm!r})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


MODEL_SHAPES = {
    # openai-community/gpt2, config.json: n_layer 12, n_embd 768, n_head 12, n_ctx 1024, vocab 50257.
    "GPT-2 124M": ModelShape(n_layer=12, d_model=768, n_head=12, n_kv_head=12, d_ff=4 * 768, vocab_size=50257,
                             context=1024, mlp="gelu", norm="layernorm", bias=True, learned_positions=True,
                             tied_embeddings=True),
    # meta-llama/Llama-3.2-1B, config.json: num_hidden_layers 16, hidden_size 2048, num_attention_heads 32,
    # num_key_value_heads 8, intermediate_size 8192, vocab_size 128256, max_position_embeddings 131072,
    # tie_word_embeddings true.
    "Llama 3.2 1B": ModelShape(n_layer=16, d_model=2048, n_head=32, n_kv_head=8, d_ff=8192, vocab_size=128256,
                               context=131072, tied_embeddings=True),
    # meta-llama/Llama-2-7b-hf, config.json: 32 layers, hidden 4096, 32 heads, 32 KV heads, intermediate 11008,
    # vocab 32000, max_position_embeddings 4096, untied.
    "Llama 2 7B": ModelShape(n_layer=32, d_model=4096, n_head=32, n_kv_head=32, d_ff=11008, vocab_size=32000,
                             context=4096),
    # meta-llama/Llama-2-70b-hf, config.json: 80 layers, hidden 8192, 64 heads, 8 KV heads, intermediate 28672,
    # vocab 32000, max_position_embeddings 4096, untied.
    "Llama 2 70B": ModelShape(n_layer=80, d_model=8192, n_head=64, n_kv_head=8, d_ff=28672, vocab_size=32000,
                              context=4096),
}


def param_count(shape: ModelShape) -> int:
    """The number of parameters ``N`` of a model of this shape, counted matrix by matrix.

    With ``d = d_model``, ``k = n_kv_head * head_dim`` (``= d`` without grouped-query attention),
    ``f = d_ff`` and ``V = vocab_size``::

        N = V d  [+ context d, learned positions]  [+ V d, untied output head]  + norm
            + n_layer (attention 2 d^2 + 2 d k  +  MLP (2 or 3) d f  +  2 norms  [+ biases])

    Defined in chapter 11.
    """
    d, f, V = shape.d_model, shape.d_ff, shape.vocab_size
    k = shape.n_kv_head * shape.head_dim  # width of the keys and of the values
    norm = 2 * d if shape.norm == "layernorm" else d  # LayerNorm has a gain and a bias, RMSNorm a gain
    attention = 2 * d * d + 2 * d * k  # W_q and W_o are d x d; W_k and W_v are d x k
    mlp = (3 if shape.mlp == "swiglu" else 2) * d * f
    if shape.bias:
        attention += d + 2 * k + d  # q, k, v and output biases
        mlp += (2 * f if shape.mlp == "swiglu" else f) + d
    layer = attention + mlp + 2 * norm  # a norm before the attention and one before the MLP
    embeddings = V * d + (shape.context * d if shape.learned_positions else 0)
    head = 0 if shape.tied_embeddings else V * d  # a tied head is the embedding matrix again
    return embeddings + shape.n_layer * layer + norm + head  # + the final norm


def cost_table(shapes: dict[str, ModelShape], *, price_per_gpu_hour: float, peak_flops_per_s: float, mfu: float,
               tokens_per_param: float = 20, gpu_memory_gb: float = 80) -> list[dict]:
    """One row (a dict) per model: what training it compute-optimally costs, and what serving it needs.

    For ``N = param_count(shape)``: ``D = tokens_per_param * N`` tokens (20, Chinchilla's rule),
    ``C = 6 N D`` FLOPs, GPU-hours and money at ``mfu`` of ``peak_flops_per_s`` and
    ``price_per_gpu_hour``; the training state (bf16 weights, fp32 master weights, bf16 gradients,
    Adam's m and v: 16 bytes a parameter) and the fewest GPUs of ``gpu_memory_gb`` that hold it when
    sharded across them (activations left out, so a lower bound); for inference, the bf16 weights,
    the bf16 KV cache per token and for one sequence of the full context, and the two together.

    Defined in chapter 11.
    """
    rows = []
    for name, shape in shapes.items():
        N = param_count(shape)
        D = tokens_per_param * N
        C = training_flops(N, D)
        state = training_memory_bytes(N)
        kv_per_token = kv_cache_bytes(shape.n_layer, shape.n_kv_head, shape.head_dim, seq_len=1)
        kv_context = kv_per_token * shape.context  # one sequence as long as the model allows
        rows.append({
            "model": name,
            "params": N,
            "tokens": D,
            "train_flops": C,
            "gpu_hours": gpu_hours(C, peak_flops_per_s, mfu),
            "cost": training_cost(C, peak_flops_per_s, mfu, price_per_gpu_hour),
            "train_state_gb": state / 1e9,
            "min_gpus": math.ceil(state / (gpu_memory_gb * 1e9)),
            "infer_weights_gb": 2 * N / 1e9,  # bf16
            "kv_bytes_per_token": kv_per_token,
            "kv_gb_full_context": kv_context / 1e9,
            "infer_gb_full_context": inference_memory_bytes(N, kv_context) / 1e9,
        })
    return rows
