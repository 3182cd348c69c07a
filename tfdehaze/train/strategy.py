"""Choosing a ``tf.distribute`` strategy, and who writes files in a multi-worker run.

- ``"auto"``: ``MirroredStrategy`` over all local GPUs when there is more than one, else the default strategy.
- ``"none"``: the default (no-op) strategy: one device.
- ``"mirrored"``: ``MirroredStrategy`` over the local GPUs (or the CPU when there is none).
- ``"multi-worker"``: ``MultiWorkerMirroredStrategy``; the cluster comes from the ``TF_CONFIG`` environment
  variable (see docs/TRAINING.md). Every worker runs the same command.

The global batch (the recipe's ``batch_size``) is split across all replicas of all workers.
"""
from __future__ import annotations

import tensorflow as tf

KINDS = ("auto", "none", "mirrored", "multi-worker")

# One strategy object per kind and process: a second MirroredStrategy in the same process reuses collective instance
# keys and fails with "Shape mismatch in the collective instance" (TensorFlow issue 62790), and
# MultiWorkerMirroredStrategy must be created only once per process anyway.
_CREATED = {}


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """A ``tf.distribute.Strategy`` for ``kind`` in ``KINDS`` (the same object on later calls).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.train import make_strategy
        >>> strategy = make_strategy("none")
        >>> strategy is tf.distribute.get_strategy(), strategy.num_replicas_in_sync
        (True, 1)
        >>> make_strategy("tpu")
        Traceback (most recent call last):
        ...
        ValueError: unknown distribution 'tpu'; choose one of auto, none, mirrored, multi-worker
    """
    if kind not in KINDS:
        raise ValueError(f"unknown distribution {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind not in _CREATED:
        _CREATED[kind] = (tf.distribute.MirroredStrategy() if kind == "mirrored"
                          else tf.distribute.MultiWorkerMirroredStrategy())
    return _CREATED[kind]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True where this process should write the run directory (always, except on non-chief workers).

    Follows the TensorFlow multi-worker guide: the chief is task ``chief``, or ``worker`` 0 when there is no chief.

    Examples:
        >>> from types import SimpleNamespace
        >>> import tensorflow as tf
        >>> from tfdehaze.train import is_chief
        >>> is_chief(tf.distribute.get_strategy())  # a single process
        True

        What the workers of a two-worker ``MultiWorkerMirroredStrategy`` see (their ``TF_CONFIG``):

        >>> cluster = tf.train.ClusterSpec({"worker": ["host0:2222", "host1:2222"]})
        >>> def worker(task_id):
        ...     resolver = SimpleNamespace(task_type="worker", task_id=task_id, cluster_spec=lambda: cluster)
        ...     return SimpleNamespace(cluster_resolver=resolver)
        >>> is_chief(worker(0)), is_chief(worker(1))
        (True, False)
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
