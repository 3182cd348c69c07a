"""IMBlock (eq. 3), MLEBlock and SharedSeparableConv2D against hand computations."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.layers import implicit, normalization
from tfdehaze.layers.implicit import IMBlock, MLEBlock, SharedSeparableConv2D, conv2d_same


def _instance_norm(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def _conv_same(x, kernel, dilation=1):
    """numpy 'same' zero-padded cross-correlation, kernel (k, k, Cin, Cout), stride 1."""
    k = kernel.shape[0]
    pad = dilation * (k - 1) // 2
    xp = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), np.float64)
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, dy * dilation:dy * dilation + h, dx * dilation:dx * dilation + w]
            out += np.einsum("nhwc,co->nhwo", patch, kernel[dy, dx])
    return out


def _randomise(layer, rng):
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])


@pytest.fixture
def x(rng):
    return rng.normal(size=(2, 12, 10, 4)).astype(np.float32)


def test_shared_separable_conv_is_delta_initialised_and_matches_numpy(x, rng):
    layer = SharedSeparableConv2D(3)
    np.testing.assert_allclose(layer(x).numpy(), x, atol=1e-6)          # delta initialisation = identity
    kernel = rng.normal(size=(3, 3)).astype(np.float32)
    layer.set_weights([kernel])
    expected = _conv_same(x, np.einsum("hw,cd->hwcd", kernel, np.eye(4)))  # same kernel on every channel alone
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-4)
    assert layer.count_params() == 9
    with pytest.raises(ValueError, match="odd"):
        SharedSeparableConv2D(4)


@pytest.mark.parametrize("smooth, residual", [(False, False), (True, False), (False, True)])
def test_mle_block_matches_numpy(x, rng, smooth, residual):
    block = MLEBlock(4, dilation=2, second_dilation=1, smooth=smooth, residual=residual)
    block(x)
    _randomise(block, rng)
    y = x.astype(np.float64)
    if smooth:
        y = _conv_same(y, np.einsum("hw,cd->hwcd", block.pre_conv1.kernel.numpy(), np.eye(4)))
    y = _conv_same(y, block.conv1.kernel.numpy(), dilation=2)
    y = np.maximum(_instance_norm(y, block.norm1.gamma.numpy(), block.norm1.beta.numpy()), 0)
    if smooth:
        y = _conv_same(y, np.einsum("hw,cd->hwcd", block.pre_conv2.kernel.numpy(), np.eye(4)))
    y = _instance_norm(_conv_same(y, block.conv2.kernel.numpy()), block.norm2.gamma.numpy(),
                       block.norm2.beta.numpy())
    expected = np.maximum(x + y if residual else y, 0)
    np.testing.assert_allclose(block(x).numpy(), expected, atol=2e-4)
    assert not block.conv1.use_bias and len(block.weights) == (8 if smooth else 6)


def test_one_step_is_the_residual_block(x):
    f = MLEBlock(4, dilation=2)
    im = IMBlock(f, steps=1, eta=0.3)
    np.testing.assert_allclose(im(x).numpy(), x + 0.3 * f(x).numpy(), atol=1e-6)   # eq. (1) = eq. (3), T = 1


def test_recursion_iterates_with_shared_weights(x):
    f = MLEBlock(4, dilation=1)
    g1 = x + 0.5 * f(x).numpy()
    g2 = x + 0.5 * f(g1).numpy()
    g3 = x + 0.5 * f(g2).numpy()
    np.testing.assert_allclose(IMBlock(f, steps=2, eta=0.5)(x).numpy(), g2, atol=1e-5)
    np.testing.assert_allclose(IMBlock(f, steps=3, eta=0.5)(x).numpy(), g3, atol=1e-5)
    assert not np.allclose(g2, g3, atol=1e-3)                # more steps really change the output


def test_parameter_count_independent_of_steps(x):
    one, twelve = IMBlock(MLEBlock(4), steps=1), IMBlock(MLEBlock(4), steps=12)
    one(x), twelve(x)
    assert one.count_params() == twelve.count_params() == one.f.count_params() == 2 * (9 * 16 + 8)


@pytest.mark.parametrize("compiled", [False, True])
def test_recompute_gives_the_same_loss_and_gradients(x, compiled):
    f = MLEBlock(4, dilation=2, smooth=True)
    plain, recomputed = IMBlock(f, steps=4, eta=0.5), IMBlock(f, steps=4, eta=0.5, recompute=True)
    xt = tf.constant(x)

    def loss_and_grads(block):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_mean(tf.square(block(xt) - 0.1))
        return loss, tape.gradient(loss, [xt] + f.trainable_weights)

    run = tf.function(loss_and_grads) if compiled else loss_and_grads
    (loss_a, grads_a), (loss_b, grads_b) = run(plain), run(recomputed)
    np.testing.assert_allclose(loss_a.numpy(), loss_b.numpy(), rtol=1e-6)
    assert len(grads_b) == 1 + len(f.trainable_weights) and all(g is not None for g in grads_b)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-5)


def test_config_round_trip(x, rng):
    im = IMBlock(MLEBlock(4, dilation=2, second_dilation=1, smooth=True), steps=3, eta=0.7, recompute=True)
    im(x)
    _randomise(im, rng)
    clone = IMBlock.from_config(im.get_config())
    clone(x)
    clone.set_weights(im.get_weights())
    assert (clone.steps, clone.eta, clone.recompute, clone.f.dilation, clone.f.smooth) == (3, 0.7, True, 2, True)
    np.testing.assert_allclose(clone(x).numpy(), im(x).numpy(), atol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(im))
    assert isinstance(restored, IMBlock) and isinstance(restored.f, MLEBlock)


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        IMBlock(MLEBlock(4), steps=0)
    with pytest.raises(ValueError, match="Keras layer"):
        IMBlock(lambda g: g)
    with pytest.raises(ValueError, match="residual MLEBlock needs 8"):
        MLEBlock(8, residual=True)(np.zeros((1, 8, 8, 4), np.float32))


@pytest.mark.parametrize("isa", ["avx512", "avx2", None])
@pytest.mark.parametrize("batch, height, dilation, bias", [(1, 13, 1, True), (1, 12, 2, False), (2, 9, 1, False),
                                                         (2, 10, 4, True), (1, 1, 1, False)])
def test_conv2d_same_equals_the_keras_convolution_and_its_gradients(rng, monkeypatch, isa, batch, height, dilation,
                                                                    bias):
    if isa == "avx512" and normalization.cpu_isa() is None:
        pytest.skip("no oneDNN x86 kernels here: TensorFlow's own CPU kernels have no dilated backward convolution")
    monkeypatch.setattr(implicit, "cpu_isa", lambda: isa)
    conv = keras.layers.Conv2D(5, 3, padding="same", dilation_rate=dilation, use_bias=bias,
                               bias_initializer="random_normal")
    x = tf.constant(rng.normal(size=(batch, height, 11, 4)).astype(np.float32))
    results = []
    for run in (conv2d_same, lambda layer, t: layer(t)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = run(conv, x)
            loss = tf.reduce_sum(tf.sin(y))
        results.append([y] + tape.gradient(loss, [x] + conv.trainable_weights))
    assert results[0][0].shape == (batch, height, 11, 5)
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, rtol=1e-5)   # kernel gradients reach ~40


def _conv_graph(conv, shape):
    graph = tf.function(lambda t: conv2d_same(conv, t)).get_concrete_function(tf.TensorSpec(shape)).graph
    return [op for op in graph.get_operations() if op.type in ("Conv2D", "SpaceToBatchND")]


def test_conv2d_same_asks_onednn_for_its_faster_kernel(monkeypatch):
    """With AVX-512: a dilated convolution is one dilated Conv2D (no SpaceToBatchND detour). Without: one image is
    convolved as a batch of two half images (oneDNN's direct kernel instead of im2col + GEMM)."""
    dilated = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2)
    plain = keras.layers.Conv2D(4, 3, padding="same")
    monkeypatch.setattr(implicit, "cpu_isa", lambda: "avx512")
    ops = _conv_graph(dilated, (1, 16, 16, 4))
    assert [op.type for op in ops] == ["Conv2D"] and ops[0].get_attr("dilations") == [1, 2, 2, 1]
    monkeypatch.setattr(implicit, "cpu_isa", lambda: "avx2")
    assert "SpaceToBatchND" in [op.type for op in _conv_graph(dilated, (1, 16, 16, 4))]
    (op,) = _conv_graph(plain, (1, 16, 16, 4))
    assert op.inputs[0].shape[0] == 2
    (op,) = _conv_graph(plain, (3, 16, 16, 4))
    assert op.inputs[0].shape[0] == 3                                         # batches of 2+ are left alone
