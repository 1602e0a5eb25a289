"""dlwb.conv: convolution and max-pooling from scratch vs PyTorch and Keras, and the Keras -> PyTorch CNN port.

Tolerances:
- float64 convolutions (loops, im2col, F.conv2d, keras Conv2D in float64) compute the same sums in different
  orders: rtol 1e-10, atol 1e-12;
- im2col only copies values: it must equal F.unfold exactly; max-pooling takes maxima: exact everywhere;
- the ported CNN runs in float32 in both frameworks: logits equal to rtol = atol = 1e-5;
- batch norm against nn.BatchNorm2d in float64 (outputs, running statistics, gradients): rtol 1e-10, atol 1e-12;
- dropout against nn.Dropout: after the same seed the same mask exactly, the values to rtol 1e-6 (float32); the
  kept share and the mean of dropout(ones) within 4 standard deviations of 1 - p and 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlwb import conv

RTOL, ATOL = 1e-10, 1e-12  # float64, same arithmetic up to summation order
PORT_TOL = 1e-5  # float32 logits of the ported CNN (rtol and atol)

CONV_CASES = [  # (N, C, H, W), (O, kH, kW), stride, padding
    ((1, 1, 5, 5), (1, 3, 3), 1, 0),
    ((2, 3, 8, 8), (4, 3, 3), 1, 1),
    ((2, 3, 7, 9), (4, 3, 2), (2, 1), (1, 0)),  # non-square everything, per-axis stride and padding
    ((1, 2, 10, 6), (2, 5, 5), 3, 2),
    ((3, 4, 5, 5), (5, 1, 1), 1, 0),  # 1x1 kernel
    ((2, 4, 7, 5), (3, 1, 1), 2, 0),  # 1x1 kernel with a stride
    ((1, 2, 5, 5), (2, 5, 5), 1, 0),  # the kernel covers the image: one output position
    ((2, 1, 28, 28), (8, 3, 3), 2, 3),  # padding larger than half the kernel
]
POOL_CASES = [  # (N, C, H, W), kernel_size, stride, padding
    ((2, 3, 8, 8), 2, None, 0),
    ((1, 2, 9, 7), 3, 2, 1),
    ((2, 1, 6, 10), (2, 3), (1, 2), (1, 1)),
    ((1, 1, 5, 5), 5, None, 0),
    ((2, 2, 7, 7), 2, 1, 0),  # overlapping windows
    ((1, 3, 13, 13), 2, 2, 0),  # odd size: the last row and column are dropped
]


def conv_problem(case, seed=0, dtype=np.float64):
    x_shape, (O, kH, kW), stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)  # (N, C, H, W)
    w = rng.standard_normal((O, x_shape[1], kH, kW)).astype(dtype)  # (O, C, kH, kW)
    b = rng.standard_normal(O).astype(dtype)  # (O,)
    return x, w, b, stride, padding


def torch_conv(x, w, b, stride, padding):
    bias = None if b is None else torch.from_numpy(b)
    return F.conv2d(torch.from_numpy(x), torch.from_numpy(w), bias, stride=stride, padding=padding).numpy()


# ------------------------------------------------------------------------------------------ convolution


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch(case):
    x, w, b, stride, padding = conv_problem(case)
    ref = torch_conv(x, w, b, stride, padding)
    got = conv.conv2d(x, w, b, stride, padding)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_loop_matches_im2col_version(case):
    x, w, b, stride, padding = conv_problem(case, seed=1)
    np.testing.assert_allclose(conv.conv2d_loop(x, w, b, stride, padding), conv.conv2d(x, w, b, stride, padding),
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", CONV_CASES[:4])
def test_conv2d_without_bias(case):
    x, w, _, stride, padding = conv_problem(case, seed=2)
    ref = torch_conv(x, w, None, stride, padding)
    np.testing.assert_allclose(conv.conv2d(x, w, None, stride, padding), ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(conv.conv2d_loop(x, w, None, stride, padding), ref, rtol=RTOL, atol=ATOL)


def test_conv2d_float32_keeps_dtype_and_matches_torch():
    x, w, b, stride, padding = conv_problem(CONV_CASES[1], seed=3, dtype=np.float32)
    got = conv.conv2d(x, w, b, stride, padding)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, torch_conv(x, w, b, stride, padding), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_equals_torch_unfold_exactly(case):
    x, w, _, stride, padding = conv_problem(case, seed=4)
    kernel = w.shape[2:]
    ref = F.unfold(torch.from_numpy(x), kernel, padding=padding, stride=stride).numpy()
    assert np.array_equal(conv.im2col(x, kernel, stride, padding), ref)


def test_im2col_layout_on_a_tiny_image():
    cols = conv.im2col(np.arange(16.0).reshape(1, 1, 4, 4), 2)  # (1, 4, 9)
    assert cols.shape == (1, 4, 9)
    assert cols[0, :, 0].tolist() == [0, 1, 4, 5]  # the top-left patch
    assert cols[0, :, 1].tolist() == [1, 2, 5, 6]  # one step to the right
    assert cols[0, :, 3].tolist() == [4, 5, 8, 9]  # the second output row


@pytest.mark.parametrize("n, k, s, p", [(28, 3, 1, 0), (28, 3, 1, 1), (28, 5, 2, 2), (7, 3, 2, 0), (8, 3, 2, 0),
                                        (13, 4, 3, 1), (5, 5, 1, 0), (6, 1, 4, 0)])
def test_conv_output_size_matches_torch(n, k, s, p):
    by_torch = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p).shape[-1]
    assert conv.conv_output_size(n, k, s, p) == by_torch


@pytest.mark.parametrize("case", CONV_CASES[:6])
def test_conv2d_matches_keras_conv2d(case):
    keras = pytest.importorskip("keras")
    x, w, b, stride, padding = conv_problem(case, seed=5)
    O, C, kH, kW = w.shape
    pad = keras.layers.ZeroPadding2D(padding, dtype="float64")
    layer = keras.layers.Conv2D(O, (kH, kW), strides=stride, padding="valid", dtype="float64")
    (p_top, _), (p_left, _) = pad.padding
    layer.build((None, x.shape[2] + 2 * p_top, x.shape[3] + 2 * p_left, C))
    layer.set_weights([w.transpose(2, 3, 1, 0), b])  # OIHW -> HWIO
    by_keras = keras.ops.convert_to_numpy(layer(pad(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)  # NHWC -> NCHW
    np.testing.assert_allclose(conv.conv2d(x, w, b, stride, padding), by_keras, rtol=RTOL, atol=ATOL)


def test_keras_same_padding_equals_half_kernel_padding():
    keras = pytest.importorskip("keras")
    x, w, b, _, _ = conv_problem(((2, 3, 9, 11), (4, 5, 5), 1, 2), seed=6)
    layer = keras.layers.Conv2D(4, 5, padding="same", dtype="float64")
    layer.build((None, 9, 11, 3))
    layer.set_weights([w.transpose(2, 3, 1, 0), b])
    by_keras = keras.ops.convert_to_numpy(layer(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(conv.conv2d(x, w, b, 1, 2), by_keras, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------ max-pooling


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_matches_torch_exactly(case):
    x_shape, k, s, p = case
    x = np.random.default_rng(7).standard_normal(x_shape)
    ref = F.max_pool2d(torch.from_numpy(x), k, s, p).numpy()
    assert np.array_equal(conv.max_pool2d(x, k, s, p), ref)
    assert np.array_equal(conv.max_pool2d_loop(x, k, s, p), ref)


@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[3] == 0])
def test_max_pool2d_matches_keras_exactly(case):
    keras = pytest.importorskip("keras")
    x_shape, k, s, _ = case
    x = np.random.default_rng(8).standard_normal(x_shape)
    pool = keras.layers.MaxPooling2D(k, strides=s, padding="valid", dtype="float64")
    by_keras = keras.ops.convert_to_numpy(pool(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    assert np.array_equal(conv.max_pool2d(x, k, s), by_keras)


def test_max_pool2d_padding_never_wins():
    x = -np.ones((1, 1, 4, 4)) - np.arange(16.0).reshape(1, 1, 4, 4)  # all negative: a zero padding would win
    out = conv.max_pool2d(x, 3, 2, 1)
    assert np.array_equal(out, F.max_pool2d(torch.from_numpy(x), 3, 2, 1).numpy())
    assert (out < 0).all()


# ------------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize("fn", [conv.conv2d, conv.conv2d_loop])
def test_conv2d_rejects_bad_inputs(fn):
    x, w, b = np.zeros((2, 3, 8, 8)), np.zeros((4, 3, 3, 3)), np.zeros(4)
    with pytest.raises(ValueError, match=r"x\[None\]"):
        fn(x[0], w, b)  # one image without its batch axis
    with pytest.raises(ValueError, match="channels"):
        fn(x, np.zeros((4, 2, 3, 3)), b)
    with pytest.raises(ValueError, match="weight must be"):
        fn(x, np.zeros((4, 3, 3)), b)
    with pytest.raises(ValueError, match="bias"):
        fn(x, w, np.zeros(3))
    with pytest.raises(ValueError, match="stride"):
        fn(x, w, b, stride=0)
    with pytest.raises(ValueError, match="padding"):
        fn(x, w, b, padding=-1)
    with pytest.raises(ValueError, match="stride"):
        fn(x, w, b, stride=1.5)
    with pytest.raises(ValueError, match="larger than the padded input"):
        fn(np.zeros((1, 3, 2, 2)), w, b)


def test_max_pool2d_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at most half"):
        conv.max_pool2d(np.zeros((1, 1, 8, 8)), 2, padding=2)
    with pytest.raises(ValueError, match="kernel_size"):
        conv.max_pool2d(np.zeros((1, 1, 8, 8)), (2, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        conv.max_pool2d(np.zeros((8, 8)), 2)


def test_conv_output_size_rejects_a_kernel_larger_than_the_input():
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv.conv_output_size(4, 7, 1, 1)


# ------------------------------------------------------------------------------------------ parameter counts


def classic_torch_cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 13 * 13, 128), nn.ReLU(), nn.Linear(128, 10))


def classic_keras_cnn():
    keras = pytest.importorskip("keras")
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])


CLASSIC_PARAMS = (32 * 1 * 3 * 3 + 32) + (13 * 13 * 32 * 128 + 128) + (128 * 10 + 10)  # 693,962


def test_classic_cnn_parameter_count():
    side = conv.conv_output_size(conv.conv_output_size(28, 3), 2, 2)  # 28 -> 26 -> 13
    assert side == 13
    assert CLASSIC_PARAMS == 693_962
    assert sum(p.numel() for p in classic_torch_cnn().parameters()) == CLASSIC_PARAMS
    assert classic_keras_cnn().count_params() == CLASSIC_PARAMS


def test_batchnorm_counts_differ_between_frameworks():
    """PyTorch's parameters() hold gamma and beta (2C); Keras's count_params() adds the moving statistics (4C)."""
    keras = pytest.importorskip("keras")
    torch_net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
    keras_net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
                                  keras.layers.BatchNormalization()])
    assert sum(p.numel() for p in torch_net.parameters()) == 8 * 9 + 2 * 8
    assert keras_net.count_params() == 8 * 9 + 4 * 8


# ------------------------------------------------------------------------------------------ Keras -> PyTorch port


def test_keras_conv_kernel_to_torch_layout():
    kernel = np.arange(3 * 2 * 4 * 5).reshape(3, 2, 4, 5)  # (kH, kW, C, O)
    weight = conv.keras_conv_kernel_to_torch(kernel)  # (O, C, kH, kW)
    assert weight.shape == (5, 4, 3, 2)
    assert weight[4, 3, 2, 1] == kernel[2, 1, 3, 4]


def test_keras_dense_kernel_to_torch_permutes_the_flatten_order():
    H, W, C, out = 2, 3, 4, 5
    kernel = np.random.default_rng(9).standard_normal((H * W * C, out))
    feature_map = np.random.default_rng(10).standard_normal((H, W, C))  # one image, channels last
    keras_result = feature_map.reshape(-1) @ kernel  # Keras: Flatten (h, w, c), then x @ K
    weight = conv.keras_dense_kernel_to_torch(kernel, (H, W, C))  # (out, C*H*W)
    torch_result = weight @ feature_map.transpose(2, 0, 1).reshape(-1)  # PyTorch: Flatten (c, h, w), then W x
    np.testing.assert_allclose(torch_result, keras_result, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(conv.keras_dense_kernel_to_torch(kernel), kernel.T)  # no Flatten: a transpose
    with pytest.raises(ValueError, match="flatten_shape"):
        conv.keras_dense_kernel_to_torch(kernel, (H, W, C + 1))


def test_keras_cnn_port_gives_identical_logits():
    """The classic Keras CNN and its PyTorch twin, with the Keras weights copied across: the same logits."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    keras_net, torch_net = classic_keras_cnn(), classic_torch_cnn()
    # Fresh Keras weights have zero biases; make them non-zero so that the bias copy is tested too.
    rng = np.random.default_rng(11)
    keras_net.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype) for w in keras_net.get_weights()])
    conv.port_keras_cnn(keras_net, torch_net)
    x = rng.random((16, 28, 28, 1), dtype=np.float32)  # (N, H, W, C), pixels in [0, 1) like MNIST
    keras_logits = keras.ops.convert_to_numpy(keras_net(x))  # (16, 10)
    torch_net.eval()
    with torch.no_grad():
        torch_logits = torch_net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()  # NHWC -> NCHW
    np.testing.assert_allclose(torch_logits, keras_logits, rtol=PORT_TOL, atol=PORT_TOL)
    assert np.array_equal(torch_logits.argmax(1), keras_logits.argmax(1))

    # The same port without permuting the dense rows gives different logits: the permutation is needed.
    with torch.no_grad():
        torch_net[4].weight.copy_(torch.from_numpy(conv.keras_dense_kernel_to_torch(keras_net.layers[3].get_weights()[0])))
        scrambled = torch_net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert not np.allclose(scrambled, keras_logits, rtol=PORT_TOL, atol=PORT_TOL)


