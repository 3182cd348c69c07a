"""Conditional-GAN losses from logits (pix2pix; Guided-Pix2Pix eq. 44), one value per example."""
import tensorflow as tf

from tfdehaze.losses.pixel import per_example_mean
from tfdehaze.losses.terms import register_loss


def _bce_from_logits(target: float, logits: tf.Tensor) -> tf.Tensor:
    logits = tf.convert_to_tensor(logits)
    return per_example_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), tf.cast(target, logits.dtype)), logits=logits))


def discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """0.5 * (BCE(1, D(real)) + BCE(0, D(fake))) per example; logits of any shape (N, ...) (PatchGAN maps).

    The max over D of eq. 44, halved as in pix2pix.

    Examples:
        >>> float(discriminator_loss(tf.fill([1, 4], 9.0), tf.fill([1, 4], -9.0))[0]) < 1e-3
        True
    """
    return 0.5 * (_bce_from_logits(1.0, real_logits) + _bce_from_logits(0.0, fake_logits))


@register_loss("gan", inputs=("fake_logits",),
               description="non-saturating generator loss BCE(1, D(fake)) (Guided-Pix2Pix eq. 44); gan step only")
def generator_gan_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """BCE(1, D(fake)) per example: the generator wants the discriminator to call its output real (min over G of
    eq. 44).

    Examples:
        >>> float(generator_gan_loss(tf.fill([1, 4], -9.0))[0]) > 8.9
        True
    """
    return _bce_from_logits(1.0, fake_logits)
