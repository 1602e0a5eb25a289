"""Convolution and max-pooling from scratch in NumPy, porting a Keras CNN to PyTorch, batch norm and dropout.

Defined in chapter 04 (``notebooks/04_cnn.ipynb``), where each function is derived, written first
with explicit loops and then with ``im2col``, and checked against ``torch.nn.functional`` and
``keras.layers``; lab 04 asks for ``conv2d`` through ``im2col``. ``BatchNorm2d`` and ``Dropout`` are
torch modules written from the formulas and checked against ``nn.BatchNorm2d`` and ``nn.Dropout``.

Layouts are PyTorch's: images ``(N, C, H, W)``, kernels ``(O, C, kH, kW)``, biases ``(O,)``.
Keras keeps images as ``(N, H, W, C)`` and kernels as ``(kH, kW, C, O)``; the porting functions at
the end convert between the two. Like every framework, "convolution" here is cross-correlation:
the kernel is not flipped::

    out[n, o, i, j] = bias[o] + sum_{c, a, b} x_pad[n, c, i * s_h + a, j * s_w + b] * weight[o, c, a, b]

``kernel_size``, ``stride`` and ``padding`` are an int (the same for height and width) or a pair
``(height, width)``; ``padding`` adds that many zeros on *each* side.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    """``3 -> (3, 3)``; a pair ``(3, 1)`` stays; anything else (or a value below ``minimum``) is an error.

    Defined in chapter 04.
    """
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
            or min(pair) < minimum):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair (height, width) of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Output length along one axis: ``floor((size + 2 padding - kernel_size) / stride) + 1``.

    The kernel fits ``size + 2 padding - kernel_size + 1`` times when it moves one step at a time;
    with stride ``s`` only every ``s``-th of those positions is used. Positions that would need
    the kernel to hang over the padded edge are dropped (the floor).

    Defined in chapter 04.
    """
    if size + 2 * padding < kernel_size:
        raise ValueError(f"the kernel ({kernel_size}) is larger than the padded input "
                         f"({size} + 2 * {padding} = {size + 2 * padding}): there is no output position")
    return (size + 2 * padding - kernel_size) // stride + 1


def _conv_inputs(x, weight, bias, stride, padding):
    """``conv2d``'s arguments as arrays, their shapes checked with a message that says what to change.

    Returns ``x``, ``weight``, ``bias``, then the stride, the padding and the output size
    ``(H_out, W_out)``, each as a pair ``(height, width)``.

    Defined in chapter 04.
    """
    x, weight = np.asarray(x), np.asarray(weight)
    bias = None if bias is None else np.asarray(bias)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {x.shape}"
                         + ("; for one image use x[None]" if x.ndim == 3 else ""))
    if weight.ndim != 4:
        raise ValueError(f"weight must be (O, C, kH, kW), got shape {weight.shape}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels but weight {weight.shape} expects {weight.shape[1]} "
                         f"(weight is (O, C, kH, kW))")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), one value per output channel, got {bias.shape}")
    stride, padding = _pair(stride, "stride", 1), _pair(padding, "padding", 0)
    out_size = tuple(conv_output_size(x.shape[d], weight.shape[d], stride[d - 2], padding[d - 2]) for d in (2, 3))
    return x, weight, bias, stride, padding, out_size


def conv2d_loop(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1,
                padding=0) -> np.ndarray:
    """2-D convolution (cross-correlation) by explicit loops over images, kernels and positions.

    ``x`` (N, C, H, W), ``weight`` (O, C, kH, kW), ``bias`` (O,) or None. Returns
    (N, O, H_out, W_out) with ``H_out = conv_output_size(H, kH, stride, padding)``. Slow: the
    reference that ``conv2d`` is checked against.

    Defined in chapter 04.
    """
    x, weight, bias, (s_h, s_w), (p_h, p_w), (H_out, W_out) = _conv_inputs(x, weight, bias, stride, padding)
    N, C, H, W = x.shape
    O, _, kH, kW = weight.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (p_h, p_h), (p_w, p_w)))  # (N, C, H + 2 p_h, W + 2 p_w)
    out = np.zeros((N, O, H_out, W_out), dtype=np.result_type(x, weight))
    for n in range(N):
        for o in range(O):
            for i in range(H_out):
                for j in range(W_out):
                    patch = x_pad[n, :, i * s_h:i * s_h + kH, j * s_w:j * s_w + kW]  # (C, kH, kW)
                    out[n, o, i, j] = np.sum(patch * weight[o])
    if bias is not None:
        out += bias[None, :, None, None]  # one bias per output channel, added at every position
    return out


