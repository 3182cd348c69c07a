"""Image tensors entering a fully convolutional network: reflect padding to the network's stride with the crop
back (train on 512², run on any size). Shape checks are `tfdehaze.check.check_image`."""
from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def _reflect_pad(x, top, bottom, left, right):
    """Reflect-pad H and W of an NHWC tensor by any amounts (``tf.pad``'s REFLECT needs pad < size).

    Indices outside [0, n) are folded back with period 2(n - 1) (edge pixel not repeated), so a pad larger than the
    image keeps reflecting back and forth.
    """
    def fold(n, before, after):
        index = tf.range(-before, n + after)
        period = tf.maximum(2 * n - 2, 1)
        index = tf.math.floormod(index, period)
        return tf.where(index < n, index, period - index)

    shape = tf.shape(x)
    x = tf.gather(x, fold(shape[1], top, bottom), axis=1)
    return tf.gather(x, fold(shape[2], left, right), axis=2)


def pad_to_multiple(x: tf.Tensor, multiple: int) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
    """Reflect-pad an NHWC tensor so H and W are multiples of ``multiple``, split evenly top/bottom, left/right.

    The edge pixel is not repeated (as ``tf.pad`` REFLECT), and a pad larger than the image keeps reflecting.

    Args:
        x: (N, H, W, C) tensor.
        multiple: the network's total stride, e.g. 2**depth for a U-Net.

    Returns:
        (padded, crop): padded (N, H', W', C) with H', W' the next multiples of ``multiple``, and ``crop`` that cuts
        a network output of the padded size, (N, H', W', C'), back to (N, H, W, C').

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.layers.images import pad_to_multiple
        >>> x = tf.reshape(tf.range(5.0), [1, 1, 5, 1])
        >>> padded, crop = pad_to_multiple(x, 8)
        >>> padded.shape, padded[0, 0, :, 0].numpy()  # 1 -> 8 rows, 5 -> 8 columns (1 left, 2 right)
        (TensorShape([1, 8, 8, 1]), array([1., 0., 1., 2., 3., 4., 3., 2.], dtype=float32))
        >>> bool(tf.reduce_all(crop(padded) == x))
        True
    """
    shape = tf.shape(x)
    h, w = shape[1], shape[2]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    top, left = pad_h // 2, pad_w // 2
    padded = _reflect_pad(x, top, pad_h - top, left, pad_w - left)
    return padded, lambda y: y[:, top:top + h, left:left + w, :]
