"""Instance normalisation (Ulyanov et al., "Instance Normalization: The Missing Ingredient for Fast Stylization",
2016), as used by the Pix2Pix backbone and discriminator of Guided-Pix2Pix and by MI-Net.

Keras 3 has no instance norm layer; `GroupNormalization` with one group per channel (``groups=-1``) is exactly it
(equal to a numpy instance norm to ~2e-7, tests/layers/test_normalization.py). This module fixes the group count and
the epsilon of the authors' code (1e-5), registers the class, so models that use it serialise by name, and computes
4-D channels-last inputs with `instance_norm`: Keras' version reshapes into groups, upcasts and runs five separate
passes over the tensor, which made MI-Net's instance norms cost as much CPU time as all its convolutions
(benchmarks/minet_profile.py).
"""
from __future__ import annotations

import functools
import os
import pathlib

import keras
import tensorflow as tf


@functools.cache
def cpu_isa() -> str | None:
    """The widest x86 vector instruction set of TensorFlow's oneDNN CPU kernels here: ``"avx512"``, ``"avx2"``, or
    None (another CPU, oneDNN off, a GPU present, or unknown). Some of oneDNN's kernels for one image differ a lot
    between the two (see `instance_norm` and `tfdehaze.layers.implicit.conv2d_same`).

    Read once from /proc/cpuinfo (None where it is missing, e.g. not Linux), ``TF_ENABLE_ONEDNN_OPTS`` and oneDNN's
    ``ONEDNN_MAX_CPU_ISA`` cap (as benchmarks/minet_vs_torch.py ``--max-isa`` sets it).

    Examples:
        >>> from tfdehaze.layers.normalization import cpu_isa
        >>> cpu_isa() in ("avx512", "avx2", None)
        True
    """
    try:
        flags = set(next(line for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).partition(":")[2].split())
    except (OSError, StopIteration):
        return None
    if (os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() in ("0", "false") or "avx2" not in flags
            or tf.config.list_physical_devices("GPU")):
        return None
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if cap.startswith("AVX2"):
        return "avx2"
    if not cap.startswith(("ALL", "AVX512", "AVX10", "AMX")):
        return None
    return "avx512" if "avx512f" in flags else "avx2"


def instance_norm(x: tf.Tensor, gamma: tf.Tensor | None = None, beta: tf.Tensor | None = None,
                  epsilon: float = 1e-5) -> tf.Tensor:
    """gamma * (x - mean_hw(x)) / sqrt(var_hw(x) + epsilon) + beta, per image and channel, with fused kernels.

    Instance norm of one image is batch norm in training mode (statistics over N, H, W) with N = 1, so it runs as
    TensorFlow's ``FusedBatchNormV3`` (oneDNN on x86 CPUs: statistics and the affine map in one kernel, a fused
    gradient, and the following ReLU fused in by Grappler); a batch of N > 1 images is moved into the channels first
    ((N, H, W, C) -> (1, H, W, N * C)). On x86 CPUs without AVX-512 (`cpu_isa` "avx2") oneDNN's batch norm is slow,
    and float32 inputs take sums over H and W as matrix-vector products instead (of x and of (x - a sample of each
    channel)^2, so the variance does not cancel) and the affine map as a 1x1 depthwise convolution (N = 1) or a
    multiply-add. The variance is the biased one; statistics are accumulated in float32 for bfloat16 / float16
    inputs, and the output keeps the input's dtype.

    Args:
        x: (N, H, W, C), float32, float16 or bfloat16.
        gamma: (C,) scale, None for 1.
        beta: (C,) offset, None for 0.
        epsilon: added to the variance (used as given: ``tf.nn.fused_batch_norm`` would raise it to 1.001e-5).

    Returns:
        (N, H, W, C), the dtype of ``x``.

    Examples:
        >>> import numpy as np
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.normalization import instance_norm
        >>> x = tf.random.uniform([2, 8, 8, 3], maxval=10.0)
        >>> y = instance_norm(x, beta=tf.constant([0.0, 1.0, 2.0]))
        >>> np.round(tf.reduce_mean(y, axis=[1, 2]).numpy(), 4) + 0.0
        array([[0., 1., 2.],
               [0., 1., 2.]], dtype=float32)
    """
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4:
        raise ValueError(f"instance_norm takes (N, H, W, C) tensors, got shape {x.shape}")
    channels = x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]
    gamma = tf.ones([channels], tf.float32) if gamma is None else tf.cast(gamma, tf.float32)
    beta = tf.zeros([channels], tf.float32) if beta is None else tf.cast(beta, tf.float32)
    if cpu_isa() == "avx2":            # oneDNN has no 16-bit batch norm without AVX-512 either
        return tf.cast(_instance_norm_by_sums(tf.cast(x, tf.float32), gamma, beta, epsilon), x.dtype)

    def fused(images, scale, offset):
        empty = tf.zeros([0], tf.float32)
        return tf.raw_ops.FusedBatchNormV3(x=images, scale=scale, offset=offset, mean=empty, variance=empty,
                                           epsilon=float(epsilon), exponential_avg_factor=1.0, data_format="NHWC",
                                           is_training=True)[0]

    def single():
        return fused(x, gamma, beta)

    def batched():
        shape = tf.shape(x)
        n, h, w = shape[0], shape[1], shape[2]
        stacked = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), tf.stack([1, h, w, -1]))
        y = fused(stacked, tf.tile(gamma, [n]), tf.tile(beta, [n]))
        return tf.transpose(tf.reshape(y, tf.stack([h, w, n, -1])), [2, 0, 1, 3])

    if x.shape[0] == 1:
        return single()
    if x.shape[0] is not None:
        return batched()
    y = tf.cond(tf.equal(tf.shape(x)[0], 1), single, batched)
    y.set_shape(x.shape)
    return y


