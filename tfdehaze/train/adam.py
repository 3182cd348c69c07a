"""Adam with TensorFlow's fused update kernel: the same arithmetic as ``keras.optimizers.Adam``, one pass over memory.

Keras 3's Adam updates each variable with separate element-wise ops (m, v, the square root, the step): about nine
passes over the variable's size. Guided-Pix2Pix's generator has 67 M parameters, so on a 2-core CPU the update
alone took 0.40 s of a 1.15 s bfloat16 GAN step. ``ResourceApplyAdam`` does the same update in one multithreaded
pass: 0.10 s (`benchmarks/precision.py` times the whole step).
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfdehaze")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose update is ``tf.raw_ops.ResourceApplyAdam``.

    Same hyper-parameters, slots (``_momentums``, ``_velocities``: checkpoints of either restore into the other),
    gradient clipping, loss scaling (`keras.optimizers.LossScaleOptimizer`) and `tf.distribute` support; the update
    (Kingma & Ba, Algorithm 1 with the "epsilon hat" of their section 2) is
    ``m += (1 - b1)(g - m)``, ``v += (1 - b2)(g² - v)``, ``w -= lr·sqrt(1 - b2^t)/(1 - b1^t) · m / (sqrt(v) + eps)``,
    as Keras computes it. ``amsgrad=True`` uses Keras' own update.

    Examples:
        >>> import numpy as np
        >>> w, w_ref = keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))
        >>> grad = tf.constant([0.5, -1.0, 2.0])
        >>> fused, plain = FusedAdam(0.1, beta_1=0.5), keras.optimizers.Adam(0.1, beta_1=0.5)
        >>> for _ in range(3):
        ...     _ = fused.apply_gradients([(grad, w)]), plain.apply_gradients([(grad, w_ref)])
        >>> bool(np.allclose(w.numpy(), w_ref.numpy(), atol=1e-7)), w.numpy().round(4).tolist()
        (True, [0.7, 1.3, 0.7])
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype),
            use_locking=False)
