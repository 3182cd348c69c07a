"""Perceptual loss on VGG19 features (KDDN eq. 4; the pix2pixHD VGG loss), one value per example.

    L_p = sum_i  w_i / M_i * || Phi_i(S(I)) - Phi_i(J) ||_1                                            (4)

with Phi_i the VGG19 activations relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (the paper's "layers 2, 7, 12, 21,
30" of torchvision's ``vgg19.features`` are the ends of pix2pixHD's slices); in Keras these are the
outputs of ``block1_conv1`` ... ``block5_conv1``, whose ReLU is fused into the convolution. M_i is the number of
elements of Phi_i (per example), so each term is a mean absolute difference; the weights w_i are pix2pixHD's
1/32, 1/16, 1/8, 1/4, 1 (the paper prints eq. 4 without them; pix2pixHD's VGG loss uses them). Layers and
weights are options.

Images are float32 RGB in [0, 1]; they enter the network as ``keras.applications.vgg19.preprocess_input(255 x)``
(caffe mode: RGB -> BGR, ImageNet mean subtracted), what Keras' ImageNet VGG19 weights expect.

The ImageNet weights come from a local file, never from the internet: the ``weights_path`` option (the
``--vgg19-weights`` flag of ``tfdehaze-train``), else the environment variable ``TFDEHAZE_VGG19_WEIGHTS``. For
tests, ``network=`` takes any callable mapping preprocessed images to the list of tapped features, e.g. `tiny_vgg`.
"""
from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from tfdehaze.losses.terms import register_loss

WEIGHTS_ENV = "TFDEHAZE_VGG19_WEIGHTS"
KERAS_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
DEFAULT_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
DEFAULT_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
# VGG19's convolutions per block; every block but the last ends with a 2x2 max pool.
VGG19_BLOCKS = (2, 2, 4, 4, 4)

HOW_TO_GET_WEIGHTS = (
    "pass the file with the loss option weights_path (a recipe term {'type': 'perceptual', 'weights_path': H5}, or "
    f"tfdehaze-train --vgg19-weights H5), or set the environment variable {WEIGHTS_ENV}=H5. To get the file, on a "
    "machine with internet access run: python -c \"import keras; "
    "keras.applications.VGG19(include_top=False).save_weights('vgg19_notop.weights.h5')\" "
    f"or download Keras' release file {KERAS_WEIGHTS_FILE} (https://storage.googleapis.com/tensorflow/"
    f"keras-applications/vgg19/{KERAS_WEIGHTS_FILE}), then copy it here. Nothing is downloaded at training time. "
    "Without the file, drop the 'perceptual' term from the recipe's losses.")


def resolve_vgg19_weights(weights_path: str | os.PathLike | None = None) -> pathlib.Path:
    """The VGG19 weights file: ``weights_path``, else ``$TFDEHAZE_VGG19_WEIGHTS``; it must exist.

    Raises FileNotFoundError naming the ``weights_path`` option, the ``--vgg19-weights`` flag, the environment
    variable and how to get the file, when neither is given or the file is missing.

    Examples:
        >>> resolve_vgg19_weights("/nonexistent/vgg19.h5")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: the VGG19 weights file '/nonexistent/vgg19.h5' (from weights_path) does not exist: pass ...
    """
    source = "weights_path"
    if weights_path is None or str(weights_path) == "":
        weights_path, source = os.environ.get(WEIGHTS_ENV) or None, WEIGHTS_ENV
    if weights_path is None:
        raise FileNotFoundError(f"the perceptual loss needs ImageNet VGG19 weights, and none were given: "
                                f"{HOW_TO_GET_WEIGHTS}")
    path = pathlib.Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"the VGG19 weights file {str(path)!r} (from {source}) does not exist: "
                                f"{HOW_TO_GET_WEIGHTS}")
    return path


def _tapped(model: keras.Model, layers: Sequence[str]) -> keras.Model:
    names = [layer.name for layer in model.layers]
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise ValueError(f"unknown VGG19 layers {unknown}; the network has {names}")
    tapped = keras.Model(model.input, [model.get_layer(name).output for name in layers], name="vgg19_features")
    tapped.trainable = False
    return tapped