def test_port_checks_that_the_architectures_match():
    keras_net = classic_keras_cnn()
    with pytest.raises(ValueError, match="Conv2D/Dense layers"):
        conv.port_keras_cnn(keras_net, nn.Sequential(nn.Conv2d(1, 32, 3), nn.Flatten(), nn.Linear(10, 10)))
    wrong_width = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                nn.Linear(16 * 13 * 13, 128), nn.ReLU(), nn.Linear(128, 10))
    with pytest.raises(ValueError, match="expects"):
        conv.port_keras_cnn(keras_net, wrong_width)


def test_port_rejects_layers_it_cannot_copy():
    keras = pytest.importorskip("keras")
    keras_net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                                  keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="BatchNormalization"):
        conv.port_keras_cnn(keras_net, nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10)))


# ------------------------------------------------------------------------------------------ batch norm and dropout


def bn_pair(channels, momentum=0.1, seed=0):
    """Our BatchNorm2d and nn.BatchNorm2d in float64 with the same random gamma and beta."""
    torch.manual_seed(seed)
    ours = conv.BatchNorm2d(channels, momentum=momentum).double()
    ref = nn.BatchNorm2d(channels, momentum=momentum).double()
    with torch.no_grad():
        gamma, beta = torch.randn(channels, dtype=torch.float64), torch.randn(channels, dtype=torch.float64)
        for bn in (ours, ref):
            bn.weight.copy_(gamma)
            bn.bias.copy_(beta)
    return ours, ref


