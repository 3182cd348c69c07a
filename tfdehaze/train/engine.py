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
- ``.lock``: while a run is using the directory, locked with ``fcntl.flock`` (`RunDirLock`); a second run on it is
  refused. The operating system drops the lock when the process dies, so a killed run never blocks ``--resume``.

One run per directory and nothing overwritten: a fresh run into a directory holding checkpoints or another run's
files is refused before anything is written (`refuse_existing_run`). On resume, the newest checkpoint whose files
read back is restored: a damaged one (garbage ``.index``, truncated ``.data``) is skipped with a message, an
unreadable state file is replaced by searching the checkpoint files by name, and when checkpoints exist but none
reads back the run is refused: it never restarts at step 0 over them. A write that fails (a full disk) leaves the
previous file whole: ``config.json``, samples and the final model are written atomically, a ``metrics.csv`` row
that fails part way is cut off again, and a failed checkpoint save removes its partial files and keeps the earlier
checkpoints; the `OSError` names the file and the reason.

Data position: the checkpoint stores ``epoch`` and ``offset`` (batches of that epoch already used). Each epoch's
dataset comes from ``data(epoch)``, deterministic for a given epoch (seeded shuffling/augmentation), so a resumed run
rebuilds epoch ``epoch`` and skips ``offset`` batches: it sees exactly the batches an uninterrupted run would have.
(Checkpointing the iterator itself would store whole shuffle buffers of images in every checkpoint.)
"""
from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import math
import os
import pathlib
import shutil
import socket
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

from tfdehaze.checkpoints import checkpoint_files, checkpoint_state, find_restorable, join_names, step_of, tf_reason
from tfdehaze.paths import atomic_save, atomic_write, write_error
from tfdehaze.train.recipes import DEFAULTS
from tfdehaze.train.strategy import communication_errors, is_chief, worker_lost

if TYPE_CHECKING:  # annotations only: recipes and steps import this module
    from tfdehaze.train.recipes import Recipe
    from tfdehaze.train.steps import Step

CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"
# Files a fresh run writes into its run directory: finding one there means the directory holds another run.
RUN_FILES = ("config.json", "data.csv", "metrics.csv", "model.weights.h5", "model.keras")


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


def refuse_existing_run(run_dir: str | os.PathLike, resume: bool = False,
                        files: tuple[str, ...] = RUN_FILES) -> None:
    """Raise `RunDirError` for a fresh run (``resume=False``) into a directory that already has checkpoints or any
    of ``files`` (``config.json``, ``data.csv``, ``metrics.csv``, the final model): a fresh run would overwrite
    them. It only reads, so a refused directory is left exactly as it was.

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

        Another run's files without checkpoints (e.g. a folder of earlier results) are refused too:

        >>> other = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (other / "metrics.csv").write_text("step,loss\\n1,0.5\\n")
        >>> refuse_existing_run(other)
        Traceback (most recent call last):
        ...
        tfdehaze.train.engine.RunDirError: run directory ... already holds metrics.csv, which a new run would
        overwrite; nothing was changed. Pass --resume (resume=True) if it is this run's directory, or choose another
        output directory
    """
    if resume:
        return
    run_dir = pathlib.Path(run_dir)
    found = [name for name in files if (run_dir / name).exists()]
    if has_checkpoints(run_dir):
        names = checkpoint_state(run_dir / CHECKPOINT_DIR)[0] or checkpoint_files(run_dir / CHECKPOINT_DIR)
        raise RunDirError(f"run directory {run_dir} already has checkpoints"
                          f"{f' (latest {names[0]})' if names else ''}"
                          f"{f' and {join_names(found)}' if found else ''}; pass --resume "
                          "(resume=True) to continue that run, or choose another output directory")
    if found:
        raise RunDirError(f"run directory {run_dir} already holds {join_names(found)}, which a new run would "
                          "overwrite; "
                          "nothing was changed. Pass --resume (resume=True) if it is this run's directory, or choose "
                          "another output directory")


def _write_state(folder, latest, keep):
    """Rewrite the ``checkpoint`` state file naming ``latest`` and up to ``keep - 1`` older checkpoint files."""
    older = [name for name in checkpoint_files(folder) if step_of(name) < step_of(latest)][:max(keep - 1, 0)]
    lines = [f'model_checkpoint_path: "{latest}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in reversed(older)]
    lines += [f'all_model_checkpoint_paths: "{latest}"']
    atomic_write(pathlib.Path(folder) / "checkpoint", "\n".join(lines) + "\n")


# --- one run per run directory ---------------------------------------------------------------------------------------
_HELD: dict[str, dict[str, Any]] = {}  # run directories this process has claimed: real path -> fd, count, ...


def _lock(path, create):
    """An fd of ``path`` holding an exclusive ``flock``; None when ``path`` does not exist (and not ``create``);
    the holder's note (str) when another process holds it."""
    for _ in range(50):
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            note = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return note or "another process"
            raise
        try:
            same = os.path.samestat(os.stat(path), os.fstat(fd))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # its holder released and removed it between our open and flock: lock the new file
    raise RunDirError(f"could not lock {path}: it keeps being replaced")