def vgg19_features(weights_path: str | os.PathLike | None = None,
                   layers: Sequence[str] = DEFAULT_LAYERS) -> keras.Model:
    """Keras' VGG19 (no top) with ImageNet weights from a local file, returning the outputs of ``layers``; frozen.

    ``weights_path`` as in `resolve_vgg19_weights` (the option, else ``$TFDEHAZE_VGG19_WEIGHTS``). The model is cut
    after the deepest tapped layer. Shapes: (N, H, W, 3) caffe-preprocessed -> a list, one (N, h_i, w_i, c_i) per
    layer (relu1_1: H x W x 64 ... relu5_1: H/16 x W/16 x 512).

    Examples:
        >>> vgg19_features("/nonexistent/vgg19.h5")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ... does not exist: pass the file with the loss option weights_path ...
    """
    path = resolve_vgg19_weights(weights_path)
    try:
        vgg = keras.applications.VGG19(include_top=False, weights=str(path), input_shape=(None, None, 3))
    except (ValueError, OSError) as err:
        raise ValueError(f"could not load VGG19 weights from {str(path)!r} (expected Keras' {KERAS_WEIGHTS_FILE} or "
                         f"a VGG19(include_top=False).save_weights file): {err}") from err
    return _tapped(vgg, layers)


def tiny_vgg(layers: Sequence[str] = DEFAULT_LAYERS, widths: Sequence[int] = (4, 8, 8, 8, 8),
             seed: int = 0) -> keras.Model:
    """A randomly initialised network shaped like VGG19 (same layer names ``block1_conv1`` ... ``block5_conv4``,
    2, 2, 4, 4, 4 ReLU 3x3 convs per block, 2x2 max pools between blocks) at small ``widths``, returning the outputs
    of ``layers``: a stand-in for `vgg19_features` in tests, without the 80 MB weights file.

    Shapes: (N, H, W, 3) -> a list, one (N, H / 2**(b-1), W / 2**(b-1), widths[b-1]) per layer of block b.

    Examples:
        >>> import numpy as np
        >>> net = tiny_vgg()
        >>> [tuple(f.shape) for f in net(np.zeros((1, 32, 32, 3), np.float32))]
        [(1, 32, 32, 4), (1, 16, 16, 8), (1, 8, 8, 8), (1, 4, 4, 8), (1, 2, 2, 8)]
    """
    if len(widths) != len(VGG19_BLOCKS):
        raise ValueError(f"tiny_vgg needs {len(VGG19_BLOCKS)} widths (one per VGG block), got {widths!r}")
    inputs = keras.Input((None, None, 3), name="input_layer")
    x = inputs
    k = 0
    for block, (convs, width) in enumerate(zip(VGG19_BLOCKS, widths, strict=True), start=1):
        for conv in range(1, convs + 1):
            k += 1
            x = keras.layers.Conv2D(int(width), 3, padding="same", activation="relu",
                                    kernel_initializer=keras.initializers.GlorotUniform(seed=seed + k),
                                    bias_initializer=keras.initializers.RandomUniform(0.0, 0.1, seed=seed + 100 + k),
                                    name=f"block{block}_conv{conv}")(x)
        if block < len(VGG19_BLOCKS):
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return _tapped(keras.Model(inputs, x, name="tiny_vgg"), layers)


def preprocess(images: tf.Tensor) -> tf.Tensor:
    """[0, 1] RGB -> Keras' VGG19 input: ``keras.applications.vgg19.preprocess_input(255 x)`` (caffe: BGR, mean
    subtracted). Shapes: (N, H, W, 3) -> (N, H, W, 3).

    Examples:
        >>> [round(float(v), 3) for v in preprocess(tf.ones([1, 1, 1, 3]))[0, 0, 0]]
        [151.061, 138.221, 131.32]
    """
    return keras.applications.vgg19.preprocess_input(tf.cast(images, tf.float32) * 255.0)


