"""Pixel losses, one value per example: ``(N, H, W, C) x 2 -> (N,)``.

Per-example values let a training step divide by the *global* batch size under a distribution strategy
(``tf.nn.compute_average_loss``), so 1 and N replicas give the same update.
"""
import tensorflow as tf

from tfdehaze.losses.terms import register_loss


def per_example_mean(x: tf.Tensor) -> tf.Tensor:
    """Mean over every axis but the first: (N, ...) -> (N,).

    Examples:
        >>> per_example_mean(tf.reshape(tf.range(8.0), [2, 2, 2])).numpy()
        array([1.5, 5.5], dtype=float32)
    """
    x = tf.convert_to_tensor(x)
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


@register_loss("l1", description="mean absolute error per example (Guided-Pix2Pix eq. 43, MI-Net, KDDN)")
def l1(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Mean absolute error per example: (N, H, W, C) x 2 -> (N,).

    Examples:
        >>> l1(tf.zeros([2, 4, 4, 3]), tf.fill([2, 4, 4, 3], 0.5)).numpy()
        array([0.5, 0.5], dtype=float32)
    """
    return per_example_mean(tf.abs(tf.cast(y_true, y_pred.dtype) - y_pred))


@register_loss("mse", description="mean squared error per example (RFD)")
def mse(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Mean squared error per example: (N, H, W, C) x 2 -> (N,).

    Examples:
        >>> mse(tf.zeros([1, 4, 4, 3]), tf.fill([1, 4, 4, 3], 0.5)).numpy()
        array([0.25], dtype=float32)
    """
    return per_example_mean(tf.square(tf.cast(y_true, y_pred.dtype) - y_pred))
