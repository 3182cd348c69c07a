"""Dropout whose masks do not depend on how a batch is split across replicas (Pix2Pix's decoder dropout).

Keras' ``Dropout`` draws its mask for the batch it sees. Under ``tf.distribute`` every replica sees only its share of
the global batch and starts from the same seed, so every replica draws the mask a single device would draw for the
first examples of the batch: the examples of replica 2 get the masks of replica 1's examples, and the losses of an
N-replica run differ from those of one device on the same global batch (about 1e-3 relative for Guided-Pix2Pix).
`SyncDropout` draws the mask of the whole global batch on every replica and keeps its own rows, so each example gets
the mask one device would give it, whatever the number of replicas or workers.
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfdehaze")
class SyncDropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` with the same masks on N replicas as on one device for the same global batch.

    Outside a multi-replica step (one device, inference, ``training=False``) it is ``keras.layers.Dropout``. In a
    replica context of N > 1 replicas it draws the uniform noise for the global batch (the replicas' batches stacked
    in replica order, which is how ``tf.distribute`` splits a global batch) from the layer's seed generator, which
    advances exactly as on one device, and applies this replica's rows: the output equals, row for row, what one
    device computes on the global batch. The price is drawing N times the noise on each replica (a mask, not a
    forward pass), and one all-gather of the replicas' batch sizes.

    Args: as ``keras.layers.Dropout`` (rate, noise_shape, seed). Shapes: any (N, ...) -> the same.

    Examples:
        >>> import numpy as np
        >>> from tfdehaze.layers import SyncDropout
        >>> layer = SyncDropout(0.5, seed=1)
        >>> x = np.ones((2, 4, 4, 3), "float32")
        >>> bool(np.all(layer(x) == x))  # inference: the identity
        True
        >>> y = layer(x, training=True).numpy()
        >>> sorted(np.unique(y).tolist())  # dropped or scaled by 1 / (1 - rate)
        [0.0, 2.0]
        >>> bool(np.all(y == keras.layers.Dropout(0.5, seed=1)(x, training=True).numpy()))  # one device: Keras'
        True
    """

    def call(self, inputs, training=False):
        context = tf.distribute.get_replica_context()
        per_example = self.noise_shape is None or self.noise_shape[0] is None
        if (not training or self.rate <= 0 or not per_example or context is None
                or context.num_replicas_in_sync == 1):
            return super().call(inputs, training=training)
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        # Every replica's batch size (they differ when the global batch does not divide, and a replica's static
        # shape says nothing about the others'): one all-gather of one integer.
        sizes = context.all_gather(tf.shape(inputs)[:1], axis=0)
        offset, total, local = tf.reduce_sum(sizes[:replica]), tf.reduce_sum(sizes), tf.shape(inputs)[0]
        shape = tf.unstack(tf.shape(inputs))
        if self.noise_shape is not None:
            shape = [size if given is None else given for size, given in zip(shape, self.noise_shape)]
        noise = keras.random.uniform(tf.stack([total] + shape[1:]), dtype=inputs.dtype, seed=self.seed_generator)
        # as tf.nn.experimental.stateless_dropout (Keras' dropout) computes it: x * scale where kept, else 0
        scaled = inputs * tf.cast(1.0 / (1.0 - self.rate), inputs.dtype)
        return tf.where(noise[offset:offset + local] >= self.rate, scaled, tf.zeros_like(scaled))
