"""Training steps: one optimisation step over a global batch, for any model, optimizer and loss.

A step owns its models and optimizers; the engine (`engine.Trainer`) owns the loop, the data, the checkpoints
and the logs. Step kinds are registered in `tfdehaze.registry.STEPS` (``@STEPS.register("gan")``); a recipe names
one in ``step`` and its options in ``step_options``, and ``Kind.from_recipe(recipe, model, steps_per_epoch)``
builds it (inside ``strategy.scope()``). Loss terms come from the recipe's ``losses`` list
(`tfdehaze.losses.terms`): a step only provides the named values the terms read (its *context*).

To add a kind of training, subclass `Step`, register it, and write `from_recipe`, `build_models`,
`replica_step`, `optimizers_and_variables`, `checkpoint_objects` and, if the exported model is not `self.model`,
`export_model`.

Distribution (verified with TF 2.21): models are created and built, and every optimizer is built
(`optimizer.build(variables)`), inside `strategy.scope()` before the first step; per-example losses are divided by
the GLOBAL batch (`tf.nn.compute_average_loss`) so that Keras' SUM all-reduce of replica gradients gives the
gradient of the global mean; `strategy.run` runs `replica_step` on each replica and the returned losses are
SUM-reduced (each replica returns its share of the global mean).

Gradient clipping: Keras 3 clips (`clipnorm`/`global_clipnorm`) each replica's partial gradient before the
all-reduce. When there is more than one replica, the step takes the clipping over: it all-reduces the gradients
itself, clips the global gradient, and hands the optimizer the global gradient divided by the number of replicas
(the optimizer's own SUM all-reduce then restores it), so N replicas match 1 replica exactly.
"""
from __future__ import annotations

import abc
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from tfdehaze import losses as losses_lib
from tfdehaze.registry import STEPS
from tfdehaze.train.recipes import Recipe, build_optimizer

# What a step's ``loss`` argument may be: a per-example ``loss(clear, dehazed)``, `Term` objects or recipe specs.
_Losses = Callable | Sequence[losses_lib.Term] | Sequence[dict]


def _output(outputs, key):
    """The image a model returns: ``outputs[key]`` for dict outputs, else the tensor itself."""
    return outputs[key] if isinstance(outputs, dict) else outputs


