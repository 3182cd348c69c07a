"""Training losses, each returning one value per example (shape ``(N,)``).

Per-example values let a training step divide by the *global* batch size under a distribution strategy
(``tf.nn.compute_average_loss``, SPEC "Loss scaling"), so 1 and N replicas give the same update.

- ``l1(y_true, y_pred)``: mean absolute error per example (Guided-Pix2Pix eq. 43, MI-Net).
- ``mse(y_true, y_pred)``: mean squared error per example.
- ``discriminator_loss(real_logits, fake_logits)``: conditional-GAN discriminator loss, binary cross-entropy
  from logits, real -> 1 and fake -> 0, halved as in pix2pix (the max over D of eq. 44).
- ``generator_gan_loss(fake_logits)``: non-saturating generator loss, BCE(1, D(fake)) (the min over G of eq. 44).
- ``LOSSES`` maps names to the pixel losses above; ``weighted_sum({"l1": 1.0, ...})`` combines them.
"""
import tensorflow as tf


def per_example_mean(x):
    """Mean over every axis but the first: (N, ...) -> (N,)."""
    x = tf.convert_to_tensor(x)
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def l1(y_true, y_pred):
    """Mean absolute error per example: (N, H, W, C) x 2 -> (N,)."""
    return per_example_mean(tf.abs(tf.cast(y_true, y_pred.dtype) - y_pred))


def mse(y_true, y_pred):
    """Mean squared error per example: (N, H, W, C) x 2 -> (N,)."""
    return per_example_mean(tf.square(tf.cast(y_true, y_pred.dtype) - y_pred))


def _bce_from_logits(target, logits):
    return per_example_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), tf.cast(target, logits.dtype)), logits=logits))


def discriminator_loss(real_logits, fake_logits):
    """0.5 * (BCE(1, D(real)) + BCE(0, D(fake))) per example; logits of any shape (N, ...) (PatchGAN maps)."""
    return 0.5 * (_bce_from_logits(1.0, real_logits) + _bce_from_logits(0.0, fake_logits))


def generator_gan_loss(fake_logits):
    """BCE(1, D(fake)) per example: the generator wants the discriminator to call its output real."""
    return _bce_from_logits(1.0, fake_logits)


LOSSES = {"l1": l1, "mse": mse}


def weighted_sum(weights):
    """A per-example loss ``sum_k w_k * LOSSES[k](y_true, y_pred)`` from ``{"l1": 1.0, ...}``."""
    unknown = sorted(set(weights) - set(LOSSES))
    if unknown or not weights:
        raise ValueError(f"unknown loss name(s) {unknown or '(none given)'}; known: {sorted(LOSSES)}")

    def loss(y_true, y_pred):
        return tf.add_n([float(w) * LOSSES[name](y_true, y_pred) for name, w in weights.items()])

    return loss