def _pool_inputs(x, kernel_size, stride, padding):
    """``max_pool2d``'s arguments: ``x`` as a checked (N, C, H, W) array, then the window, stride
    (``kernel_size`` when None) and padding, each as a pair ``(height, width)``.

    Defined in chapter 04.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {x.shape}")
    kernel = _pair(kernel_size, "kernel_size", 1)
    return x, kernel, kernel if stride is None else _pair(stride, "stride", 1), _pair(padding, "padding", 0)


def max_pool2d_loop(x: np.ndarray, kernel_size, stride=None, padding=0) -> np.ndarray:
    """2-D max-pooling by explicit loops: the largest value of each window, channel by channel.

    ``x`` (N, C, H, W) of floats. ``stride`` defaults to ``kernel_size`` (windows side by side);
    ``padding`` adds ``-inf`` on each side, so a padded position never wins. Returns
    (N, C, H_out, W_out). The reference that ``max_pool2d`` is checked against.

    Defined in chapter 04.
    """
    x, (k_h, k_w), (s_h, s_w), (p_h, p_w) = _pool_inputs(x, kernel_size, stride, padding)
    N, C, H, W = x.shape
    H_out, W_out = conv_output_size(H, k_h, s_h, p_h), conv_output_size(W, k_w, s_w, p_w)
    x_pad = np.pad(x, ((0, 0), (0, 0), (p_h, p_h), (p_w, p_w)), constant_values=-np.inf)
    out = np.empty((N, C, H_out, W_out), dtype=x_pad.dtype)
    for i in range(H_out):
        for j in range(W_out):
            window = x_pad[:, :, i * s_h:i * s_h + k_h, j * s_w:j * s_w + k_w]  # (N, C, k_h, k_w)
            out[:, :, i, j] = window.max(axis=(2, 3))
    return out


def im2col(x: np.ndarray, kernel_size, stride=1, padding=0, pad_value: float = 0.0) -> np.ndarray:
    """Unfold every kernel-sized patch of a batch of images into a column.

    ``x`` (N, C, H, W) becomes ``cols`` (N, C * kH * kW, H_out * W_out): column ``l = i * W_out + j``
    holds the patch under output position ``(i, j)``, its rows ordered channel first, then
    kernel row, then kernel column, the order of ``weight.reshape(O, -1)`` and of
    ``torch.nn.functional.unfold``. The loops run over the ``kH * kW`` offsets inside the kernel
    (9 for 3x3), each copying one strided slice of the whole batch, never over the output positions.

    Defined in chapter 04.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {x.shape}")
    (k_h, k_w), (s_h, s_w) = _pair(kernel_size, "kernel_size", 1), _pair(stride, "stride", 1)
    p_h, p_w = _pair(padding, "padding", 0)
    N, C, H, W = x.shape
    H_out, W_out = conv_output_size(H, k_h, s_h, p_h), conv_output_size(W, k_w, s_w, p_w)
    x_pad = np.pad(x, ((0, 0), (0, 0), (p_h, p_h), (p_w, p_w)), constant_values=pad_value)
    cols = np.empty((N, C, k_h, k_w, H_out, W_out), dtype=x_pad.dtype)
    for a in range(k_h):
        for b in range(k_w):
            # Kernel offset (a, b) meets input pixel (i * s_h + a, j * s_w + b) at output position (i, j).
            cols[:, :, a, b] = x_pad[:, :, a:a + s_h * H_out:s_h, b:b + s_w * W_out:s_w]  # (N, C, H_out, W_out)
    return cols.reshape(N, C * k_h * k_w, H_out * W_out)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1, padding=0) -> np.ndarray:
    """2-D convolution (cross-correlation) as one matrix product: ``weight.reshape(O, -1) @ im2col(x)``.

    ``x`` (N, C, H, W), ``weight`` (O, C, kH, kW), ``bias`` (O,) or None; returns (N, O, H_out, W_out),
    the same as ``torch.nn.functional.conv2d(x, weight, bias, stride, padding)``.

    Defined in chapter 04.
    """
    x, weight, bias, (s_h, s_w), (p_h, p_w), (H_out, W_out) = _conv_inputs(x, weight, bias, stride, padding)
    N, C, H, W = x.shape
    O, _, kH, kW = weight.shape
    cols = im2col(x, (kH, kW), (s_h, s_w), (p_h, p_w))  # (N, C * kH * kW, H_out * W_out)
    out = weight.reshape(O, C * kH * kW) @ cols  # (O, CkHkW) @ (N, CkHkW, L) -> (N, O, L)
    if bias is not None:
        out = out + bias[:, None]  # (N, O, L) + (O, 1)
    return out.reshape(N, O, H_out, W_out)


