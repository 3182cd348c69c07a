"""SWRCAB (KDDN Fig. 3) and the residual-in-residual group (Fig. 2) against NumPy with the layers' own weights."""
import harness
import numpy as np
import pytest

from tfdehaze.layers import SWRCAB, ResidualInResidualGroup


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _conv3x3(x, kernel, bias):
    """'same' 3x3 convolution (cross-correlation, as Keras), NHWC."""
    h, w = x.shape[1:3]
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    return bias + sum(np.einsum("nhwc,ck->nhwk", padded[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
                      for dy in range(3) for dx in range(3))


def _randomise(layer, rng, scale=0.3):
    layer.set_weights([rng.normal(scale=scale, size=w.shape).astype(np.float32) for w in layer.get_weights()])


def _swrcab_numpy(block, x):
    """The SPEC's SWRCAB written out: x1 = ReLU(conv(x)); S = sigmoid(conv(x1)); x2 = conv(x1);
    w = sigmoid(dense(GAP(x2 * S))); out = x2 * w + x."""
    x1 = np.maximum(_conv3x3(x, block.conv1.kernel.numpy(), block.conv1.bias.numpy()), 0)
    s = _sigmoid(_conv3x3(x1, block.spatial.kernel.numpy(), block.spatial.bias.numpy()))
    x2 = _conv3x3(x1, block.conv2.kernel.numpy(), block.conv2.bias.numpy())
    pooled = (x2 * s).mean(axis=(1, 2))                                                    # (N, C)
    if block.reduction > 1:
        pooled = np.maximum(pooled @ block.squeeze.kernel.numpy() + block.squeeze.bias.numpy(), 0)
    w = _sigmoid(pooled @ block.excite.kernel.numpy() + block.excite.bias.numpy())
    return x2 * w[:, None, None, :] + x


@pytest.fixture
def x(rng):
    return rng.normal(size=(2, 7, 9, 6)).astype(np.float32)


@pytest.mark.parametrize("reduction", [1, 2])
def test_swrcab_matches_numpy(x, rng, reduction):
    block = SWRCAB(reduction=reduction)
    block(x)
    _randomise(block, rng)
    assert block.conv1.kernel.shape == (3, 3, 6, 6) and block.spatial.kernel.shape == (3, 3, 6, 6)
    assert block.conv2.kernel.shape == (3, 3, 6, 6)
    if reduction == 1:
        assert block.excite.kernel.shape == (6, 6) and len(block.weights) == 8   # one linear layer C -> C
    else:
        assert block.squeeze.kernel.shape == (6, 3) and block.excite.kernel.shape == (3, 6)
    np.testing.assert_allclose(block(x).numpy(), _swrcab_numpy(block, x), rtol=1e-4, atol=1e-4)


def test_spatial_map_changes_the_channel_weights(x, rng):
    """The channel weights see x2 * S, not x2: a different spatial map changes the output (unlike an SE block)."""
    block = SWRCAB()
    block(x)
    _randomise(block, rng)
    before = block(x).numpy()
    block.spatial.bias.assign(block.spatial.bias.numpy() + 3.0)
    assert np.abs(block(x).numpy() - before).max() > 1e-3


def test_group_is_blocks_then_conv_plus_skip(x, rng):
    group = ResidualInResidualGroup(blocks=3, reduction=2)
    group(x)
    _randomise(group, rng)
    y = x
    for i in (1, 2, 3):
        block = getattr(group, f"block{i}")
        assert isinstance(block, SWRCAB) and block.reduction == 2
        y = _swrcab_numpy(block, y)
    expected = _conv3x3(y, group.conv.kernel.numpy(), group.conv.bias.numpy()) + x
    np.testing.assert_allclose(group(x).numpy(), expected, rtol=1e-4, atol=1e-4)
    assert len(group.weights) == 3 * 10 + 2


@pytest.mark.parametrize("make", [lambda: SWRCAB(reduction=4, name="s"),
                                  lambda: ResidualInResidualGroup(blocks=2, reduction=2)])
def test_harness(make, x, tmp_path):
    """config / .keras / checkpoint (every sub-layer tracked) / graph == eager, in other configurations than
    tests/test_registered.py's."""
    harness.check_layer(make, x, tmp_path=tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction must be a positive integer"):
        SWRCAB(reduction=0)
    with pytest.raises(ValueError, match="blocks must be a positive integer"):
        ResidualInResidualGroup(blocks=1.5)
