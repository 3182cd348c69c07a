"""Tiny plain-Keras models and data for the engine tests (no dependence on tfdehaze.models or tfdehaze.data).

Imported by the tests through importlib, and run as a script for the subprocess tests:

    python tiny_run.py RUN_DIR STEPS [--resume] [--checkpoint-every N] [--log-every N]
    python tiny_run.py --replicas OUT.npz   (1 vs 2 replica comparison; see test_distribution.py)
"""
import argparse

import numpy as np

SIZE = 32  # image side


def make_data(n=6, size=SIZE, seed=0, nan_from=None):
    """hazy/clear pairs: clear random, hazy = 0.6 clear + 0.3. nan_from: index from which hazy is NaN."""
    rng = np.random.default_rng(seed)
    clear = rng.uniform(0, 1, (n, size, size, 3)).astype("float32")
    hazy = (0.6 * clear + 0.3).astype("float32")
    if nan_from is not None:
        hazy[nan_from:] = np.nan
    return hazy, clear


def data_fn(hazy, clear, batch_size, shuffle=True):
    """epoch -> Dataset: a different, deterministic order per epoch."""
    import tensorflow as tf

    def dataset(epoch):
        ds = tf.data.Dataset.from_tensor_slices({"hazy": hazy, "clear": clear})
        if shuffle:
            ds = ds.shuffle(len(hazy), seed=100 + epoch, reshuffle_each_iteration=False)
        return ds.batch(batch_size)

    return dataset


def generator(width=4):
    import keras
    x = inputs = keras.Input((None, None, 3))
    # no bias before instance norm: its true gradient is 0, and Adam would blow round-off up into full steps
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")(x)
    return keras.Model(inputs, {"dehazed": x})


def discriminator(width=4):
    import keras
    x = inputs = keras.Input((None, None, 6))
    x = keras.layers.Conv2D(width, 4, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)(x)
    x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Conv2D(1, 3, padding="same")(x)
    return keras.Model(inputs, x)


def make_step(kind="supervised", lr=1e-2, clipnorm=None, seed=0):
    """A SupervisedStep or GANStep over tiny models; create it inside ``strategy.scope()``."""
    import keras

    from tfdehaze import losses
    from tfdehaze.train import FusedAdam, GANStep, SupervisedStep

    keras.utils.set_random_seed(seed)
    schedule = keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=3, decay_rate=0.9)

    def adam():   # the trainer's optimizer (build_optimizer): also checked under two replicas
        return FusedAdam(schedule, beta_1=0.5, clipnorm=clipnorm)

    if kind == "supervised":
        return SupervisedStep(generator(), losses.l1, adam())
    return GANStep(generator(), discriminator(), adam(), adam(), l1_weight=100.0)


def run(run_dir, steps, resume=False, checkpoint_every=5, log_every=1, sample_every=1000, kind="supervised",
        data=None):
    """A Trainer run on tiny data (batch 2 of 6 examples: 3 steps per epoch unless ``data`` says otherwise)."""
    from tfdehaze.train import Trainer

    fn = data or data_fn(*make_data(), 2)
    step = make_step(kind)
    trainer = Trainer(step, fn, run_dir, config={"batch_size": 2, "tiny": True}, checkpoint_every=checkpoint_every,
                      log_every=log_every, sample_every=sample_every, verbose=0)
    return trainer, trainer.fit(steps, resume=resume)


def state(step):
    """Every checkpointed array of a step (models and optimizers, in a fixed order)."""
    return {f"{key}/{i}": np.array(v.numpy()) for key, obj in step.checkpoint_objects().items()
            for i, v in enumerate(obj.variables)}


def read_checkpoint(prefix):
    """(step, arrays) saved in checkpoint ``prefix``, read into freshly built objects (independently of Trainer)."""
    import tensorflow as tf
    step = make_step(seed=123)
    hazy, clear = make_data(n=1)
    step.build(tf.distribute.get_strategy(), {"hazy": hazy, "clear": clear}, 2)
    counter = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(step=counter, **step.checkpoint_objects()).read(prefix).assert_existing_objects_matched() \
        .expect_partial()
    return int(counter.numpy()), state(step)


def assert_states_equal(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)


KINDS = ("supervised", "clipnorm", "gan")


def replicas(out):
    """For each kind in KINDS: two steps on a global batch of 4 with 1 replica and with 2 replicas (2 logical CPUs),
    from the same initial weights; saves the final arrays and losses of both in ``out`` (.npz)."""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    hazy, clear = make_data(n=8, size=16)
    results = {}
    # One strategy object of each kind for the whole process: a second MirroredStrategy reuses collective
    # instance keys (TensorFlow issue 62790).
    strategies = (("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                  ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])))
    for kind in KINDS:
        initial = None
        for name, strategy in strategies:
            with strategy.scope():
                step = make_step("gan" if kind == "gan" else "supervised", lr=1e-2,
                                 clipnorm=0.05 if kind == "clipnorm" else None)
            step.build(strategy, {"hazy": hazy[:1], "clear": clear[:1]}, global_batch_size=4)
            models = [obj for obj in step.checkpoint_objects().values() if hasattr(obj, "get_weights")]
            if initial is None:
                initial = [m.get_weights() for m in models]
            for model, weights in zip(models, initial):
                np.testing.assert_array_equal(np.concatenate([w.ravel() for w in model.get_weights()]),
                                              np.concatenate([w.ravel() for w in weights]))
            dataset = tf.data.Dataset.from_tensor_slices({"hazy": hazy, "clear": clear}).batch(4)
            losses = [[float(v) for v in step(b).values()] for b in strategy.experimental_distribute_dataset(dataset)]
            for key, value in state(step).items():
                results[f"{kind}/{name}/{key}"] = value
            results[f"{kind}/{name}/losses"] = np.array(losses)
            results[f"{kind}/{name}/replicas"] = np.array(strategy.num_replicas_in_sync)

    # The whole engine: 6 GAN steps in one go on 1 replica, and 4 + resumed 2 on 2 replicas (checkpoints of
    # mirrored variables, distributed dataset with the data position restored).
    import tempfile

    from tfdehaze.train import Trainer
    fn = data_fn(hazy, clear, 4)
    for name, strategy in strategies:
        run_dir = tempfile.mkdtemp()
        for steps, resume in ((6, False),) if name == "one" else ((4, False), (6, True)):
            with strategy.scope():
                step = make_step("gan", lr=1e-2)
            trainer = Trainer(step, fn, run_dir, strategy=strategy, batch_size=4, checkpoint_every=2,
                              sample_every=2, verbose=0)
            trainer.fit(steps, resume=resume)
        for key, value in state(trainer.step).items():
            results[f"trainer/{name}/{key}"] = value
        results[f"trainer/{name}/replicas"] = np.array(strategy.num_replicas_in_sync)
    np.savez(out, **results)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("steps", nargs="?", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--log-every", type=int, default=1)
    parser.add_argument("--replicas", metavar="OUT")
    args = parser.parse_args(argv)
    if args.replicas:
        replicas(args.replicas)
        return
    run(args.run_dir, args.steps, resume=args.resume, checkpoint_every=args.checkpoint_every,
        log_every=args.log_every)


if __name__ == "__main__":
    main()