def max_pool2d(x: np.ndarray, kernel_size, stride=None, padding=0) -> np.ndarray:
    """2-D max-pooling through ``im2col``: each channel is an image of its own, each window a column.

    ``x`` (N, C, H, W) of floats; ``stride`` defaults to ``kernel_size``; ``padding`` (at most half
    the kernel, as in PyTorch) adds ``-inf``. Returns (N, C, H_out, W_out), the same as
    ``torch.nn.functional.max_pool2d(x, kernel_size, stride, padding)``.

    Defined in chapter 04.
    """
    x, (k_h, k_w), (s_h, s_w), (p_h, p_w) = _pool_inputs(x, kernel_size, stride, padding)
    if 2 * p_h > k_h or 2 * p_w > k_w:
        raise ValueError(f"padding {padding!r} must be at most half the kernel size {kernel_size!r}, "
                         "or some windows would hold nothing but padding")
    N, C, H, W = x.shape
    H_out, W_out = conv_output_size(H, k_h, s_h, p_h), conv_output_size(W, k_w, s_w, p_w)
    cols = im2col(x.reshape(N * C, 1, H, W), (k_h, k_w), (s_h, s_w), (p_h, p_w), pad_value=-np.inf)  # (NC, khkw, L)
    return cols.max(axis=1).reshape(N, C, H_out, W_out)


def keras_conv_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """A Keras ``Conv2D`` kernel (kH, kW, C, O) ("HWIO") as a PyTorch ``nn.Conv2d`` weight (O, C, kH, kW).

    Defined in chapter 04.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"a Conv2D kernel is (kH, kW, C, O), got shape {kernel.shape}")
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # (O, C, kH, kW)


def keras_dense_kernel_to_torch(kernel: np.ndarray, flatten_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """A Keras ``Dense`` kernel (in, out) as a PyTorch ``nn.Linear`` weight (out, in).

    ``nn.Linear`` stores the transpose. When the layer reads a flattened feature map, pass the
    map's Keras shape ``flatten_shape = (H, W, C)``: Keras flattens (H, W, C) with the channel
    fastest, PyTorch flattens (C, H, W) with the column fastest, so the kernel's rows are
    reordered from (h, w, c) to (c, h, w) first.

    Defined in chapter 04.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 2:
        raise ValueError(f"a Dense kernel is (in, out), got shape {kernel.shape}")
    if flatten_shape is not None:
        H, W, C = flatten_shape
        if H * W * C != kernel.shape[0]:
            raise ValueError(f"flatten_shape {flatten_shape} has {H * W * C} values, the kernel has {kernel.shape[0]} rows")
        kernel = kernel.reshape(H, W, C, -1).transpose(2, 0, 1, 3).reshape(C * H * W, -1)  # rows (h,w,c) -> (c,h,w)
    return np.ascontiguousarray(kernel.T)  # (out, in)


