"""MI-Net's implicit block and its vector field f (§3.1-3.2 of Shen et al., "Implicit Euler ODE networks for
single-image dehazing", CVPRW 2020).

- `IMBlock`: the fixed-point recursion g_{k+1} = g_0 + eta * f(g_k) (eq. 3) unrolled T times with ONE f (shared
  weights), approximating the implicit Euler step x_{k+1} = x_k + eta * f(x_{k+1}) (eq. 2). T = 1 is a residual
  block x + eta * f(x) (eq. 1).
- `MLEBlock`: the multi-level extraction block used as f: (dilated 3x3 conv -> instance norm -> ReLU) twice (Fig. 2),
  optionally with the smoothed dilated convolution of the authors' released code.
- `SharedSeparableConv2D`: the "separable and shared" smoothing convolution of Wang and Ji, "Smoothed Dilated
  Convolutions for Improved Dense Prediction" (KDD 2018), that the authors' code puts before each convolution of its
  dilated blocks: one (2d-1)x(2d-1) kernel shared by all channels, applied depthwise.

All three map (N, H, W, C) -> (N, H, W, C) (`MLEBlock`: C -> filters). `conv2d_same` runs their stride-1
convolutions.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfdehaze.layers.normalization import InstanceNormalization, cpu_isa


def conv2d_same(conv: keras.layers.Conv2D, x: tf.Tensor) -> tf.Tensor:
    """``conv(x)`` for a Keras `Conv2D`, with oneDNN's faster kernel where its choice depends on how it is asked.

    For a stride-1, 'same'-padded convolution (benchmarks/minet_profile.py measures each case):

    - dilated, on x86 CPUs with AVX-512 (`tfdehaze.layers.normalization.cpu_isa`): one ``Conv2D`` op with
      ``dilations`` (oneDNN's dilated kernel), where Keras goes through SpaceToBatchND / BatchToSpaceND around an
      undilated one. Not without AVX-512: oneDNN's AVX2 dilated kernel is ~6x slower than that detour.
    - undilated, one image, on x86 CPUs without AVX-512: oneDNN convolves a batch of ONE image by im2col and a matrix
      product but a batch of two with its direct kernel, ~1.5x faster; the image's top and bottom halves, each with
      its (k - 1) / 2 rows of halo, run as a batch of two and their outputs are stacked back.

    Both give the same values (summed in another order); anything else is ``conv(x)``.

    Args:
        conv: a channels-last `keras.layers.Conv2D`.
        x: (N, H, W, C_in).

    Returns:
        ``conv(x)``, (N, H', W', filters).

    Examples:
        >>> import keras
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.implicit import conv2d_same
        >>> conv = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2)
        >>> x = tf.random.uniform([1, 15, 12, 4])
        >>> y = conv2d_same(conv, x)
        >>> y.shape, bool(tf.reduce_max(tf.abs(y - conv(x))) < 1e-5)
        (TensorShape([1, 15, 12, 8]), True)
    """
    kh, kw = conv.kernel_size
    isa = cpu_isa()
    plain = (conv.strides == (1, 1) and conv.padding == "same" and conv.data_format == "channels_last"
             and conv.groups == 1 and kh % 2 == 1 and kw % 2 == 1)
    dilated = conv.dilation_rate != (1, 1)
    if not (plain and ((isa == "avx512" and dilated) or (isa == "avx2" and not dilated and x.shape[0] == 1))):
        return conv(x)
    if not conv.built:
        conv.build(x.shape)
    kernel = tf.cast(conv.kernel, x.dtype)
    if dilated:
        y = tf.nn.conv2d(x, kernel, strides=1, padding="SAME", dilations=list(conv.dilation_rate))
    else:
        rh, rw = kh // 2, kw // 2
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        half = (h + 1) // 2
        padded = tf.pad(x, tf.stack([[0, 0], [rh, rh + 2 * half - h], [rw, rw], [0, 0]]))
        pair = tf.concat([padded[:, :half + 2 * rh], padded[:, half:]], axis=0)   # (2, half + 2 rh, W + 2 rw, C)
        y = tf.nn.conv2d(pair, kernel, strides=1, padding="VALID")
        y = tf.reshape(y, tf.stack([1, 2 * half, w, conv.filters]))[:, :h]
        y.set_shape([1, x.shape[1], x.shape[2], conv.filters])
    if conv.use_bias:
        y = tf.nn.bias_add(y, tf.cast(conv.bias, y.dtype))
    return conv.activation(y) if conv.activation is not None else y


@keras.saving.register_keras_serializable(package="tfdehaze")
class SharedSeparableConv2D(keras.layers.Layer):
    """Depthwise convolution with one k x k kernel shared by every channel, no bias, zero 'same' padding.

    Initialised as a delta (identity), as in the smoothed dilated convolutions of Wang & Ji (2018) that the MI-Net
    authors' code applies before its dilated convolutions (k = 2d - 1 for dilation d).

    Args:
        kernel_size: odd int k.

    Shapes: (N, H, W, C) -> (N, H, W, C). Weights: ``kernel`` (k, k).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.implicit import SharedSeparableConv2D
        >>> layer = SharedSeparableConv2D(3)
        >>> x = tf.random.uniform([2, 16, 16, 8])
        >>> y = layer(x)
        >>> y.shape, tuple(layer.kernel.shape), bool(tf.reduce_all(y == x))  # a delta at initialisation
        (TensorShape([2, 16, 16, 8]), (3, 3), True)
    """

    def __init__(self, kernel_size: int, **kwargs):
        super().__init__(**kwargs)
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        k = self.kernel_size

        def delta(shape, dtype=None):
            return tf.reshape(tf.one_hot(k * k // 2, k * k, dtype=dtype or "float32"), shape)

        self.kernel = self.add_weight(name="kernel", shape=(k, k), initializer=delta)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        channels = tf.shape(x)[-1]
        kernel = tf.tile(tf.cast(self.kernel, x.dtype)[:, :, None, None], tf.stack([1, 1, channels, 1]))
        return tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 1, 1], padding="SAME")

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="tfdehaze")
class MLEBlock(keras.layers.Layer):
    """Multi-level extraction block, MI-Net's f (Fig. 2): y = ReLU(IN(conv_b(ReLU(IN(conv_a(x)))))).

    conv_a is a 3x3 convolution with dilation ``dilation``, conv_b one with ``second_dilation`` (the paper dilates
    both; the authors' code dilates only the first). Instance norm keeps |eigenvalues of df/dx| < 1/eta, which the
    recursion of eq. (3) needs to converge (Theorem 1, eq. 5).

    Args:
        filters: output channels (must equal the input channels when used inside an `IMBlock`).
        dilation: dilation rate of the first convolution.
        second_dilation: dilation of the second convolution; None -> ``dilation``.
        smooth: put a `SharedSeparableConv2D` of size 2*dilation - 1 before each convolution (authors' code,
            ``SmoothDilatedResBlock``).
        residual: return ReLU(x + y') instead of ReLU(y'), y' the second normalised conv (the authors'
            pre-processing ``ResidualBlock``).
        use_bias: convolution biases (redundant before instance norm; the authors' code has none).

    Shapes: (N, H, W, C) -> (N, H, W, filters). Sub-layers: conv1, norm1, conv2, norm2[, pre_conv1, pre_conv2].

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.implicit import MLEBlock
        >>> block = MLEBlock(filters=8, dilation=2)
        >>> y = block(tf.random.uniform([2, 16, 16, 4]))
        >>> y.shape, bool(tf.reduce_min(y) >= 0.0)  # ends with a ReLU
        (TensorShape([2, 16, 16, 8]), True)
        >>> smoothed = MLEBlock(filters=8, dilation=2, smooth=True)  # the authors' smoothed dilated convolutions
        >>> smoothed(tf.zeros([1, 16, 16, 8])).shape, smoothed.pre_conv1.kernel_size
        (TensorShape([1, 16, 16, 8]), 3)
    """

    def __init__(self, filters: int = 64, dilation: int = 1, second_dilation: int | None = None,
                 smooth: bool = False, residual: bool = False, use_bias: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.dilation = int(dilation)
        self.second_dilation = int(dilation if second_dilation is None else second_dilation)
        self.smooth = bool(smooth)
        self.residual = bool(residual)
        self.use_bias = bool(use_bias)
        if self.smooth:
            self.pre_conv1 = SharedSeparableConv2D(2 * self.dilation - 1, name="pre_conv1")
            self.pre_conv2 = SharedSeparableConv2D(2 * self.dilation - 1, name="pre_conv2")
        self.conv1 = keras.layers.Conv2D(self.filters, 3, padding="same", dilation_rate=self.dilation,
                                         use_bias=self.use_bias, name="conv1")
        self.norm1 = InstanceNormalization(name="norm1")
        self.conv2 = keras.layers.Conv2D(self.filters, 3, padding="same", dilation_rate=self.second_dilation,
                                         use_bias=self.use_bias, name="conv2")
        self.norm2 = InstanceNormalization(name="norm2")

    def build(self, input_shape):
        if self.residual and input_shape[-1] is not None and input_shape[-1] != self.filters:
            raise ValueError(f"residual MLEBlock needs {self.filters} input channels, got {input_shape[-1]}")
        out_shape = tuple(input_shape[:-1]) + (self.filters,)
        if self.smooth:
            self.pre_conv1.build(input_shape)
            self.pre_conv2.build(out_shape)
        self.conv1.build(input_shape)
        self.norm1.build(out_shape)
        self.conv2.build(out_shape)
        self.norm2.build(out_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        y = self.pre_conv1(x) if self.smooth else x
        y = tf.nn.relu(self.norm1(conv2d_same(self.conv1, y)))
        if self.smooth:
            y = self.pre_conv2(y)
        y = self.norm2(conv2d_same(self.conv2, y))
        return tf.nn.relu(x + y if self.residual else y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "dilation": self.dilation,
                "second_dilation": self.second_dilation, "smooth": self.smooth, "residual": self.residual,
                "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="tfdehaze")
class IMBlock(keras.layers.Layer):
    """Implicit block (Fig. 3): T iterations of g_{k+1} = g_0 + eta * f(g_k) (eq. 3), g_0 = the input.

    One f, one set of weights, whatever T. The output g_T approximates the equilibrium g* = g_0 + eta * f(g*)
    (eq. 4), i.e. one implicit Euler step (eq. 2); with T = 1 it is the residual block g_0 + eta * f(g_0) (eq. 1).
    The authors' released code runs this with eta = 1 and T = 8.

    Args:
        f: a Keras layer mapping (N, H, W, C) -> (N, H, W, C), e.g. `MLEBlock`.
        steps: T >= 1.
        eta: the discretisation step (a constant).
        recompute: backpropagate by recomputation (`tf.recompute_grad`): the forward pass keeps only the block
            input; the backward pass recomputes the iterates and each step's internals one step at a time, so the
            activations held for training no longer scale with T times f's internals (same loss, same gradients,
            about one extra forward of the block in time).

    Shapes: (N, H, W, C) -> (N, H, W, C).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.implicit import IMBlock, MLEBlock
        >>> x = tf.random.uniform([2, 16, 16, 8])
        >>> block = IMBlock(MLEBlock(filters=8), steps=4)
        >>> block(x).shape
        TensorShape([2, 16, 16, 8])
        >>> block.count_params() == block.f.count_params()  # one f shared by the T steps
        True
        >>> bool(tf.reduce_all(IMBlock(MLEBlock(filters=8), steps=4, eta=0.0)(x) == x))  # eta = 0: g_T = g_0
        True
    """

    def __init__(self, f: keras.layers.Layer | dict, steps: int = 12, eta: float = 1.0, recompute: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(f, dict):
            f = keras.saving.deserialize_keras_object(f)
        if not isinstance(f, keras.layers.Layer):
            raise ValueError(f"f must be a Keras layer, got {type(f).__name__}")
        if int(steps) < 1:
            raise ValueError(f"steps (T) must be >= 1, got {steps!r}")
        self.f = f
        self.steps = int(steps)
        self.eta = float(eta)
        self.recompute = bool(recompute)

    def build(self, input_shape):
        if not self.f.built:
            self.f.build(input_shape)

    def _step(self, g, g0):
        return g0 + self.eta * self.f(g)

    def _iterate(self, g0):
        step = tf.recompute_grad(self._step) if self.recompute else self._step
        g = g0
        for _ in range(self.steps):
            g = step(g, g0)
        return g

    def call(self, x: tf.Tensor) -> tf.Tensor:
        if self.recompute:
            return tf.recompute_grad(self._iterate)(x)
        return self._iterate(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "f": keras.saving.serialize_keras_object(self.f), "steps": self.steps,
                "eta": self.eta, "recompute": self.recompute}