class RunDirLock:
    """A claim on a run directory for the life of a run: only one run writes it at a time.

    Checks first (a fresh run into a directory with another run's files is refused by `refuse_existing_run`,
    before anything is written), then takes an exclusive ``fcntl.flock`` on ``RUN_DIR/.lock`` (non-blocking: a
    second run is refused at once, naming the directory and the process holding it). The operating system drops the
    lock when the process dies, so a run killed with SIGKILL never blocks ``--resume``; `release` removes the file
    (and the run directory when the claim created it and nothing else was written).

    Only the chief of a multi-worker run claims (``chief=False``: the other workers of the same run only check for
    checkpoints). A process that already holds the directory (`train` around its `Trainer`) claims it again
    without checking. ``check=False`` skips the check (a `Trainer` fitting again).

    Examples:
        >>> import pathlib, tempfile
        >>> from tfdehaze.train.engine import RunDirLock
        >>> run_dir = pathlib.Path(tempfile.mkdtemp(), "run")
        >>> with RunDirLock(run_dir) as claim:
        ...     print(run_dir.is_dir(), (run_dir / ".lock").exists())
        True True
        >>> run_dir.exists()  # released: the lock file (and the empty directory it made) removed
        False
    """

    def __init__(self, run_dir: str | os.PathLike, resume: bool = False, chief: bool = True, check: bool = True):
        self.run_dir = pathlib.Path(run_dir)
        self._key = None
        if not chief:
            if check:
                refuse_existing_run(self.run_dir, resume, files=())
            return
        key = os.path.realpath(self.run_dir)
        if key in _HELD:
            _HELD[key]["count"] += 1
            self._key = key
            return
        path = self.run_dir / LOCK_FILE
        fd = _lock(path, create=False) if self.run_dir.is_dir() else None
        made_dir = made_file = False
        try:
            if isinstance(fd, str):
                raise RunDirError(self._busy(fd))
            if check:
                refuse_existing_run(self.run_dir, resume)  # before anything is written
            if fd is None:
                made_dir = not self.run_dir.exists()
                self.run_dir.mkdir(parents=True, exist_ok=True)
                fd = _lock(path, create=True)
                if isinstance(fd, str):
                    raise RunDirError(self._busy(fd))
                made_file = True
                if check:
                    refuse_existing_run(self.run_dir, resume)  # again under the lock: a run may have started since
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except BaseException:
            if isinstance(fd, int):
                _unlock(fd, path, made_file, made_dir)
            raise
        _HELD[key] = {"fd": fd, "count": 1, "path": path, "made_dir": made_dir}
        self._key = key

    def _busy(self, holder):
        return (f"run directory {self.run_dir} is in use by another training run ({holder}); wait for it to end or "
                "stop it, then continue it with --resume (resume=True)")

    def release(self) -> None:
        """Give the claim up (the lock is dropped when the last claim of this process on the directory is)."""
        key, self._key = self._key, None
        if key is None or key not in _HELD:
            return
        held = _HELD[key]
        held["count"] -= 1
        if held["count"] <= 0:
            del _HELD[key]
            _unlock(held["fd"], held["path"], True, held["made_dir"])

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _unlock(fd, path, remove, remove_dir):
    try:
        if remove and os.path.samestat(os.stat(path), os.fstat(fd)):
            os.unlink(path)  # while still locked: a waiting process then finds the file gone and makes a new one
            if remove_dir:
                os.rmdir(path.parent)  # only when empty
    except OSError:
        pass
    finally:
        os.close(fd)


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
        """Append one row; a write that fails part way (a full disk) is cut back off, keeping the earlier rows."""
        header, _ = self._read()
        new = header is None
        if new:
            header = list(row)
        elif list(row) != header:
            raise RunDirError(f"{self.path} has columns {header}, but this run logs {list(row)}; "
                              "use a new run directory")
        size = 0 if new else self.path.stat().st_size
        try:
            with open(self.path, "a", newline="") as file:
                writer = csv.writer(file)
                if new:
                    writer.writerow(header)
                writer.writerow([row[key] for key in header])
                file.flush()
        except OSError as error:
            try:
                if new:
                    self.path.unlink(missing_ok=True)
                else:
                    os.truncate(self.path, size)
            except OSError:
                pass
            raise write_error(self.path, error, existed=not new) from error


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
        self._claim = None

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
        """Claim the run directory (`RunDirLock`, held until `fit` ends), build the step, restore the latest
        checkpoint when ``resume``; returns the step to continue from.

        A fresh run (``resume=False``) into a directory that already has checkpoints or another run's files, or a
        directory another run is using, raises `RunDirError`. ``resume=True`` restores the newest checkpoint whose
        files read back (a damaged one is skipped, saying why, on stderr); it starts from step 0 only when the
        directory has no checkpoint at all, and raises `RunDirError` when it has some but none reads back.
        """
        if self._claim is None:
            self._claim = RunDirLock(self.run_dir, resume, chief=self.chief, check=not self._ready)
        if self._ready:
            return int(self.counters["step"].numpy())
        try:
            return self._setup(resume)
        except BaseException:
            self._release()
            raise

    def _release(self):
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    def _setup(self, resume):
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
        latest = self._restore_latest() if resume else None
        # Non-chief workers of a multi-worker run take part in saving (TensorFlow's multi-worker guide) but write
        # into a throw-away folder. (Made after the restore: that repairs a damaged state file the manager reads.)
        self._save_dir = self.checkpoint_dir if self.chief else pathlib.Path(tempfile.mkdtemp(prefix="tfdehaze-w"))
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self._save_dir), max_to_keep=self.keep,
                                                  step_counter=self.counters["step"])
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

    def _restore_latest(self):
        """Restore the newest checkpoint whose files read back and return its prefix (None: the run has none).

        Candidates: the state file's checkpoints (latest first), then checkpoint files found by name (all of them
        when the state file is unreadable). Skipped ones are reported on stderr; when the run has checkpoints but
        none reads back, `RunDirError` names the files, and nothing is changed.
        """
        folder = self.checkpoint_dir
        chosen, notes, listed = find_restorable(folder)
        if chosen is None:
            if has_checkpoints(self.run_dir):
                raise RunDirError(f"cannot resume {self.run_dir}: no checkpoint in {folder} can be read back ("
                                  + "; ".join(notes) + "). Nothing was changed; restore the files from a copy, or "
                                  "start a fresh run in another directory")
            if self.verbose:
                print(f"No checkpoint in {folder}: starting from step 0")
            return None
        prefix = str(folder / chosen)
        try:
            self.checkpoint.restore(prefix).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise RunDirError(f"cannot resume from {prefix}: it does not match this run's models and optimizers "
                              f"({tf_reason(error)})") from None
        step = int(self.counters["step"].numpy())
        for note in notes:
            print(f"Warning: {note}", file=sys.stderr)
        if notes:
            print(f"Resuming from {prefix} (step {step}), the newest checkpoint that reads back", file=sys.stderr)
        elif self.verbose:
            print(f"Resuming from {prefix} (step {step})")
        if self.chief and listed[:1] != [chosen]:
            _write_state(folder, chosen, self.keep)  # so the manager, and later resumes, start from it
        return prefix

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
        except communication_errors() as error:  # a multi-worker peer is gone: one message, no traceback
            lost = worker_lost(self.strategy, error, tf.train.latest_checkpoint(str(self.checkpoint_dir)))
            if lost is None:
                raise
            raise lost from None
        finally:
            if self.chief:
                self.writer.flush()
            else:  # nothing of a non-chief worker outlives the run
                shutil.rmtree(self._save_dir, ignore_errors=True)
            self._release()
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
        atomic_write(folder / f"step-{step:07d}.png", png.numpy())

    def _save(self, step):
        variables = [v for obj in self.step.checkpoint_objects().values() for v in obj.variables]
        if not _all_finite(variables):
            raise NonFiniteLossError(
                f"weights became non-finite by step {step} (losses were finite); not saving. The last good "
                f"checkpoint is kept ({self.manager.latest_checkpoint or 'none yet'}).", step, {})
        try:
            self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as error:
            if isinstance(error, communication_errors()):
                raise  # a lost multi-worker peer, not a write that failed: `fit` says so
            prefix = self._save_dir / f"ckpt-{step}"
            self._discard(prefix)
            latest = self.manager.latest_checkpoint
            reason = (error.strerror if isinstance(error, OSError) and error.strerror
                      else tf_reason(error).rsplit("; ", 1)[-1])
            message = (f"cannot write checkpoint {prefix}: {reason}; the earlier "
                       f"checkpoints are kept (latest: {os.path.basename(latest) if latest else 'none yet'}). Make "
                       "room, then continue with --resume (resume=True)")
            failure = OSError(message)
            failure.errno = getattr(error, "errno", None)
            raise failure from error
        self._saved_step = step
        if not self.chief:
            shutil.rmtree(self._save_dir, ignore_errors=True)

    def _discard(self, prefix):
        """Remove what a failed save of checkpoint ``prefix`` left (never a checkpoint the state file names)."""
        if os.path.basename(prefix) in checkpoint_state(prefix.parent)[0]:
            return
        shutil.rmtree(f"{prefix}_temp", ignore_errors=True)
        for path in tf.io.gfile.glob(f"{prefix}.index") + tf.io.gfile.glob(f"{prefix}.data-*"):
            pathlib.Path(path).unlink(missing_ok=True)

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