def port_keras_cnn(keras_net, torch_net: nn.Module) -> None:
    """Copy the weights of a built Keras CNN into its PyTorch twin, in place.

    Pairs the Keras ``Conv2D`` and ``Dense`` layers, in order, with the twin's ``nn.Conv2d`` and
    ``nn.Linear`` modules, in order. Conv kernels go from HWIO to OIHW; the first ``Dense`` after a
    ``Flatten`` has its rows reordered from the NHWC to the NCHW flatten order. Layers without
    weights (activations, pooling, dropout) need no copying; any other layer with weights is an error.

    Defined in chapter 04.
    """
    import keras

    keras_layers, flatten_shape = [], None
    for layer in keras_net.layers:
        if isinstance(layer, keras.layers.Flatten):
            flatten_shape = tuple(layer.input.shape[1:])  # (H, W, C) of the map it flattens
        elif isinstance(layer, keras.layers.Conv2D):
            if layer.data_format != "channels_last":
                raise ValueError(f"{layer.name}: only channels_last Conv2D layers are supported")
            keras_layers.append((layer, None))
        elif isinstance(layer, keras.layers.Dense):
            keras_layers.append((layer, flatten_shape))
            flatten_shape = None  # only the first Dense after a Flatten reads the flattened map
        elif layer.weights:
            raise ValueError(f"port_keras_cnn copies Conv2D and Dense layers only, but {layer.name} "
                             f"({type(layer).__name__}) has weights too")
    torch_layers = [m for m in torch_net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(keras_layers) != len(torch_layers):
        raise ValueError(f"the Keras model has {len(keras_layers)} Conv2D/Dense layers, "
                         f"the PyTorch model {len(torch_layers)} nn.Conv2d/nn.Linear modules")
    with torch.no_grad():
        for (layer, flat), module in zip(keras_layers, torch_layers):
            is_conv = isinstance(layer, keras.layers.Conv2D)
            if is_conv != isinstance(module, nn.Conv2d):
                raise ValueError(f"{layer.name} ({type(layer).__name__}) faces a {type(module).__name__}")
            kernel, *bias = layer.get_weights()
            weight = keras_conv_kernel_to_torch(kernel) if is_conv else keras_dense_kernel_to_torch(kernel, flat)
            if tuple(module.weight.shape) != weight.shape:
                raise ValueError(f"{layer.name}: the ported weight is {weight.shape}, "
                                 f"the {type(module).__name__} expects {tuple(module.weight.shape)}")
            if bool(bias) != (module.bias is not None):
                raise ValueError(f"{layer.name}: one of the two layers has a bias and the other has not")
            module.weight.copy_(torch.from_numpy(weight))
            if bias:
                module.bias.copy_(torch.from_numpy(np.asarray(bias[0])))


class BatchNorm2d(nn.Module):
    """Batch normalisation of images ``(N, C, H, W)``, channel by channel, as ``nn.BatchNorm2d`` computes it.

    Training mode normalises with the batch's mean and biased variance over ``(N, H, W)`` and moves
    the running averages towards them, ``running = (1 - momentum) * running + momentum * batch``,
    with the unbiased variance. Evaluation mode normalises with the running averages, so an image's
    output does not depend on its batch. Then ``weight * x_hat + bias``: gamma and beta, learned per
    channel.

    Defined in chapter 04.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma: (C,)
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta: (C,)
        self.register_buffer("running_mean", torch.zeros(num_features))  # (C,)
        self.register_buffer("running_var", torch.ones(num_features))  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C = len(self.weight)
        if x.ndim != 4 or x.shape[1] != C:
            raise ValueError(f"BatchNorm2d({C}) needs images (N, {C}, H, W), got shape {tuple(x.shape)}")
        if self.training:
            n = x.numel() // C  # values per channel: N * H * W
            if n < 2:
                raise ValueError("batch norm in training mode needs more than one value per channel")
            mean = x.mean(dim=(0, 2, 3))  # (C,): over the batch and every position
            var = x.var(dim=(0, 2, 3), correction=0)  # (C,): the biased variance normalises
            with torch.no_grad():  # the running averages are statistics, not part of the graph
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + self.eps)  # (N, C, H, W)
        return self.weight[:, None, None] * x_hat + self.bias[:, None, None]


class Dropout(nn.Module):
    """Inverted dropout: in training, zero each value with probability ``p`` and divide the rest by ``1 - p``.

    The division keeps every value's expectation, so evaluation mode returns ``x`` unchanged. The
    mask is drawn as ``nn.Dropout`` draws it on the CPU, ``bernoulli_(1 - p)`` from the global
    generator, and scaled before it multiplies: after the same seed, the same values are dropped.

    Defined in chapter 04.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"the dropout probability p must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = torch.empty_like(x).bernoulli_(1 - self.p) / (1 - self.p)  # 0 or 1 / (1 - p), x's shape
        return x * mask