@register_loss("perceptual", inputs=("clear", "dehazed"),
               description="VGG19 relu1_1..relu5_1 L1, weights 1/32..1 (KDDN eq. 4, pix2pixHD); local weights file")
class PerceptualLoss:
    """Weighted L1 between VGG19 features of the clear and the restored image, per example (KDDN eq. 4).

    ``loss(clear, dehazed) = sum_i layer_weights[i] * mean |Phi_i(pre(dehazed)) - Phi_i(pre(clear))|`` with the
    mean over each example's h_i x w_i x c_i elements (the 1/M_i of eq. 4) and ``pre`` = `preprocess`. The network
    is built once here (inside a distribution strategy's scope when the step is built there), frozen; the call is
    plain TensorFlow, fine inside ``tf.function`` and on replicas. Gradients reach ``dehazed`` only.

    Args:
        weights_path: the VGG19 ImageNet weights file (Keras' ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``
            or a ``VGG19(include_top=False).save_weights`` file); default ``$TFDEHAZE_VGG19_WEIGHTS``. Missing:
            FileNotFoundError saying how to get it. Never downloaded.
        layers: names of the tapped Keras VGG19 layers (relu1_1 ... relu5_1 = ``block{1..5}_conv1``).
        layer_weights: one weight per layer (pix2pixHD: 1/32, 1/16, 1/8, 1/4, 1).
        network: instead of VGG19, any callable mapping preprocessed images (N, H, W, 3) to the list of tapped
            features (one per weight), e.g. `tiny_vgg` in tests; ``weights_path`` and ``layers`` are then unused.

    Shapes: (N, H, W, 3) x 2 in [0, 1] -> (N,). H and W should be multiples of 16 for relu5_1 to see the whole image.

    Examples:
        >>> loss = PerceptualLoss(network=tiny_vgg(seed=1))
        >>> a = tf.random.stateless_uniform([2, 32, 32, 3], seed=[1, 2])
        >>> loss(a, a).numpy()
        array([0., 0.], dtype=float32)
        >>> bool(tf.reduce_all(loss(a, 1.0 - a) > 0))
        True
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, layers: Sequence[str] = DEFAULT_LAYERS,
                 layer_weights: Sequence[float] = DEFAULT_LAYER_WEIGHTS,
                 network: Callable[[tf.Tensor], Sequence[tf.Tensor]] | None = None):
        self.layers = tuple(layers)
        self.layer_weights = tuple(float(w) for w in layer_weights)
        if network is None:
            if len(self.layers) != len(self.layer_weights):
                raise ValueError(f"perceptual loss: {len(self.layers)} layers {self.layers} but "
                                 f"{len(self.layer_weights)} layer_weights {self.layer_weights}")
            network = vgg19_features(weights_path, self.layers)
        if not self.layer_weights:
            raise ValueError("perceptual loss: give at least one layer")
        self.network = network

    def features(self, images: tf.Tensor) -> list[tf.Tensor]:
        """The tapped features of [0, 1] RGB images: a list, one (N, h_i, w_i, c_i) per layer."""
        features = self.network(preprocess(images))
        if isinstance(features, (tf.Tensor, tf.Variable)) or not isinstance(features, (list, tuple)):
            features = [features]
        if len(features) != len(self.layer_weights):
            raise ValueError(f"perceptual loss: the network returns {len(features)} feature maps for "
                             f"{len(self.layer_weights)} layer_weights")
        return list(features)

    def __call__(self, clear: tf.Tensor, dehazed: tf.Tensor) -> tf.Tensor:
        dehazed = tf.cast(dehazed, tf.float32)
        clear = tf.cast(clear, tf.float32)
        n = tf.shape(dehazed)[0]
        both = self.features(tf.concat([tf.stop_gradient(clear), dehazed], axis=0))  # one pass for the pair
        total = tf.zeros([n], tf.float32)
        for weight, feature in zip(self.layer_weights, both, strict=True):
            feature = tf.cast(feature, tf.float32)
            diff = tf.abs(feature[n:] - tf.stop_gradient(feature[:n]))
            total += weight * tf.reduce_mean(tf.reshape(diff, [n, -1]), axis=1)
        return total
