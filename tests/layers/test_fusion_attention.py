"""MultiLevelFusion (eqs. 6-7), ResidualChannelAttention (eqs. 8-9) and ChannelAttention against numpy."""
import harness
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.layers.attention import ChannelAttention, ResidualChannelAttention
from tfdehaze.layers.fusion import MultiLevelFusion


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _randomise(layer, rng):
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])


@pytest.fixture
def xs(rng):
    return [rng.normal(size=(2, 7, 9, 5)).astype(np.float32) for _ in range(3)]


def test_mlf_matches_numpy(xs, rng):
    mlf = MultiLevelFusion()
    mlf(xs)
    _randomise(mlf, rng)
    kernel, bias = mlf.conv.kernel.numpy(), mlf.conv.bias.numpy()
    assert kernel.shape == (3, 3, 15, 3)
    cat = np.pad(np.concatenate(xs, axis=-1), [(0, 0), (1, 1), (1, 1), (0, 0)])
    weights = bias + sum(np.einsum("nhwc,ck->nhwk", cat[:, dy:dy + 7, dx:dx + 9], kernel[dy, dx])
                         for dy in range(3) for dx in range(3))                      # eq. (6)
    expected = sum(weights[..., i:i + 1] * x for i, x in enumerate(xs))               # eq. (7)
    np.testing.assert_allclose(mlf(xs).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_mlf_rejects_mismatched_inputs(xs):
    with pytest.raises(ValueError, match="one shape"):
        MultiLevelFusion()([xs[0], xs[1][:, :6]])
    with pytest.raises(ValueError, match=">= 2 inputs"):
        MultiLevelFusion()([xs[0]])


@pytest.mark.parametrize("mlp, activation", [("channels", "relu"), ("scalar", None)])
def test_rca_matches_numpy(xs, rng, mlp, activation):
    x = xs[0]
    rca = ResidualChannelAttention(reduction=2, mlp=mlp, mlp_activation=activation)
    rca(x)
    _randomise(rca, rng)
    conv = np.einsum("nhwc,co->nhwo", x, rca.conv.kernel.numpy()[0, 0]) + rca.conv.bias.numpy()
    d = conv.mean(axis=(1, 2))                                                         # GAP: (N, C)
    w1, b1, w2, b2 = (v.numpy() for v in (rca.dense1.kernel, rca.dense1.bias, rca.dense2.kernel, rca.dense2.bias))
    if mlp == "channels":
        assert w1.shape == (5, 2) and w2.shape == (2, 5)
        z = np.maximum(d @ w1 + b1, 0) @ w2 + b2
    else:                                  # the authors' code: Linear(1, 1) twice on each channel alone
        assert w1.shape == w2.shape == (1, 1)
        z = (d * w1[0, 0] + b1[0]) * w2[0, 0] + b2[0]
    psi = _sigmoid(z)[:, None, None, :]                                                # eq. (8)
    np.testing.assert_allclose(rca(x).numpy(), psi * x + x, rtol=1e-4, atol=1e-5)     # eq. (9)


def test_channel_attention_matches_numpy(xs, rng):
    x = xs[1]
    ca = ChannelAttention(reduction=2)
    ca(x)
    _randomise(ca, rng)
    w1, b1, w2, b2 = ca.get_weights()
    psi = _sigmoid(np.maximum(x.mean(axis=(1, 2)) @ w1 + b1, 0) @ w2 + b2)
    np.testing.assert_allclose(ca(x).numpy(), psi[:, None, None, :] * x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: MultiLevelFusion(kernel_size=1, use_bias=False),
                                  lambda: ResidualChannelAttention(4, mlp="scalar", mlp_activation=None),
                                  lambda: ChannelAttention(4)])
def test_harness(xs, make, tmp_path):
    """config / .keras / checkpoint / graph == eager, in other configurations than tests/test_registered.py's."""
    inputs = [tf.constant(x) for x in xs] if isinstance(make(), MultiLevelFusion) else xs[0]
    harness.check_layer(make, inputs, tmp_path=tmp_path)


def test_rca_rejects_unknown_mlp():
    with pytest.raises(ValueError, match="mlp"):
        ResidualChannelAttention(mlp="dense")