class Step(abc.ABC):
    """Base class. After `build`, calling the step on a distributed batch runs one update and returns a dict
    of scalar losses (the global-batch means).

    Examples:
        A new kind of training in a few lines: a mean squared error, plain SGD.

        >>> import keras
        >>> import tensorflow as tf
        >>> from tfdehaze.train import Step
        >>> class MSEStep(Step):
        ...     def __init__(self, model, optimizer):
        ...         self.model, self.optimizer = model, optimizer
        ...     @classmethod
        ...     def from_recipe(cls, recipe, model, steps_per_epoch=None):
        ...         return cls(model, keras.optimizers.SGD(recipe.learning_rate))
        ...     def build_models(self, batch):
        ...         self.model(batch["hazy"])
        ...     def optimizers_and_variables(self):
        ...         return [(self.optimizer, self.model.trainable_variables)]
        ...     def checkpoint_objects(self):
        ...         return {"model": self.model, "optimizer": self.optimizer}
        ...     def replica_step(self, batch):
        ...         variables = self.model.trainable_variables
        ...         with tf.GradientTape() as tape:
        ...             error = tf.reduce_mean((self.model(batch["hazy"]) - batch["clear"]) ** 2, axis=[1, 2, 3])
        ...             loss = self.average(error)  # this replica's share of the global-batch mean
        ...         self.apply_gradients(self.optimizer, tape.gradient(loss, variables), variables)
        ...         return {"loss": loss}
        >>> model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)])
        >>> batch = {"hazy": tf.ones([2, 8, 8, 3]), "clear": tf.zeros([2, 8, 8, 3])}
        >>> step = MSEStep(model, keras.optimizers.SGD(0.1)).build(tf.distribute.get_strategy(), batch, 2)
        >>> losses = [float(step(batch)["loss"]) for _ in range(3)]
        >>> losses[2] < losses[1] < losses[0]
        True
        >>> tuple(step.predict(batch).shape)
        (2, 8, 8, 3)
    """

    output_key = "dehazed"
    terms: tuple = ()  # the loss terms (`tfdehaze.losses.Term`) a step computes, if it uses recipe terms

    # --- to be written by subclasses ---------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def from_recipe(cls, recipe: Recipe, model: keras.Model, steps_per_epoch: int | None = None) -> Step:
        """The step a recipe describes for ``model`` (called inside ``strategy.scope()``)."""

    @abc.abstractmethod
    def build_models(self, batch: dict[str, tf.Tensor]) -> None:
        """Call every model once on ``batch`` (a dict of tensors) so that they create their weights."""

    @abc.abstractmethod
    def optimizers_and_variables(self) -> list[tuple[keras.optimizers.Optimizer, list]]:
        """[(optimizer, variables it updates), ...]."""

    @abc.abstractmethod
    def replica_step(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """One replica's share of the update: forward, gradients, `self.apply_gradients`; returns {name: loss}."""

    @abc.abstractmethod
    def checkpoint_objects(self) -> dict[str, Any]:
        """{name: model or optimizer} to save in the training checkpoint. The exported model is always under
        ``"model"`` and its optimizer under ``"optimizer"``, so ``tf.train.Checkpoint(model=m).restore(path)
        .expect_partial()`` restores the generator/student of any run."""

    @property
    def export_model(self) -> keras.Model:
        """The model written as the run's final weights (the generator / student)."""
        return self.model

    # --- shared machinery --------------------------------------------------------------------------
    def build(self, strategy: tf.distribute.Strategy, example_batch: dict[str, tf.Tensor],
              global_batch_size: int) -> Step:
        """Create model weights and optimizer slots inside ``strategy.scope()`` and compile the step.

        ``example_batch``: a dict of tensors with the dataset's structure (any batch size), used to build models.
        ``global_batch_size``: the number of examples per step over all replicas.
        """
        self.strategy = strategy
        self.global_batch_size = int(global_batch_size)
        self._manual_clip = getattr(self, "_manual_clip", {})  # build may be called again (e.g. by the Trainer)
        self._scalers = getattr(self, "_scalers", {})          # optimizer id -> LossScaleOptimizer (float16)
        with strategy.scope():
            self.build_models(example_batch)
            float16 = _computes_in_float16(self.checkpoint_objects().values())
            for optimizer, variables in self.optimizers_and_variables():
                if not optimizer.built:
                    optimizer.build(variables)
                if float16 and id(optimizer) not in self._scalers:
                    # Loss scaling wraps the optimizer for the update only: the checkpoint keeps the plain
                    # optimizer, so a run restores in any precision (the scale restarts at 2**15 and adapts).
                    scaler = keras.optimizers.LossScaleOptimizer(optimizer)
                    scaler.build(variables)
                    self._scalers[id(optimizer)] = scaler
                if strategy.num_replicas_in_sync > 1:
                    for kind in ("clipnorm", "global_clipnorm"):
                        if getattr(optimizer, kind, None):
                            self._manual_clip[id(optimizer)] = (kind, getattr(optimizer, kind))
                            setattr(optimizer, kind, None)
        self._function = tf.function(self._distributed_step)
        return self

    def __call__(self, batch: Any) -> dict[str, tf.Tensor]:
        """One update on a batch from ``strategy.experimental_distribute_dataset``; returns {name: scalar tensor}."""
        return self._function(batch)

    def _distributed_step(self, batch):
        per_replica = self.strategy.run(self.replica_step, args=(batch,))
        return {name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for name, value in per_replica.items()}

    def average(self, per_example_loss: tf.Tensor) -> tf.Tensor:
        """Per-example losses (N,) -> this replica's share of the global-batch mean."""
        return tf.nn.compute_average_loss(per_example_loss, global_batch_size=self.global_batch_size)

    def regularization(self, model: keras.Model) -> tf.Tensor | float:
        """The model's weight-regularisation losses, scaled for the replica count (0 when it has none)."""
        if not model.losses:
            return 0.0
        return tf.nn.scale_regularization_loss(tf.add_n(model.losses))

    def gradients(self, tape: tf.GradientTape, optimizer: keras.optimizers.Optimizer, loss: tf.Tensor,
                  variables: Sequence[tf.Variable]) -> list[tf.Tensor]:
        """``tape.gradient(loss, variables)``; under ``mixed_float16`` of the loss scaled by the optimizer's loss
        scale (`apply_gradients` unscales them)."""
        scaler = self._scalers.get(id(optimizer))
        if scaler is None:
            return tape.gradient(loss, variables)
        # d(scale * loss) = scale * d(loss): the backward pass starts from the scale (the tape has closed).
        return tape.gradient(loss, variables, output_gradients=tf.cast(scaler.dynamic_scale, loss.dtype))

    def apply_gradients(self, optimizer: keras.optimizers.Optimizer, grads: Sequence[tf.Tensor],
                        variables: Sequence[tf.Variable]) -> None:
        """``optimizer.apply_gradients``, clipping the global (not the per-replica) gradient when distributed;
        under ``mixed_float16`` through its `keras.optimizers.LossScaleOptimizer` (a step whose gradients are not
        finite is skipped and the scale halved)."""
        scaler = self._scalers.get(id(optimizer))
        clip = self._manual_clip.get(id(optimizer))
        if clip is not None:
            kind, value = clip
            context = tf.distribute.get_replica_context()
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            scale = tf.cast(scaler.dynamic_scale, tf.float32) if scaler is not None else 1.0
            grads = [g / scale for g in grads]
            if kind == "clipnorm":
                grads = [tf.clip_by_norm(g, value) for g in grads]
            else:
                grads, _ = tf.clip_by_global_norm(grads, value)
            grads = [g * scale / context.num_replicas_in_sync for g in grads]
        (scaler or optimizer).apply_gradients(zip(grads, variables, strict=True))

    def context(self, batch: dict, outputs: Any) -> dict:
        """The named values loss terms may read: the batch's images, ``dehazed`` and the model's ``outputs``."""
        return {**batch, "outputs": outputs, "dehazed": _output(outputs, self.output_key)}

    def predict(self, batch: dict) -> tf.Tensor:
        """The exported model's restored image for a batch (inference mode), for sample images."""
        return _output(self.export_model(batch["hazy"], training=False), self.output_key)


def _computes_in_float16(objects: Any) -> bool:
    """Whether any layer of the given models (or their sub-layers) computes in float16 (loss scaling needed)."""
    layers = [layer for obj in objects if isinstance(obj, keras.layers.Layer)
              for layer in obj._flatten_layers(include_self=True, recursive=True)]
    return any(layer.compute_dtype == "float16" for layer in layers)


def _terms(losses: _Losses) -> list[losses_lib.Term]:
    """Loss terms from a per-example ``loss(clear, dehazed)`` callable, `Term` objects or recipe specs."""
    if callable(losses):
        return [losses_lib.Term("loss", losses)]
    losses = list(losses)
    if losses and all(isinstance(term, losses_lib.Term) for term in losses):
        return losses
    return losses_lib.build_terms(losses)


def _log(prefix: str, total, parts: dict, average) -> dict:
    """{prefix + "loss": total} and, when there are several terms, each term's global-batch mean (sorted)."""
    logs = {f"{prefix}loss": total}
    if len(parts) > 1:
        logs.update({f"{prefix}{name}": average(parts[name]) for name in sorted(parts)})
    return logs


@STEPS.register("supervised", description="model(hazy) against clear with the recipe's loss terms")
class SupervisedStep(Step):
    """``model(batch[input_key])`` trained with loss terms over the step's context (see `Step.context`).

    Args:
        model: the network; its output (or ``output[output_key]``) is ``dehazed`` in the context.
        loss: a per-example ``loss(clear, dehazed) -> (N,)``, or loss terms (`tfdehaze.losses.Term` objects or
            recipe specs ``{"type", "weight", ...}``).
        optimizer: a Keras optimizer.
        input_key: the batch entry fed to the model: ``"hazy"`` (dehazing), ``"clear"`` (an autoencoder teacher,
            KDDN).
        input_scale: the input is first resized by this factor (bicubic); 0.5 trains a x2 super-resolution teacher
            on the clear image (RFD).

    MI-Net: ``SupervisedStep(minet, losses.l1, Adam)``. Logs ``{"loss": ...}`` and, with several terms, each term.

    Examples:
        >>> import keras
        >>> import tensorflow as tf
        >>> from tfdehaze.train import SupervisedStep, get_recipe
        >>> inputs = keras.Input((None, None, 3))
        >>> model = keras.Model(inputs, {"dehazed": keras.layers.Conv2D(3, 3, padding="same")(inputs)})
        >>> terms = [{"type": "l1", "weight": 1.0}, {"type": "mse", "weight": 10.0}]
        >>> step = SupervisedStep(model, terms, keras.optimizers.Adam(1e-3))
        >>> batch = {"hazy": tf.random.stateless_uniform([2, 8, 8, 3], seed=[0, 0]), "clear": tf.zeros([2, 8, 8, 3])}
        >>> step = step.build(tf.distribute.get_strategy(), batch, global_batch_size=2)
        >>> sorted(step(batch)), tuple(step.predict(batch).shape)
        (['l1', 'loss', 'mse'], (2, 8, 8, 3))

        KDDN's teacher is an autoencoder of the clear image (its recipe's ``step_options``):

        >>> teacher_step = SupervisedStep.from_recipe(get_recipe("kddn-teacher"), model, steps_per_epoch=10)
        >>> teacher_step.input_key, [term.name for term in teacher_step.terms]
        ('clear', ['l1'])
    """

    def __init__(self, model: keras.Model, loss: _Losses,
                 optimizer: keras.optimizers.Optimizer, output_key: str = "dehazed", input_key: str = "hazy",
                 input_scale: float = 1.0):
        self.model = model
        self.terms = _terms(loss)
        self.optimizer = optimizer
        self.output_key = output_key
        self.input_key = input_key
        self.input_scale = float(input_scale)

    @classmethod
    def from_recipe(cls, recipe: Recipe, model: keras.Model, steps_per_epoch: int | None = None) -> SupervisedStep:
        return cls(model, recipe.losses, build_optimizer(recipe, steps_per_epoch), **recipe.step_options)

    def model_input(self, batch: dict[str, tf.Tensor]) -> tf.Tensor:
        """The model's input for ``batch``: ``batch[input_key]``, resized by ``input_scale``."""
        x = batch[self.input_key]
        if self.input_scale != 1.0:
            size = tf.cast(tf.round(tf.cast(tf.shape(x)[1:3], tf.float32) * self.input_scale), tf.int32)
            x = tf.clip_by_value(tf.image.resize(x, size, method="bicubic", antialias=True), 0.0, 1.0)
        return x

    def build_models(self, batch):
        self.model(self.model_input(batch), training=False)

    def optimizers_and_variables(self):
        return [(self.optimizer, self.model.trainable_variables)]

    def checkpoint_objects(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def predict(self, batch):
        return _output(self.export_model(self.model_input(batch), training=False), self.output_key)

    def replica_step(self, batch):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.model(self.model_input(batch), training=True)
            per_example, parts = losses_lib.total(self.terms, self.context(batch, outputs))
            loss = self.average(per_example) + self.regularization(self.model)
        self.apply_gradients(self.optimizer, self.gradients(tape, self.optimizer, loss, variables), variables)
        return _log("", loss, parts, self.average)


@STEPS.register("gan", description="conditional GAN (PatchGAN discriminator) + the recipe's generator terms")
class GANStep(Step):
    """Conditional GAN update (pix2pix / Guided-Pix2Pix §III-E), D and G both updated every step.

    The discriminator sees ``concat(hazy, clear)`` (real) and ``concat(hazy, G(hazy)[output_key])`` (fake), 6
    channels in [0, 1], and returns logits. Losses (eqs. 43-44, per example, over the global batch):

    - D: 0.5 * (BCE(1, D(real)) + BCE(0, D(fake)))
    - G: the loss terms, by default ``gan_weight * BCE(1, D(fake)) + l1_weight * |clear - G(hazy)|_1`` with
      l1_weight = 100 (pix2pix); the context adds ``fake_logits`` for the ``gan`` term.

    Both updates use the same forward pass (simultaneous update, as in TensorFlow's pix2pix).
    Logs ``{"g_loss", "g_<term>" (sorted), "d_loss"}``, e.g. ``g_loss, g_gan, g_l1, d_loss``.

    Examples:
        >>> import keras
        >>> import tensorflow as tf
        >>> from tfdehaze.models import PatchDiscriminator
        >>> from tfdehaze.train import GANStep
        >>> generator = keras.Sequential([keras.Input((None, None, 3)),
        ...                               keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")])
        >>> step = GANStep(generator, PatchDiscriminator(base_filters=4, n_layers=1),
        ...                keras.optimizers.Adam(2e-4, beta_1=0.5), keras.optimizers.Adam(2e-4, beta_1=0.5))
        >>> [(term.name, term.weight) for term in step.terms]  # pix2pix: 100 L1 + 1 GAN
        [('l1', 100.0), ('gan', 1.0)]
        >>> hazy = tf.random.stateless_uniform([2, 16, 16, 3], seed=[0, 0])
        >>> batch = {"hazy": hazy, "clear": tf.zeros([2, 16, 16, 3])}
        >>> step = step.build(tf.distribute.get_strategy(), batch, global_batch_size=2)
        >>> sorted(step(batch)), sorted(step.checkpoint_objects())
        (['d_loss', 'g_gan', 'g_l1', 'g_loss'], ['discriminator', 'discriminator_optimizer', 'model', 'optimizer'])
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, g_optimizer: keras.optimizers.Optimizer,
                 d_optimizer: keras.optimizers.Optimizer, l1_weight: float = 100.0, gan_weight: float = 1.0,
                 output_key: str = "dehazed", losses: _Losses | None = None):
        self.model = generator
        self.discriminator = discriminator
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.terms = _terms(losses if losses is not None else [{"type": "l1", "weight": float(l1_weight)},
                                                               {"type": "gan", "weight": float(gan_weight)}])
        self.output_key = output_key

    @classmethod
    def from_recipe(cls, recipe: Recipe, model: keras.Model, steps_per_epoch: int | None = None) -> GANStep:
        from tfdehaze.models import PatchDiscriminator

        return cls(model, PatchDiscriminator(**recipe.discriminator_kwargs),
                   build_optimizer(recipe, steps_per_epoch), build_optimizer(recipe, steps_per_epoch),
                   losses=recipe.losses, **recipe.step_options)

    @property
    def generator(self) -> keras.Model:
        """The generator (``self.model``)."""
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
            outputs = self.model(hazy, training=True)
            fake = _output(outputs, self.output_key)
            real_logits = self.discriminator(tf.concat([hazy, tf.cast(clear, fake.dtype)], -1), training=True)
            fake_logits = self.discriminator(tf.concat([hazy, fake], -1), training=True)
            d_loss = (self.average(losses_lib.discriminator_loss(real_logits, fake_logits))
                      + self.regularization(self.discriminator))
            per_example, parts = losses_lib.total(
                self.terms, {**self.context(batch, outputs), "fake_logits": fake_logits})
            g_loss = self.average(per_example) + self.regularization(self.model)
        g_grads = self.gradients(g_tape, self.g_optimizer, g_loss, g_vars)
        d_grads = self.gradients(d_tape, self.d_optimizer, d_loss, d_vars)
        self.apply_gradients(self.g_optimizer, g_grads, g_vars)
        self.apply_gradients(self.d_optimizer, d_grads, d_vars)
        return {**_log("g_", g_loss, parts, self.average), "d_loss": d_loss}


def _load_teacher(run_dir: str | os.PathLike, **overrides: Any) -> keras.Model:
    """The trained model of a run directory (`tfdehaze.models.registry.load_run`), frozen."""
    from tfdehaze.models import registry

    if not (pathlib.Path(run_dir) / "config.json").is_file():
        raise ValueError(f"teacher run {run_dir} has no config.json: train the teacher first "
                         "(e.g. tfdehaze-train kddn-teacher --out RUN_DIR)")
    teacher = registry.load_run(run_dir, **overrides)
    teacher.trainable = False
    return teacher


@keras.saving.register_keras_serializable(package="tfdehaze")
class Adapters(keras.layers.Layer):
    """1x1 convolutions ``g_k`` mapping student features to the teacher's widths (KDDN §3.3), one per pair.

    Call: a list of K feature maps (N, H_k, W_k, C_k) -> a list of K maps (N, H_k, W_k, channels[k]).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.train.steps import Adapters
        >>> adapters = Adapters([16, 32])
        >>> mapped = adapters([tf.zeros([1, 8, 8, 4]), tf.zeros([1, 4, 4, 8])])
        >>> [tuple(feature.shape) for feature in mapped], adapters.count_params()  # (4 + 1) * 16 + (8 + 1) * 32
        ([(1, 8, 8, 16), (1, 4, 4, 32)], 368)
    """

    def __init__(self, channels: Sequence[int], **kwargs: Any):
        super().__init__(**kwargs)
        self.channels = [int(c) for c in channels]
        for i, c in enumerate(self.channels):  # attributes, not a list: tf.train.Checkpoint tracks them
            setattr(self, f"adapter{i}", keras.layers.Conv2D(c, 1, name=f"adapter{i}"))

    def call(self, features: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        if len(features) != len(self.channels):
            raise ValueError(f"{len(features)} student features for {len(self.channels)} adapters")
        return [getattr(self, f"adapter{i}")(f) for i, f in enumerate(features)]

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels}


@STEPS.register("distill", description="a student against a frozen teacher (KDDN, RFD): the terms may read "
                                       "teacher_features / student_features")
class DistillationStep(Step):
    """Knowledge distillation: a frozen teacher and a trained student, loss terms over both.

    Each step runs ``teacher(batch[teacher_input], return_features=True)`` (inference mode, no gradient) and
    ``student(batch["hazy"], training=True, return_features=True)``; both return ``{"dehazed", "features"}``. The
    context adds ``teacher_features`` and ``student_features`` (the student's passed through trainable 1x1
    `Adapters` to the teacher's widths when ``adapters``), and ``teacher_output``. Pairs are matched by position:
    the i-th tapped student feature mimics the i-th tapped teacher feature (the models' ``feature_taps``).

    Args:
        student, teacher: Keras models taking ``return_features``; the teacher is frozen here.
        optimizer: updates the student and the adapters.
        loss: loss terms (recipe specs or `tfdehaze.losses.Term` objects).
        teacher_input: the batch entry the teacher sees (``"clear"``: KDDN's autoencoder and RFD's SR teacher).
        adapters: add 1x1 adapters (KDDN); False compares the features as they are (RFD's affinity).

    Logs ``{"loss": total}`` and each term.

    Examples:
        A student 4 channels wide mimicking the features of a teacher 8 wide (through an 8-channel adapter):

        >>> import keras
        >>> import tensorflow as tf
        >>> from tfdehaze.train import DistillationStep, get_recipe
        >>> class Tiny(keras.Model):
        ...     def __init__(self, width):
        ...         super().__init__()
        ...         self.body = keras.layers.Conv2D(width, 3, padding="same", activation="relu")
        ...         self.head = keras.layers.Conv2D(3, 1)
        ...     def call(self, x, training=False, return_features=False):
        ...         features = self.body(x)
        ...         outputs = {"dehazed": self.head(features)}
        ...         return {**outputs, "features": [features]} if return_features else outputs
        >>> terms = [{"type": "l1"}, {"type": "fmil", "weight": 0.5}]
        >>> step = DistillationStep(Tiny(4), Tiny(8), keras.optimizers.Adam(1e-3), terms)
        >>> batch = {"hazy": tf.random.stateless_uniform([2, 8, 8, 3], seed=[0, 0]), "clear": tf.zeros([2, 8, 8, 3])}
        >>> step = step.build(tf.distribute.get_strategy(), batch, global_batch_size=2)
        >>> sorted(step(batch)), step.adapters.channels, step.teacher.trainable
        (['fmil', 'l1', 'loss'], [8], False)

        From a recipe, the teacher is a trained run directory:

        >>> DistillationStep.from_recipe(get_recipe("rfd"), Tiny(4))
        Traceback (most recent call last):
        ...
        ValueError: the distill step of 'rfd' needs a teacher run: --teacher RUN_DIR (step_options.teacher)
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, optimizer: keras.optimizers.Optimizer,
                 loss: Sequence[losses_lib.Term] | Sequence[dict], teacher_input: str = "clear", adapters: bool = True,
                 output_key: str = "dehazed"):
        self.model = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.optimizer = optimizer
        self.terms = _terms(loss)
        self.teacher_input = teacher_input
        # adapters only where a term reads the student's features (else they would get no gradient)
        self.use_adapters = bool(adapters) and any(term.reads("student_features") for term in self.terms)
        self.adapters = None
        self.output_key = output_key

    @classmethod
    def from_recipe(cls, recipe: Recipe, model: keras.Model, steps_per_epoch: int | None = None
                    ) -> DistillationStep:
        options = dict(recipe.step_options)
        terms = _terms(recipe.losses)  # first: a missing VGG19 file is reported before the teacher is loaded
        if not options.get("teacher"):
            raise ValueError(f"the distill step of {recipe.model!r} needs a teacher run: --teacher RUN_DIR "
                             "(step_options.teacher)")
        teacher = _load_teacher(options.pop("teacher"), **options.pop("teacher_kwargs", {}))
        return cls(model, teacher, build_optimizer(recipe, steps_per_epoch), terms, **options)

    @staticmethod
    def _features(outputs, who):
        if not isinstance(outputs, dict) or "features" not in outputs:
            raise ValueError(f"the {who} must return {{'dehazed', 'features'}} when called with "
                             "return_features=True")
        return list(outputs["features"])

    def _forward(self, batch, training):
        teacher_out = self.teacher(batch[self.teacher_input], training=False, return_features=True)
        teacher_features = [tf.stop_gradient(f) for f in self._features(teacher_out, "teacher")]
        outputs = self.model(batch["hazy"], training=training, return_features=True)
        student_features = self._features(outputs, "student")
        if len(student_features) != len(teacher_features):
            raise ValueError(f"the student taps {len(student_features)} features and the teacher "
                             f"{len(teacher_features)}: give both the same number of feature_taps")
        return teacher_out, teacher_features, outputs, student_features

    def build_models(self, batch):
        _, teacher_features, _, _ = self._forward(batch, training=False)
        if self.use_adapters and self.adapters is None:
            self.adapters = Adapters([f.shape[-1] for f in teacher_features], name="adapters")
        _, _, _, student_features = self._forward(batch, training=False)
        if self.adapters is not None:
            self.adapters(student_features)

    def trainable_variables(self) -> list[tf.Variable]:
        """The student's and the adapters' trainable variables."""
        return self.model.trainable_variables + (self.adapters.trainable_variables if self.adapters else [])

    def optimizers_and_variables(self):
        return [(self.optimizer, self.trainable_variables())]

    def checkpoint_objects(self):
        objects = {"model": self.model, "optimizer": self.optimizer}
        if self.adapters is not None:
            objects["adapters"] = self.adapters
        return objects

    def replica_step(self, batch):
        variables = self.trainable_variables()
        with tf.GradientTape() as tape:
            teacher_out, teacher_features, outputs, student_features = self._forward(batch, training=True)
            if self.adapters is not None:
                student_features = self.adapters(student_features)
            context = {**self.context(batch, outputs), "teacher_output": _output(teacher_out, self.output_key),
                       "teacher_features": teacher_features, "student_features": student_features}
            per_example, parts = losses_lib.total(self.terms, context)
            loss = self.average(per_example) + self.regularization(self.model)
        self.apply_gradients(self.optimizer, self.gradients(tape, self.optimizer, loss, variables), variables)
        return _log("", loss, parts, self.average)