def _instance_norm_by_sums(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor:
    """`instance_norm` of float32 ``x`` from matrix-vector sums and a fused affine map (see there)."""
    shape = tf.shape(x)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    count = tf.cast(h * w, tf.float32)
    ones = tf.ones(tf.stack([n, 1, h]), tf.float32)

    def sum_hw(t):                      # (N, H, W, C) -> (N, C): over H as one GEMV per image, then over W
        column = tf.matmul(ones, tf.reshape(t, tf.stack([n, h, w * c])))
        return tf.reduce_sum(tf.reshape(column, tf.stack([n, w, c])), axis=1)

    sample = tf.stop_gradient(x[:, 0, 0, :])                               # (N, C), any value of each channel
    single = x.shape[0] == 1
    centred = tf.nn.bias_add(x, -sample[0]) if single else x - sample[:, None, None, :]
    mean = sum_hw(x) / count
    var = tf.maximum(sum_hw(tf.square(centred)) / count - tf.square(mean - sample), 0.0)
    scale = gamma * tf.math.rsqrt(var + epsilon)                           # (N, C)
    offset = beta - (mean - sample) * scale                               # applied to x - sample: no cancellation
    if single:
        y = tf.nn.depthwise_conv2d(centred, tf.reshape(scale, tf.stack([1, 1, c, 1])), [1, 1, 1, 1], "VALID")
        return tf.nn.bias_add(y, offset[0])
    return centred * scale[:, None, None, :] + offset[:, None, None, :]


@keras.saving.register_keras_serializable(package="tfdehaze")
class InstanceNormalization(keras.layers.GroupNormalization):
    """Affine instance normalisation over H and W, per image and channel.

    y = gamma * (x - mean_hw(x)) / sqrt(var_hw(x) + epsilon) + beta, with gamma, beta of shape (C,).

    Args:
        epsilon: added to the (biased) variance, 1e-5 as in the authors' code and PyTorch.
        **kwargs: any other `keras.layers.GroupNormalization` argument (center, scale, gamma_initializer, ...)
            except ``groups``, which is fixed to one group per channel.

    Shapes: (N, H, W, C) -> (N, H, W, C). Weights: gamma (C,), beta (C,).

    Examples:
        >>> import numpy as np
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.normalization import InstanceNormalization
        >>> x = tf.random.uniform([2, 16, 16, 3], maxval=10.0)
        >>> y = InstanceNormalization()(x)
        >>> y.shape, bool(np.allclose(tf.reduce_mean(y, axis=[1, 2]), 0.0, atol=1e-5))
        (TensorShape([2, 16, 16, 3]), True)
        >>> np.round(tf.math.reduce_std(y, axis=[1, 2]).numpy(), 3)  # unit variance per image and channel
        array([[1., 1., 1.],
               [1., 1., 1.]], dtype=float32)
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        groups = kwargs.pop("groups", -1)
        if groups != -1:
            raise ValueError(f"InstanceNormalization uses one group per channel (groups=-1), got groups={groups!r}")
        super().__init__(groups=-1, epsilon=epsilon, **kwargs)

    def call(self, inputs):
        if len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return super().call(inputs)
        return tf.cast(instance_norm(inputs, self.gamma, self.beta, self.epsilon), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("groups")
        return config
