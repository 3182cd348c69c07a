"""Training steps: one optimisation step over a global batch, for any model, optimizer and loss.

A step owns its models and optimizers; the engine (`engine.Trainer`) owns the loop, the data, the checkpoints
and the logs. To add a kind of training (e.g. distillation), subclass `Step` and write `build_models`,
`replica_step`, `optimizers_and_variables`, `checkpoint_objects` and, if the exported model is not `self.model`,
`export_model`.

Distribution (SPEC "Verified here"): models are created and built, and every optimizer is built
(`optimizer.build(variables)`), inside `strategy.scope()` before the first step; per-example losses are divided by
the GLOBAL batch (`tf.nn.compute_average_loss`) so that Keras' SUM all-reduce of replica gradients gives the
gradient of the global mean; `strategy.run` runs `replica_step` on each replica and the returned losses are
SUM-reduced (each replica returns its share of the global mean).

Gradient clipping: Keras 3 clips (`clipnorm`/`global_clipnorm`) each replica's partial gradient before the
all-reduce. When there is more than one replica, the step takes the clipping over: it all-reduces the gradients
itself, clips the global gradient, and hands the optimizer the global gradient divided by the number of replicas
(the optimizer's own SUM all-reduce then restores it), so N replicas match 1 replica exactly.
"""
import abc

import tensorflow as tf

from tfdehaze import losses as losses_lib


def _output(outputs, key):
    """The image a model returns: ``outputs[key]`` for dict outputs, else the tensor itself."""
    return outputs[key] if isinstance(outputs, dict) else outputs


class Step(abc.ABC):
    """Base class. After `build`, calling the step on a distributed batch runs one update and returns a dict
    of scalar losses (the global-batch means)."""

    output_key = "dehazed"

    # --- to be written by subclasses -------------------------------------------------------------
    @abc.abstractmethod
    def build_models(self, batch):
        """Call every model once on ``batch`` (a dict of tensors) so that they create their weights."""

    @abc.abstractmethod
    def optimizers_and_variables(self):
        """[(optimizer, variables it updates), ...]."""

    @abc.abstractmethod
    def replica_step(self, batch):
        """One replica's share of the update: forward, gradients, `self.apply_gradients`; returns {name: loss}."""

    @abc.abstractmethod
    def checkpoint_objects(self):
        """{name: model or optimizer} to save in the training checkpoint. The exported model is always under
        ``"model"`` and its optimizer under ``"optimizer"``, so ``tf.train.Checkpoint(model=m).restore(path)
        .expect_partial()`` restores the generator/student of any run."""

    @property
    def export_model(self):
        """The model written as the run's final weights (the generator / student)."""
        return self.model

    # --- shared machinery --------------------------------------------------------------------------
    def build(self, strategy, example_batch, global_batch_size):
        """Create model weights and optimizer slots inside ``strategy.scope()`` and compile the step.

        ``example_batch``: a dict of tensors with the dataset's structure (any batch size), used to build models.
        ``global_batch_size``: the number of examples per step over all replicas.
        """
        self.strategy = strategy
        self.global_batch_size = int(global_batch_size)
        self._manual_clip = getattr(self, "_manual_clip", {})  # build may be called again (e.g. by the Trainer)
        with strategy.scope():
            self.build_models(example_batch)
            for optimizer, variables in self.optimizers_and_variables():
                if not optimizer.built:
                    optimizer.build(variables)
                if strategy.num_replicas_in_sync > 1:
                    for kind in ("clipnorm", "global_clipnorm"):
                        if getattr(optimizer, kind, None):
                            self._manual_clip[id(optimizer)] = (kind, getattr(optimizer, kind))
                            setattr(optimizer, kind, None)
        self._function = tf.function(self._distributed_step)
        return self

    def __call__(self, batch):
        """One update on a batch from ``strategy.experimental_distribute_dataset``; returns {name: scalar tensor}."""
        return self._function(batch)

    def _distributed_step(self, batch):
        per_replica = self.strategy.run(self.replica_step, args=(batch,))
        return {name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for name, value in per_replica.items()}

    def average(self, per_example_loss):
        """Per-example losses (N,) -> this replica's share of the global-batch mean."""
        return tf.nn.compute_average_loss(per_example_loss, global_batch_size=self.global_batch_size)

    def regularization(self, model):
        """The model's weight-regularisation losses, scaled for the replica count (0 when it has none)."""
        if not model.losses:
            return 0.0
        return tf.nn.scale_regularization_loss(tf.add_n(model.losses))

    def apply_gradients(self, optimizer, grads, variables):
        """``optimizer.apply_gradients``, clipping the global (not the per-replica) gradient when distributed."""
        clip = self._manual_clip.get(id(optimizer))
        if clip is not None:
            kind, value = clip
            context = tf.distribute.get_replica_context()
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            if kind == "clipnorm":
                grads = [tf.clip_by_norm(g, value) for g in grads]
            else:
                grads, _ = tf.clip_by_global_norm(grads, value)
            grads = [g / context.num_replicas_in_sync for g in grads]
        optimizer.apply_gradients(zip(grads, variables))

    def predict(self, hazy):
        """The exported model's restored image for ``hazy`` (inference mode), for sample images."""
        return _output(self.export_model(hazy, training=False), self.output_key)