@pytest.mark.parametrize("shape, momentum", [((8, 4, 6, 5), 0.1), ((2, 3, 1, 1), 0.3), ((16, 2, 7, 3), 0.01)])
def test_batch_norm_matches_torch_in_training_mode(shape, momentum):
    ours, ref = bn_pair(shape[1], momentum)
    for step in range(4):
        x = (3 * torch.randn(shape, dtype=torch.float64) + 2).requires_grad_()  # (N, C, H, W), mean 2, std 3
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = ours(x), ref(x_ref)
        torch.testing.assert_close(y, y_ref, rtol=RTOL, atol=ATOL)
        upstream = torch.randn_like(y)
        (y * upstream).sum().backward()
        (y_ref * upstream).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(ours.running_var, ref.running_var, rtol=RTOL, atol=ATOL)


def test_batch_norm_evaluation_uses_the_running_statistics():
    ours, ref = bn_pair(5)
    for _ in range(3):
        x = 2 * torch.randn(4, 5, 3, 3, dtype=torch.float64) - 1
        ours(x)
        ref(x)
    ours.eval()
    ref.eval()
    x = torch.randn(6, 5, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=RTOL, atol=ATOL)
        assert torch.equal(ours(x[:1]), ours(x)[:1]), "in evaluation mode an image's output must not depend on its batch"
        running = ours.running_mean.clone(), ours.running_var.clone()
        ours(x)
    assert torch.equal(ours.running_mean, running[0]) and torch.equal(ours.running_var, running[1])


