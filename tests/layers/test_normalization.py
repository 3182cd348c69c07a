import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.layers import normalization
from tfdehaze.layers.normalization import InstanceNormalization, instance_norm


def numpy_instance_norm(x, gamma, beta, eps):
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)  # biased, as instance norm uses
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def test_matches_numpy_instance_norm(rng):
    x = (rng.normal(size=(2, 9, 7, 5)) * rng.uniform(0.1, 10, size=(2, 1, 1, 5)) + 3).astype(np.float32)
    layer = InstanceNormalization()
    layer.build(x.shape)
    gamma = rng.normal(1.0, 0.5, size=5).astype(np.float32)
    beta = rng.normal(size=5).astype(np.float32)
    layer.set_weights([gamma, beta])
    np.testing.assert_allclose(layer(x).numpy(), numpy_instance_norm(x, gamma, beta, 1e-5), atol=2e-5, rtol=1e-5)


def test_epsilon_is_1e5_and_matters_for_flat_channels():
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[..., 1] = 1e-3 * np.arange(16).reshape(4, 4)  # variance ~2e-5, comparable to eps
    layer = InstanceNormalization()
    expected = numpy_instance_norm(x, 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)
    assert np.abs(expected - numpy_instance_norm(x, 1.0, 0.0, 1e-3)).max() > 0.1


def test_serialises_by_registered_name():
    layer = InstanceNormalization(epsilon=1e-3, center=False)
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is InstanceNormalization
    assert clone.epsilon == 1e-3 and clone.center is False and clone.groups == -1


def test_rejects_other_group_counts():
    with pytest.raises(ValueError, match="groups=2"):
        InstanceNormalization(groups=2)


def _graph_op_types(fn, *specs):
    return {op.type for op in tf.function(fn).get_concrete_function(*specs).graph.get_operations()}


@pytest.fixture(params=["avx512", "avx2"])
def isa(request, monkeypatch):
    """Each CPU kernel path of `instance_norm`, whatever this machine has (see `normalization.cpu_isa`)."""
    monkeypatch.setattr(normalization, "cpu_isa", lambda: request.param)
    return request.param


@pytest.mark.parametrize("shape", [(1, 9, 7, 5), (3, 9, 7, 5), (2, 1, 1, 4)])
def test_both_paths_match_numpy_for_one_and_many_images(rng, isa, shape):
    x = (rng.normal(size=shape) * rng.uniform(0.1, 10, size=(shape[0], 1, 1, shape[-1])) + 3).astype(np.float32)
    gamma = rng.normal(1.0, 0.5, size=shape[-1]).astype(np.float32)
    beta = rng.normal(size=shape[-1]).astype(np.float32)
    expected = numpy_instance_norm(x, gamma, beta, 1e-5)
    np.testing.assert_allclose(instance_norm(x, gamma, beta).numpy(), expected, atol=2e-5, rtol=1e-5)
    channels = tf.TensorSpec([shape[-1]])
    unknown_batch = tf.function(instance_norm,
                                input_signature=[tf.TensorSpec([None, None, None, shape[-1]]), channels, channels])
    got = unknown_batch(x, gamma, beta)
    assert got.shape == shape
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-5, rtol=1e-5)


def test_one_image_runs_on_fused_kernels_not_separate_reductions(isa):
    """The speed fix: Keras' GroupNormalization computes moments with Mean / SquaredDifference ops (slow on CPU).
    With AVX-512 one image is normalised by a single FusedBatchNormV3; without, by two matrix-vector products and a
    1x1 depthwise convolution (oneDNN's batch norm is slow there)."""
    layer = InstanceNormalization()
    layer.build((1, 16, 16, 8))
    ops = _graph_op_types(layer, tf.TensorSpec([1, 16, 16, 8]))
    assert not ops & {"Mean", "SquaredDifference"}, sorted(ops)
    if isa == "avx512":
        assert "FusedBatchNormV3" in ops, sorted(ops)
    else:
        assert "FusedBatchNormV3" not in ops and "DepthwiseConv2dNative" in ops, sorted(ops)


def test_large_offsets_keep_their_precision_without_avx512(rng, monkeypatch):
    monkeypatch.setattr(normalization, "cpu_isa", lambda: "avx2")
    x = (rng.normal(size=(1, 64, 48, 3)) + [[[[0.0, 1e3, 1e4]]]]).astype(np.float32)
    expected = numpy_instance_norm(x.astype(np.float64), 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(instance_norm(x).numpy(), expected, atol=2e-3)


@pytest.mark.parametrize("batch", [1, 2])
def test_gradients_equal_keras_group_normalization(rng, isa, batch):
    x = tf.constant((rng.normal(size=(batch, 8, 6, 4)) * 2 + 1).astype(np.float32))
    ours, keras_gn = InstanceNormalization(), keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)
    weights = [rng.normal(1.0, 0.3, size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    grads = []
    for layer in (ours, keras_gn):
        layer.build(x.shape)
        layer.set_weights(weights)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x)) * x)
        grads.append(tape.gradient(loss, [x] + layer.trainable_weights))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5, rtol=1e-4)


def test_mixed_bfloat16_keeps_the_compute_dtype_and_float32_weights(rng, isa):
    x = (rng.normal(size=(1, 8, 8, 4)) * 3 + 1).astype(np.float32)
    layer = InstanceNormalization(dtype="mixed_bfloat16")
    y = layer(x)
    assert y.dtype == tf.bfloat16 and layer.gamma.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), numpy_instance_norm(x, 1.0, 0.0, 1e-5), atol=0.05)


def test_other_ranks_keep_group_normalization(rng):
    x = rng.normal(size=(2, 10, 3)).astype(np.float32)       # (N, L, C): normalised over L per image and channel
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    np.testing.assert_allclose(InstanceNormalization()(x).numpy(), (x - mean) / np.sqrt(var + 1e-5), atol=2e-5)
    with pytest.raises(ValueError, match="instance_norm takes"):
        instance_norm(x)


def test_cpu_isa_follows_onednn_cap(monkeypatch):
    normalization.cpu_isa.cache_clear()
    try:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
        assert normalization.cpu_isa() is None                  # Eigen kernels: neither special path
        normalization.cpu_isa.cache_clear()
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
        assert normalization.cpu_isa() in ("avx2", None)       # None: no AVX2 here, or no /proc/cpuinfo
    finally:
        normalization.cpu_isa.cache_clear()