class SupervisedStep(Step):
    """``model(hazy)[output_key]`` against ``clear`` with a per-example ``loss(y_true, y_pred) -> (N,)``.

    MI-Net: ``SupervisedStep(minet, losses.l1, Adam)``. Logs ``{"loss": ...}``.
    """

    def __init__(self, model, loss, optimizer, output_key="dehazed"):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.output_key = output_key

    def build_models(self, batch):
        self.model(batch["hazy"], training=False)

    def optimizers_and_variables(self):
        return [(self.optimizer, self.model.trainable_variables)]

    def checkpoint_objects(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def replica_step(self, batch):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            predicted = _output(self.model(batch["hazy"], training=True), self.output_key)
            loss = self.average(self.loss(batch["clear"], predicted)) + self.regularization(self.model)
        self.apply_gradients(self.optimizer, tape.gradient(loss, variables), variables)
        return {"loss": loss}


class GANStep(Step):
    """Conditional GAN update (pix2pix / Guided-Pix2Pix §III-E), D and G both updated every step.

    The discriminator sees ``concat(hazy, clear)`` (real) and ``concat(hazy, G(hazy)[output_key])`` (fake), 6
    channels in [0, 1], and returns logits. Losses (eqs. 43-44, per example, over the global batch):

    - D: 0.5 * (BCE(1, D(real)) + BCE(0, D(fake)))
    - G: gan_weight * BCE(1, D(fake)) + l1_weight * |clear - G(hazy)|_1, with l1_weight = 100 (pix2pix).

    Both updates use the same forward pass (simultaneous update, as in TensorFlow's pix2pix).
    Logs ``{"g_loss", "g_gan", "g_l1", "d_loss"}``.
    """

    def __init__(self, generator, discriminator, g_optimizer, d_optimizer, l1_weight=100.0, gan_weight=1.0,
                 output_key="dehazed"):
        self.model = generator
        self.discriminator = discriminator
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.l1_weight = float(l1_weight)
        self.gan_weight = float(gan_weight)
        self.output_key = output_key

    @property
    def generator(self):
        return self.model

    def build_models(self, batch):
        fake = _output(self.model(batch["hazy"], training=False), self.output_key)
        self.discriminator(tf.concat([batch["hazy"], fake], axis=-1), training=False)

    def optimizers_and_variables(self):
        return [(self.g_optimizer, self.model.trainable_variables),
                (self.d_optimizer, self.discriminator.trainable_variables)]

    def checkpoint_objects(self):
        return {"model": self.model, "discriminator": self.discriminator,
                "optimizer": self.g_optimizer, "discriminator_optimizer": self.d_optimizer}

    def replica_step(self, batch):
        hazy, clear = batch["hazy"], batch["clear"]
        g_vars, d_vars = self.model.trainable_variables, self.discriminator.trainable_variables
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = _output(self.model(hazy, training=True), self.output_key)
            real_logits = self.discriminator(tf.concat([hazy, tf.cast(clear, fake.dtype)], -1), training=True)
            fake_logits = self.discriminator(tf.concat([hazy, fake], -1), training=True)
            d_loss = (self.average(losses_lib.discriminator_loss(real_logits, fake_logits))
                      + self.regularization(self.discriminator))
            g_gan = self.average(losses_lib.generator_gan_loss(fake_logits))
            g_l1 = self.average(losses_lib.l1(clear, fake))
            g_loss = self.gan_weight * g_gan + self.l1_weight * g_l1 + self.regularization(self.model)
        g_grads = g_tape.gradient(g_loss, g_vars)
        d_grads = d_tape.gradient(d_loss, d_vars)
        self.apply_gradients(self.g_optimizer, g_grads, g_vars)
        self.apply_gradients(self.d_optimizer, d_grads, d_vars)
        return {"g_loss": g_loss, "g_gan": g_gan, "g_l1": g_l1, "d_loss": d_loss}