def test_batch_norm_state_dict_matches_torch():
    ours, ref = conv.BatchNorm2d(3), nn.BatchNorm2d(3)
    assert set(ours.state_dict()) == set(ref.state_dict()) - {"num_batches_tracked"}
    assert {n for n, _ in ours.named_parameters()} == {"weight", "bias"}


def test_batch_norm_rejects_bad_inputs():
    bn = conv.BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        bn(torch.zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        bn(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn(torch.zeros(1, 3, 1, 1))


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(256, 128), (16, 8, 5, 5)])
def test_dropout_draws_the_same_mask_as_torch(p, shape):
    x = torch.randn(shape)
    torch.manual_seed(3)
    y = conv.Dropout(p)(x)
    torch.manual_seed(3)
    y_ref = nn.Dropout(p)(x)
    assert torch.equal(y == 0, y_ref == 0), "the same seed must drop the same values"
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=0)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-6, atol=0)


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_dropout_keeps_the_expectation(p):
    n = 10**6
    torch.manual_seed(4)
    y = conv.Dropout(p)(torch.ones(n))
    assert abs((y != 0).float().mean().item() - (1 - p)) < 4 * math.sqrt(p * (1 - p) / n)
    assert abs(y.mean().item() - 1) < 4 * math.sqrt(p / ((1 - p) * n))


