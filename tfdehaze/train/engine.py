"""The training loop shared by every paper: data distribution, checkpoints, resume, logs.

A run directory holds (see docs/TRAINING.md):

- ``config.json``: the resolved recipe (written atomically at every start).
- ``checkpoints/``: ``tf.train.CheckpointManager`` files ``ckpt-<step>.index`` / ``.data-*`` and the ``checkpoint``
  state file naming the latest one. TensorFlow writes a checkpoint's files first and rewrites the state file
  atomically last, so a half-written checkpoint is never the one restored.
- ``metrics.csv``: one row per logged step (step, epoch, time, lr, losses); on resume, rows after the restored step
  are dropped so the file matches the checkpoint.
- ``logs/``: TensorBoard scalars (losses, lr) and sample images (hazy | restored | clear).
- ``samples/step-NNNNNNN.png``: the same sample strips as PNG.
- ``model.weights.h5`` and ``model.keras``: the final exported model (generator / student), written atomically.

Data position: the checkpoint stores ``epoch`` and ``offset`` (batches of that epoch already used). Each epoch's
dataset comes from ``data(epoch)``, deterministic for a given epoch (seeded shuffling/augmentation), so a resumed run
rebuilds epoch ``epoch`` and skips ``offset`` batches: it sees exactly the batches an uninterrupted run would have.
(Checkpointing the iterator itself would store whole shuffle buffers of images in every checkpoint.)
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from tfdehaze.paths import atomic_save, atomic_write
from tfdehaze.train.strategy import is_chief

if TYPE_CHECKING:  # annotations only: recipes and steps import this module
    from tfdehaze.train.recipes import Recipe
    from tfdehaze.train.steps import Step

CHECKPOINT_DIR = "checkpoints"
DEFAULTS = {"checkpoint_every": 500, "log_every": 10, "sample_every": 500, "keep": 3}


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or Inf; ``step`` is the failing step and ``losses`` its loss values.

    `Trainer.fit` raises it at the first non-finite loss (or before saving non-finite weights), keeping the last
    good checkpoint.

    Examples:
        >>> from tfdehaze.train import NonFiniteLossError
        >>> error = NonFiniteLossError("non-finite loss at step 5: loss=nan", step=5, losses={"loss": float("nan")})
        >>> isinstance(error, RuntimeError), error.step, sorted(error.losses), str(error)
        (True, 5, ['loss'], 'non-finite loss at step 5: loss=nan')
    """

    def __init__(self, message: str, step: int, losses: dict[str, float]):
        super().__init__(message)
        self.step = step
        self.losses = losses


class RunDirError(ValueError):
    """The run directory cannot be used as asked (e.g. a fresh run into a directory with checkpoints).

    Examples:
        >>> import pathlib, tempfile
        >>> import tensorflow as tf
        >>> from tfdehaze.train import RunDirError, refuse_existing_run
        >>> run_dir = pathlib.Path(tempfile.mkdtemp())
        >>> _ = tf.train.Checkpoint(step=tf.Variable(1)).save(str(run_dir / "checkpoints" / "ckpt"))
        >>> try:
        ...     refuse_existing_run(run_dir)
        ... except RunDirError as error:
        ...     print(type(error).__name__, isinstance(error, ValueError))
        RunDirError True
    """


