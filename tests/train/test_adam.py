"""`FusedAdam` (Keras' Adam with TensorFlow's fused kernel) against ``keras.optimizers.Adam``: the same weights step
by step with a schedule, clipping and a mixed-precision model; checkpoints restore across the two; loss scaling.
Two replicas: ``test_distribution.py`` (tiny_run.py trains with FusedAdam)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdehaze.train import FusedAdam, build_optimizer, get_recipe


def _model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(6, 3, activation="relu"),
                             keras.layers.Conv2D(3, 3)])


@pytest.mark.parametrize("options", [{}, {"clipnorm": 0.01}, {"global_clipnorm": 0.01}, {"amsgrad": True},
                                     {"weight_decay": 0.1}])
def test_same_weights_as_keras_adam(options):
    x = tf.random.stateless_uniform([4, 8, 8, 3], seed=[0, 1])
    y = tf.random.stateless_uniform([4, 4, 4, 3], seed=[2, 3])
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=2, decay_rate=0.5)
    weights = []
    for cls in (keras.optimizers.Adam, FusedAdam):
        model, optimizer = _model(0), cls(schedule, beta_1=0.5, **options)

        @tf.function
        def step(model=model, optimizer=optimizer):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.abs(model(x) - y))
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

        for _ in range(5):
            step()
        weights.append([w.numpy() for w in model.weights])
    start = [w.numpy() for w in _model(0).weights]
    for plain, fused, first in zip(*weights, start):
        np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)   # round-off of a 5e-2 move
        assert np.abs(fused - first).max() > 1e-3          # the weights moved


def test_checkpoints_restore_across_keras_adam_and_fused_adam(tmp_path):
    model = _model(1)
    plain = keras.optimizers.Adam(1e-2)
    grads = [tf.ones_like(w) for w in model.trainable_variables]
    plain.apply_gradients(zip(grads, model.trainable_variables))
    path = tf.train.Checkpoint(optimizer=plain).save(str(tmp_path / "ckpt"))
    fused = FusedAdam(1e-2)
    fused.build(model.trainable_variables)
    tf.train.Checkpoint(optimizer=fused).restore(path).assert_existing_objects_matched()
    assert int(fused.iterations) == 1
    for a, b in zip(plain.variables, fused.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_loss_scaling_and_the_recipes_use_it():
    assert type(build_optimizer(get_recipe("guided-pix2pix"))) is FusedAdam
    model = _model(2)
    scaled = keras.optimizers.LossScaleOptimizer(FusedAdam(1e-2))
    before = [w.numpy() for w in model.trainable_variables]
    grads = [tf.fill(w.shape, np.float32(np.inf)) for w in model.trainable_variables]
    scaled.apply_gradients(zip(grads, model.trainable_variables))          # overflow: skipped, scale halved
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_variables))
    scaled.apply_gradients(zip([tf.ones_like(w) for w in model.trainable_variables], model.trainable_variables))
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_variables))
