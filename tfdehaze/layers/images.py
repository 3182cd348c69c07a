"""Image tensors entering a fully convolutional network: shape checks, and reflect padding to the network's
stride with the crop back (SPEC: train on 512², run on any size)."""
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


def pad_to_multiple(x, multiple):
    """Reflect-pad an NHWC tensor so H and W are multiples of ``multiple``, split evenly top/bottom, left/right.

    Returns (padded, crop) where ``crop(y)`` cuts a network output of the padded size back to the input's H and W.
    """
    shape = tf.shape(x)
    h, w = shape[1], shape[2]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    top, left = pad_h // 2, pad_w // 2
    padded = _reflect_pad(x, top, pad_h - top, left, pad_w - left)
    return padded, lambda y: y[:, top:top + h, left:left + w, :]


def check_images(x, name, channels=None):
    """Shape check for images entering a network: rank 4 (N, H, W, C), ``channels`` if given; cast to float32."""
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4 or (channels is not None and x.shape[-1] not in (None, channels)):
        want = f"(N, H, W, {channels})" if channels else "(N, H, W, C)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    return tf.cast(x, tf.float32)