def has_checkpoints(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir/checkpoints`` holds a checkpoint state file or checkpoint files.

    Examples:
        >>> import pathlib, tempfile
        >>> import tensorflow as tf
        >>> from tfdehaze.train import has_checkpoints
        >>> run_dir = pathlib.Path(tempfile.mkdtemp())
        >>> has_checkpoints(run_dir), has_checkpoints(run_dir / "not-yet-created")
        (False, False)
        >>> _ = tf.train.Checkpoint(step=tf.Variable(1)).save(str(run_dir / "checkpoints" / "ckpt"))
        >>> has_checkpoints(run_dir)
        True
    """
    folder = pathlib.Path(run_dir) / CHECKPOINT_DIR
    return folder.is_dir() and (any(folder.glob("ckpt-*")) or (folder / "checkpoint").exists())


def refuse_existing_run(run_dir: str | os.PathLike, resume: bool = False) -> None:
    """Raise `RunDirError` for a fresh run (``resume=False``) into a directory that already has checkpoints.

    Examples:
        >>> import pathlib, tempfile
        >>> import tensorflow as tf
        >>> from tfdehaze.train import refuse_existing_run
        >>> run_dir = pathlib.Path(tempfile.mkdtemp())
        >>> refuse_existing_run(run_dir)  # no checkpoints yet: a fresh run may start
        >>> _ = tf.train.Checkpoint(step=tf.Variable(1)).save(str(run_dir / "checkpoints" / "ckpt"))
        >>> refuse_existing_run(run_dir, resume=True)  # continuing the run is fine
        >>> refuse_existing_run(run_dir)
        Traceback (most recent call last):
        ...
        tfdehaze.train.engine.RunDirError: run directory ... already has checkpoints (latest ckpt-1); pass --resume
        (resume=True) to continue that run, or choose another output directory
    """
    if resume or not has_checkpoints(run_dir):
        return
    latest = tf.train.latest_checkpoint(str(pathlib.Path(run_dir) / CHECKPOINT_DIR))
    raise RunDirError(f"run directory {run_dir} already has checkpoints"
                      f"{f' (latest {os.path.basename(latest)})' if latest else ''}; pass --resume "
                      "(resume=True) to continue that run, or choose another output directory")


class _MetricsLog:
    """``metrics.csv``: header once, one appended row per logged step."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)

    def _read(self):
        if not self.path.exists():
            return None, []
        with open(self.path, newline="") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            rows = [row for row in reader if header and len(row) == len(header)]
        return header, rows

    def truncate(self, last_step: int) -> None:
        """Drop rows after ``last_step`` (and any torn last line), atomically."""
        header, rows = self._read()
        if header is None:
            return
        kept = [row for row in rows if row[0].isdigit() and int(row[0]) <= last_step]
        text = io.StringIO()
        csv.writer(text).writerows([header] + kept)
        atomic_write(self.path, text.getvalue())

    def append(self, row: Mapping[str, Any]) -> None:
        header, _ = self._read()
        new = header is None
        if new:
            header = list(row)
        elif list(row) != header:
            raise RunDirError(f"{self.path} has columns {header}, but this run logs {list(row)}; "
                              "use a new run directory")
        with open(self.path, "a", newline="") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(header)
            writer.writerow([row[key] for key in header])
            file.flush()


def _plugin_metadata(plugin, data_class):
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin), data_class=data_class)


# TensorBoard's scalar and image formats written with TensorFlow's own `tf.summary.write`, so that logging needs no
# `tensorboard` package on the training machine (TensorFlow 2.21 no longer installs it; `tf.summary.scalar` fails
# without it). The events are what `tf.summary.scalar` / `tf.summary.image` write.
_SCALAR = _plugin_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR)
_IMAGES = _plugin_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE)


def _summary_scalar(tag, value, step):
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_SCALAR)


def _summary_images(tag, images, step):
    """images: uint8 (N, H, W, C) -> one TensorBoard image summary (width, height, PNG...)."""
    shape = tf.shape(images)
    pngs = [tf.io.encode_png(image) for image in tf.unstack(images)]
    tf.summary.write(tag, tf.stack([tf.as_string(shape[2]), tf.as_string(shape[1])] + pngs), step=step,
                     metadata=_IMAGES)


def _all_finite(variables):
    return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in variables if tf.as_dtype(v.dtype).is_floating)


def _format(values):
    return ", ".join(f"{name}={value:.6g}" for name, value in values.items())


