"""The harness of tests/harness.py can fail: each check is shown catching the bug it exists for, and passing a
correct layer (with positional and list inputs, dict-of-list outputs)."""

import harness  # tests/harness.py (tests/conftest.py puts tests/ on sys.path)
import keras
import numpy as np
import pytest
import tensorflow as tf

PACKAGE = "tfdehaze_harness_selftest"
OTHERS = {check: tuple(c for c in harness.CHECKS if c != check) for check in harness.CHECKS}


@pytest.fixture
def x():
    return np.random.default_rng(0).uniform(0.05, 0.95, size=(2, 6, 6, 3)).astype(np.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Blend(keras.layers.Layer):
    """Correct: two positional inputs, a factor in get_config, a dict-with-list output."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)
        self.conv = keras.layers.Conv2D(3, 1, name="conv")
        self.norm = keras.layers.BatchNormalization(name="norm")   # non-trainable moving statistics too

    def build(self, a_shape, b_shape):
        self.conv.build(a_shape)
        self.norm.build(a_shape)

    def call(self, a, b, training=None):
        y = self.norm(self.conv(a), training=training) * self.factor + b
        return {"y": y, "parts": [a * b, y - b]}

    def compute_output_shape(self, a_shape, b_shape):
        return {"y": a_shape, "parts": [a_shape, a_shape]}

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ListHeld(keras.layers.Layer):
    """Bug (i): sub-layers in a Python list. Keras tracks them (weights, .keras files); tf.train.Checkpoint skips
    them silently."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.convs = [keras.layers.Conv2D(3, 1) for _ in range(2)]

    def build(self, input_shape):
        for conv in self.convs:
            conv.build(input_shape)

    def call(self, x):
        for conv in self.convs:
            x = conv(x)
        return x


@keras.saving.register_keras_serializable(package=PACKAGE)
class ForgetsFactor(keras.layers.Layer):
    """Bug (ii): get_config has ``offset`` but misses the ``factor`` argument. (A layer that does not override
    get_config gets Keras 3's automatic config of its constructor arguments; the bug is an override that forgets
    one.)"""

    def __init__(self, factor=1.0, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.factor, self.offset = float(factor), float(offset)
        self.conv = keras.layers.Conv2D(3, 1, name="conv")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, x):
        return self.conv(x) * self.factor + self.offset

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


class _OneConv(keras.layers.Layer):
    """A 1x1 convolution sub-layer, built with the layer (the base of the broken layers below)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(3, 1, name="conv")

    def build(self, input_shape):
        self.conv.build(input_shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class EagerOnly(_OneConv):
    """Bug (iii): graph mode differs from eager (branches on tf.executing_eagerly())."""

    def call(self, x):
        y = self.conv(x)
        return y * 2.0 if tf.executing_eagerly() else y


@keras.saving.register_keras_serializable(package=PACKAGE)
class LeakyHead(keras.layers.Layer):
    """The real TF 2.21 oneDNN bug: conv + bias + add + LeakyReLU(0.1) gets slope 0.2 inside tf.function."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.a = keras.layers.Conv2D(3, 1, name="a")
        self.b = keras.layers.Conv2D(3, 1, name="b")

    def build(self, input_shape):
        self.a.build(input_shape)
        self.b.build(input_shape)

    def call(self, x):
        return tf.nn.leaky_relu(self.a(x) + self.b(x), alpha=0.1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class WrongShape(_OneConv):
    """Bug: compute_output_shape disagrees with call (symbolic graphs built on it are wrong)."""

    def call(self, x):
        return self.conv(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (4,)


def test_a_correct_layer_passes_every_check(x, tmp_path):
    """Positional inputs (a tuple), a dict with a list inside, training=False passed, non-trainable weights."""
    layer = harness.check_layer(lambda: Blend(factor=2.5), (x, x[::-1]), tmp_path=tmp_path)
    assert layer.factor == 2.5 and len(layer.non_trainable_weights) == 2


def test_list_inputs_are_one_argument(tmp_path, x):
    from tfdehaze.layers import MultiLevelFusion

    harness.check_layer(lambda: MultiLevelFusion(), [x, x * 0.5, x[::-1]], tmp_path=tmp_path, checks=("config",))


def test_catches_sub_layers_in_a_python_list(x, tmp_path):
    harness.check_layer(ListHeld, x, tmp_path=tmp_path, checks=OTHERS["checkpoint"])
    with pytest.raises(AssertionError, match=r"ListHeld: checkpoint: 4 of 4 variables were not restored.*"
                                             r"Python list"):
        harness.check_layer(ListHeld, x, tmp_path=tmp_path, checks=("checkpoint",))


def test_catches_get_config_missing_an_argument(x, tmp_path):
    make = lambda: ForgetsFactor(factor=3.0, offset=0.5)  # noqa: E731
    harness.check_layer(make, x, tmp_path=tmp_path, checks=("checkpoint", "graph"))
    with pytest.raises(AssertionError, match=r"ForgetsFactor: config: outputs of from_config\(get_config\(\)\)"):
        harness.check_layer(make, x, tmp_path=tmp_path, checks=("config",))
    with pytest.raises(AssertionError, match=r"ForgetsFactor: saving: outputs after \.keras save/load"):
        harness.check_layer(make, x, tmp_path=tmp_path, checks=("saving",))


def test_catches_graph_mode_differing_from_eager(x, tmp_path):
    harness.check_layer(EagerOnly, x, tmp_path=tmp_path, checks=OTHERS["graph"])
    with pytest.raises(AssertionError, match=r"EagerOnly: graph: tf.function vs eager .*output differs by up to"):
        harness.check_layer(EagerOnly, x, tmp_path=tmp_path, checks=("graph",))


def test_catches_the_onednn_leaky_relu_fusion(tmp_path):
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype(np.float32)
    layer = LeakyHead()
    if np.allclose(layer(x), tf.function(layer)(x), atol=1e-6):
        pytest.skip("this TensorFlow build does not fuse Conv2D + BiasAdd + Add + LeakyRelu with a wrong slope")
    with pytest.raises(AssertionError, match=r"LeakyHead: graph: tf.function vs eager"):
        harness.check_layer(LeakyHead, x, tmp_path=tmp_path, checks=("graph",))


def test_catches_a_wrong_compute_output_shape(x, tmp_path):
    with pytest.raises(AssertionError, match=r"WrongShape: saving: symbolic output output has shape \(None, 6, 6, 4\)"):
        harness.check_layer(WrongShape, x, tmp_path=tmp_path, checks=("saving",))


def test_compare_names_the_entry_that_differs():
    expected = {"dehazed": np.ones((1, 2)), "features": [np.zeros(3), np.ones(3)]}
    got = {"dehazed": np.ones((1, 2)), "features": [np.zeros(3), np.array([1.0, 1.0, 1.5])]}
    harness._compare(expected, expected, 0.0, 0.0, "same")
    with pytest.raises(AssertionError, match=r"output\['features'\]\[1\]"):
        harness._compare(expected, got, 1e-6, 0.0, "close")
    with pytest.raises(AssertionError, match=r"entries"):
        harness._compare(expected, {"dehazed": np.ones((1, 2))}, 1e-6, 0.0, "structure")
    with pytest.raises(ValueError, match="unknown checks"):
        harness.check_layer(ListHeld, np.zeros((1, 2, 2, 3), np.float32), tmp_path=".", checks=("speed",))