def test_dropout_in_evaluation_mode_and_with_p_zero_returns_its_input():
    x = torch.randn(8, 16)
    assert conv.Dropout(0.5).eval()(x) is x
    assert conv.Dropout(0.0)(x) is x
    for p in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            conv.Dropout(p)


# ------------------------------------------------------------------------------------------ the GPU path


@pytest.fixture
def cnn_logits():
    """The ported classic CNN in eval mode, a batch of 8 images and its float32 CPU logits."""
    torch.manual_seed(0)
    net = classic_torch_cnn().eval()
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        return net, x, net(x)


def test_ported_cnn_in_channels_last_gives_the_same_logits(cnn_logits):
    """channels_last changes the memory order only: the same network gives the same logits (float32 rounding)."""
    net, x, ref = cnn_logits
    with torch.no_grad():
        got = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_on_cpu_stays_close_to_float32(cnn_logits):
    """CPU bf16 autocast (Trainer(amp=True) on CPUs with native bf16) within bf16's rounding (8 bits)."""
    net, x, ref = cnn_logits
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_channels_last_bf16_matches_cpu_float32(cnn_logits):
    net, x, ref = cnn_logits
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        gpu = net.to("cuda", memory_format=torch.channels_last)
        out = gpu(x.to("cuda").contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out.float().cpu(), ref, rtol=0.05, atol=0.05)