class Trainer:
    """Runs a `steps.Step` over a dataset with checkpoints, logs and resume.

    step: a `tfdehaze.train.steps.Step` whose models were created inside ``strategy.scope()``.
    data: a ``tf.data.Dataset`` of dicts ``{"hazy", "clear", ...}`` (batched), or a function ``epoch -> Dataset``
        giving each epoch (deterministic per epoch: needed for an exact resume). Batches are re-formed to the
        global batch size with the remainder dropped.
    run_dir: the run directory (created). strategy: a ``tf.distribute.Strategy`` (default: the current one).
    config: the resolved `Recipe` (or a dict) written to ``config.json``; ``batch_size`` and the intervals default to
        its fields. batch_size: the GLOBAL batch. checkpoint_every / log_every / sample_every: in steps.
    keep: checkpoints kept. verbose: 0 silent, 1 progress bar. sample_count: images in the sample strips.

    Examples:
        Two steps of a one-convolution model on four 8x8 pairs (batches of 2), then two more by resuming:

        >>> import tempfile
        >>> import keras
        >>> import tensorflow as tf
        >>> from tfdehaze.train import SupervisedStep, Trainer
        >>> images = tf.random.stateless_uniform([4, 8, 8, 3], seed=[0, 1])
        >>> data = tf.data.Dataset.from_tensor_slices({"hazy": 0.5 * images + 0.3, "clear": images}).batch(2)
        >>> model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 3, padding="same")])
        >>> step = SupervisedStep(model, [{"type": "l1"}], keras.optimizers.Adam(1e-3))
        >>> trainer = Trainer(step, data, tempfile.mkdtemp(), batch_size=2, log_every=1, verbose=0)
        >>> result = trainer.fit(2)
        >>> result["step"], sorted(result["losses"]), result["checkpoint"].endswith("ckpt-2")
        (2, ['loss'], True)
        >>> sorted(path.name for path in result["run_dir"].iterdir())
        ['checkpoints', 'logs', 'metrics.csv', 'model.keras', 'model.weights.h5']
        >>> resumed = Trainer(step, data, result["run_dir"], batch_size=2, log_every=1, verbose=0)
        >>> resumed.fit(4, resume=True)["step"]
        4
        >>> [line.split(",")[0] for line in (result["run_dir"] / "metrics.csv").read_text().splitlines()]
        ['step', '1', '2', '3', '4']
    """

    def __init__(self, step: Step, data: tf.data.Dataset | Callable[[int], tf.data.Dataset],
                 run_dir: str | os.PathLike, strategy: tf.distribute.Strategy | None = None,
                 config: Recipe | dict | None = None, batch_size: int | None = None,
                 checkpoint_every: int | None = None, log_every: int | None = None, sample_every: int | None = None,
                 keep: int | None = None, verbose: int = 1, sample_count: int = 3):
        self.step = step
        self.data_fn = data if callable(data) else (lambda epoch: data)
        self.run_dir = pathlib.Path(run_dir)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.config = config
        fields = config if isinstance(config, dict) else (config.to_dict() if config is not None else {})
        self.batch_size = int(batch_size or fields.get("batch_size") or 0)
        if self.batch_size < 1:
            raise ValueError("Trainer needs the global batch_size (argument or config field)")
        given = {"checkpoint_every": checkpoint_every, "log_every": log_every, "sample_every": sample_every,
                 "keep": keep}
        for name, value in given.items():
            value = value if value is not None else fields.get(name, DEFAULTS[name])
            setattr(self, name, int(value))
        self.verbose = verbose
        self.sample_count = sample_count
        self.chief = is_chief(self.strategy)
        self._ready = False

    # --- set-up -------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> pathlib.Path:
        return self.run_dir / CHECKPOINT_DIR

    def _epoch_dataset(self, epoch, offset=0):
        dataset = self.data_fn(epoch)
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(f"training data must be a tf.data.Dataset, got {type(dataset).__name__}")
        dataset = dataset.unbatch().batch(self.batch_size, drop_remainder=True)
        if offset:
            dataset = dataset.skip(offset)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    def setup(self, resume: bool = False) -> int:
        """Build the step, restore the latest checkpoint when ``resume``; returns the step to continue from.

        A fresh run (``resume=False``) into a directory that already has checkpoints raises `RunDirError`.
        ``resume=True`` without any checkpoint starts from step 0.
        """
        if self._ready:
            return int(self.counters["step"].numpy())
        refuse_existing_run(self.run_dir, resume)
        if self.chief:
            self.run_dir.mkdir(parents=True, exist_ok=True)

        first = next(iter(self.data_fn(0)), None)
        if first is None:
            raise ValueError("the training data is empty")
        self.samples = {key: value[:self.sample_count] for key, value in first.items()}
        self.step.build(self.strategy, {key: value[:1] for key, value in first.items()}, self.batch_size)

        self.counters = {name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
                         for name in ("step", "epoch", "offset")}
        self.checkpoint = tf.train.Checkpoint(**self.counters, **self.step.checkpoint_objects())
        # Non-chief workers of a multi-worker run take part in saving (TensorFlow's multi-worker guide) but write
        # into a throw-away folder.
        self._save_dir = self.checkpoint_dir if self.chief else pathlib.Path(tempfile.mkdtemp(prefix="tfdehaze-w"))
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self._save_dir), max_to_keep=self.keep,
                                                  step_counter=self.counters["step"])
        latest = tf.train.latest_checkpoint(str(self.checkpoint_dir)) if resume else None
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            if self.verbose:
                print(f"Resuming from {latest} (step {int(self.counters['step'].numpy())})")
        elif resume and self.verbose:
            print(f"No checkpoint in {self.checkpoint_dir}: starting from step 0")
        step = int(self.counters["step"].numpy())
        self._saved_step = step if latest else None

        self.metrics = _MetricsLog(self.run_dir / "metrics.csv")
        if self.chief:
            self.metrics.truncate(step)
            if self.config is not None:
                text = (self.config.to_json() if hasattr(self.config, "to_json")
                        else json.dumps(self.config, indent=2, sort_keys=True) + "\n")
                atomic_write(self.run_dir / "config.json", text)
            self.writer = tf.summary.create_file_writer(str(self.run_dir / "logs"))
        self._ready = True
        return step

    # --- the loop -----------------------------------------------------------------------------------
    def fit(self, total_steps: int, resume: bool = False) -> dict[str, Any]:
        """Train until the global step reaches ``total_steps``; returns a dict describing the run's outputs."""
        step = self.setup(resume)
        values = {}
        progbar = keras.utils.Progbar(total_steps, verbose=self.verbose,
                                      interval=0.05 if sys.stdout.isatty() else 30.0)
        epoch = int(self.counters["epoch"].numpy())
        offset = int(self.counters["offset"].numpy())
        try:
            while step < total_steps:
                dataset = self.strategy.experimental_distribute_dataset(self._epoch_dataset(epoch, offset))
                used = 0
                for batch in dataset:
                    values = {name: float(value) for name, value in self.step(batch).items()}
                    step += 1
                    used += 1
                    if not all(math.isfinite(v) for v in values.values()):
                        raise NonFiniteLossError(
                            f"non-finite loss at step {step}: {_format(values)}. Training stopped; the last good "
                            f"checkpoint is kept ({self.manager.latest_checkpoint or 'none yet'}). Lower the learning "
                            "rate or check the data.", step, values)
                    self.counters["step"].assign(step)
                    self.counters["offset"].assign(offset + used)
                    progbar.update(step, list(values.items()))
                    if self.chief and (step % self.log_every == 0 or step == total_steps):
                        self._log(step, epoch, values)
                    if self.chief and step % self.sample_every == 0:
                        self._write_samples(step)
                    if step % self.checkpoint_every == 0 or step == total_steps:
                        self._save(step)
                    if step >= total_steps:
                        break
                else:
                    if used == 0 and offset == 0:
                        raise ValueError(f"the training data yields no full batch of {self.batch_size} examples")
                    epoch, offset = epoch + 1, 0
                    self.counters["epoch"].assign(epoch)
                    self.counters["offset"].assign(0)
            if self._saved_step != step:
                self._save(step)
        finally:
            if self.chief:
                self.writer.flush()
        return self._finish(step, values)

    def _optimizer_lr(self):
        optimizer = self.step.optimizers_and_variables()[0][0]
        return float(np.asarray(optimizer.learning_rate))

    def _log(self, step, epoch, values):
        lr = self._optimizer_lr()
        self.metrics.append({"step": step, "epoch": epoch, "time": f"{time.time():.3f}", "lr": f"{lr:.6g}",
                             **{name: f"{value:.8g}" for name, value in values.items()}})
        with self.writer.as_default():
            for name, value in values.items():
                _summary_scalar(f"loss/{name}", value, step)
            _summary_scalar("learning_rate", lr, step)

    def _write_samples(self, step):
        restored = self.step.predict(self.samples)
        if restored.shape[1:3] != self.samples["hazy"].shape[1:3]:  # e.g. a x2 super-resolution teacher
            restored = tf.image.resize(restored, tf.shape(self.samples["hazy"])[1:3], antialias=True)
        strip = tf.concat([self.samples["hazy"], restored, self.samples["clear"]], axis=2)
        strip = tf.image.convert_image_dtype(tf.clip_by_value(tf.cast(strip, tf.float32), 0.0, 1.0), tf.uint8,
                                             saturate=True)
        with self.writer.as_default():
            _summary_images("samples/hazy_restored_clear", strip, step)
        folder = self.run_dir / "samples"
        folder.mkdir(exist_ok=True)
        png = tf.io.encode_png(tf.concat(tf.unstack(strip), axis=0))
        atomic_save(folder / f"step-{step:07d}.png", lambda tmp: tf.io.write_file(tmp, png))

    def _save(self, step):
        variables = [v for obj in self.step.checkpoint_objects().values() for v in obj.variables]
        if not _all_finite(variables):
            raise NonFiniteLossError(
                f"weights became non-finite by step {step} (losses were finite); not saving. The last good "
                f"checkpoint is kept ({self.manager.latest_checkpoint or 'none yet'}).", step, {})
        self.manager.save(checkpoint_number=step)
        self._saved_step = step
        if not self.chief:
            shutil.rmtree(self._save_dir, ignore_errors=True)

    def _finish(self, step, values):
        result = {"run_dir": self.run_dir, "step": step, "losses": values,
                  "checkpoint": tf.train.latest_checkpoint(str(self.checkpoint_dir))}
        if self.chief:
            model = self.step.export_model
            result["weights"] = self.run_dir / "model.weights.h5"
            atomic_save(result["weights"], model.save_weights)
            try:
                atomic_save(self.run_dir / "model.keras", model.save)
                result["keras"] = self.run_dir / "model.keras"
            except Exception as error:  # the weights file above is the run's product; .keras is a convenience
                warnings.warn(f"could not save {type(model).__name__} as .keras ({error}); "
                              f"use {result['weights']} with the model's constructor")
        return result
