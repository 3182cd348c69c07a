"""PixelAttention (RFD eq. 6) and FFABlock (RFD §3.2, eqs. 4-6) against NumPy with the layers' own weights."""
import harness
import numpy as np
import pytest

from tfdehaze.layers import ChannelAttention, FFABlock, PixelAttention


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _randomise(layer, rng, scale=0.5):
    layer.set_weights([(scale * rng.normal(size=w.shape)).astype(np.float32) for w in layer.get_weights()])


def _conv_same(x, kernel, bias):
    """Zero-padded 'same' convolution (cross-correlation, as Keras): x (N, H, W, Ci), kernel (k, k, Ci, Co)."""
    k = kernel.shape[0]
    pad = k // 2
    h, w = x.shape[1:3]
    xp = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    return bias + sum(np.einsum("nhwc,co->nhwo", xp[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
                      for dy in range(k) for dx in range(k))


def _np_pixel_attention(x, pa):
    w1, b1 = pa.conv1.kernel.numpy()[0, 0], pa.conv1.bias.numpy()
    w2, b2 = pa.conv2.kernel.numpy()[0, 0], pa.conv2.bias.numpy()
    return x * _sigmoid(np.maximum(x @ w1 + b1, 0) @ w2 + b2)                         # eq. (6)


def _np_channel_attention(x, ca):
    d = x.mean(axis=(1, 2))                                                          # GAP, eq. (4)
    w1, b1, w2, b2 = (v.numpy() for v in (ca.dense1.kernel, ca.dense1.bias, ca.dense2.kernel, ca.dense2.bias))
    return x * _sigmoid(np.maximum(d @ w1 + b1, 0) @ w2 + b2)[:, None, None, :]      # eq. (5)


@pytest.mark.parametrize("channels, hidden", [(16, 2), (5, 1), (64, 8)])
def test_pixel_attention_matches_numpy(rng, channels, hidden):
    x = rng.normal(size=(2, 7, 9, channels)).astype(np.float32)
    pa = PixelAttention()
    pa(x)
    _randomise(pa, rng)
    assert pa.conv1.kernel.shape == (1, 1, channels, hidden) and pa.conv2.kernel.shape == (1, 1, hidden, 1)
    np.testing.assert_allclose(pa(x).numpy(), _np_pixel_attention(x, pa), rtol=1e-5, atol=1e-6)
    assert pa.attention_map(x).shape == (2, 7, 9, 1)


def test_rfd_sizes_match_ffa_net():
    """16 channels: pixel attention 16 -> 2 -> 1 and channel attention 16 -> 2 -> 16, all with biases."""
    pa, block = PixelAttention(), FFABlock()
    pa.build((None, None, None, 16))
    block.build((None, None, None, 16))
    assert pa.count_params() == (16 * 2 + 2) + (2 + 1) == 37
    ca = block.channel_attention
    assert isinstance(ca, ChannelAttention)
    assert ca.dense1.kernel.shape == (16, 2) and ca.dense2.kernel.shape == (2, 16)
    assert ca.count_params() == (16 * 2 + 2) + (2 * 16 + 16) == 82
    assert block.count_params() == 2 * (9 * 16 * 16 + 16) + 82 + 37 == 4759


@pytest.mark.parametrize("kernel_size", [3, 1])
def test_ffa_block_matches_numpy(rng, kernel_size):
    x = rng.normal(size=(2, 6, 5, 16)).astype(np.float32)
    block = FFABlock(kernel_size=kernel_size)
    block(x)
    _randomise(block, rng, scale=0.2)
    c1 = (block.conv1.kernel.numpy(), block.conv1.bias.numpy())
    c2 = (block.conv2.kernel.numpy(), block.conv2.bias.numpy())
    assert c1[0].shape == (kernel_size, kernel_size, 16, 16)
    r = np.maximum(_conv_same(x, *c1), 0) + x                   # r = ReLU(conv(x)) + x
    r = _conv_same(r, *c2)                                      # r = conv(r)
    r = _np_channel_attention(r, block.channel_attention)      # eqs. (4)-(5)
    r = _np_pixel_attention(r, block.pixel_attention)          # eq. (6)
    np.testing.assert_allclose(block(x).numpy(), r + x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: PixelAttention(reduction=4), lambda: FFABlock(kernel_size=5)])
def test_harness(make, rng, tmp_path):
    """config / .keras / checkpoint (every weight tracked) / graph == eager, in other configurations than
    tests/test_registered.py's."""
    harness.check_layer(make, rng.normal(size=(1, 5, 5, 16)).astype(np.float32), tmp_path=tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        PixelAttention(reduction=0)
    with pytest.raises(ValueError, match="kernel_size"):
        FFABlock(kernel_size=0)
    with pytest.raises(ValueError, match="known number of channels"):
        PixelAttention().build((None, None, None, None))
